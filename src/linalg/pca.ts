// PCA from an uncentered second-moment matrix Σ = Σ_t x_t x_tᵀ (TransMLA uses uncentered,
// float64, damped statistics: docs/methods.md#pca).
import { kernels } from '../kernels/index.js';
import { checkMatrix } from './dense.js';
import { eigh } from './eigh.js';

export interface PcaOptions {
  /** Adds damp·mean(diag Σ) to the diagonal before the eigendecomposition (TransMLA: 0.01). Default 0. */
  damp?: number;
  /** Number of components to return (default n). */
  k?: number;
}

export interface PcaResult {
  n: number;
  k: number;
  /** [n×k]: column j is the unit direction of the j-th largest variance. */
  components: Float64Array;
  /** [n]: variance along every direction, descending, with the damping shift removed. */
  variances: Float64Array;
  /** [n]: energy[j] = share of the total variance kept by the first j+1 components (1 when Σ = 0). */
  energy: Float64Array;
  /** What was added to the diagonal (damp·mean(diag Σ)). */
  shift: number;
}

/** Σ [K×K] float64 = XᵀX for X [T×K] f32 (acc adds into an existing Σ when given). */
export function secondMoment(X: Float32Array, T: number, K: number, acc: Float64Array = new Float64Array(K * K)): Float64Array {
  kernels().gramAccumulate(X, T, K, acc);
  return acc;
}

/** Principal components of Σ [n×n] (lower triangle read; Σ is not modified). */
export function pca(sigma: Float64Array, n: number, opts: PcaOptions = {}): PcaResult {
  checkMatrix('pca', sigma, n, n);
  const damp = opts.damp ?? 0;
  const k = opts.k ?? n;
  if (!(damp >= 0) || !Number.isFinite(damp)) throw new Error(`pca: damp must be a finite number ≥ 0, got ${damp}`);
  if (!Number.isInteger(k) || k < 0 || k > n) throw new Error(`pca: k must be an integer in 0..${n}, got ${k}`);
  let trace = 0;
  for (let i = 0; i < n; i++) trace += sigma[i * n + i];
  const shift = n > 0 ? (damp * trace) / n : 0;
  let A = sigma;
  if (shift !== 0) {
    A = sigma.slice(0, n * n);
    for (let i = 0; i < n; i++) A[i * n + i] += shift;
  }
  const { values, vectors } = eigh(A, n);
  // A multiple of I moves every eigenvalue by the same amount and leaves the vectors alone.
  const variances = values.map((v) => v - shift);
  const energy = new Float64Array(n);
  let total = 0;
  for (const v of variances) total += Math.max(0, v);
  let run = 0;
  for (let j = 0; j < n; j++) {
    run += Math.max(0, variances[j]);
    energy[j] = total > 0 ? Math.min(1, run / total) : 1;
  }
  let components = vectors;
  if (k < n) {
    components = new Float64Array(n * k);
    for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) components[i * k + j] = vectors[i * n + j];
  }
  return { n, k, components, variances, energy, shift };
}
