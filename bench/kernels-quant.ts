// Decode-bound kernels at the memory roofline: GEMV with q8_0/q4_0 weights against bf16 at the
// same shapes, weights streamed from DRAM (rotating matrices), and decode attention over f32 vs
// f16/bf16 caches (rotating per-layer caches). Part of `npm run bench -- kernels`; alone:
// `npm run bench -- kernels-quant [--runs N] [--threads N] [--out file]`.
// GB/s counts the bytes the kernel must read (weights; K+V cache rows); each timed kernel is
// first checked against a float64 reference.
import os from 'node:os';
import { loadNativeAddon, loadNativeKernels } from '../src/kernels/native.js';
import type { AttentionArgs, FloatDType, HalfDType, Kernels, WeightData, WeightDType } from '../src/kernels/types.js';
import { tensorBytes } from '../src/tensor.js';
import { arg, machine, randomF32, rng, round, sci, time } from './lib/kernel-timing.js';

/** Rotating through this many bytes (4× the 32 MiB L3 of the machines we use) makes every call read DRAM. */
const ROTATE_BYTES = 128 * 2 ** 20;

function makeWeight(k: Kernels, f: Float32Array, t: WeightDType): WeightData {
  if (t === 'f32') return f;
  const out = t === 'q8_0' || t === 'q4_0' ? new Uint8Array(tensorBytes(t, f.length)) : new Uint16Array(f.length);
  k.fromF32(f, t, out);
  return out;
}

function rowValues(k: Kernels, W: WeightData, t: WeightDType, n: number, K: number): Float32Array {
  if (t === 'f32') return (W as Float32Array).subarray(n * K, (n + 1) * K);
  const out = new Float32Array(K);
  if (t === 'q8_0' || t === 'q4_0') {
    const rb = tensorBytes(t, K);
    k.toF32((W as Uint8Array).subarray(n * rb, (n + 1) * rb), t, out);
  } else {
    k.toF32((W as Uint16Array).subarray(n * K, (n + 1) * K), t, out);
  }
  return out;
}

/** y = W·x with W [N×K] of dtype t, weights from DRAM. */
export function benchQuantGemv(k: Kernels, t: WeightDType, N: number, K: number, runs: number) {
  const r = rng(N + K + t.length);
  const bytes = tensorBytes(t, N * K);
  const matrices = Math.max(2, Math.ceil(ROTATE_BYTES / bytes));
  const first = makeWeight(k, randomF32(N * K, r), t);
  // Copies of one matrix: distinct memory is all the rotation needs.
  const Ws: WeightData[] = [first, ...Array.from({ length: matrices - 1 }, () => first.slice())];
  const x = randomF32(K, r);
  const y = new Float32Array(N);
  k.gemv(first, t, x, y, N, K);
  // Error against float64 Ŵ·x on sampled rows, relative to Σ|ŵ·x| (the rounding of x for
  // quantized weights is relative to each block's largest |x|).
  let worst = 0;
  for (let s = 0; s < 24; s++) {
    const n = Math.floor((r() + 0.5) * N);
    const w = rowValues(k, first, t, n, K);
    let ref = 0, mag = 0;
    for (let p = 0; p < K; p++) {
      ref += w[p]! * x[p]!;
      mag += Math.abs(w[p]! * x[p]!);
    }
    worst = Math.max(worst, Math.abs(y[n]! - ref) / mag);
  }
  const calls = Math.max(16, 2 * matrices);
  let next = 0;
  const tm = time(() => {
    for (let c = 0; c < calls; c++) k.gemv(Ws[next++ % matrices]!, t, x, y, N, K);
  }, runs, 2);
  return {
    N, K, wType: t, weightMiB: round(bytes / 2 ** 20, 1), weights: `DRAM (rotating ${matrices} matrices)`,
    gbpsBest: round((bytes * calls) / tm.best / 1e9), gbpsMedian: round((bytes * calls) / tm.median / 1e9),
    gflopsBest: round((2 * N * K * calls) / tm.best / 1e9), usPerCallBest: round((tm.best / calls) * 1e6), usPerCallMedian: round((tm.median / calls) * 1e6),
    runs: tm.runs, cpuPerWall: tm.cpuPerWall, maxRelErr: sci(worst),
  };
}

