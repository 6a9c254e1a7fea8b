// Loads the native addon (build/Release/transmla.node, built by scripts/build-native.mjs) and
// exposes it through the Kernels interface. Loading never throws: a missing or broken addon is
// reported as `error` so kernels() can fall back to the TypeScript reference.
// The addon validates every call itself (typed-array kinds, integer sizes, buffer lengths,
// output/input overlap) and throws TypeError/RangeError before touching memory.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { AttentionArgs, EighResult, FloatData, FloatDType, HalfDType, Kernels, QuantDType, WeightData, WeightDType } from './types.js';

/** The raw addon surface (positional arguments; see native/addon.cc). */
export interface NativeAddon {
  matmul(A: Float32Array, B: WeightData, bType: WeightDType, C: Float32Array, M: number, N: number, K: number, transB: boolean, accumulate: boolean): void;
  matmulTN(A: Float32Array, B: Float32Array, C: Float32Array, M: number, N: number, K: number, accumulate: boolean): void;
  gemv(W: WeightData, wType: WeightDType, x: Float32Array, y: Float32Array, N: number, K: number): void;
  gemvMulti(Ws: readonly WeightData[], wType: WeightDType, x: Float32Array, ys: readonly Float32Array[], Ns: readonly number[], K: number): void;
  gemvSwiGlu(Wg: WeightData, Wu: WeightData, wType: WeightDType, x: Float32Array, out: Float32Array, N: number, K: number): void;
  siluMul(gate: Float32Array, up: Float32Array, n: number): void;
  rmsNorm(x: Float32Array, T: number, D: number, w: Float32Array, eps: number, out: Float32Array): void;
  addInPlace(x: Float32Array, y: Float32Array, n: number): void;
  toF32(src: Uint16Array | Uint8Array, type: HalfDType | QuantDType, dst: Float32Array): void;
  fromF32(src: Float32Array, type: HalfDType | QuantDType, dst: Uint16Array | Uint8Array): void;
  gramAccumulate(X: Float32Array, T: number, K: number, acc: Float64Array): void;
  eigh(A: Float64Array, n: number): EighResult;
  attention(
    q: Float32Array, tq: number, nHeads: number, nKvHeads: number, headDimK: number, headDimV: number,
    k: FloatData, kTokenStride: number, v: FloatData, vTokenStride: number, pos0: number, scale: number, out: Float32Array,
    kvDType: FloatDType,
  ): void;
  /** OpenMP threads used by later calls. */
  threads(): number;
  /**
   * Threads parallel kernels use right now: threads(), reduced while other processes occupy
   * cores (sampled every 200 ms; TRANSMLA_ADAPTIVE_THREADS=0 disables the reduction).
   */
  effectiveThreads(): number;
  setThreads(n: number): void;
  dgemm(A: Float64Array, B: Float64Array, C: Float64Array, M: number, N: number, K: number, transB: boolean): void;
  dgemmSeq(A: Float64Array, B: Float64Array, C: Float64Array, M: number, N: number, K: number, transB: boolean): void;
  fidelityRows(logits: readonly Float32Array[], rows: number, V: number, targets: Int32Array, out: Float64Array): void;
}

const ADDON_FUNCTIONS = ['matmul', 'matmulTN', 'gemv', 'gemvMulti', 'gemvSwiGlu', 'siluMul', 'rmsNorm', 'addInPlace', 'toF32', 'fromF32', 'gramAccumulate', 'eigh', 'attention', 'threads', 'effectiveThreads', 'setThreads', 'dgemm', 'dgemmSeq', 'fidelityRows'] as const;

/** The folder holding transmla's package.json, found by walking up from this file (src/ or dist/src/). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'transmla') return dir;
      } catch {
        // An unreadable package.json on the way up is not ours; keep walking.
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`cannot find the transmla package root above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

export function nativeAddonPath(): string {
  return join(packageRoot(), 'build', 'Release', 'transmla.node');
}

/** The OpenMP wait policy this process runs with ('default' = libgomp's spin-then-sleep). */
export function ompWaitPolicy(): string {
  return process.env.OMP_WAIT_POLICY ?? 'default';
}

