// `npm run bench -- mha2mla [--models a,b] [--fractions 0.5,0.3125,0.125] [--calib-samples 128]
//   [--calib-seqlen 256] [--eval-ctx 256] [--eval-chunks 8] [--search-chunks 8]`
//
// TransMLA vs MHA2MLA at equal KV-cache bytes, training-free, on every real model in
// ../shared/assets/models (llama2.c checkpoints imported first, as bench/transmla.ts does):
// - TransMLA (faithful calibration order; d_R and FreqFold searched on held-out calibration
//   documents), each conversion its own `transmla convert` process, reloaded from its folder;
// - MHA2MLA with S_high / S_low / S_uniform / S_2-norm (exact mean pair norms) × SVD_split /
//   SVD_joint, weight-only as in the paper, plus S_2-norm × split/joint activation-aware;
// each with an f32, int8 and int4 latent cache (groups of 32 values per f16 scale).
// At a fraction F both methods cache ⌊F·2·G·d⌋ values per token per layer: TransMLA r + d_R,
// MHA2MLA G·2r + R with r = head_dim/16 pairs (≥ 1). Where G·2r alone fills the budget the
// MHA2MLA cell is reported as not representable.
// Every model of one (source, fraction) is scored on the same tokens in one pass (eval/fidelity.ts):
// the source's in-domain evaluation text, the first --eval-chunks non-overlapping --eval-ctx-token
// chunks; perplexity, KL(original ‖ converted) and top-1 agreement. MHA2MLA statistics come from
// one calibration pass per source (128 × 256 tokens by default, the same samples TransMLA draws).
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { calibrationSamples, readDocuments } from '../src/convert/calibrate.js';
import { HELD_OUT_FRACTION, tokenizeEnough } from '../src/convert/pipeline.js';
import { buildMha2mlaModel, calibrateMha2mla, convertMha2mlaLayer, mha2mlaBudget, type Mha2mlaLayerStats, type Mha2mlaVariant } from '../src/convert/mha2mla.js';
import type { LowRankInit, ModelScore } from '../src/schema/transmla-json.js';
import { fidelity } from '../src/eval/fidelity.js';
import type { RopeSelection } from '../src/convert/rope-select.js';
import { GqaAttention } from '../src/models/attention.js';
import { kvQuantName, type KvQuant } from '../src/models/latent-quant.js';
import { type Decoder, setKvQuant } from '../src/models/decoder.js';
import { loadModel } from '../src/arch/load.js';
import { domainOf, hfFolderOf, runConvert } from './transmla.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MODELS = resolve(REPO, '..', 'shared', 'assets', 'models');
const QUANTS: (KvQuant | null)[] = [null, { bits: 8, group: 32 }, { bits: 4, group: 32 }];

interface Args {
  models: string[] | null;
  fractions: number[];
  calibSamples: number;
  calibSeqLen: number;
  evalCtx: number;
  evalChunks: number;
  searchChunks: number;
}

