// The float64 kernels of conversion and evaluation: dgemm and fidelityRows. The TypeScript
// backend is checked against a direct float64 reference written here (log-softmax per row, a
// triple loop), the native one against TypeScript, and the native results must be bit-identical
// at 1 and 2 threads (conversion outputs are locked byte for byte).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { tsKernels } from '../src/kernels/ts.js';
import type { Kernels } from '../src/kernels/types.js';
import { mulberry32 } from './helpers/random-llama.js';

const { loadNativeAddon, loadNativeKernels } = await import('../src/kernels/native.js');
const native = loadNativeKernels().kernels ?? null;
const addon = loadNativeAddon().addon ?? null;
const nativeSkip: false | string = native || process.env.TRANSMLA_REQUIRE_NATIVE === '1' ? false : 'native addon unavailable';

const rng = mulberry32;
const randF64 = (n: number, r: () => number) => Float64Array.from({ length: n }, () => r() * 2 - 1);

function refGemm(A: Float64Array, B: Float64Array, M: number, N: number, K: number, transB: boolean): Float64Array {
  const C = new Float64Array(M * N);
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += A[i * K + k]! * (transB ? B[j * K + k]! : B[k * N + j]!);
    C[i * N + j] = s;
  }
  return C;
}
/** max |a − ref| / max |ref|. */
function rel(a: Float64Array, ref: Float64Array): number {
  let d = 0, m = 1e-300;
  for (let i = 0; i < ref.length; i++) { d = Math.max(d, Math.abs(a[i]! - ref[i]!)); m = Math.max(m, Math.abs(ref[i]!)); }
  return d / m;
}

// Shapes with tails in every blocking dimension (6×8 tiles, K slices of 256, 96-row blocks, 1024 columns).
const SHAPES: [number, number, number][] = [[1, 1, 1], [5, 7, 3], [6, 8, 256], [13, 17, 257], [97, 33, 300], [200, 1030, 40], [7, 3, 0], [0, 4, 5]];

describe('dgemm', () => {
  test('TypeScript equals a triple loop (to 1e-14), C overwritten, both layouts of B', () => {
    const r = rng(1);
    for (const [M, N, K] of SHAPES) for (const transB of [false, true]) {
      const A = randF64(M * K, r), B = randF64(K * N, r), C = new Float64Array(M * N).fill(7);
      tsKernels.dgemm(A, B, C, M, N, K, transB);
      assert.ok(rel(C, refGemm(A, B, M, N, K, transB)) <= 1e-14, `${M}×${N}×${K} transB=${transB}`);
    }
  });
  for (const threads of [1, 2]) {
    test(`native (${threads} thread${threads > 1 ? 's' : ''}) within 1e-13 of TypeScript, bit-identical across thread counts`, { skip: nativeSkip }, () => {
      const r = rng(2);
      for (const [M, N, K] of SHAPES) for (const transB of [false, true]) {
        const A = randF64(M * K, r), B = randF64(K * N, r);
        const want = new Float64Array(M * N), got = new Float64Array(M * N).fill(7), other = new Float64Array(M * N);
        tsKernels.dgemm(A, B, want, M, N, K, transB);
        addon!.setThreads(threads);
        native!.dgemm(A, B, got, M, N, K, transB);
        addon!.setThreads(3 - threads);
        native!.dgemm(A, B, other, M, N, K, transB);
        addon!.setThreads(2);
        assert.ok(rel(got, want) <= 1e-13, `${M}×${N}×${K} transB=${transB}: ${rel(got, want)}`);
        assert.ok(Buffer.from(got.buffer).equals(Buffer.from(other.buffer)), `${M}×${N}×${K}: differs between 1 and 2 threads`);
      }
    });
  }
  test('native refuses short or overlapping buffers', { skip: nativeSkip }, () => {
    const A = new Float64Array(6), B = new Float64Array(9), C = new Float64Array(4);
    assert.throws(() => native!.dgemm(A, B, C, 2, 3, 3, false), /C is too short/);
    assert.throws(() => native!.dgemm(A, A.subarray(0, 6), A.subarray(0, 4), 2, 2, 3, false), /must not overlap/);
  });
});