/** One decode step (tq = 1) at context `ctx` over a cache stored as kv, rotating per-layer caches. */
export function benchCacheAttention(k: Kernels, label: string, ctx: number, nHeads: number, nKvHeads: number, d: number, kv: FloatDType, runs: number) {
  const r = rng(ctx + nHeads);
  const stride = nKvHeads * d;
  const elem = kv === 'f32' ? 4 : 2;
  const layerBytes = 2 * ctx * stride * elem;
  const layers = Math.max(2, Math.ceil(ROTATE_BYTES / layerBytes));
  const kf = randomF32(ctx * stride, r), vf = randomF32(ctx * stride, r);
  const narrow = (f: Float32Array): Float32Array | Uint16Array => {
    if (kv === 'f32') return f;
    const u = new Uint16Array(f.length);
    k.fromF32(f, kv as HalfDType, u);
    return u;
  };
  const k0 = narrow(kf), v0 = narrow(vf);
  const caches = [{ k: k0, v: v0 }, ...Array.from({ length: layers - 1 }, () => ({ k: k0.slice(), v: v0.slice() }))];
  const q = randomF32(nHeads * d, r);
  const out = new Float32Array(nHeads * d);
  const args = (i: number): AttentionArgs => ({
    q, tq: 1, nHeads, nKvHeads, headDimK: d, headDimV: d, k: caches[i]!.k, kTokenStride: stride, v: caches[i]!.v, vTokenStride: stride,
    pos0: ctx - 1, scale: 1 / Math.sqrt(d), out, kvDType: kv,
  });
  const all = caches.map((_, i) => args(i));
  const calls = Math.max(8, 2 * layers);
  let next = 0;
  const tm = time(() => {
    for (let c = 0; c < calls; c++) k.attention(all[next++ % layers]!);
  }, runs, 2);
  return {
    case: label, ctx, nHeads, nKvHeads, headDim: d, kvDType: kv, cacheMiBPerLayer: round(layerBytes / 2 ** 20, 1), layers,
    msPerCallBest: round((tm.best / calls) * 1e3, 3), msPerCallMedian: round((tm.median / calls) * 1e3, 3),
    gbpsBest: round((layerBytes * calls) / tm.best / 1e9), runs: tm.runs, cpuPerWall: tm.cpuPerWall,
  };
}

type GemvRow = ReturnType<typeof benchQuantGemv>;
type AttnRow = ReturnType<typeof benchCacheAttention>;

/** The quantized-GEMV rows with each one's speed per call relative to bf16 at the same shape. */
export function quantGemvSection(k: Kernels, runs: number): (GemvRow & { speedupVsBf16?: number; bandwidthVsBf16?: number })[] {
  const rows: (GemvRow & { speedupVsBf16?: number; bandwidthVsBf16?: number })[] = [];
  for (const [N, K] of [[4096, 4096], [4096, 14336]] as const) {
    const bf = benchQuantGemv(k, 'bf16', N, K, runs);
    rows.push(bf);
    for (const t of ['q8_0', 'q4_0'] as const) {
      const q = benchQuantGemv(k, t, N, K, runs);
      rows.push({ ...q, speedupVsBf16: round(bf.usPerCallBest / q.usPerCallBest, 2), bandwidthVsBf16: round(q.gbpsBest / bf.gbpsBest, 2) });
    }
  }
  return rows;
}

/** Decode attention, Llama-3.2-1B heads (32 query / 8 KV × 64), f32 vs f16 vs bf16 cache at 4K and 16K. */
export function cacheAttentionSection(k: Kernels, runs: number): (AttnRow & { speedupVsF32?: number })[] {
  const rows: (AttnRow & { speedupVsF32?: number })[] = [];
  for (const ctx of [4096, 16384]) {
    const f = benchCacheAttention(k, 'decode, Llama-3.2-1B heads', ctx, 32, 8, 64, 'f32', runs);
    rows.push(f);
    for (const kv of ['f16', 'bf16'] as const) {
      const h = benchCacheAttention(k, 'decode, Llama-3.2-1B heads', ctx, 32, 8, 64, kv, runs);
      rows.push({ ...h, speedupVsF32: round(f.msPerCallBest / h.msPerCallBest, 2) });
    }
  }
  return rows;
}

export const QUANT_NOTES = [
  'gemvQuant: GB/s counts weight bytes read per call (bf16 2 B/element, q8_0 34 B and q4_0 18 B per 32); speedupVsBf16 = bf16 µs/call ÷ this row\'s at the same N×K; bandwidthVsBf16 = GB/s ÷ bf16 GB/s.',
  'gemvQuant: quantized rows round x to 16-bit integers per block of 32 (Kernels.gemv); maxRelErr is against float64 Ŵ·x (unrounded x), relative to Σ|ŵ·x|.',
  'attentionCache: GB/s counts the K and V rows read (2·ctx·8·64 elements per call); calls rotate over per-layer caches totalling ≥ 128 MiB.',
];

export async function run(args: string[]): Promise<object> {
  const { addon, error } = loadNativeAddon();
  const native = loadNativeKernels().kernels;
  if (!addon || !native) throw new Error(`the native addon is not available: ${error}`);
  const runs = arg(args, '--runs', 7);
  if (args.includes('--threads')) addon.setThreads(arg(args, '--threads', 2));
  const loadStart = os.loadavg().map((x) => round(x, 2));
  const t0 = performance.now();
  const result = {
    benchmark: 'kernels-quant',
    machine: machine(addon.threads()),
    loadavg: { start: loadStart, end: [] as number[] },
    notes: QUANT_NOTES,
    gemvQuant: quantGemvSection(native, runs),
    attentionCache: cacheAttentionSection(native, runs),
    totalSeconds: 0,
  };
  result.loadavg.end = os.loadavg().map((x) => round(x, 2));
  result.totalSeconds = round((performance.now() - t0) / 1e3);
  return result;
}