// libgomp's idle threads spin between parallel regions, which makes back-to-back small kernels
// (decode's GEMVs) ~2x faster on an idle machine, but when other processes already occupy the
// cores a spinning thread steals them and one conversion layer took 17 s instead of 0.9 s
// (measured). So: keep spinning unless the machine is already busy at start-up, then sleep.
// libgomp reads the variable once, when the addon loads it; the user's own setting wins.
function chooseWaitPolicy(): void {
  if (process.env.OMP_WAIT_POLICY !== undefined || process.env.GOMP_SPINCOUNT !== undefined) return;
  if (loadavg()[0] > availableParallelism() - 0.5) process.env.OMP_WAIT_POLICY = 'PASSIVE';
}

let loaded: { addon?: NativeAddon; error?: string } | undefined;

/** The raw addon, or the reason it could not be loaded (cached per process). */
export function loadNativeAddon(): { addon?: NativeAddon; error?: string } {
  if (loaded) return loaded;
  try {
    const path = nativeAddonPath();
    if (!existsSync(path)) return (loaded = { error: `${path} does not exist (the native build did not run or failed)` });
    chooseWaitPolicy();
    const addon = createRequire(import.meta.url)(path) as Partial<NativeAddon>;
    const missing = ADDON_FUNCTIONS.filter((f) => typeof addon[f] !== 'function');
    if (missing.length > 0) return (loaded = { error: `${path} is stale: it lacks ${missing.join(', ')}; rebuild it` });
    return (loaded = { addon: addon as NativeAddon });
  } catch (e) {
    return (loaded = { error: e instanceof Error ? e.message : String(e) });
  }
}

function wrap(addon: NativeAddon): Kernels {
  return {
    backend: 'native',
    matmul(A, B, bType, C, M, N, K, transB, accumulate = false) {
      addon.matmul(A, B, bType, C, M, N, K, transB, accumulate);
    },
    matmulTN(A, B, C, M, N, K, accumulate = false) {
      addon.matmulTN(A, B, C, M, N, K, accumulate);
    },
    gemv(W, wType, x, y, N, K) {
      addon.gemv(W, wType, x, y, N, K);
    },
    gemvMulti(Ws, wType, x, ys, Ns, K) {
      addon.gemvMulti(Ws, wType, x, ys, Ns, K);
    },
    gemvSwiGlu(Wg, Wu, wType, x, out, N, K) {
      addon.gemvSwiGlu(Wg, Wu, wType, x, out, N, K);
    },
    siluMul(gate, up, n) {
      addon.siluMul(gate, up, n);
    },
    rmsNorm(x, T, D, w, eps, out) {
      addon.rmsNorm(x, T, D, w, eps, out);
    },
    addInPlace(x, y, n) {
      addon.addInPlace(x, y, n);
    },
    toF32(src, type, dst) {
      addon.toF32(src, type, dst);
    },
    fromF32(src, type, dst) {
      addon.fromF32(src, type, dst);
    },
    gramAccumulate(X, T, K, acc) {
      addon.gramAccumulate(X, T, K, acc);
    },
    eigh(A, n) {
      return addon.eigh(A, n);
    },
    attention(a: AttentionArgs) {
      addon.attention(a.q, a.tq, a.nHeads, a.nKvHeads, a.headDimK, a.headDimV, a.k, a.kTokenStride, a.v, a.vTokenStride, a.pos0, a.scale, a.out, a.kvDType ?? 'f32');
    },
    dgemm(A, B, C, M, N, K, transB) {
      addon.dgemm(A, B, C, M, N, K, transB);
    },
    dgemmSeq(A, B, C, M, N, K, transB) {
      addon.dgemmSeq(A, B, C, M, N, K, transB);
    },
    fidelityRows(logits, rows, V, targets, out) {
      addon.fidelityRows(logits, rows, V, targets, out);
    },
  };
}

let wrapped: Kernels | undefined;

export function loadNativeKernels(): { kernels?: Kernels; error?: string } {
  const { addon, error } = loadNativeAddon();
  if (!addon) return { error };
  return { kernels: (wrapped ??= wrap(addon)) };
}
