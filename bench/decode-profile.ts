// `npm run bench -- decode-profile <model> [--context 1024] [--steps 16] [--threads 1] [--weights q8_0|q4_0] [--kv-dtype f16|bf16|f32]`
//
// Where one decode step of our engine spends its time: every kernel entry point a step calls is
// wrapped with a timer (calls, milliseconds, bytes handed to it), and the rest of the step (RoPE,
// norms, residual adds, embedding, argmax, the JS between the calls) is "outside kernels". The cache
// is filled by prefilling 512 tokens and repeating their rows (as `bench --fill repeated-chunk`).
// The per-call overhead of a native call is what separates many small calls (MLA's per-head
// GEMVs) from one large one. The load average is recorded before and after.
import { cpus, loadavg } from 'node:os';
import { loadModel } from '../src/arch/load.js';
import { decodeStepWeightBytes } from '../src/bench/bench-decode.js';
import { kernels } from '../src/kernels/index.js';
import { loadNativeAddon } from '../src/kernels/native.js';
import type { FloatDType, Kernels, QuantDType } from '../src/kernels/types.js';
import { CacheBuffer, HalfCacheBuffer } from '../src/models/kv-cache.js';
import { argmax } from '../src/models/sample.js';
import { tensorBytes } from '../src/tensor.js';

interface Entry { calls: number; ms: number; bytes: number }

export async function run(argv: string[]): Promise<object> {
  const [path, ...rest] = argv;
  if (!path) throw new Error('bench decode-profile: give a model');
  let context = 1024, steps = 16, threads = 1, weights: QuantDType | null = null, kvDtype: FloatDType = 'f16';
  for (let i = 0; i < rest.length; i++) {
    const f = rest[i]!, v = rest[++i];
    if (v === undefined) throw new Error(`${f} needs a value`);
    if (f === '--context') context = Number(v);
    else if (f === '--steps') steps = Number(v);
    else if (f === '--threads') threads = Number(v);
    else if (f === '--weights') weights = v as QuantDType;
    else if (f === '--kv-dtype') kvDtype = v as FloatDType;
    else throw new Error(`bench decode-profile: unknown option ${f}`);
  }
  const loadBefore = loadavg();
  if (kernels().backend === 'native') loadNativeAddon().addon!.setThreads(threads);
  const { model } = loadModel(path, { weights, kvDtype });
  const cache = model.newCache();
  cache.reserve(context + steps + 1);
  const V = model.config.vocabSize;
  const ids = Array.from({ length: Math.min(512, context) }, (_, i) => 3 + ((i * 7919) % (V - 3)));
  model.forward(ids, cache);
  for (const l of cache.layers) {
    for (const b of l.buffers) {
      if (!(b instanceof CacheBuffer || b instanceof HalfCacheBuffer)) throw new Error('decode-profile needs an f32/f16/bf16 cache');
      for (let p = ids.length; p < context; p += ids.length) b.data.copyWithin(p * b.width, 0, Math.min(ids.length, context - p) * b.width);
    }
  }
  cache.length = context;

  const k = kernels() as Kernels & Record<string, unknown>;
  const table: Record<string, Entry> = {};
  const names = ['gemv', 'gemvMulti', 'gemvSwiGlu', 'matmul', 'attention', 'toF32', 'fromF32', 'siluMul'] as const;
  const saved = Object.fromEntries(names.map((n) => [n, k[n]])) as Record<string, (...a: unknown[]) => unknown>;
  const bytesOf: Record<string, (a: unknown[]) => number> = {
    gemv: (a) => tensorBytes(a[1] as QuantDType, (a[4] as number) * (a[5] as number)),
    gemvMulti: (a) => (a[4] as number[]).reduce((s, N) => s + tensorBytes(a[1] as QuantDType, N * (a[5] as number)), 0),
    gemvSwiGlu: (a) => 2 * tensorBytes(a[2] as QuantDType, (a[5] as number) * (a[6] as number)),
    matmul: (a) => tensorBytes(a[2] as QuantDType, (a[5] as number) * (a[6] as number)),
    attention: (a) => { const x = a[0] as { k: { byteLength: number }; pos0: number; tq: number; kTokenStride: number; kvDType?: string }; return (x.pos0 + x.tq) * x.kTokenStride * (x.kvDType && x.kvDType !== 'f32' ? 2 : 4); },
  };
  for (const n of names) {
    table[n] = { calls: 0, ms: 0, bytes: 0 };
    k[n] = (...a: unknown[]) => {
      const t = performance.now();
      const r = saved[n]!(...a);
      const e = table[n]!;
      e.ms += performance.now() - t; e.calls++; e.bytes += bytesOf[n]?.(a) ?? 0;
      return r;
    };
  }
  let tok = 5, totalMs = 0;
  try {
    for (let s = 0; s < steps; s++) {
      cache.truncate(context);
      const t = performance.now();
      tok = argmax(model.forward([tok], cache));
      totalMs += performance.now() - t;
    }
  } finally {
    Object.assign(k, saved);
  }
  const per = (x: number): number => x / steps;
  const inKernels = Object.values(table).reduce((s, e) => s + e.ms, 0);
  const rows = Object.entries(table).filter(([, e]) => e.calls > 0).map(([name, e]) => ({
    kernel: name, callsPerStep: per(e.calls), msPerStep: per(e.ms), share: e.ms / totalMs,
    bytesPerStep: per(e.bytes), gbPerSecond: e.ms > 0 ? e.bytes / (e.ms / 1000) / 1e9 : null,
  }));
  for (const r of rows) process.stderr.write(`${r.kernel.padEnd(11)} ${r.callsPerStep.toFixed(0).padStart(6)} calls ${r.msPerStep.toFixed(3).padStart(9)} ms ${(100 * r.share).toFixed(1).padStart(5)} %  ${r.gbPerSecond === null ? '' : `${r.gbPerSecond.toFixed(1)} GB/s`}\n`);
  process.stderr.write(`outside kernels ${per(totalMs - inKernels).toFixed(3)} ms (${(100 * (1 - inKernels / totalMs)).toFixed(1)} %); step ${per(totalMs).toFixed(3)} ms\n`);
  return {
    bench: 'decode-profile', model: path, context, steps, threads, weights, kvDtype, backend: kernels().backend,
    cpu: cpus()[0]?.model ?? null, loadAverage: { before: loadBefore, after: loadavg() },
    msPerStep: per(totalMs), outsideKernelsMsPerStep: per(totalMs - inKernels), weightBytesPerStep: decodeStepWeightBytes(model),
    cacheBytesPerStep: context * cache.bytesPerToken('f32'), kernels: rows,
  };
}