function parse(argv: string[]): Args {
  const a: Args = { models: null, fractions: [0.5, 0.3125, 0.125], calibSamples: 128, calibSeqLen: 256, evalCtx: 256, evalChunks: 8, searchChunks: 8 };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${f} needs a value`); return v; };
    const posInt = (): number => { const v = Number(val()); if (!Number.isInteger(v) || v < 1) throw new Error(`${f} must be a positive integer`); return v; };
    if (f === '--models') a.models = val().split(',').filter(Boolean);
    else if (f === '--fractions') a.fractions = val().split(',').map(Number);
    else if (f === '--calib-samples') a.calibSamples = posInt();
    else if (f === '--calib-seqlen') a.calibSeqLen = posInt();
    else if (f === '--eval-ctx') a.evalCtx = posInt();
    else if (f === '--eval-chunks') a.evalChunks = posInt();
    else if (f === '--search-chunks') a.searchChunks = posInt();
    else throw new Error(`bench mha2mla: unknown option ${f}`);
  }
  if (a.fractions.some((x) => !(x > 0 && x <= 1))) throw new Error('bench mha2mla: --fractions must be in (0, 1]');
  return a;
}

/** The MHA2MLA variants compared: the paper's weight-only grid, then the activation-aware pair. */
const VARIANTS: { selection: RopeSelection; init: LowRankInit; weighting: 'weights' | 'activations' }[] = [
  ...(['high', 'low', 'uniform', '2norm'] as const).flatMap((selection) => (['split', 'joint'] as const).map((init) => ({ selection, init, weighting: 'weights' as const }))),
  { selection: '2norm', init: 'split', weighting: 'activations' },
  { selection: '2norm', init: 'joint', weighting: 'activations' },
];

function methodName(v: { selection: string; init: string; weighting: string } | null): string {
  if (!v) return 'TransMLA (faithful)';
  return `MHA2MLA S_${v.selection === '2norm' ? '2-norm' : v.selection} + SVD_${v.init}${v.weighting === 'activations' ? ', activation-aware' : ''}`;
}

interface Cell {
  fraction: number;
  /** null when the budget cannot hold the method (reason given). */
  shape: string | null;
  reason?: string;
  /** Per cache quantization: bytes per token (all layers) and the scores. */
  byQuant: { quant: string; bytesPerToken: number; score: ModelScore }[];
}

const f2 = (x: number): string => (x >= 1000 ? x.toFixed(0) : x >= 100 ? x.toFixed(1) : x.toFixed(2));

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const t0 = performance.now();
  const names = a.models ?? readdirSync(MODELS).filter((n) => statSync(join(MODELS, n)).isDirectory()).sort();
  const work = mkdtempSync(join(tmpdir(), 'transmla-bench-mha2mla-'));
  const results: Record<string, unknown>[] = [];
  const table: string[] = [];
  const log = (s: string): void => { process.stderr.write(`bench mha2mla: ${s}\n`); };
  try {
    for (const name of names) {
      const dir = await hfFolderOf(join(MODELS, name), work);
      const { calib, inDomain } = domainOf(name);
      const loaded = loadModel(dir);
      const src = loaded.model, tok = loaded.tokenizer!;
      const a0 = src.layers[0]!.attn;
      if (!(a0 instanceof GqaAttention)) throw new Error(`${name}: not a GQA/MHA model`);
      const shape = { nKvHeads: a0.nKvHeads, headDim: a0.headDim, hidden: src.config.hiddenSize };
      const dtype = src.weightDtype;

      // Evaluation tokens: the first chunks of the in-domain text (the documents as one string).
      const { ids, bos } = await tokenizeEnough(tok, readFileSync(inDomain, 'utf8'), a.evalChunks * a.evalCtx);
      const ctx = Math.min(a.evalCtx, src.config.maxPositionEmbeddings);

      // One calibration pass: exact mean pair norms (S_2-norm) and layer-input second moments.
      const tCal = performance.now();
      const docs = readDocuments(calib);
      const nHeld = docs.length >= 2 ? Math.max(1, Math.round(docs.length * HELD_OUT_FRACTION)) : 0;
      const samples = await calibrationSamples(tok, docs.slice(0, docs.length - nHeld), { samples: a.calibSamples, seqLen: a.calibSeqLen, seed: 42 });
      const stats: Mha2mlaLayerStats[] = [];
      calibrateMha2mla(src, samples, { pairNorms: 'mean', inputCov: true }, (_l, s) => stats.push(s));
      const calSeconds = (performance.now() - tCal) / 1000;
      log(`${name}: calibrated in ${calSeconds.toFixed(1)} s`);

      const rows = new Map<string, Cell[]>();
      let original: ModelScore | null = null;
      for (const fraction of a.fractions) {
        const models: Decoder[] = [];
        const slots: { method: string; cell: Cell }[] = [];
        const add = (method: string, cell: Cell, variantsByQuant: Decoder[]): void => {
          slots.push({ method, cell });
          models.push(...variantsByQuant);
        };

        // TransMLA in its own process, reloaded with each cache quantization.
        const out = join(work, `${name}-${fraction}`);
        log(`${name} at ${(100 * fraction).toFixed(2)} %: TransMLA conversion`);
        const { report } = await runConvert([
          dir, '--out', out, '--overwrite', '--kv-fraction', String(fraction), '--freqfold', 'auto', '--calib-order', 'faithful',
          '--calib', calib, '--calib-samples', String(a.calibSamples), '--calib-seqlen', String(a.calibSeqLen),
          '--eval-text', inDomain, '--eval-ctx', String(ctx), '--eval-chunks', '1', '--search-chunks', String(a.searchChunks),
        ]);
        const p = report.parameters;
        add(methodName(null), { fraction, shape: `r ${p.kvLoraRank} + d_R ${p.qkRopeHeadDim} (M ${p.freqFold})`, byQuant: [] },
          QUANTS.map((q) => loadModel(out, { kvQuant: q }).model));

        // MHA2MLA variants from the shared statistics.
        let budget: ReturnType<typeof mha2mlaBudget> | null = null;
        let reason = '';
        try {
          budget = mha2mlaBudget(shape, { kvFraction: fraction });
        } catch (e) {
          reason = (e as Error).message;
        }
        for (const v of VARIANTS) {
          if (!budget) {
            slots.push({ method: methodName(v), cell: { fraction, shape: null, reason, byQuant: [] } });
            continue;
          }
          const variant: Mha2mlaVariant = { ...v, ropePairs: budget.ropePairs, kvRank: budget.kvRank };
          const layers = src.layers.map((_, l) => convertMha2mlaLayer(src, l, variant, stats[l]!));
          add(methodName(v), { fraction, shape: `${shape.nKvHeads}·2·${budget.ropePairs} + R ${budget.kvRank}`, byQuant: [] }, QUANTS.map((q) => {
            const m = buildMha2mlaModel(src, layers, dtype);
            setKvQuant(m, q);
            return m;
          }));
        }

        log(`${name} at ${(100 * fraction).toFixed(2)} %: scoring ${models.length} models on ${a.evalChunks} × ${ctx} tokens`);
        const f = await fidelity(src, models, ids, bos, { ctx, maxChunks: a.evalChunks, logitRows: 64 });
        original = f.reference;
        let i = 0;
        for (const s of slots) {
          if (s.cell.shape !== null) {
            s.cell.byQuant = QUANTS.map((q) => {
              const m = models[i]!, score = f.models[i++]!;
              return { quant: kvQuantName(q), bytesPerToken: m.newCache().bytesPerToken(dtype), score };
            });
          }
          if (!rows.has(s.method)) rows.set(s.method, []);
          rows.get(s.method)!.push(s.cell);
        }
        rmSync(out, { recursive: true, force: true });
        results.push({ model: name, fraction, evaluation: { text: inDomain, ctx: f.ctx, chunks: f.chunks, predictions: f.predictions, convention: f.convention }, original: f.reference, transmlaParameters: p, mha2mlaBudget: budget, methods: slots.map((s) => ({ method: s.method, ...s.cell })) });
      }

      // Table block for this model: one row per method, one column per fraction.
      const bytes0 = src.newCache().bytesPerToken(dtype);
      table.push(`| **${name}** (${a0.nHeads}/${a0.nKvHeads} heads × ${a0.headDim}, ${dtype}; ${bytes0} B/token) | original ppl ${f2(original!.ppl)} | ${a.fractions.map(() => '').join(' | ')} |`);
      for (const [method, cells] of rows) {
        const cols = cells.map((c) => {
          if (c.shape === null) return 'n/a (RoPE keys fill the budget)';
          const [f32, i8, i4] = c.byQuant;
          return `${f2(f32!.score.ppl)} / ${f2(i8!.score.ppl)} / ${f2(i4!.score.ppl)} (KL ${f32!.score.kl.toFixed(3)})`;
        });
        table.push(`| | ${method} | ${cols.join(' | ')} |`);
      }
      log(`${name}: done`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const header = [
    `| model | method | ${a.fractions.map((f) => `${(100 * f).toFixed(2)} % KV: ppl ${'dtype'} / int8 / int4 (KL)`).join(' | ')} |`,
    `|---|---|${a.fractions.map(() => '---').join('|')}|`,
  ];
  const full = [...header, ...table];
  process.stderr.write(`\n${full.join('\n')}\n`);
  return {
    bench: 'mha2mla',
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version },
    wallSeconds: (performance.now() - t0) / 1000,
    settings: {
      ...a,
      evaluation: 'in-domain text of each model (kjv-new-testament-eval.txt for kjv models, tinystories_val_sample.txt otherwise), first eval-chunks non-overlapping eval-ctx chunks, all models of a (source, fraction) on the same tokens',
      calibration: 'kjv-old-testament-calib.txt (kjv models) / tinystories_train_lowercased_sample.txt (others), last 10 % of documents held out, seed 42',
      quantization: 'latent cache int8 / int4, symmetric, one f16 scale per 32 consecutive values of a token row (latent-quant.ts)',
      mha2mla: 'r = head_dim/16 pairs per KV head (≥ 1); R = ⌊F·2·G·d⌋ − G·2r; S_2-norm from exact mean per-token pair norms; split = ⌈R/2⌉ key + ⌊R/2⌋ value components',
      transmla: 'transmla convert --kv-fraction F --freqfold auto --calib-order faithful (d_R and M searched on held-out calibration documents)',
    },
    table: full,
    results,
  };
}
