// `npm run bench -- qwen3 [--model DIR] [--calib-samples 128] [--calib-seqlen 256] [--eval-ctx 256]
//   [--eval-chunks 32] [--shapes 0.5:64+64:2,0.3125:16+64:2,0.125:16+16:4] [--key-scales 8,64]`
//
// TransMLA on a Qwen3 source (default ../shared/assets/models/kjv-qwen3), every handling of its
// per-head q/k RMSNorm side by side on the same tokens (src/convert/qk-norm-study.ts;
// docs/methods.md#qk-norm): original, partial RoPE and MLA in the exact structure (κ = 1/rms per KV
// head cached), the same with unweighted statistics, the naive form (κ ≡ 1), the linear form
// (calibrated constants) and the stock DeepSeek-V3 model `convert` writes — at each KV fraction,
// with the shape (r + d_R, FreqFold) given, not searched (defaults: kjv-gqa's searched shapes at
// the same fractions, docs/results.md). Then, at the first fraction's shape, the same source with
// every k_proj multiplied by each --key-scales value: Qwen3 computes the same function, the naive
// form does not. Evaluation: the first --eval-chunks chunks of kjv-new-testament-eval.txt;
// calibration: kjv-old-testament-calib.txt. The JSON records os.loadavg() at start and end.
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qkNormStudy, type QkStudyResult } from '../src/convert/qk-norm-study.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');

interface Shape { fraction: number; kvLoraRank: number; ropeDim: number; freqFold: number }

interface Args {
  model: string;
  calibSamples: number;
  calibSeqLen: number;
  evalCtx: number;
  evalChunks: number;
  shapes: Shape[];
  keyScales: number[];
}

function parseShapes(v: string): Shape[] {
  return v.split(',').map((s) => {
    const m = /^([0-9.]+):(\d+)\+(\d+):(\d+)$/.exec(s);
    if (!m) throw new Error(`bench qwen3: --shapes entry "${s}" is not FRACTION:R+D_R:M`);
    return { fraction: Number(m[1]), kvLoraRank: Number(m[2]), ropeDim: Number(m[3]), freqFold: Number(m[4]) };
  });
}

function parse(argv: string[]): Args {
  const a: Args = {
    model: join(ASSETS, 'models', 'kjv-qwen3'), calibSamples: 128, calibSeqLen: 256, evalCtx: 256, evalChunks: 32,
    shapes: parseShapes('0.3125:16+64:2,0.5:64+64:2,0.125:16+16:4'), keyScales: [8, 64],
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`bench qwen3: ${f} needs a value`); return v; };
    const posInt = (): number => { const v = Number(val()); if (!Number.isInteger(v) || v < 1) throw new Error(`bench qwen3: ${f} must be a positive integer`); return v; };
    if (f === '--model') a.model = resolve(val());
    else if (f === '--calib-samples') a.calibSamples = posInt();
    else if (f === '--calib-seqlen') a.calibSeqLen = posInt();
    else if (f === '--eval-ctx') a.evalCtx = posInt();
    else if (f === '--eval-chunks') a.evalChunks = posInt();
    else if (f === '--shapes') a.shapes = parseShapes(val());
    else if (f === '--key-scales') a.keyScales = val().split(',').filter(Boolean).map(Number);
    else throw new Error(`bench qwen3: unknown option ${f}`);
  }
  return a;
}

const f2 = (x: number): string => (x >= 1000 ? x.toFixed(0) : x.toFixed(2));
const pct = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(2)} %`;

function rows(r: QkStudyResult): string[] {
  const base = r.stages[0]!.score.ppl;
  return r.stages.map((s) => `| ${s.name} | ${f2(s.score.ppl)} (${pct(s.score.ppl / base - 1)}) | ${s.score.kl.toFixed(4)} | ${(100 * s.score.top1).toFixed(2)} % |`);
}

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const load0 = loadavg();
  const t0 = performance.now();
  const common = {
    model: a.model, calib: join(ASSETS, 'text', 'kjv-old-testament-calib.txt'), calibSamples: a.calibSamples, calibSeqLen: a.calibSeqLen,
    evalText: join(ASSETS, 'text', 'kjv-new-testament-eval.txt'), evalCtx: a.evalCtx, evalChunks: a.evalChunks,
    log: (l: string) => process.stderr.write(`${l}\n`),
  };
  const table: string[] = [];
  const results: Record<string, unknown>[] = [];
  const runs: { shape: Shape; keyScale: number }[] = [
    ...a.shapes.map((shape) => ({ shape, keyScale: 1 })),
    ...a.keyScales.map((keyScale) => ({ shape: a.shapes[0]!, keyScale })),
  ];
  for (const { shape, keyScale } of runs) {
    const label = `${(100 * shape.fraction).toFixed(2)} % KV (r ${shape.kvLoraRank} + d_R ${shape.ropeDim}, FreqFold ${shape.freqFold})${keyScale === 1 ? '' : `, every k_proj × ${keyScale}`}`;
    process.stderr.write(`bench qwen3: ${label}\n`);
    const t = performance.now();
    const r = await qkNormStudy({ ...common, kvLoraRank: shape.kvLoraRank, ropeDim: shape.ropeDim, freqFold: shape.freqFold, keyScale });
    const seconds = (performance.now() - t) / 1000;
    table.push(`\n${label}: ${r.predictions} predictions\n`, '| model | ppl (vs original) | KL | top-1 |', '|---|---|---|---|', ...rows(r),
      `stock vs exact-structure MLA: ${pct(r.stockVsExact.pplGapPercent / 100)}, KL ${r.stockVsExact.kl.toFixed(4)}, top-1 ${(100 * r.stockVsExact.top1).toFixed(2)} %`);
    process.stderr.write(`${table.slice(-(r.stages.length + 4)).join('\n')}\n`);
    results.push({ ...shape, keyScale, seconds, ...r });
  }
  return {
    bench: 'qwen3',
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version },
    loadavg: { start: load0, end: loadavg() },
    seconds: (performance.now() - t0) / 1000,
    settings: {
      ...a,
      calibText: 'kjv-old-testament-calib.txt (the last 10 % of its documents never sampled)',
      evalText: 'kjv-new-testament-eval.txt, GPTQ/TransMLA convention, first eval-chunks chunks',
      order: 'faithful (RoRoPE from the original model, BKV-PCA from the partial-RoPE model), balance_kv_ratio 1, shapes given',
    },
    table,
    results,
  };
}
