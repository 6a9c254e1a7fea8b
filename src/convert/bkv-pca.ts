// Stage 4 — BKV-PCA (docs/methods.md#bkv-pca): one latent of rank r for the NoPE keys and the
// values together. Keys are first divided by α = mean‖K_nope col‖ / (mean‖V col‖·ratio) so
// the PCA does not spend the rank on whichever of the two happens to be larger; kUp is
// multiplied by α, so the function is unchanged before truncation. The top-r principal
// directions R of X = [K_nope/α ; V] give kv_a's latent rows Rᵀ·W and kv_b = B·R.
// At r = 2·G·d − d_R, R is a full orthogonal basis and the layer is exact.
//
// Deviation from the TransMLA code: its V norm skips V's first d_R columns (a slicing quirk
// copied from the key side); here α uses every V column, as the method describes.
import { gemmSeqF64 } from '../linalg/dense.js';
import { pca } from '../linalg/pca.js';
import { assembleMla, PCA_DAMP, type LatentLayer, type MlaLayerWeights, type QueryBasis } from './latent-layer.js';

export interface BkvOptions {
  /** kv_lora_rank r. */
  rank: number;
  /** balance_kv_ratio; 0 disables balancing (α = 1). TransMLA's default is 1. */
  balanceRatio?: number;
  /** Optional q_lora basis (q-lora.ts). */
  queryBasis?: QueryBasis | null;
}

export interface BkvResult {
  weights: MlaLayerWeights;
  alpha: number;
  /** Share of the (balanced) latent energy kept in the r components. */
  energy: number;
  /** energyCurve[j]: share kept by the first j + 1 components, over every component (the spectrum, for reports). */
  energyCurve: Float64Array;
}

/** The largest kv_lora_rank a layer admits: the joint latent has 2·G·d − d_R features. */
export function maxKvRank(L: LatentLayer): number {
  return L.nK - L.ropeDim + L.nV;
}

/**
 * kvCov: [(nK+nV)²] uncentered covariance of the stacked outputs [Wk ; Wv]·[x;1] of `L`
 * (key rows in L's order: RoPE rows first).
 */
export function bkvPca(L: LatentLayer, kvCov: Float64Array, opts: BkvOptions): BkvResult {
  const { nK, nV, ropeDim: dR } = L;
  const nNope = nK - dR, n = nNope + nV, N = nK + nV;
  const r = opts.rank;
  if (!Number.isInteger(r) || r < 1) throw new Error(`kv_lora_rank must be a positive integer, got ${r}`);
  if (r > n) {
    throw new Error(`kv_lora_rank ${r} exceeds the joint key/value latent: at most 2·G·d − d_R = ${nK + nV} − ${dR} = ${n}`);
  }
  if (kvCov.length !== N * N) throw new Error(`K/V covariance has ${kvCov.length} values, expected ${N}²`);
  const { alpha, sigma } = balancedLatentCov(L, kvCov, opts.balanceRatio ?? 1);
  const { components: R, energy } = pca(sigma, n, { damp: PCA_DAMP, k: r });
  return {
    weights: assembleMla(L, { alpha, R, rank: r }, opts.queryBasis ?? null),
    alpha,
    energy: energy[r - 1]!,
    energyCurve: energy,
  };
}

/**
 * α and Σ_X of X = [K_nope/α ; V] ([n²], n = 2·G·d − d_R) from the [K;V] covariance of L;
 * ratio 0 disables balancing (α = 1).
 */
