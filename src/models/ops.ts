// The decoder's elementwise steps, O(T·D) each, through the kernels (native: threaded over rows).
import { kernels } from '../kernels/index.js';
import type { WeightDType } from '../kernels/types.js';
import { isQuantDType, tensorBytes, type Tensor } from '../tensor.js';

/** out[t] = x[t] / rms(x[t]) · w, row by row over T rows of width D (sum of squares in float64). */
export function rmsNorm(x: Float32Array, T: number, D: number, w: Float32Array, eps: number, out: Float32Array): void {
  kernels().rmsNorm(x, T, D, w, eps, out);
}

/** gate ← silu(gate) · up, elementwise (SwiGLU). */
export function siluMul(gate: Float32Array, up: Float32Array, n: number): void {
  kernels().siluMul(gate, up, n);
}

/** x += y over n elements (the residual stream). */
export function addInPlace(x: Float32Array, y: Float32Array, n: number): void {
  kernels().addInPlace(x, y, n);
}

/** Copies row `id` of an embedding table [V×D] (any dtype, q8_0/q4_0 dequantized) into out as f32. */
export function embedRow(table: Tensor<WeightDType>, id: number, D: number, out: Float32Array): void {
  const V = table.shape[0]!;
  if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`token id ${id} outside the vocabulary [0, ${V})`);
  if (isQuantDType(table.dtype)) {
    const rb = tensorBytes(table.dtype, D);
    kernels().toF32((table.data as Uint8Array).subarray(id * rb, (id + 1) * rb), table.dtype, out);
    return;
  }
  const row = table.data.subarray(id * D, (id + 1) * D);
  if (table.dtype === 'f32') out.set(row as Float32Array);
  else kernels().toF32(row as Uint16Array, table.dtype, out);
}
