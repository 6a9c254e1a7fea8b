// `npm run bench -- methods [--models a,b] [--fractions 0.5,0.3125,0.125] [--methods m1,m2]
//   [--calib-samples 64] [--eval-chunks 16] [--eval-ctx 256]`
//
// Faithful TransMLA against the aware methods (docs/methods.md#aware) at equal KV bytes and equal
// cache shape: per model and KV fraction, TransMLA first (d_R and FreqFold searched by the proxy,
// as the default `convert`), then every other method with that run's (d_R, M), so the rows differ
// only in how the RoPE basis, the NoPE keys and the latent are chosen. Each conversion is its own
// `transmla convert --no-save --json` process. Held-out in-domain and WikiText-2 perplexity, KL and
// top-1 against the original, conversion seconds (wall and CPU), and the load average around each
// run. The 'best' method runs the strict stock variant too, so its stock/exact gap is measured.
// Families that refuse conversion are recorded with their reason.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConvertReport, StockExportReport } from '../src/schema/transmla-json.js';
import { domainOf, hfFolderOf } from './transmla.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');
const WIKITEXT = join(ASSETS, 'text', 'wikitext-2-raw', 'wiki.test.raw');
const DEFAULT_MODELS = ['kjv-gqa', 'kjv-mha', 'kjv-qwen3', 'kjv-mixtral', 'TinyStories-656K', 'stories260K', 'babyllama-tok105'];

/** The methods, as `convert` flags on top of the shared ones. */
export const METHODS: Record<string, { flags: string[]; stock?: boolean; what: string }> = {
  transmla: { flags: [], what: 'faithful TransMLA: RoRoPE + FreqFold + BKV-PCA (the reference)' },
  'query-aware-rope': { flags: ['--rope-basis', 'query-aware'], what: 'RoPE basis by balanced truncation of key and absorbed-query moments; BKV-PCA' },
  'output-aware-latent': { flags: ['--latent', 'output-aware'], what: 'RoRoPE; joint latent in the q·k / W_o·v metric with the kv_b least-squares refit' },
  'nope-refit': { flags: ['--nope-refit'], what: 'RoRoPE; NoPE keys scaled by E_p[cos ωΔ] of the source attention; BKV-PCA' },
  'nope+latent+seq': { flags: ['--nope-refit', '--latent', 'output-aware', '--calib-order', 'sequential'], what: 'nope-refit + output-aware latent, sequential calibration with the refit against the source model' },
  all: { flags: ['--rope-basis', 'query-aware', '--nope-refit', '--latent', 'output-aware'], what: 'query-aware RoPE basis + nope-refit + output-aware latent, faithful order' },
  best: { flags: ['--nope-refit', '--latent', 'output-aware'], stock: true, what: 'the best combination measured: nope-refit + output-aware latent, faithful calibration order; also the strict stock export' },
  'transmla+alloc': { flags: ['--rank-alloc', 'greedy'], what: 'faithful TransMLA with per-layer ranks (same Σ r_l), allocated by each BKV-PCA component\'s output-metric gain' },
  'transmla+joint': { flags: ['--rank-alloc', 'joint'], what: 'faithful TransMLA with per-layer (d_R, M, r), same Σ (r_l + d_R,l), each candidate measured on calibration samples' },
  'best+joint': { flags: ['--nope-refit', '--latent', 'output-aware', '--rank-alloc', 'joint'], stock: true, what: 'best with per-layer (d_R, M, r), same Σ (r_l + d_R,l), each candidate measured with best\'s own step; also the strict stock export (padded to the largest widths)' },
  'best+alloc': { flags: ['--nope-refit', '--latent', 'output-aware', '--rank-alloc', 'greedy'], stock: true, what: 'best with per-layer ranks (same Σ r_l) allocated by the output-aware eigenvalues; also the strict stock export (padded to r_max)' },
};

interface Args {
  models: string[];
  fractions: number[];
  methods: string[];
  calibSamples: number;
  evalChunks: number;
  evalCtx: number;
  /** Rewritten after every row, so a run cut short keeps what it measured. */
  partial: string | null;
}

