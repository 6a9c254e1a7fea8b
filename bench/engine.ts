// `npm run bench -- engine [--model DIR] [--decode-tokens 64] [--contexts 128,1024,4096] [--reps 3] [--threads 2] [--no-llamacpp]`
// A readable summary goes to stderr; the returned object is the JSON result bench/main.ts saves.
//
// Measures the reference engine on one model (default: the larger shared one, kjv-gqa):
//  - sgemm (f32 and bf16-weight NT matmul, 2048×1024×1024) as the machine's GEMM figure;
//  - prefill tokens/s and achieved GFLOP/s (T = 512 and 2048; last-token logits, and all logits
//    as perplexity needs), compared with the sgemm figure;
//  - decode tokens/s (greedy, one token per forward, logits included) after 128, 1K and 4K
//    cached tokens;
//  - the same decode in llama.cpp (node-llama-cpp, prebuilt CPU binary, same thread count,
//    default f16 KV cache) on a GGUF of the same weights in the same dtype, written by our exporter.
// Both engines use --threads (default 2) threads; on a shared, busy machine run with --threads 1,
// where OpenMP barriers do not wait on descheduled threads. Our native kernels shrink their team
// while other processes occupy cores (TRANSMLA_ADAPTIVE_THREADS=0 keeps it fixed); the team size
// seen after each timed run is recorded in the JSON (threadPolicy).
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { exportLlamaGguf } from '../src/export/gguf-llama.js';
import { readConfig } from '../src/arch/registry.js';
import { loadModel } from '../src/arch/load.js';
import type { Decoder } from '../src/models/decoder.js';
import { kernels } from '../src/kernels/index.js';
import { loadNativeAddon } from '../src/kernels/native.js';
import type { FloatDType } from '../src/kernels/types.js';
import type { Token } from 'node-llama-cpp';
import { describeModel } from '../src/arch/describe.js';
import { argmax } from '../src/models/sample.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');

interface Args { model: string; decodeTokens: number; contexts: number[]; llamacpp: boolean; reps: number; threads: number }