// dgemmSeq promises the bits of the plain loop, so both backends must equal refGemm exactly,
// including with exact zeros in A (the loops it replaces skipped them) and sparse rows.
describe('dgemmSeq', () => {
  const bits = (x: Float64Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  const cases = (r: () => number) => [...SHAPES, [9, 4097, 33], [70, 12, 1025]].map(([M, N, K]) => {
    const A = randF64(M! * K!, r).map((v, i) => (i % 5 === 0 ? 0 : v * 10 ** Math.floor(r() * 6 - 3)));
    return { M: M!, N: N!, K: K!, A, B: randF64(K! * N!, r) };
  });
  test('TypeScript equals the triple loop bit for bit, both layouts of B, C overwritten', () => {
    for (const { M, N, K, A, B } of cases(rng(11))) for (const transB of [false, true]) {
      const C = new Float64Array(M * N).fill(7);
      tsKernels.dgemmSeq(A, B, C, M, N, K, transB);
      assert.ok(bits(C).equals(bits(refGemm(A, B, M, N, K, transB))), `${M}×${N}×${K} transB=${transB}`);
    }
  });
  for (const threads of [1, 2]) {
    test(`native (${threads} thread${threads > 1 ? 's' : ''}) equals the triple loop bit for bit`, { skip: nativeSkip }, () => {
      for (const { M, N, K, A, B } of cases(rng(12))) for (const transB of [false, true]) {
        const C = new Float64Array(M * N).fill(7);
        addon!.setThreads(threads);
        native!.dgemmSeq(A, B, C, M, N, K, transB);
        addon!.setThreads(2);
        assert.ok(bits(C).equals(bits(refGemm(A, B, M, N, K, transB))), `${M}×${N}×${K} transB=${transB}`);
      }
    });
  }
  test('native refuses short or overlapping buffers', { skip: nativeSkip }, () => {
    const A = new Float64Array(6), B = new Float64Array(9), C = new Float64Array(4);
    assert.throws(() => native!.dgemmSeq(A, B, C, 2, 3, 3, false), /C is too short/);
    assert.throws(() => native!.dgemmSeq(A, A.subarray(0, 6), A.subarray(0, 4), 2, 2, 3, false), /must not overlap/);
  });
});

/** Per-row (NLL, KL, agreement) straight from the definitions, through explicit log-softmaxes. */
function refFidelity(L: Float32Array[], rows: number, V: number, t: Int32Array): Float64Array {
  const S = L.length, out = new Float64Array(rows * S * 3);
  const logSoftmax = (x: Float32Array, o: number) => {
    let m = -Infinity, arg = 0;
    for (let v = 0; v < V; v++) if (x[o + v]! > m) { m = x[o + v]!; arg = v; }
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(x[o + v]! - m);
    return { lp: Float64Array.from({ length: V }, (_, v) => x[o + v]! - m - Math.log(s)), arg };
  };
  for (let r = 0; r < rows; r++) {
    const ref = logSoftmax(L[0]!, r * V);
    for (let s = 0; s < S; s++) {
      const cur = logSoftmax(L[s]!, r * V);
      let kl = 0;
      for (let v = 0; v < V; v++) kl += Math.exp(ref.lp[v]!) * (ref.lp[v]! - cur.lp[v]!);
      out.set([-cur.lp[t[r]!]!, kl, cur.arg === ref.arg ? 1 : 0], (r * S + s) * 3);
    }
  }
  return out;
}

function fidelityCase(seed: number, S: number, rows: number, V: number) {
  const r = rng(seed);
  // Logits of similar models: the reference plus noise of growing size, with a wide range so
  // the exponentials span many orders of magnitude.
  const base = Float32Array.from({ length: rows * V }, () => (r() - 0.5) * 30);
  const L = Array.from({ length: S }, (_, s) => Float32Array.from(base, (x) => x + (s === 0 ? 0 : (r() - 0.5) * s)));
  const t = Int32Array.from({ length: rows }, () => Math.floor(r() * V));
  return { L, t };
}

function maxAbs(a: Float64Array, b: Float64Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

describe('fidelityRows', () => {
  const cases: [number, number, number][] = [[1, 3, 5], [3, 7, 1027], [4, 33, 4096]];
  test('TypeScript matches the log-softmax definitions (to 1e-11 absolute) and exact agreements', () => {
    for (const [S, rows, V] of cases) {
      const { L, t } = fidelityCase(S * 7 + V, S, rows, V);
      const out = new Float64Array(rows * S * 3);
      tsKernels.fidelityRows(L, rows, V, t, out);
      const ref = refFidelity(L, rows, V, t);
      assert.ok(maxAbs(out, ref) <= 1e-11, `S=${S} V=${V}: ${maxAbs(out, ref)}`);
      for (let i = 2; i < out.length; i += 3) assert.equal(out[i], ref[i]);
    }
  });
  test('a model equal to the reference has KL 0 and agrees; ties take the first index', () => {
    const L0 = new Float32Array([1, 3, 3, 0]), L1 = new Float32Array([1, 3, 3, 0]), L2 = new Float32Array([1, 2, 3, 3]);
    for (const k of [tsKernels, native].filter(Boolean) as Kernels[]) {
      const out = new Float64Array(9);
      k.fidelityRows([L0, L1, L2], 1, 4, new Int32Array([2]), out);
      assert.ok(Math.abs(out[4]!) <= 1e-15, `${k.backend}: KL of identical rows ${out[4]}`);
      assert.equal(out[5], 1);
      assert.equal(out[8], 0, `${k.backend}: argmax 1 vs 2 must disagree`);
    }
  });
  for (const threads of [1, 2]) {
    test(`native (${threads} thread${threads > 1 ? 's' : ''}) within 1e-12 of TypeScript, bit-identical across thread counts`, { skip: nativeSkip }, () => {
      for (const [S, rows, V] of cases) {
        const { L, t } = fidelityCase(S * 11 + V, S, rows, V);
        const want = new Float64Array(rows * S * 3), got = new Float64Array(rows * S * 3), other = new Float64Array(rows * S * 3);
        tsKernels.fidelityRows(L, rows, V, t, want);
        addon!.setThreads(threads);
        native!.fidelityRows(L, rows, V, t, got);
        addon!.setThreads(3 - threads);
        native!.fidelityRows(L, rows, V, t, other);
        addon!.setThreads(2);
        assert.ok(maxAbs(got, want) <= 1e-12, `S=${S} V=${V}: ${maxAbs(got, want)}`);
        assert.ok(Buffer.from(got.buffer).equals(Buffer.from(other.buffer)), `S=${S} V=${V}: differs between 1 and 2 threads`);
      }
    });
  }
  test('a target outside the vocabulary is refused by both backends', () => {
    for (const k of [tsKernels, native].filter(Boolean) as Kernels[]) {
      assert.throws(() => k.fidelityRows([new Float32Array(4)], 1, 4, new Int32Array([4]), new Float64Array(3)), /outside the vocabulary/);
    }
  });
});
