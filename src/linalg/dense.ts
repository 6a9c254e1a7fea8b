// Small float64 dense helpers for the linear algebra in this folder (row-major throughout).
// The product goes to the kernels' dgemm (native: packed 6×8 AVX2 tiles, ./kernels/ts/f64.ts the oracle).
import { kernels, tsKernels } from '../kernels/index.js';

/** C[M×N] = A[M×K] · op(B); op(B) = B [K×N], or Bᵀ when transB (B stored [N×K]). */
export function gemmF64(A: ArrayLike<number>, B: ArrayLike<number>, M: number, N: number, K: number, transB = false): Float64Array {
  const C = new Float64Array(M * N);
  const k = kernels();
  // Tiny products stay in TypeScript: below ~32K multiply-adds the call costs more than the work.
  const dgemm = M * N * K >= 32768 ? k.dgemm : tsKernels.dgemm;
  dgemm(f64(A), f64(B), C, M, N, K, transB);
  return C;
}

/**
 * C = A·op(B) with a plain loop's rounding (k ascending, no FMA): the backends agree bit for bit,
 * so steps whose outputs are locked byte for byte can move from loops to this product.
 */
export function gemmSeqF64(A: Float64Array, B: Float64Array, M: number, N: number, K: number, transB = false): Float64Array {
  const C = new Float64Array(M * N);
  (M * N * K >= 32768 ? kernels() : tsKernels).dgemmSeq(A, B, C, M, N, K, transB);
  return C;
}

const f64 = (x: ArrayLike<number>): Float64Array => (x instanceof Float64Array ? x : Float64Array.from(x));

/** Aᵀ [n×m] of A [m×n]. */
export function transpose(A: ArrayLike<number>, m: number, n: number): Float64Array {
  const T = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) T[j * m + i] = A[i * n + j];
  return T;
}

/** ‖A‖_F² of the first len entries. */
export function frobenius2(A: ArrayLike<number>, len = A.length): number {
  let s = 0;
  for (let i = 0; i < len; i++) s += A[i] * A[i];
  return s;
}

export function checkMatrix(name: string, A: ArrayLike<number>, m: number, n: number): void {
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 0 || n < 0) throw new Error(`${name}: bad shape ${m}×${n}`);
  if (A.length < m * n) throw new Error(`${name}: holds ${A.length} values, a ${m}×${n} matrix needs ${m * n}`);
}