function parse(argv: string[]): Args {
  const a: Args = { models: DEFAULT_MODELS, fractions: [0.5, 0.3125, 0.125], methods: Object.keys(METHODS), calibSamples: 64, evalChunks: 16, evalCtx: 256, partial: null };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`bench methods: ${f} needs a value`); return v; };
    if (f === '--models') a.models = val().split(',').filter(Boolean);
    else if (f === '--fractions') a.fractions = val().split(',').map(Number);
    else if (f === '--methods') a.methods = val().split(',').filter(Boolean);
    else if (f === '--calib-samples') a.calibSamples = Number(val());
    else if (f === '--eval-chunks') a.evalChunks = Number(val());
    else if (f === '--eval-ctx') a.evalCtx = Number(val());
    else if (f === '--partial') a.partial = val();
    else throw new Error(`bench methods: unknown option ${f}`);
  }
  if (a.fractions.some((x) => !(x > 0 && x <= 1))) throw new Error('bench methods: --fractions must be in (0, 1]');
  for (const m of a.methods) if (!METHODS[m]) throw new Error(`bench methods: unknown method ${m}; known: ${Object.keys(METHODS).join(', ')}`);
  if (!a.methods.includes('transmla')) a.methods.unshift('transmla');
  return a;
}

interface Run { conversion: ConvertReport; stock: StockExportReport | null }

function convert(args: string[]): Promise<{ out: Run | null; error: string | null; wall: number }> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'cli', 'main.ts'), 'convert', ...args, '--json'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    child.on('error', rej);
    child.on('close', (code) => {
      const wall = (performance.now() - t0) / 1000;
      if (code !== 0) return res({ out: null, error: err.trim().split('\n').filter((l) => !/\d+%/.test(l)).slice(-1)[0] ?? `exit ${code}`, wall });
      try {
        res({ out: JSON.parse(out) as Run, error: null, wall });
      } catch (e) {
        rej(new Error(`transmla convert printed no JSON report: ${(e as Error).message}`));
      }
    });
  });
}

