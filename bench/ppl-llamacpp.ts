// `npm run bench -- ppl-llamacpp [--model DIR] [--text FILE] [--ctx 256] [--max-chunks 32] [--outtype f32|bf16] [--threads 2]`
// Perplexity of one model by our engine and by llama.cpp (node-llama-cpp's prebuilt CPU binary, f32
// KV cache, no flash attention) on the same GGUF, written by our exporter from the folder, and on
// the same tokens: the GPTQ/TransMLA convention of `transmla ppl` (docs/methods.md#perplexity) —
// one tokenization with one BOS, non-overlapping ctx-token chunks each from an empty cache, ctx − 1
// predictions per chunk. Also the largest |Δ log-prob| over every position and vocabulary entry.
// Our engine's perplexity is computed from the folder (its checkpoint dtype) and from the GGUF.
// Default model: kjv-mixtral. The load average is recorded before and after (a shared machine).
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ControlledEvaluateInputItem, Token } from 'node-llama-cpp';
import { loadModel } from '../src/arch/load.js';
import { perplexity, readEvalText, tokenizeEnough } from '../src/eval/perplexity.js';
import { exportFolderGguf } from '../src/export/gguf.js';
import type { FloatDType } from '../src/kernels/types.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = resolve(REPO, '..', 'shared', 'assets');

interface Args { model: string; text: string; ctx: number; maxChunks: number; outtype: FloatDType; threads: number }

function parse(argv: string[]): Args {
  const a: Args = { model: join(ASSETS, 'models', 'kjv-mixtral'), text: join(ASSETS, 'text', 'kjv-new-testament-eval.txt'), ctx: 256, maxChunks: 32, outtype: 'f32', threads: 2 };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${f} needs a value`); return v; };
    if (f === '--model') a.model = resolve(val());
    else if (f === '--text') a.text = resolve(val());
    else if (f === '--ctx') a.ctx = Number(val());
    else if (f === '--max-chunks') a.maxChunks = Number(val());
    else if (f === '--outtype') a.outtype = val() as FloatDType;
    else if (f === '--threads') a.threads = Number(val());
    else throw new Error(`bench ppl-llamacpp: unknown option ${f}`);
  }
  if (!Number.isInteger(a.ctx) || a.ctx < 2 || !Number.isInteger(a.maxChunks) || a.maxChunks < 1 || !(a.threads >= 1)) throw new Error('bench ppl-llamacpp: --ctx ≥ 2, --max-chunks ≥ 1 and --threads ≥ 1 must be integers');
  if (!['f32', 'f16', 'bf16'].includes(a.outtype)) throw new Error(`bench ppl-llamacpp: --outtype must be f32, f16 or bf16, got ${a.outtype}`);
  return a;
}

function logSoftmax(x: ArrayLike<number>, out: Float64Array): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < x.length; i++) mx = Math.max(mx, x[i]!);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i]! - mx);
  const l = Math.log(s) + mx;
  for (let i = 0; i < x.length; i++) out[i] = x[i]! - l;
  return out;
}

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const load0 = loadavg();
  const log = (s: string): void => { process.stderr.write(`${s}\n`); };
  const folder = loadModel(a.model);
  if (!folder.tokenizer) throw new Error(`${a.model} has no tokenizer`);
  const { ids, bos } = await tokenizeEnough(folder.tokenizer, readEvalText(a.text).text, a.ctx * a.maxChunks);
  const chunks = Math.min(a.maxChunks, Math.floor(ids.length / a.ctx));
  const dir = mkdtempSync(join(tmpdir(), 'transmla-ppl-llamacpp-'));
  try {
    const gguf = join(dir, 'model.gguf');
    exportFolderGguf(a.model, gguf, a.outtype);
    const t0 = performance.now();
    const ours = await perplexity(folder.model, ids, bos, { ctx: a.ctx, maxChunks: chunks });
    const oursSeconds = (performance.now() - t0) / 1000;
    // Our engine does not read deepseek2 GGUFs (MLA folders export to them): it scores the folder,
    // whose weights the GGUF holds exactly when outtype is f32 or the folder's own dtype.
    const ownGguf = folder.config.family !== 'deepseek';
    const viaGguf = ownGguf ? loadModel(gguf) : folder;
    const oursGguf = ownGguf ? await perplexity(viaGguf.model, ids, bos, { ctx: a.ctx, maxChunks: chunks }) : ours;
    log(`transmla: ppl ${ours.ppl.toFixed(4)} (folder), ${oursGguf.ppl.toFixed(4)} (GGUF, ${a.outtype})`);

    // llama.cpp on the GGUF, every chunk from an empty context; compared position by position
    // with our engine on the GGUF (the same weights).
    const lib = await import('node-llama-cpp');
    const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
    const V = folder.config.vocabSize;
    let nll = 0, worst = 0;
    const t1 = performance.now();
    const lpCpp = new Float64Array(V), lpOurs = new Float64Array(V), row = new Float64Array(V);
    try {
      for (let c = 0; c < chunks; c++) {
        const chunk = ids.slice(c * a.ctx, (c + 1) * a.ctx);
        const ctx = await model.createContext({
          contextSize: a.ctx + 32, batchSize: a.ctx, threads: a.threads,
          flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
        });
        const res = await ctx.getSequence().controlledEvaluate(chunk.map((t): ControlledEvaluateInputItem => [t as Token, { generateNext: { logits: true } }]));
        await ctx.dispose();
        const m = viaGguf.model, logits = m.forward(chunk, m.newCache(), { logits: 'all' });
        for (let i = 0; i + 1 < a.ctx; i++) {
          const got = res[i]?.next.logits;
          if (!got || got.size !== V) throw new Error(`llama.cpp returned ${got?.size ?? 0} logits at position ${i}, expected ${V}`);
          row.fill(0);
          for (const [tok, v] of got) row[tok] = v;
          logSoftmax(row, lpCpp);
          logSoftmax(logits.subarray(i * V, (i + 1) * V), lpOurs);
          nll -= lpCpp[chunk[i + 1]!]!;
          for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(lpCpp[v]! - lpOurs[v]!));
        }
        log(`  chunk ${c + 1}/${chunks}: max |Δ log-prob| so far ${worst.toExponential(2)}`);
      }
    } finally {
      await model.dispose();
      await llama.dispose();
    }
    const predictions = chunks * (a.ctx - 1);
    const cppPpl = Math.exp(nll / predictions);
    log(`llama.cpp: ppl ${cppPpl.toFixed(4)}; relative difference to ours on the GGUF ${(Math.abs(cppPpl - oursGguf.ppl) / oursGguf.ppl).toExponential(2)}`);
    return {
      model: a.model, text: a.text, ctx: a.ctx, chunks, predictions, bos, ggufOuttype: a.outtype, convention: ours.convention,
      transmla: { ppl: ours.ppl, nll: ours.nll, seconds: oursSeconds, weights: `${a.model} (${folder.model.weightDtype})` },
      transmlaGguf: { ppl: oursGguf.ppl, nll: oursGguf.nll, scored: ownGguf ? 'the GGUF' : 'the folder (our engine does not read deepseek2 GGUFs)' },
      llamacpp: { ppl: cppPpl, nll: nll / predictions, seconds: (performance.now() - t1) / 1000, threads: a.threads, kvCache: 'f32', flashAttention: false },
      relativePplDifference: Math.abs(cppPpl - oursGguf.ppl) / oursGguf.ppl,
      maxAbsLogProbDifference: worst,
      loadAverage: { before: load0, after: loadavg() },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
