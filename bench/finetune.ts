// `npm run bench -- finetune [--models kjv-gqa,kjv-mha] [--methods transmla,mha2mla,best+joint] [--kv-fraction 0.125]
//   [--budget 0.025] [--seqlen 256] [--batch 4] [--lr-attention 1e-3] [--lr-all 1e-4] [--kd-weight 0.5]
//   [--eval-chunks 32] [--throughput-steps 3]`
//
// Recovery by fine-tuning after conversion. For every model asset whose folder states the
// tokens it was pretrained on (training.json: the kjv models), and both conversion methods
// (TransMLA with its d_R/FreqFold search; MHA2MLA with its defaults: S_2-norm pair selection,
// joint SVD), the model is converted at --kv-fraction of its KV cache,
// then fine-tuned on kjv-old-testament-calib.txt for a fixed budget (--budget × pretraining
// tokens, ≤ 5 %) in four ways: attention-only or all parameters, each with the plain LM loss or
// distilled from the original (α = --kd-weight). The two learning rates are fixed choices, not
// tuned per model: a smaller step when the embedding and MLPs move too (--lr-all) than when only
// the attention tensors do (--lr-attention). Cosine schedule, 5 % warmup. Perplexity, KL(original ‖ model) and top-1
// agreement on kjv-new-testament-eval.txt (the first --eval-chunks chunks of 256 tokens) are
// reported before conversion, after conversion and after each fine-tuning, with the training
// throughput (tokens/s, GEMM GFLOP/s) of each run; a short full-parameter run of each original
// Llama model gives the throughput of the GQA/MHA training path as well.
// A readable table goes to stderr; the returned object is the JSON result.
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { mkdtempSync, readFileSync, rmSync, existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readDocuments } from '../src/convert/calibrate.js';
import { convertModel, type ConversionResult } from '../src/convert/transmla.js';
import { convertMha2mla } from '../src/convert/mha2mla.js';
import { fidelity } from '../src/eval/fidelity.js';
import { readEvalText, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { kernels } from '../src/kernels/index.js';
import { loadModel } from '../src/arch/load.js';
import { tokenizeDocuments } from '../src/train/data.js';
import { finetune, type FinetuneReport } from '../src/train/finetune.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');
const TRAIN_TEXT = join(ASSETS, 'text', 'kjv-old-testament-calib.txt');
const EVAL_TEXT = join(ASSETS, 'text', 'kjv-new-testament-eval.txt');
const EVAL_CTX = 256;

interface Args {
  models: string[] | null;
  methods: string[];
  kvFraction: number;
  budget: number;
  seqLen: number;
  batch: number;
  lrAttention: number;
  lrAll: number;
  kdWeight: number;
  evalChunks: number;
  throughputSteps: number;
}

