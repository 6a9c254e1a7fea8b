// Helpers to pull named tensors out of a WeightSource with shape checks and clear errors.
import { kernels } from '../kernels/index.js';
import type { QuantDType, WeightDType } from '../kernels/types.js';
import { isQuantDType, numel, tensorBytes, type Tensor, type WeightSource, type WeightTensor } from '../tensor.js';

export function requireTensor(src: WeightSource, name: string, shape: readonly number[]): Tensor {
  if (!src.has(name)) throw new Error(`checkpoint has no tensor "${name}"`);
  const t = src.get(name);
  const ok = t.shape.length === shape.length && t.shape.every((s, i) => s === shape[i]);
  if (!ok) throw new Error(`tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
  return t;
}

/** `name` as a weight matrix (possibly q8_0/q4_0: WeightSource.getWeight), checked against `shape`. */
export function requireWeight(src: WeightSource, name: string, shape: readonly number[]): WeightTensor {
  if (!src.has(name)) throw new Error(`checkpoint has no tensor "${name}"`);
  const t = src.getWeight ? src.getWeight(name) : src.get(name);
  const ok = t.shape.length === shape.length && t.shape.every((s, i) => s === shape[i]);
  if (!ok) throw new Error(`tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
  return t;
}

/** A tensor widened to f32 (a copy for f16/bf16 or dequantized q8_0/q4_0, the data itself for f32). For small tensors: norms, biases. */
export function widen(t: Tensor<WeightDType>): Float32Array {
  if (t.dtype === 'f32') return t.data as Float32Array;
  const out = new Float32Array(numel(t.shape));
  if (isQuantDType(t.dtype)) kernels().toF32(t.data as Uint8Array, t.dtype, out);
  else kernels().toF32(t.data as Uint16Array, t.dtype as 'f16' | 'bf16', out);
  return out;
}

/**
 * A float tensor quantized to q8_0/q4_0 blocks along its last dimension (a weight [out, in] →
 * rows of in/32 blocks), bit-identical to llama.cpp's quantize_row_*_ref of its f32 values.
 */
export function quantizeTensor(t: Tensor<WeightDType>, type: QuantDType): Tensor<QuantDType> {
  const last = t.shape[t.shape.length - 1] ?? 1;
  if (last % 32 !== 0) throw new Error(`cannot quantize a [${t.shape.join(', ')}] tensor to ${type}: its rows are not a multiple of 32 elements`);
  const out = new Uint8Array(tensorBytes(type, numel(t.shape)));
  kernels().fromF32(widen(t), type, out);
  return { dtype: type, shape: [...t.shape], data: out };
}

/** `src` giving every tensor as floats (dequantized where stored quantized): for weights only float kernels take. */
export function floatOnly(src: WeightSource): WeightSource {
  return { names: () => src.names(), has: (name) => src.has(name), get: (name) => src.get(name) };
}

/**
 * `src` with its weight matrices quantized to `type` as they are read (`--weights q8_0|q4_0`):
 * every float matrix a loader reads through getWeight whose rows are whole blocks of 32; norms,
 * biases and matrices with other row lengths stay as they are, and so do matrices the source
 * already holds quantized (a Q4_0 GGUF stays Q4_0).
 */
export function quantizingSource(src: WeightSource, type: QuantDType): WeightSource {
  return {
    names: () => src.names(),
    has: (name) => src.has(name),
    get: (name) => src.get(name),
    weightQuant: type,
    getWeight: (name) => {
      const t = src.getWeight ? src.getWeight(name) : src.get(name);
      if (isQuantDType(t.dtype) || t.shape.length !== 2 || t.shape[1]! % 32 !== 0) return t;
      return quantizeTensor(t, type);
    },
  };
}
