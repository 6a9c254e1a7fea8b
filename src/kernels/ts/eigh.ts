// Symmetric eigensolver in float64: Householder reduction to tridiagonal form, then
// implicit symmetric QR steps with the Wilkinson shift (bulge chasing with Givens
// rotations), as in Golub & Van Loan §8.3. Rotations are applied to the rows of Qᵀ so each
// one touches two contiguous rows instead of two strided columns.
import type { EighResult } from '../types.js';

const EPS = 2.220446049250313e-16;
/** Below this an off-diagonal is treated as zero whatever the diagonal (guards underflow loops). */
const TINY = 1e-300;
/** QR sweeps allowed per eigenvalue on average before giving up (LAPACK's dsteqr uses 30). */
const MAX_SWEEPS_PER_VALUE = 30;

export function eigh(A: Float64Array, n: number): EighResult {
  if (!Number.isInteger(n) || n < 0) throw new Error(`eigh: n must be a non-negative integer, got ${n}`);
  if (A.length < n * n) throw new Error(`eigh: A holds ${A.length} values, needs n*n = ${n * n}`);
  // Full symmetric working copy from the lower triangle.
  const W = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const v = A[i * n + j];
      if (!Number.isFinite(v)) throw new Error(`eigh: A[${i},${j}] is ${v}; the matrix must be finite`);
      W[i * n + j] = v;
      W[j * n + i] = v;
    }
  }
  const d = new Float64Array(n);
  const e = new Float64Array(Math.max(0, n - 1));
  const Qt = tridiagonalize(W, n, d, e);
  tridiagonalQR(d, e, Qt, n);
  return sortDescending(d, Qt, n);
}

/**
 * Reduces W (full symmetric, overwritten) to T = Qᵀ W Q with diagonal d and subdiagonal e.
 * Returns Qᵀ (n×n row-major), so row j of the result is column j of Q.
 */
function tridiagonalize(W: Float64Array, n: number, d: Float64Array, e: Float64Array): Float64Array {
  const taus = new Float64Array(Math.max(0, n - 2));
  const p = new Float64Array(n);
  for (let k = 0; k + 2 < n; k++) {
    // x = W[k, k+1..n-1] (row k, equal to column k by symmetry). Find v (v[0] = 1) and tau with
    // (I - tau v vᵀ) x = beta e1; v overwrites x in row k for the later accumulation of Q.
    const r0 = k * n + k + 1;
    const m = n - k - 1;
    const x0 = W[r0];
    let tail = 0;
    for (let i = 1; i < m; i++) tail = Math.hypot(tail, W[r0 + i]);
    d[k] = W[k * n + k];
    if (tail === 0) {
      e[k] = x0;
      taus[k] = 0;
      continue;
    }
    const norm = Math.hypot(x0, tail);
    const beta = x0 >= 0 ? -norm : norm;
    const tau = (beta - x0) / beta;
    const scale = 1 / (x0 - beta);
    W[r0] = 1;
    for (let i = 1; i < m; i++) W[r0 + i] *= scale;
    e[k] = beta;
    taus[k] = tau;
    // Two-sided update of the trailing block S = W[k+1.., k+1..]:
    // p = tau S v, w = p - (tau/2)(pᵀv) v, S -= v wᵀ + w vᵀ.
    const s0 = (k + 1) * n + k + 1;
    let pv = 0;
    for (let i = 0; i < m; i++) {
      const row = s0 + i * n;
      let acc = 0;
      for (let j = 0; j < m; j++) acc += W[row + j] * W[r0 + j];
      p[i] = tau * acc;
      pv += p[i] * W[r0 + i];
    }
    const half = 0.5 * tau * pv;
    for (let i = 0; i < m; i++) p[i] -= half * W[r0 + i];
    for (let i = 0; i < m; i++) {
      const row = s0 + i * n;
      const vi = W[r0 + i];
      const wi = p[i];
      for (let j = 0; j < m; j++) W[row + j] -= vi * p[j] + wi * W[r0 + j];
    }
  }
  if (n >= 2) {
    d[n - 2] = W[(n - 2) * n + n - 2];
    e[n - 2] = W[(n - 1) * n + n - 2];
  }
  if (n >= 1) d[n - 1] = W[(n - 1) * n + n - 1];

  // Q = H_0 H_1 … H_{n-3}, built right to left so each H_k only touches the block (k+1.., k+1..).
  const Q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) Q[i * n + i] = 1;
  const w = p;
  for (let k = n - 3; k >= 0; k--) {
    const tau = taus[k];
    if (tau === 0) continue;
    const r0 = k * n + k + 1; // v lives in W[k, k+1..]
    const lo = k + 1;
    w.fill(0, lo, n);
    for (let i = lo; i < n; i++) {
      const vi = W[r0 + i - lo];
      const row = i * n;
      for (let j = lo; j < n; j++) w[j] += vi * Q[row + j];
    }
    for (let i = lo; i < n; i++) {
      const f = tau * W[r0 + i - lo];
      const row = i * n;
      for (let j = lo; j < n; j++) Q[row + j] -= f * w[j];
    }
  }
  // Transpose in place into Qᵀ.
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const t = Q[i * n + j];
      Q[i * n + j] = Q[j * n + i];
      Q[j * n + i] = t;
    }
  }
  return Q;
}