function parse(argv: string[]): Args {
  const a: Args = { model: resolve(REPO, '..', 'shared', 'assets', 'models', 'kjv-gqa'), decodeTokens: 64, contexts: [128, 1024, 4096], llamacpp: true, reps: 3, threads: 2 };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${f} needs a value`); return v; };
    if (f === '--model') a.model = resolve(val());
    else if (f === '--decode-tokens') a.decodeTokens = Number(val());
    else if (f === '--contexts') a.contexts = val().split(',').map(Number);
    else if (f === '--reps') a.reps = Number(val());
    else if (f === '--threads') a.threads = Number(val());
    else if (f === '--no-llamacpp') a.llamacpp = false;
    else throw new Error(`bench engine: unknown option ${f}`);
  }
  if (!(a.decodeTokens > 0) || !(a.threads >= 1) || a.contexts.some((c) => !(c > 0))) throw new Error('bench engine: --decode-tokens, --threads and --contexts must be positive');
  return a;
}

function best(reps: number, f: () => void): number {
  let t = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    f();
    t = Math.min(t, (performance.now() - t0) / 1000);
  }
  return t;
}

function sgemm(dtype: FloatDType, reps: number): number {
  const M = 2048, N = 1024, K = 1024;
  const A = new Float32Array(M * K).map((_, i) => Math.sin(i));
  const C = new Float32Array(M * N);
  const k = kernels();
  let B: Float32Array | Uint16Array = new Float32Array(N * K).map((_, i) => Math.cos(i));
  if (dtype !== 'f32') { const h = new Uint16Array(N * K); k.fromF32(B, dtype, h); B = h; }
  k.matmul(A, B, dtype, C, M, N, K, true);
  return (2 * M * N * K) / best(reps, () => k.matmul(A, B, dtype, C, M, N, K, true)) / 1e9;
}

function randomIds(n: number, vocab: number, seed: number): number[] {
  let s = seed;
  return Array.from({ length: n }, () => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return 3 + (s % (vocab - 3)); });
}

function prefill(model: Decoder, T: number, all: boolean, reps: number): { tps: number; gflops: number } {
  const ids = randomIds(T, model.config.vocabSize, T);
  const cache = model.newCache();
  cache.reserve(T);
  const run = (): void => { model.forward(ids, cache, { pos0: 0, logits: all ? 'all' : 'last' }); };
  run();
  const s = best(reps, run);
  sampleThreads();
  return { tps: T / s, gflops: model.flops(T, 0, all ? T : 1) / s / 1e9 };
}

/** Times n greedy decode steps after a prefix of ctx tokens; tokens/s. */
interface DecodeSession {
  prepare(ctx: number): Promise<void>;
  time(n: number): Promise<number>;
  close(): Promise<void>;
}

/** Effective native team sizes seen right after each of our timed runs (adaptive threads). */
const threadSamples: number[] = [];
function sampleThreads(): void {
  const addon = loadNativeAddon().addon;
  if (addon) threadSamples.push(addon.effectiveThreads());
}

function oursSession(model: Decoder, maxCtx: number, n: number): DecodeSession {
  const cache = model.newCache();
  cache.reserve(maxCtx + n);
  let ctx = 0, first = 0;
  return {
    async prepare(c) {
      const ids = randomIds(c, model.config.vocabSize, c + 7);
      let logits: Float32Array = new Float32Array(0);
      for (let p = 0; p < c; p += 512) logits = model.forward(ids.slice(p, p + 512), cache, { pos0: p });
      ctx = c;
      first = argmax(logits);
    },
    async time(steps) {
      cache.truncate(ctx);
      let tok = first;
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) tok = argmax(model.forward([tok], cache));
      const tps = steps / ((performance.now() - t0) / 1000);
      sampleThreads();
      return tps;
    },
    async close() {},
  };
}

async function llamaCppSession(gguf: string, vocab: number, maxCtx: number, n: number, threads: number): Promise<DecodeSession> {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  // maxThreads caps llama.cpp's pool; with only the context's `threads` hint it may use more.
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, maxThreads: threads });
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: maxCtx + n + 16, batchSize: 512, threads: { ideal: threads, min: threads } });
  const seq = context.getSequence();
  // node-llama-cpp brands token ids; ours are plain vocabulary indices.
  let ids: Token[] = [];
  return {
    async prepare(c) {
      ids = randomIds(c, vocab, c + 7) as Token[];
    },
    async time(steps) {
      await seq.clearHistory();
      await seq.evaluateWithoutGeneratingNewTokens(ids.slice(0, -1));
      let got = 0;
      const t0 = performance.now();
      // evaluate() feeds the last prompt token, then each sampled token: `steps` forwards and samples.
      for await (const _tok of seq.evaluate([ids[ids.length - 1]!], { temperature: 0 })) if (++got === steps) break;
      return steps / ((performance.now() - t0) / 1000);
    },
    async close() {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}

export async function run(argv: string[]): Promise<object> {
  const a = parse(argv);
  const k = kernels();
  if (k.backend === 'native') loadNativeAddon().addon!.setThreads(a.threads);
  const loadAtStart = loadavg();
  const loaded = loadModel(a.model);
  const d = describeModel(loaded);
  const model = loaded.model;
  const log = (s: string): void => { process.stderr.write(`${s}\n`); };
  log(`engine bench: ${a.model}`);
  log(`  ${d.modelType}, ${d.layers} layers, hidden ${d.hidden}, ${d.heads}/${d.kvHeads} heads × ${d.headDim}, vocab ${d.vocab}, ${(d.params / 1e6).toFixed(1)} M params, ${d.weightDtype} weights; kernels: ${k.backend}, ${a.threads} thread(s), load ${loadavg()[0]!.toFixed(1)}`);

  const sg32 = sgemm('f32', a.reps), sg16 = sgemm('bf16', a.reps);
  log(`sgemm 2048×1024×1024 NT: f32 ${sg32.toFixed(1)} GFLOP/s, bf16 weights ${sg16.toFixed(1)} GFLOP/s`);

  const ref = d.weightDtype === 'f32' ? sg32 : sg16;
  const pre: Record<string, { tps: number; gflops: number }> = {};
  for (const [T, all] of [[512, false], [2048, false], [2048, true]] as const) {
    const r = prefill(model, T, all, a.reps);
    const key = `${T}${all ? '-all-logits' : ''}`;
    pre[key] = r;
    log(`prefill T=${String(T).padEnd(4)} ${all ? 'all logits ' : 'last logit '}: ${r.tps.toFixed(0).padStart(6)} tok/s, ${r.gflops.toFixed(1)} GFLOP/s = ${(100 * r.gflops / ref).toFixed(0)}% of sgemm (${d.weightDtype})`);
  }

  const maxCtx = Math.max(...a.contexts);
  const sessions: DecodeSession[] = [oursSession(model, maxCtx, a.decodeTokens)];
  const dir = mkdtempSync(join(tmpdir(), 'bench-engine-'));
  const ours: number[] = [];
  let cpp: number[] | null = null;
  try {
    if (a.llamacpp) {
      const gguf = join(dir, 'model.gguf');
      exportLlamaGguf(gguf, readConfig(a.model), openCheckpoint(a.model), a.model, { outType: d.weightDtype });
      sessions.push(await llamaCppSession(gguf, d.vocab, maxCtx, a.decodeTokens, a.threads));
      cpp = [];
    }
    // The engines alternate within each repetition so both see the same machine conditions.
    for (const c of a.contexts) {
      const bestTps = sessions.map(() => 0);
      for (const s of sessions) await s.prepare(c);
      for (let r = 0; r < a.reps; r++) {
        for (let i = 0; i < sessions.length; i++) bestTps[i] = Math.max(bestTps[i]!, await sessions[i]!.time(a.decodeTokens));
      }
      ours.push(bestTps[0]!);
      cpp?.push(bestTps[1]!);
    }
  } finally {
    for (const s of sessions) await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const adaptive = process.env.TRANSMLA_ADAPTIVE_THREADS !== '0';
  if (threadSamples.length > 0) {
    log(`native team size after each timed run of ours: ${threadSamples.join(' ')} (configured ${a.threads}; ` +
      `${adaptive ? 'adaptive: reduced while other processes occupy cores' : 'TRANSMLA_ADAPTIVE_THREADS=0: fixed'}; OMP_WAIT_POLICY ${process.env.OMP_WAIT_POLICY ?? 'default'})`);
  }
  log(`decode (best of ${a.reps} × ${a.decodeTokens} greedy tokens, ${d.weightDtype} weights; ours: f32 KV cache, llama.cpp: f16 KV cache):`);
  a.contexts.forEach((c, i) => {
    const o = ours[i]!, l = cpp?.[i];
    log(`  context ${String(c).padStart(5)}: ours ${o.toFixed(0).padStart(5)} tok/s` + (l ? `, llama.cpp ${l.toFixed(0).padStart(5)} tok/s, ratio ${(o / l).toFixed(2)}x` : ''));
  });
  return {
    model: a.model, backend: k.backend, threads: a.threads, load: loadavg(), loadAtStart, weightDtype: d.weightDtype, params: d.params,
    threadPolicy: {
      adaptive: k.backend === 'native' && process.env.TRANSMLA_ADAPTIVE_THREADS !== '0',
      ompWaitPolicy: process.env.OMP_WAIT_POLICY ?? 'default',
      effectiveThreadsAfterEachTimedRun: threadSamples,
    },
    sgemmGflops: { f32: sg32, bf16: sg16 },
    prefill: Object.fromEntries(Object.entries(pre).map(([key, r]) => [key, { ...r, fractionOfSgemm: r.gflops / ref }])),
    decode: a.contexts.map((c, i) => ({
      context: c, tokens: a.decodeTokens, oursTps: ours[i], llamacppTps: cpp?.[i] ?? null, ratio: cpp ? ours[i]! / cpp[i]! : null,
    })),
    notes: 'decode: greedy, logits every step; ours f32 KV cache, llama.cpp (node-llama-cpp prebuilt, same threads) default f16 KV cache; same weights dtype',
  };
}