function parse(argv: string[]): Args {
  const a: Args = { models: null, methods: ['transmla', 'mha2mla'], kvFraction: 0.125, budget: 0.025, seqLen: 256, batch: 4, lrAttention: 1e-3, lrAll: 1e-4, kdWeight: 0.5, evalChunks: 32, throughputSteps: 3 };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${f} needs a value`); return v; };
    if (f === '--models') a.models = val().split(',').filter(Boolean);
    else if (f === '--methods') a.methods = val().split(',').filter(Boolean);
    else if (f === '--kv-fraction') a.kvFraction = Number(val());
    else if (f === '--budget') a.budget = Number(val());
    else if (f === '--seqlen') a.seqLen = Number(val());
    else if (f === '--batch') a.batch = Number(val());
    else if (f === '--lr-attention') a.lrAttention = Number(val());
    else if (f === '--lr-all') a.lrAll = Number(val());
    else if (f === '--kd-weight') a.kdWeight = Number(val());
    else if (f === '--eval-chunks') a.evalChunks = Number(val());
    else if (f === '--throughput-steps') a.throughputSteps = Number(val());
    else throw new Error(`bench finetune: unknown option ${f}`);
  }
  if (!(a.budget > 0 && a.budget <= 0.05)) throw new Error('bench finetune: --budget must be in (0, 0.05] (at most 5 % of the pretraining tokens)');
  if (!(a.kvFraction > 0 && a.kvFraction <= 1)) throw new Error('bench finetune: --kv-fraction must be in (0, 1]');
  return a;
}

interface Score { ppl: number; kl: number; top1: number }

interface RunRow {
  model: string;
  method: string;
  stage: 'original' | 'converted' | 'fine-tuned';
  train: 'attention' | 'all' | null;
  distill: boolean | null;
  score: Score;
  tokens: number;
  steps: number;
  trainedParams: number | null;
  seconds: number | null;
  tokensPerSecond: number | null;
  gemmGflops: number | null;
  /** Converted rows: the MLA shape (per-layer widths for best+joint) and the cache it keeps. */
  shape?: object;
  kvBytesPerTokenAfter?: number;
  firstLoss: number | null;
  lastLoss: number | null;
}

function pretrainTokens(dir: string): number | null {
  const p = join(dir, 'training.json');
  if (!existsSync(p)) return null;
  const t = (JSON.parse(readFileSync(p, 'utf8')) as { tokens?: unknown }).tokens;
  return typeof t === 'number' && t > 0 ? t : null;
}

function scoreOf(r: FinetuneReport): Score {
  const e = r.evals.at(-1)!;
  return { ppl: e.ppl, kl: e.kl!, top1: e.top1! };
}

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const say = (s: string): void => { process.stderr.write(s + '\n'); };
  const modelsRoot = join(ASSETS, 'models');
  if (!existsSync(modelsRoot)) throw new Error(`bench finetune: ${modelsRoot} not found (../shared/assets beside the checkout)`);
  const all = readdirSync(modelsRoot).sort();
  const picked = (a.models ?? all).filter((m) => existsSync(join(modelsRoot, m, 'config.json')));
  const skipped = all.filter((m) => !picked.includes(m) || pretrainTokens(join(modelsRoot, m)) === null)
    .map((m) => ({ model: m, reason: pretrainTokens(join(modelsRoot, m)) === null ? 'no training.json stating its pretraining tokens (the budget is a share of them)' : 'not selected' }));
  const models = picked.filter((m) => pretrainTokens(join(modelsRoot, m)) !== null);
  const unknown = a.methods.filter((m) => m !== 'transmla' && m !== 'mha2mla' && m !== 'best+joint');
  if (unknown.length > 0) throw new Error(`bench finetune: unknown method(s) ${unknown.join(', ')} (transmla, mha2mla, best+joint)`);
  // best+joint reuses TransMLA's searched (d_R, M) as bench/methods.ts does, so TransMLA runs first.
  const methods = a.methods.includes('best+joint') && !a.methods.includes('transmla') ? ['transmla', ...a.methods] : [...a.methods].sort((x, y) => Number(y === 'transmla') - Number(x === 'transmla'));
  const work = mkdtempSync(join(tmpdir(), 'transmla-bench-finetune-'));
  const rows: RunRow[] = [];
  const throughput: object[] = [];
  const t0 = performance.now();
  const docsText = readDocuments(TRAIN_TEXT);
  // Other jobs on the machine change every speed measured here: record how busy it was.
  const loadBefore = loadavg();
  try {
    for (const name of models) {
      const dir = join(modelsRoot, name);
      const pre = pretrainTokens(dir)!;
      const orig = loadModel(dir);
      const tok = orig.tokenizer;
      if (!tok) throw new Error(`${dir} has no tokenizer`);
      const docs = await tokenizeDocuments(tok, docsText);
      const { ids, bos } = tokenizeForPerplexity(tok, readEvalText(EVAL_TEXT).text);
      const budgetTokens = Math.floor(a.budget * pre);
      const steps = Math.floor(budgetTokens / (a.batch * a.seqLen));
      if (steps < 1) throw new Error(`${name}: a budget of ${budgetTokens} tokens is less than one step of ${a.batch}×${a.seqLen}`);
      const tokens = steps * a.batch * a.seqLen;
      say(`${name}: pretrained on ${pre} tokens; fine-tuning budget ${tokens} tokens (${(100 * tokens / pre).toFixed(2)} %) = ${steps} steps × ${a.batch} rows × ${a.seqLen}`);

      // Throughput of the Llama (GQA/MHA) training path on the original model.
      const evalTokens = { ids, bos };
      const tp = await finetune({
        model: dir, out: null, text: TRAIN_TEXT, documents: docs, evalText: EVAL_TEXT, evalTokens, train: 'all', steps: a.throughputSteps,
        batch: a.batch, seqLen: a.seqLen, lr: a.lrAll, evalChunks: 1, evalCtx: EVAL_CTX, evalAtStart: false, progress: false,
      });
      throughput.push({ model: name, form: `original (${orig.config.numKvHeads === orig.config.numHeads ? 'MHA' : 'GQA'})`, train: 'all', ...tp.throughput });

      let transmlaShape: { ropeDim: number; freqFold: number } | null = null;
      for (const method of methods) {
        const conv = join(work, `${name}-${method}`);
        say(`${name}: converting with ${method} at ${a.kvFraction} of the KV cache…`);
        const tc = performance.now();
        const common = { model: dir, out: conv, overwrite: true, kvFraction: a.kvFraction, calib: TRAIN_TEXT, evalCtx: EVAL_CTX, evalChunks: 2 };
        // best+joint: nope-refit + output-aware latent + per-layer (d_R, M, r) at the same total cache
        // (bench/methods.ts), exact variant: the stock folder pads per-layer widths to the largest.
        const rep: ConversionResult | Awaited<ReturnType<typeof convertMha2mla>> = method === 'transmla'
          ? await convertModel({ ...common, freqFold: 'auto', searchChunks: 8 })
          : method === 'best+joint'
            ? await convertModel({ ...common, ...transmlaShape!, nopeRefit: true, latent: 'output-aware', rankAlloc: 'joint', variant: 'exact' })
            : await convertMha2mla(common);
        const params: ConversionResult['parameters'] | null = method === 'mha2mla' ? null : (rep as ConversionResult).parameters;
        if (method === 'transmla') transmlaShape = { ropeDim: params!.qkRopeHeadDim, freqFold: params!.freqFold };
        const shape = params ? { kvLoraRank: params.kvLoraRank, qkRopeHeadDim: params.qkRopeHeadDim, freqFold: params.freqFold, ...(params.kvLoraRanks ? { kvLoraRanks: params.kvLoraRanks, qkRopeHeadDims: params.qkRopeHeadDims, freqFolds: params.freqFolds } : {}) } : null;
        const convSecs = (performance.now() - tc) / 1000;
        const converted = loadModel(conv);
        const f = await fidelity(orig.model, [converted.model], ids, bos, { ctx: EVAL_CTX, maxChunks: a.evalChunks });
        const base = { model: name, method, tokens: 0, steps: 0, trainedParams: null, tokensPerSecond: null, gemmGflops: null, firstLoss: null, lastLoss: null };
        if (rows.every((r) => r.model !== name || r.stage !== 'original')) {
          rows.push({ ...base, method: '-', stage: 'original', train: null, distill: null, score: { ppl: f.reference.ppl, kl: 0, top1: 1 }, seconds: null });
        }
        const m0 = f.models[0]!;
        rows.push({ ...base, stage: 'converted', train: null, distill: null, score: { ppl: m0.ppl, kl: m0.kl, top1: m0.top1 }, seconds: convSecs, ...(shape ? { shape } : {}), kvBytesPerTokenAfter: rep.kvCache.bytesPerTokenAfter });
        say(`  ${method}: KV ${rep.kvCache.elementsPerTokenPerLayerBefore} → ${rep.kvCache.elementsPerTokenPerLayerAfter} values/token/layer; ppl ${f.reference.ppl.toFixed(2)} → ${m0.ppl.toFixed(2)}, KL ${m0.kl.toFixed(4)} (${convSecs.toFixed(0)} s)`);
        for (const train of ['attention', 'all'] as const) {
          for (const distill of [false, true]) {
            const r = await finetune({
              model: conv, out: null, text: TRAIN_TEXT, documents: docs, evalText: EVAL_TEXT, evalTokens, teacher: dir,
              kdWeight: distill ? a.kdWeight : 0, train, steps, batch: a.batch, seqLen: a.seqLen, lr: train === 'all' ? a.lrAll : a.lrAttention,
              evalChunks: a.evalChunks, evalCtx: EVAL_CTX, evalAtStart: false, progress: false,
            });
            const s = scoreOf(r), t = r.throughput;
            rows.push({
              ...base, stage: 'fine-tuned', train, distill, score: s, tokens: t.tokens, steps: r.step, trainedParams: r.params.trained,
              seconds: t.stepSeconds, tokensPerSecond: t.tokensPerSecond, gemmGflops: t.gemmGflops,
              firstLoss: r.history[0]!.loss, lastLoss: r.history.at(-1)!.loss,
            });
            throughput.push({ model: name, form: `${method} MLA`, train, distill, ...t });
            say(`  ${method} ${train}${distill ? ' +KD' : ''}: ppl ${s.ppl.toFixed(2)}  KL ${s.kl.toFixed(4)}  top-1 ${(100 * s.top1).toFixed(1)} %  (${t.tokens} tokens, ${t.stepSeconds.toFixed(0)} s, ${t.tokensPerSecond.toFixed(0)} tok/s, ${t.gemmGflops.toFixed(1)} GFLOP/s)`);
          }
        }
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  say('');
  say(table(rows));
  return {
    bench: 'finetune',
    date: new Date().toISOString(),
    machine: {
      cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memoryBytes: totalmem(), kernels: kernels().backend,
      ompNumThreads: process.env.OMP_NUM_THREADS ?? 'default', loadAverage1mBefore: loadBefore[0], loadAverage1mAfter: loadavg()[0],
    },
    settings: { ...a, trainText: TRAIN_TEXT, evalText: EVAL_TEXT, evalCtx: EVAL_CTX, evalConvention: 'GPTQ/TransMLA: text tokenized once, non-overlapping 256-token chunks, first --eval-chunks of them' },
    skipped,
    rows,
    throughput,
    wallSeconds: (performance.now() - t0) / 1000,
  };
}

function table(rows: RunRow[]): string {
  const head = '| model | method | stage | trained | KD | eval ppl | KL | top-1 | tokens | tok/s | GFLOP/s |\n|---|---|---|---|---|---|---|---|---|---|---|';
  const lines = rows.map((r) => `| ${r.model} | ${r.method} | ${r.stage} | ${r.train ?? '-'} | ${r.distill === null ? '-' : r.distill ? 'yes' : 'no'} | ` +
    `${r.score.ppl.toFixed(2)} | ${r.score.kl.toFixed(4)} | ${(100 * r.score.top1).toFixed(1)} % | ${r.tokens || '-'} | ${r.tokensPerSecond?.toFixed(0) ?? '-'} | ${r.gemmGflops?.toFixed(1) ?? '-'} |`);
  return [head, ...lines].join('\n');
}
