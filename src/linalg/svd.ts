// Thin SVD through the eigendecomposition of the smaller Gram matrix (float64), and the (weightedLowRank: docs/methods.md#low-rank)
// activation-aware low-rank factorisation the converter uses.
import { kernels } from '../kernels/index.js';
import { checkMatrix, frobenius2, gemmF64, transpose } from './dense.js';
import { eigh } from './eigh.js';

const EPS = 2.220446049250313e-16;

export interface SvdResult {
  m: number;
  n: number;
  r: number;
  /** [m×r], orthonormal columns. */
  U: Float64Array;
  /** [r], descending, ≥ 0. */
  S: Float64Array;
  /** [r×n], orthonormal rows. */
  Vt: Float64Array;
  /**
   * [min(m, n)], descending: every eigenvalue of the smaller Gram matrix (σ_j², clamped ≥ 0), the
   * by-product of the factorisation; small ones are only known to ~eps·σ₁².
   */
  gramValues: Float64Array;
}

/** The k leading eigenpairs of a full decomposition (values descending), and all values clamped ≥ 0. */
function leading(full: { values: Float64Array; vectors: Float64Array }, n: number, k: number): { vectors: Float64Array; all: Float64Array } {
  const vectors = new Float64Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) vectors[i * k + j] = full.vectors[i * n + j];
  return { vectors, all: full.values.map((v) => Math.max(0, v)) };
}

/**
 * A [m×n] ≈ U·diag(S)·Vt, truncated to the r largest singular values (default min(m, n)).
 * Float32 input forms its Gram matrix with kernels().gramAccumulate; float64 input in float64 here.
 * Singular values below max(m,n)·eps·σ₁ are returned as exact zeros with U completed to an
 * orthonormal set, so rank-deficient input gives no NaNs.
 */
export function svd(A: Float64Array | Float32Array, m: number, n: number, r = Math.min(m, n)): SvdResult {
  checkMatrix('svd', A, m, n);
  if (!Number.isInteger(r) || r < 0 || r > Math.min(m, n)) throw new Error(`svd: rank must be an integer in 0..${Math.min(m, n)}, got ${r}`);
  if (m < n) {
    // A = U S Vt  ⇔  Aᵀ = Vtᵀ S Uᵀ: solve the tall problem and swap the factors.
    const t = tallSvd(A instanceof Float32Array ? new Float32Array(transpose(A, m, n)) : transpose(A, m, n), n, m, r);
    return { m, n, r, U: transpose(t.Vt, r, m), S: t.S, Vt: transpose(t.U, n, r), gramValues: t.gramValues };
  }
  return tallSvd(A, m, n, r);
}

/**
 * m ≥ n: V from eig(AᵀA), then one-sided Jacobi on the columns of A·V. A·V is already nearly
 * column-orthogonal, so this takes a sweep or two; it fixes what the Gram matrix cannot resolve
 * (directions of small σ are only known to ~eps·σ₁²/σ there), keeps A = (A·V)·Vᵀ exact, and
 * yields U orthonormal to working precision.
 */
function tallSvd(A: Float64Array | Float32Array, m: number, n: number, r: number): SvdResult {
  const G = new Float64Array(n * n);
  if (A instanceof Float32Array) kernels().gramAccumulate(A, m, n, G);
  else G.set(gemmF64(transpose(A, m, n), A, n, n, m));
  const { vectors: V, all: gramValues } = leading(eigh(G, n), n, r); // [n×r]
  const Bt = transpose(gemmF64(A, V, m, r, n), m, r); // [r×m]: row j = A v_j
  const Vt = transpose(V, n, r); // [r×n]
  jacobiColumns(Bt, Vt, r, m, n);

  const norms = new Float64Array(r);
  for (let j = 0; j < r; j++) norms[j] = Math.sqrt(frobenius2(Bt.subarray(j * m, j * m + m)));
  const order = Array.from({ length: r }, (_, j) => j).sort((a, b) => norms[b] - norms[a]);
  const tol = Math.max(m, n) * EPS * (r > 0 ? norms[order[0]] : 0);
  const U = new Float64Array(m * r);
  const S = new Float64Array(r);
  const Vs = new Float64Array(r * n);
  let j = 0;
  for (; j < r; j++) {
    const src = order[j];
    Vs.set(Vt.subarray(src * n, src * n + n), j * n);
    const s = norms[src];
    if (!(s > tol)) break;
    S[j] = s;
    for (let i = 0; i < m; i++) U[i * r + j] = Bt[src * m + i] / s;
  }
  // Numerically zero singular values: exact zeros, U completed (the Vt rows are still valid).
  for (; j < r; j++) {
    Vs.set(Vt.subarray(order[j] * n, order[j] * n + n), j * n);
    completeColumn(U, m, r, j);
  }
  return { m, n, r, U, S, Vt: Vs, gramValues };
}

