// Functions of symmetric positive semi-definite matrices through eigh (float64): the square root
// the metric-aware factorisations need (docs/methods.md#aware), and an SPD solve.
import { checkMatrix } from './dense.js';
import { eigh } from './eigh.js';

/**
 * A^p for symmetric A [n×n] (lower triangle read), p = ½ or −½ typically. Eigenvalues below
 * floor·λ_max are raised to it first, so a semi-definite A gives a finite result.
 */
export function symPow(A: Float64Array, n: number, p: number, floor = 1e-12): Float64Array {
  checkMatrix('symPow', A, n, n);
  const { values, vectors } = eigh(A, n);
  const top = n > 0 ? Math.max(0, values[0]!) : 0;
  const lo = top > 0 ? floor * top : Number.MIN_VALUE;
  const f = values.map((v) => Math.max(v, lo) ** p);
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += vectors[i * n + k]! * f[k]! * vectors[j * n + k]!;
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  }
  return out;
}

/** X [n×m] with A·X = B for symmetric positive (semi-)definite A [n×n], B [n×m] (pseudo-inverse below floor·λ_max). */
export function spdSolve(A: Float64Array, n: number, B: Float64Array, m: number, floor = 1e-12): Float64Array {
  checkMatrix('spdSolve', A, n, n);
  checkMatrix('spdSolve', B, n, m);
  const { values, vectors } = eigh(A, n);
  const top = n > 0 ? Math.max(0, values[0]!) : 0;
  // Vᵀ·B, scaled by 1/λ (0 for λ below the floor), then V·(…).
  const VtB = new Float64Array(n * m);
  for (let k = 0; k < n; k++) {
    const v = values[k]!;
    const inv = v > floor * top && v > 0 ? 1 / v : 0;
    if (inv === 0) continue;
    for (let i = 0; i < n; i++) {
      const u = vectors[i * n + k]! * inv;
      if (u === 0) continue;
      for (let j = 0; j < m; j++) VtB[k * m + j]! += u * B[i * m + j]!;
    }
  }
  const X = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const u = vectors[i * n + k]!;
      if (u === 0) continue;
      for (let j = 0; j < m; j++) X[i * m + j]! += u * VtB[k * m + j]!;
    }
  }
  return X;
}
