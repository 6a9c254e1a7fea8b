// `npm run bench -- qwen3-mha2mla [--model DIR] [--fractions 0.5,0.3125,0.125] [--calib-samples 128]
//   [--calib-seqlen 256] [--eval-ctx 256] [--eval-chunks 32]`
//
// MHA2MLA on a Qwen3 source (default ../shared/assets/models/kjv-qwen3; src/convert/qk-norm-mha2mla.ts,
// docs/methods.md#qk-norm): S_2-norm pairs + activation-aware SVD_joint, the per-head norm applied
// to the rebuilt key before RoPE, its normaliser from the rebuilt key or cached from the true key
// (at equal cache values per token), scored against the original on the same tokens as
// `npm run bench -- qwen3` (the first --eval-chunks chunks of kjv-new-testament-eval.txt;
// calibration kjv-old-testament-calib.txt, same sample settings). Records os.loadavg().
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qkMha2mlaStudy } from '../src/convert/qk-norm-mha2mla.js';

const ASSETS = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'shared', 'assets');

export async function run(argv: string[]): Promise<object> {
  const a = { model: join(ASSETS, 'models', 'kjv-qwen3'), fractions: [0.5, 0.3125, 0.125], calibSamples: 128, calibSeqLen: 256, evalCtx: 256, evalChunks: 32 };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!, v = argv[++i];
    if (v === undefined) throw new Error(`bench qwen3-mha2mla: ${f} needs a value`);
    const int = (): number => { const n = Number(v); if (!Number.isInteger(n) || n < 1) throw new Error(`bench qwen3-mha2mla: ${f} must be a positive integer`); return n; };
    if (f === '--model') a.model = resolve(v);
    else if (f === '--fractions') a.fractions = v.split(',').map(Number);
    else if (f === '--calib-samples') a.calibSamples = int();
    else if (f === '--calib-seqlen') a.calibSeqLen = int();
    else if (f === '--eval-ctx') a.evalCtx = int();
    else if (f === '--eval-chunks') a.evalChunks = int();
    else throw new Error(`bench qwen3-mha2mla: unknown option ${f}`);
  }
  if (a.fractions.some((x) => !(x > 0 && x <= 1))) throw new Error('bench qwen3-mha2mla: --fractions must be in (0, 1]');
  const load0 = loadavg(), t0 = performance.now();
  const r = await qkMha2mlaStudy({
    model: a.model, calib: join(ASSETS, 'text', 'kjv-old-testament-calib.txt'), calibSamples: a.calibSamples, calibSeqLen: a.calibSeqLen,
    evalText: join(ASSETS, 'text', 'kjv-new-testament-eval.txt'), evalCtx: a.evalCtx, evalChunks: a.evalChunks, fractions: a.fractions,
    log: (l) => process.stderr.write(`${l}\n`),
  });
  const table = ['| KV kept | key normaliser | r pairs / KV head + R (cached values) | ppl (vs original) | KL | top-1 |', '|---|---|---|---|---|---|'];
  for (const c of r.cells) {
    table.push(`| ${(100 * c.fraction).toFixed(2)} % | ${c.keyNorm} | ${c.ropePairs} + ${c.kvRank} (${c.cacheValues}) | ${c.score.ppl.toFixed(2)} (${c.score.ppl >= r.original.ppl ? '+' : ''}${(100 * (c.score.ppl / r.original.ppl - 1)).toFixed(2)} %) | ${c.score.kl.toFixed(4)} | ${(100 * c.score.top1).toFixed(2)} % |`);
  }
  process.stderr.write(`original ppl ${r.original.ppl.toFixed(2)} (${r.predictions} predictions)\n${table.join('\n')}\n`);
  return {
    bench: 'qwen3-mha2mla', date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version },
    loadavg: { start: load0, end: loadavg() }, seconds: (performance.now() - t0) / 1000,
    settings: { ...a, method: 'MHA2MLA S_2-norm (exact mean pair norms of the pre-norm q/k) + SVD_joint activation-aware; norm then RoPE' },
    original: r.original, predictions: r.predictions, table, cells: r.cells,
  };
}