/** Diagonalises the tridiagonal (d, e) in place; rotations are accumulated into the rows of Zt. */
function tridiagonalQR(d: Float64Array, e: Float64Array, Zt: Float64Array, n: number): void {
  let budget = MAX_SWEEPS_PER_VALUE * Math.max(1, n);
  let hi = n - 1;
  while (hi > 0) {
    // Deflate negligible couplings, then find the unreduced block [lo, hi] at the bottom.
    for (let i = 0; i < hi; i++) {
      if (Math.abs(e[i]) <= EPS * (Math.abs(d[i]) + Math.abs(d[i + 1])) || Math.abs(e[i]) < TINY) e[i] = 0;
    }
    while (hi > 0 && e[hi - 1] === 0) hi--;
    if (hi === 0) break;
    let lo = hi - 1;
    while (lo > 0 && e[lo - 1] !== 0) lo--;
    if (budget-- <= 0) throw new Error(`eigh: QR iteration did not converge (n = ${n}, block ${lo}..${hi} still coupled)`);
    qrStep(d, e, Zt, n, lo, hi);
  }
}

/** One implicit QR step with the Wilkinson shift on the block lo..hi (GVL Algorithm 8.3.2). */
function qrStep(d: Float64Array, e: Float64Array, Zt: Float64Array, n: number, lo: number, hi: number): void {
  // Shift: the eigenvalue of the trailing 2×2 closer to d[hi], written to avoid overflow and cancellation.
  const t = 0.5 * (d[hi - 1] - d[hi]);
  const b = e[hi - 1];
  const denom = t + (t >= 0 ? Math.hypot(t, b) : -Math.hypot(t, b));
  const mu = d[hi] - b * (b / denom);
  let x = d[lo] - mu;
  let z = e[lo];
  for (let k = lo; k < hi; k++) {
    // Givens rotation G = [c s; -s c] with Gᵀ [x; z] = [r; 0].
    const r = Math.hypot(x, z);
    let c = 1, s = 0;
    if (r !== 0) {
      c = x / r;
      s = -z / r;
    }
    if (k > lo) e[k - 1] = r;
    const a = d[k], bb = e[k], cc = d[k + 1];
    const cs = c * s, c2 = c * c, s2 = s * s;
    d[k] = c2 * a - 2 * cs * bb + s2 * cc;
    d[k + 1] = s2 * a + 2 * cs * bb + c2 * cc;
    e[k] = cs * (a - cc) + (c2 - s2) * bb;
    if (k + 1 < hi) {
      // The rotation spills e[k+1] into a bulge at (k, k+2), chased by the next rotation.
      x = e[k];
      z = -s * e[k + 1];
      e[k + 1] *= c;
    }
    // Z ← Z G: columns k, k+1 of Z are rows k, k+1 of Zt.
    const rk = k * n, rk1 = rk + n;
    for (let i = 0; i < n; i++) {
      const zk = Zt[rk + i], zk1 = Zt[rk1 + i];
      Zt[rk + i] = c * zk - s * zk1;
      Zt[rk1 + i] = s * zk + c * zk1;
    }
  }
}

function sortDescending(d: Float64Array, Zt: Float64Array, n: number): EighResult {
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => d[j] - d[i]);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const src = order[j];
    values[j] = d[src];
    const row = src * n;
    for (let i = 0; i < n; i++) vectors[i * n + j] = Zt[row + i];
  }
  return { values, vectors };
}
