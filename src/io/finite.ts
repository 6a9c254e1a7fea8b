// NaN/Inf detection for weights and statistics. A non-finite weight or statistic poisons every
// covariance and eigendecomposition after it, so it is refused where it enters, with a name.
import type { QuantDType } from '../kernels/types.js';
import { isQuantDType, QUANT_BLOCK, type Tensor, type WeightSource } from '../tensor.js';

export class NonFiniteError extends Error {
  override name = 'NonFiniteError';
}

/** Index of the first NaN/±Inf value of a tensor (f16/bf16 read from their bits), or -1. */
export function firstNonFinite(t: Tensor): number {
  const d = t.data;
  if (t.dtype === 'f32') {
    const f = d as Float32Array;
    // x − x is 0 for finite x and NaN for NaN/±Inf: one test per value, no branch in the common case.
    for (let i = 0; i < f.length; i++) if (f[i]! - f[i]! !== 0) return i;
    return -1;
  }
  // All-ones exponent: f16 0x7c00, bf16 0x7f80.
  const mask = t.dtype === 'f16' ? 0x7c00 : 0x7f80;
  const u = d as Uint16Array;
  for (let i = 0; i < u.length; i++) if ((u[i]! & mask) === mask) return i;
  return -1;
}

function valueAt(t: Tensor, i: number): string {
  if (t.dtype === 'f32') return String((t.data as Float32Array)[i]);
  const b = (t.data as Uint16Array)[i]!;
  const mant = t.dtype === 'f16' ? b & 0x3ff : b & 0x7f;
  return mant !== 0 ? 'NaN' : b & 0x8000 ? '-Infinity' : 'Infinity';
}

/** Throws NonFiniteError naming the tensor and its file when it holds NaN/Inf. */
export function assertFiniteTensor(t: Tensor, name: string, file: string): void {
  const i = firstNonFinite(t);
  if (i >= 0) throw new NonFiniteError(`${file}: tensor "${name}" holds ${valueAt(t, i)} (element ${i} of ${t.data.length}, shape [${t.shape.join(', ')}]); the checkpoint is corrupt or was saved after a diverged run`);
}

/**
 * Throws NonFiniteError when a q8_0/q4_0 tensor has a NaN/Inf block scale (its codes are
 * integers, so the f16 scale that opens every block is the only place one can hide).
 */
export function assertFiniteBlocks(t: Tensor<QuantDType>, name: string, file: string): void {
  const bs = QUANT_BLOCK[t.dtype].bytes, d = t.data;
  for (let o = 0, b = 0; o + 1 < d.length; o += bs, b++) {
    if (((d[o]! | (d[o + 1]! << 8)) & 0x7c00) === 0x7c00) {
      throw new NonFiniteError(`${file}: tensor "${name}" (${t.dtype}) has a NaN/Inf scale in block ${b} of ${d.length / bs}, shape [${t.shape.join(', ')}]; the file is corrupt`);
    }
  }
}

/** A WeightSource whose get()/getWeight() refuse non-finite tensors; fileOf names the file a tensor is read from. */
export function finiteSource(src: WeightSource, fileOf: (name: string) => string): WeightSource {
  const checked: WeightSource = {
    ...(src.weightQuant && { weightQuant: src.weightQuant }),
    names: () => src.names(),
    has: (name) => src.has(name),
    get: (name) => {
      const t = src.get(name);
      assertFiniteTensor(t, name, fileOf(name));
      return t;
    },
  };
  if (src.getWeight) {
    checked.getWeight = (name) => {
      const t = src.getWeight!(name);
      if (isQuantDType(t.dtype)) assertFiniteBlocks(t as Tensor<QuantDType>, name, fileOf(name));
      else assertFiniteTensor(t as Tensor, name, fileOf(name));
      return t;
    };
  }
  return checked;
}

/** Throws NonFiniteError when a float64 statistic holds NaN/Inf; `what` says which (layer, statistic). */
export function assertFiniteStat(a: Float64Array, what: string): void {
  for (let i = 0; i < a.length; i++) {
    if (a[i]! - a[i]! !== 0) {
      throw new NonFiniteError(`${what} holds ${a[i]} (entry ${i} of ${a.length}): the activations overflowed or the weights are not finite; the conversion cannot continue`);
    }
  }
}
