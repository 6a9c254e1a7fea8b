// A named-dtype float tensor as read from / written to a checkpoint. Data stays in the
// checkpoint dtype (f16/bf16 as raw Uint16 bits); kernels widen it when they read it.
import type { FloatData, FloatDType } from './kernels/types.js';

export interface Tensor {
  dtype: FloatDType;
  shape: number[];
  data: FloatData;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function bytesPerElement(dtype: FloatDType): number {
  return dtype === 'f32' ? 4 : 2;
}

/** Where model weights come from: a checkpoint folder, a GGUF file, or memory (tests). */
export interface WeightSource {
  names(): string[];
  has(name: string): boolean;
  /** Reads one tensor (lazily, from disk when the source is a file). Throws naming the tensor when absent. */
  get(name: string): Tensor;
}