export function balancedLatentCov(L: LatentLayer, kvCov: Float64Array, ratio: number): { alpha: number; sigma: Float64Array } {
  const { nK, nV, ropeDim: dR } = L;
  const nNope = nK - dR, n = nNope + nV, N = nK + nV;
  let alpha = 1;
  if (ratio > 0 && nNope > 0) {
    // Column norms over calibration tokens are √diag of the uncentered covariance.
    let kNorm = 0, vNorm = 0;
    for (let i = dR; i < nK; i++) kNorm += Math.sqrt(Math.max(0, kvCov[i * N + i]!));
    for (let i = nK; i < N; i++) vNorm += Math.sqrt(Math.max(0, kvCov[i * N + i]!));
    kNorm /= nNope;
    vNorm /= nV;
    if (kNorm > 0 && vNorm > 0) alpha = kNorm / (vNorm * ratio);
  }
  // Σ of X = [K_nope/α ; V]: rows dR..nK−1 and nK..N−1 of kvCov, key part scaled.
  const src = (i: number): number => (i < nNope ? dR + i : nK + (i - nNope));
  const sigma = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const si = src(i), fi = i < nNope ? 1 / alpha : 1;
    for (let j = 0; j < n; j++) {
      const sj = src(j), fj = j < nNope ? 1 / alpha : 1;
      sigma[i * n + j] = kvCov[si * N + sj]! * fi * fj;
    }
  }
  return { alpha, sigma };
}

/**
 * The [K ; V] covariance after RoRoPE rotated the key rows by T (new Wk = T·Wk): blocks
 * KK → T·KK·Tᵀ, KV → T·KV, VV unchanged. Lets a search score shapes from one set of statistics.
 * T is block-sparse (one FreqFold group per row), so the products run per run of rows sharing
 * their nonzero column range, through gemmSeqF64: the bits are those of the dense loop, whose
 * skipped terms are exact zeros.
 */
export function rotateKvCov(kvCov: Float64Array, T: Float64Array, nK: number, nV: number): Float64Array {
  const N = nK + nV;
  if (kvCov.length !== N * N || T.length !== nK * nK) throw new Error('rotateKvCov: shapes do not match');
  const blocks = rowBlocks(T, nK);
  // A = diag(T, I)·C, then out = A·diag(T, I)ᵀ.
  const A = new Float64Array(N * N);
  for (const { rows, lo, w } of blocks) {
    const Y = gemmSeqF64(gatherRows(T, nK, rows, lo, w), kvCov.subarray(lo * N, (lo + w) * N), rows.length, N, w);
    rows.forEach((i, r) => A.set(Y.subarray(r * N, (r + 1) * N), i * N));
  }
  A.set(kvCov.subarray(nK * N), nK * N);
  const out = new Float64Array(N * N);
  for (const { rows, lo, w } of blocks) {
    const Ab = new Float64Array(N * w);
    for (let i = 0; i < N; i++) Ab.set(A.subarray(i * N + lo, i * N + lo + w), i * w);
    const Y = gemmSeqF64(Ab, gatherRows(T, nK, rows, lo, w), N, rows.length, w, true);
    for (let i = 0; i < N; i++) rows.forEach((j, r) => { out[i * N + j] = Y[i * rows.length + r]!; });
  }
  for (let i = 0; i < N; i++) out.set(A.subarray(i * N + nK, (i + 1) * N), i * N + nK);
  return out;
}

/** Rows of a square matrix grouped by their nonzero column range [lo, lo + w); all-zero rows are left out. */
function rowBlocks(T: Float64Array, n: number): { rows: number[]; lo: number; w: number }[] {
  const byRange = new Map<string, { rows: number[]; lo: number; w: number }>();
  for (let i = 0; i < n; i++) {
    let lo = -1, hi = -1;
    for (let k = 0; k < n; k++) if (T[i * n + k] !== 0) { if (lo < 0) lo = k; hi = k; }
    if (lo < 0) continue;
    const key = `${lo},${hi}`;
    const b = byRange.get(key) ?? { rows: [], lo, w: hi - lo + 1 };
    b.rows.push(i);
    byRange.set(key, b);
  }
  return [...byRange.values()];
}

function gatherRows(T: Float64Array, n: number, rows: number[], lo: number, w: number): Float64Array {
  const out = new Float64Array(rows.length * w);
  rows.forEach((i, r) => out.set(T.subarray(i * n + lo, i * n + lo + w), r * w));
  return out;
}
