// Helpers to pull named tensors out of a WeightSource with shape checks and clear errors.
import { kernels } from '../kernels/index.js';
import type { Tensor, WeightSource } from '../tensor.js';

export function requireTensor(src: WeightSource, name: string, shape: readonly number[]): Tensor {
  if (!src.has(name)) throw new Error(`checkpoint has no tensor "${name}"`);
  const t = src.get(name);
  const ok = t.shape.length === shape.length && t.shape.every((s, i) => s === shape[i]);
  if (!ok) throw new Error(`tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
  return t;
}

/** A tensor widened to f32 (a copy for f16/bf16, the data itself for f32). For small tensors: norms, biases. */
export function widen(t: Tensor): Float32Array {
  if (t.dtype === 'f32') return t.data as Float32Array;
  const out = new Float32Array(t.data.length);
  kernels().toF32(t.data as Uint16Array, t.dtype, out);
  return out;
}