const pct = (x: number): string => `${(100 * x).toFixed(2)} %`;
const f2 = (x: number): string => (x >= 1000 ? x.toFixed(0) : x.toFixed(2));
const load = (): number[] => loadavg().map((x) => Number(x.toFixed(2)));

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const modelRoot = join(ASSETS, 'models');
  const work = mkdtempSync(join(tmpdir(), 'transmla-bench-methods-'));
  const rows: Record<string, unknown>[] = [], skipped: { model: string; reason: string }[] = [];
  const table = [
    '| model | KV | r + d_R, M | method | in-domain ppl (Δ vs original) | KL / top-1 | WikiText-2 ppl | KL / top-1 | share of TransMLA\'s Δppl removed | convert s (CPU s) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  const loadStart = load();
  try {
    for (const name of a.models) {
      if (!statSync(join(modelRoot, name), { throwIfNoEntry: false })?.isDirectory()) { skipped.push({ model: name, reason: 'not in ../shared/assets/models' }); continue; }
      const dir = await hfFolderOf(join(modelRoot, name), work);
      const { calib, inDomain } = domainOf(name);
      for (const fraction of a.fractions) {
        let shape: string[] | null = null, refIncrease = 0, refused = false;
        for (const method of a.methods) {
          const m = METHODS[method]!;
          const common = [dir, '--no-save', '--kv-fraction', String(fraction), '--calib', calib, '--calib-samples', String(a.calibSamples),
            '--eval-text', `${inDomain},lines:${WIKITEXT}`, '--eval-ctx', String(a.evalCtx), '--eval-chunks', String(a.evalChunks), '--search', 'proxy'];
          const args = [...common, ...(shape ?? []), ...m.flags, ...(m.stock ? [] : ['--variant', 'exact'])];
          process.stderr.write(`bench methods: ${name} at ${pct(fraction)}, ${method} (load ${load().join(' ')})\n`);
          const before = load();
          let r = await convert(args), stockRefused: string | null = null;
          // A per-layer allocation whose padded stock folder would cache no less than the source is
          // refused by `convert` (stock variant); measure the exact variant alone and record why.
          if (!r.out && m.stock && /would save no cache/.test(r.error ?? '')) {
            stockRefused = r.error;
            process.stderr.write(`bench methods: ${name} ${method}: stock export refused, exact variant only (${r.error})\n`);
            r = await convert([...args, '--variant', 'exact']);
          }
          if (!r.out) {
            if (method === 'transmla') { skipped.push({ model: name, reason: r.error ?? 'failed' }); refused = true; break; }
            throw new Error(`bench methods: ${name} ${method}: ${r.error}`);
          }
          const c = r.out.conversion, p = c.parameters;
          const [ind, wiki] = c.evaluations;
          if (method === 'transmla') {
            shape = ['--rope-dim', String(p.qkRopeHeadDim), '--freqfold', String(p.freqFold)];
            refIncrease = ind!.mla.ppl - ind!.original.ppl;
          }
          const removed = refIncrease > 0 ? 1 - (ind!.mla.ppl - ind!.original.ppl) / refIncrease : null;
          const stockGap = r.out.stock?.evaluations.map((e) => ({ text: e.text, exactPpl: e.exact.ppl, stockPpl: e.stock.ppl, gapPercent: e.pplGapPercent, kl: e.stock.kl, top1: e.stock.top1 })) ?? null;
          const row = {
            model: name, kvFraction: p.kvFraction, method, flags: m.flags, description: m.what,
            kvLoraRank: p.kvLoraRank, ...(p.kvLoraRanks ? { kvLoraRanks: p.kvLoraRanks, qkRopeHeadDims: p.qkRopeHeadDims, freqFolds: p.freqFolds, rankAlloc: p.rankAlloc } : {}), qkRopeHeadDim: p.qkRopeHeadDim, freqFold: p.freqFold, calibOrder: p.calibOrder,
            kvBytesPerToken: { before: c.kvCache.bytesPerTokenBefore, after: c.kvCache.bytesPerTokenAfter, dtype: c.kvCache.dtype },
            inDomain: { original: ind!.original, partialRope: ind!.partialRope, mla: ind!.mla, chunks: ind!.chunks, ctx: ind!.ctx },
            wikitext: { original: wiki!.original, partialRope: wiki!.partialRope, mla: wiki!.mla, chunks: wiki!.chunks, ctx: wiki!.ctx },
            shareOfTransmlaIncreaseRemoved: removed,
            stockGap, ...(stockRefused ? { stockRefused } : {}),
            convertSeconds: c.seconds.convertTotal - c.seconds.evaluation, convertCpuSeconds: c.seconds.convertCpu, seconds: c.seconds,
            processWallSeconds: r.wall, loadavgBefore: before, loadavgAfter: load(),
            layers: c.layers.map((l) => ({ ropeEnergy: l.ropeEnergy, kvEnergy: l.kvEnergy, alpha: l.alpha, refitResidual: l.refitResidual, nopeRho: l.nopeRho })),
          };
          rows.push(row);
          table.push(`| ${name} | ${pct(p.kvFraction)} | ${p.qkRopeHeadDims ? `(${p.kvLoraRanks!.map((x, l) => `${x}+${p.qkRopeHeadDims![l]}`).join(' ')}), M (${p.freqFolds!.join(' ')})` : `${p.kvLoraRanks ? `(${p.kvLoraRanks.join(' ')})` : p.kvLoraRank} + ${p.qkRopeHeadDim}, ${p.freqFold}`} | ${method} | ` +
            `${f2(ind!.mla.ppl)} (${ind!.mla.ppl >= ind!.original.ppl ? '+' : ''}${pct(ind!.mla.ppl / ind!.original.ppl - 1)}) | ${ind!.mla.kl.toFixed(3)} / ${pct(ind!.mla.top1)} | ` +
            `${f2(wiki!.mla.ppl)} | ${wiki!.mla.kl.toFixed(3)} / ${pct(wiki!.mla.top1)} | ${removed === null ? '—' : pct(removed)} | ` +
            `${row.convertSeconds.toFixed(1)} (${c.seconds.convertCpu.toFixed(1)}) |`);
          process.stderr.write(`${table[table.length - 1]}\n`);
          if (a.partial) writeFileSync(a.partial, `${JSON.stringify({ bench: 'methods', partial: true, loadavgStart: loadStart, settings: a, skipped, table, rows }, null, 2)}\n`);
        }
        if (refused) break;
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  process.stderr.write(`\n${table.join('\n')}\n`);
  return {
    bench: 'methods',
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version },
    loadavg: { start: loadStart, end: load() },
    settings: { ...a, search: 'proxy (TransMLA run); the others reuse its (d_R, M)', wikitext: `${WIKITEXT}, lines joined with "\\n\\n"`, methods: Object.fromEntries(a.methods.map((m) => [m, METHODS[m]])) },
    skipped, table, rows,
  };
}
