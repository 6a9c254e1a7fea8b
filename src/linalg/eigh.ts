// Symmetric eigendecomposition through the kernel backend (native when available).
import { kernels } from '../kernels/index.js';
import type { EighResult } from '../kernels/types.js';
import { checkMatrix } from './dense.js';

export type { EighResult } from '../kernels/types.js';

/** All eigenpairs of symmetric A [n×n] (lower triangle read), values descending, vectors as columns. */
export function eigh(A: Float64Array, n: number): EighResult {
  checkMatrix('eigh', A, n, n);
  return kernels().eigh(A, n);
}

/** The k largest eigenpairs: values [k] descending, vectors [n×k] (column j pairs with values[j]). */
export function eighTop(A: Float64Array, n: number, k: number): EighResult {
  if (!Number.isInteger(k) || k < 0 || k > n) throw new Error(`eighTop: k must be an integer in 0..${n}, got ${k}`);
  const full = eigh(A, n);
  if (k === n) return full;
  const vectors = new Float64Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) vectors[i * k + j] = full.vectors[i * n + j];
  return { values: full.values.slice(0, k), vectors };
}
