// A named-dtype tensor as read from / written to a checkpoint. Data stays in the checkpoint
// dtype (f16/bf16 as raw Uint16 bits, q8_0/q4_0 as raw ggml blocks); kernels widen it when they
// read it. `Tensor` (the default parameter) is a float tensor, which is what every loader and
// layer handles; `WeightTensor` also admits quantized weights, for the places weights flow into
// the matrix kernels.
import type { FloatData, FloatDType, QuantDType, WeightDType } from './kernels/types.js';

export type { QuantDType, WeightDType } from './kernels/types.js';

/** The storage of a tensor of dtype D: raw blocks (Uint8Array) for a quantized dtype, else FloatData. */
export type DataOf<D extends WeightDType> = D extends QuantDType ? Uint8Array : FloatData;

export interface Tensor<D extends WeightDType = FloatDType> {
  dtype: D;
  shape: number[];
  data: DataOf<D>;
}

/** A tensor of any weight dtype, discriminated by `dtype` (narrowing it narrows `data`). */
export type WeightTensor = { [D in WeightDType]: Tensor<D> }[WeightDType];

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

/** Bytes of one element of a float dtype (the KV caches' unit; quantized formats have none: see tensorBytes). */
export function bytesPerElement(dtype: FloatDType): number {
  return dtype === 'f32' ? 4 : 2;
}

/** Elements per block and bytes per block of a quantized dtype (ggml-common.h block_q8_0 / block_q4_0). */
export const QUANT_BLOCK: Readonly<Record<QuantDType, { elements: number; bytes: number }>> = Object.freeze({
  q8_0: Object.freeze({ elements: 32, bytes: 34 }),
  q4_0: Object.freeze({ elements: 32, bytes: 18 }),
});

export function isQuantDType(d: string): d is QuantDType {
  return d === 'q8_0' || d === 'q4_0';
}

export function isWeightDType(d: string): d is WeightDType {
  return d === 'f32' || d === 'f16' || d === 'bf16' || isQuantDType(d);
}

/**
 * Bytes of `numel` elements stored as `dtype`. For a quantized dtype numel must be a whole
 * number of blocks (a row length that is a multiple of 32), else this throws.
 */
export function tensorBytes(dtype: WeightDType, numel: number): number {
  if (!Number.isSafeInteger(numel) || numel < 0) throw new Error(`tensorBytes: element count must be a non-negative integer, got ${numel}`);
  if (isQuantDType(dtype)) {
    const b = QUANT_BLOCK[dtype];
    if (numel % b.elements !== 0) throw new Error(`tensorBytes: ${numel} elements are not a whole number of ${dtype} blocks of ${b.elements}`);
    return (numel / b.elements) * b.bytes;
  }
  if (dtype === 'f32') return numel * 4;
  if (dtype === 'f16' || dtype === 'bf16') return numel * 2;
  throw new Error(`tensorBytes: unknown dtype ${String(dtype)}`);
}

/**
 * Length of the typed array holding `numel` elements of `dtype`: elements for floats (Float32Array
 * or Uint16Array), bytes for quantized blocks (Uint8Array).
 */
export function dataLength(dtype: WeightDType, numel: number): number {
  return isQuantDType(dtype) ? tensorBytes(dtype, numel) : numel;
}

/** Where model weights come from: a checkpoint folder, a GGUF file, or memory (tests). */
export interface WeightSource {
  names(): string[];
  has(name: string): boolean;
  /** Reads one tensor (lazily, from disk when the source is a file). Throws naming the tensor when absent. */
  get(name: string): Tensor;
  /**
   * A weight matrix as the matrix kernels take it, when the source can give one that is not a
   * float tensor (a quantized GGUF's Q8_0/Q4_0 blocks; `--weights q8_0` quantizing at load).
   * Absent: get() is the weight. Loaders read linear weights and the embedding through this.
   */
  getWeight?(name: string): WeightTensor;
  /**
   * The type getWeight quantizes float matrices to (`--weights`); a layer that derives a matrix
   * at load (MLA's W_UK in decode layout) stores it the same way. Absent: weights as stored.
   */
  readonly weightQuant?: QuantDType;
}