/** One-sided Jacobi: rotates pairs of rows of Bt [r×m] until mutually orthogonal, applying the same rotations to Vt [r×n]. */
function jacobiColumns(Bt: Float64Array, Vt: Float64Array, r: number, m: number, n: number): void {
  const tol = Math.max(1, Math.sqrt(m)) * EPS;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < r - 1; p++) {
      for (let q = p + 1; q < r; q++) {
        const bp = p * m, bq = q * m;
        let alpha = 0, beta = 0, gamma = 0;
        for (let i = 0; i < m; i++) {
          const x = Bt[bp + i], y = Bt[bq + i];
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (!(Math.abs(gamma) > tol * Math.sqrt(alpha * beta))) continue;
        rotated = true;
        // Rotation that zeroes the (p, q) entry of the 2×2 Gram [[alpha, gamma], [gamma, beta]].
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.hypot(1, zeta));
        const c = 1 / Math.hypot(1, t);
        const s = c * t;
        for (let i = 0; i < m; i++) {
          const x = Bt[bp + i], y = Bt[bq + i];
          Bt[bp + i] = c * x - s * y;
          Bt[bq + i] = s * x + c * y;
        }
        const vp = p * n, vq = q * n;
        for (let i = 0; i < n; i++) {
          const x = Vt[vp + i], y = Vt[vq + i];
          Vt[vp + i] = c * x - s * y;
          Vt[vq + i] = s * x + c * y;
        }
      }
    }
    if (!rotated) return;
  }
  throw new Error(`svd: one-sided Jacobi did not converge (r = ${r}, m = ${m})`);
}

/** col -= U[:, :j] · (U[:, :j]ᵀ col) (U is [m×r] with j orthonormal columns). */
function orthogonalize(col: Float64Array, U: Float64Array, m: number, r: number, j: number): void {
  for (let l = 0; l < j; l++) {
    let d = 0;
    for (let i = 0; i < m; i++) d += U[i * r + l] * col[i];
    if (d !== 0) for (let i = 0; i < m; i++) col[i] -= d * U[i * r + l];
  }
}

/** Sets U[:, j] to a unit vector orthogonal to U[:, :j]: the basis vector e_i least covered by them. */
function completeColumn(U: Float64Array, m: number, r: number, j: number): void {
  let best = 0, bestLeft = -1;
  for (let i = 0; i < m; i++) {
    let covered = 0;
    for (let l = 0; l < j; l++) covered += U[i * r + l] ** 2;
    if (1 - covered > bestLeft) {
      bestLeft = 1 - covered;
      best = i;
    }
  }
  const col = new Float64Array(m);
  col[best] = 1;
  orthogonalize(col, U, m, r, j);
  orthogonalize(col, U, m, r, j);
  const s = Math.sqrt(frobenius2(col));
  for (let i = 0; i < m; i++) U[i * r + j] = col[i] / s;
}

export interface LowRankFactors {
  m: number;
  n: number;
  r: number;
  /** [m×r], orthonormal columns. Ŵ = up · down. */
  up: Float64Array;
  /** [r×n] = upᵀ·W. */
  down: Float64Array;
  /** [r]: weighted energy captured per component (σ_j² of W·C^{1/2}), descending. */
  kept: Float64Array;
  /** ‖W·C^{1/2}‖_F² = tr(W C Wᵀ). */
  total: number;
  /** ‖(W − Ŵ)·C^{1/2}‖_F², the minimum over all rank-r Ŵ. */
  error: number;
  /** [min(m, n)]: every σ_j² of W·C^{1/2}, descending (the first r are `kept`); sums to ≈ total. */
  spectrum: Float64Array;
}

/**
 * Best rank-r Ŵ of W [m×n] under the input second moment C [n×n] (full symmetric, PSD):
 * minimises ‖(W − Ŵ)·C^{1/2}‖_F, i.e. the output error E‖(W − Ŵ)x‖² when E[xxᵀ] = C.
 * Ŵ = U_r U_rᵀ W with U_r the top left singular vectors of W·C^{1/2} (Eckart–Young on W·C^{1/2});
 * projecting on the output side needs no inverse of C, so a singular C is fine.
 */
export function weightedLowRank(W: Float64Array | Float32Array, m: number, n: number, C: Float64Array, r: number): LowRankFactors {
  checkMatrix('weightedLowRank W', W, m, n);
  checkMatrix('weightedLowRank C', C, n, n);
  if (!Number.isInteger(r) || r < 0 || r > Math.min(m, n)) throw new Error(`weightedLowRank: rank must be an integer in 0..${Math.min(m, n)}, got ${r}`);
  let up: Float64Array, kept: Float64Array, total: number, spectrum: Float64Array;
  if (m <= n) {
    // Output side is the smaller one: top eigenvectors of W C Wᵀ [m×m].
    const WC = gemmF64(W, C, m, n, n);
    const M = gemmF64(WC, W, m, m, n, true);
    total = 0;
    for (let i = 0; i < m; i++) total += M[i * m + i];
    const top = leading(eigh(M, m), m, r);
    up = top.vectors;
    spectrum = top.all;
    kept = spectrum.slice(0, r);
  } else {
    // Input side is smaller: C = Q Λ Qᵀ, W·C^{1/2} ≅ W·Q·Λ^{1/2} (same left singular vectors), then a thin SVD.
    const { values, vectors } = eigh(C, n);
    const S = vectors.slice();
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) S[i * n + j] *= Math.sqrt(Math.max(0, values[j]));
    const WS = gemmF64(W, S, m, n, n);
    total = frobenius2(WS);
    const d = svd(WS, m, n, r);
    up = d.U;
    kept = d.S.map((s) => s * s);
    // The kept values from the SVD itself, the rest from its Gram matrix.
    spectrum = d.gramValues.slice();
    spectrum.set(kept);
  }
  const down = gemmF64(transpose(up, m, r), W, r, n, m);
  let sumKept = 0;
  for (const v of kept) sumKept += v;
  return { m, n, r, up, down, kept, total, error: Math.max(0, total - sumKept), spectrum };
}
