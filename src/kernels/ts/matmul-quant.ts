// Products with a q8_0/q4_0 weight [N×K] (the reference the native kernels are tested against):
// every activation row is rounded to 16-bit blocks (roundActivations), then each output is
// Σ_b d_w·d_x·(integer dot of the block) in float64. One definition for every row count, so a
// decode step and a prefill of the same tokens multiply the same numbers.
import type { QuantDType, WeightData } from '../types.js';
import { Q4_0_BYTES, Q8_0_BYTES, QK, quantRowDot, roundActivations } from './quant.js';

export function quantBlockBytes(type: QuantDType): number {
  if (type === 'q8_0') return Q8_0_BYTES;
  if (type === 'q4_0') return Q4_0_BYTES;
  throw new Error(`unsupported quantized dtype ${String(type)}`);
}

/** Validates a quantized weight of N rows × K and returns its row stride in bytes. */
export function checkQuantWeight(name: string, W: WeightData, type: QuantDType, N: number, K: number): number {
  const bb = quantBlockBytes(type);
  if (!(W instanceof Uint8Array)) throw new Error(`${name}: dtype ${type} needs Uint8Array data (raw blocks)`);
  if (K % QK !== 0) throw new Error(`${name}: K = ${K} is not a multiple of ${QK}, the ${type} block size`);
  const row = (K / QK) * bb;
  if (W.length < N * row) throw new Error(`${name}: holds ${W.length} bytes, needs ${N * row} for ${N}×${K} ${type}`);
  return row;
}

/** y[N] = W·x̂ (see Kernels.gemv). */
export function gemvQuant(W: Uint8Array, type: QuantDType, x: Float32Array, y: Float32Array, N: number, K: number): void {
  const row = checkQuantWeight('gemv W', W, type, N, K);
  if (x.length < K) throw new Error(`gemv: x holds ${x.length} values, needs K = ${K}`);
  if (y.length < N) throw new Error(`gemv: y holds ${y.length} values, needs N = ${N}`);
  const xr = roundActivations(x, 1, K);
  const nb = K / QK;
  for (let n = 0; n < N; n++) y[n] = quantRowDot(W, type, n * row, xr, 0, 0, nb);
}

/** C[M×N] (+)= Â·Wᵀ for a quantized W [N×K] (transB layout only: blocks run along K). */
export function matmulQuant(A: Float32Array, W: Uint8Array, type: QuantDType, C: Float32Array, M: number, N: number, K: number, transB: boolean, accumulate: boolean): void {
  if (!transB) throw new Error(`matmul: a ${type} B must be a weight [N×K] (transB = true); its blocks run along K`);
  const row = checkQuantWeight('matmul B', W, type, N, K);
  if (A.length < M * K) throw new Error(`matmul: A holds ${A.length} values, needs M*K = ${M * K}`);
  if (C.length < M * N) throw new Error(`matmul: C holds ${C.length} values, needs M*N = ${M * N}`);
  const xr = roundActivations(A, M, K);
  const nb = K / QK;
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < M; i++) {
      const v = quantRowDot(W, type, n * row, xr, i * K, i * nb, nb);
      C[i * N + n] = accumulate ? C[i * N + n]! + v : v;
    }
  }
}
