// The calibrated bias fold of the strict DeepSeek-V3 export (docs/methods.md#bias-fold): stock
// DeepSeek-V3 has no attention biases, so every bias b that does not drop out exactly is replaced
// by b·(uᵀx), where x is the layer's normed input and u = S⁺μ (S = E[xxᵀ], μ = E[x] over the
// calibration tokens) is the least-squares best linear reproduction of the constant 1 from x:
//   min_u E(1 − uᵀx)²  ⇒  S u = μ,   residual ε = E(1 − uᵀx)² = 1 − μᵀS⁺μ.
// For a single bias this is the best possible linear fold (each output row's best linear
// predictor of its constant is that constant times uᵀx, whatever the weighting). Where the bias
// enters:
// - query bias b_q: q_proj += b_q uᵀ (with q_lora: q_a_proj's rows += δ_q uᵀ, δ_q = q_b⁺·b);
// - RoPE-key bias b_R: the RoPE rows of kv_a_proj_with_mqa += b_R uᵀ;
// - value bias (the latent bias β reaching the values) and o_proj bias b_o: together a constant
//   output y₀ = b_o + M·β, M = W_o·W_UV (the softmax weights sum to 1). It is realised through the
//   latent: the latent rows of kv_a += δ uᵀ, which also adds W_UK·δ·(uᵀx) to the NoPE keys, of
//   which only the part varying from token to token, W_UK·δ·(uᵀx − m), matters. δ minimises the
//   value error plus λ times the key error (balancedLatentBias); it is M⁺·y₀ when uᵀx is exactly
//   1, and the export picks λ by the measured attention output (stock-bias.ts).
// Residuals are relative mean-square errors of the projection each bias enters, from the Grams.
import { gemmF64 } from '../linalg/dense.js';
import { eigh } from '../linalg/eigh.js';

/** The constant-1 fit over one layer's calibration inputs. */
export interface ConstantFit {
  D: number;
  /** u = S⁺μ. */
  u: Float64Array;
  /** μ = E[x]. */
  mu: Float64Array;
  /** S = E[xxᵀ] [D×D]. */
  S: Float64Array;
  /** m = uᵀμ = E[uᵀx]. */
  m: number;
  /** q = uᵀSu = E[(uᵀx)²] (= m for the exact pseudo-inverse). */
  q: number;
}

/** Symmetric pseudo-inverse times a vector, A⁺b, on A's eigenbasis (eigenvalues ≤ 1e-12·max dropped). */
function pinvSolve(A: Float64Array, n: number, b: Float64Array): Float64Array {
  const { values, vectors } = eigh(A, n);
  const floor = 1e-12 * Math.max(values[0] ?? 0, 0);
  const x = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const l = values[k]!;
    if (!(l > floor)) continue;
    let p = 0;
    for (let i = 0; i < n; i++) p += vectors[i * n + k]! * b[i]!;
    p /= l;
    for (let i = 0; i < n; i++) x[i]! += p * vectors[i * n + k]!;
  }
  return x;
}

/** From Σ [x;1][x;1]ᵀ over the calibration tokens ((D+1)², HiddenStates.gram). */
export function constantFit(gram: Float64Array, D: number): ConstantFit {
  const Dp = D + 1, n = gram[D * Dp + D]!;
  if (!(n > 0)) throw new Error('bias fold: no calibration tokens');
  const S = new Float64Array(D * D), mu = new Float64Array(D);
  for (let i = 0; i < D; i++) {
    mu[i] = gram[i * Dp + D]! / n;
    for (let j = 0; j < D; j++) S[i * D + j] = gram[i * Dp + j]! / n;
  }
  const u = pinvSolve(S, D, mu);
  const m = dot(u, mu), q = dot(u, gemmF64(S, u, D, 1, D));
  return { D, u, mu, S, m, q };
}

/** ε = E(1 − uᵀx)² = 1 − 2m + q: the share of a bias the fold cannot reproduce (as a mean square). */
export function constantResidual(f: ConstantFit): number {
  return Math.max(0, 1 - 2 * f.m + f.q);
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** tr(L S Lᵀ) for L [rows×D]: E‖Lx‖². */
function energy(f: ConstantFit, L: Float64Array, rows: number): number {
  return dot(gemmF64(L, f.S, rows, f.D, f.D), L);
}

/**
 * Relative mean-square error of realising the constant c of y = L·x + c as a·(uᵀx):
 * E‖c − a·uᵀx‖² / E‖Lx + c‖² = (‖c‖² − 2·cᵀa·m + ‖a‖²·q) / (tr(LSLᵀ) + 2·cᵀLμ + ‖c‖²).
 */
export function foldResidual(f: ConstantFit, L: Float64Array, rows: number, c: Float64Array, a: Float64Array): number {
  const err = dot(c, c) - 2 * dot(c, a) * f.m + dot(a, a) * f.q;
  const den = energy(f, L, rows) + 2 * dot(c, gemmF64(L, f.mu, rows, 1, f.D)) + dot(c, c);
  return den > 0 ? Math.max(0, err) / den : 0;
}

/** W [rows×D] + a·uᵀ (a copy). */
export function addRankOne(W: Float64Array, rows: number, a: ArrayLike<number>, f: ConstantFit): Float64Array {
  const D = f.D, out = new Float64Array(W);
  for (let i = 0; i < rows; i++) {
    const ai = a[i]!;
    if (ai === 0) continue;
    for (let j = 0; j < D; j++) out[i * D + j]! += ai * f.u[j]!;
  }
  return out;
}

/** x = A⁺y for A [rows×cols] (least squares, minimum norm), through AᵀA. */
export function leastSquares(A: Float64Array, rows: number, cols: number, y: Float64Array): Float64Array {
  const AtA = gemmF64(transposeOf(A, rows, cols), A, cols, cols, rows);
  const Aty = gemmF64(y, A, 1, cols, rows);
  return pinvSolve(AtA, cols, Aty);
}

function transposeOf(A: Float64Array, m: number, n: number): Float64Array {
  const T = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) T[j * m + i] = A[i * n + j]!;
  return T;
}

/** E‖Lx + c‖² = tr(LSLᵀ) + 2·cᵀLμ + ‖c‖²: the energy of a projection's output. */
export function outputEnergy(f: ConstantFit, L: Float64Array, rows: number, c: Float64Array | null): number {
  const e = energy(f, L, rows);
  return c ? e + 2 * dot(c, gemmF64(L, f.mu, rows, 1, f.D)) + dot(c, c) : e;
}

/** tr(KSKᵀ) − ‖Kμ‖²: the energy of a projection's output about its mean. */
export function centredEnergy(f: ConstantFit, K: Float64Array, rows: number): number {
  const Kmu = gemmF64(K, f.mu, rows, 1, f.D);
  return energy(f, K, rows) - dot(Kmu, Kmu);
}

/**
 * The latent bias δ [r] that realises a constant output y₀ through the values (y₀ ≈ M·δ·uᵀx) at
 * the least value error plus λ times the NoPE-key error, both relative:
 *   min_δ  (‖y₀‖² − 2m·y₀ᵀMδ + q·δᵀMᵀMδ)/E_v + λ·(q − m²)·δᵀW_UKᵀW_UKδ/E_k
 *   ⇒  (q·MᵀM/E_v + λ·(q − m²)·W_UKᵀW_UK/E_k)·δ = m·Mᵀy₀/E_v,
 * E_v = E‖M·c + b_o‖² the value output's energy, E_k the NoPE keys' energy about their mean.
 * λ = 0 is the plain least-squares value fold (m/q)·M⁺y₀. M [D×r], Wuk [rowsK×r].
 */
export function balancedLatentBias(f: ConstantFit, M: Float64Array, Wuk: Float64Array, rowsK: number, r: number, y0: Float64Array, Ev: number, Ek: number, lambda: number): Float64Array {
  const D = f.D;
  const MtM = gemmF64(transposeOf(M, D, r), M, r, r, D), KtK = gemmF64(transposeOf(Wuk, rowsK, r), Wuk, r, r, rowsK);
  const wk = Ek > 0 ? (lambda * Math.max(0, f.q - f.m * f.m)) / Ek : 0;
  const A = new Float64Array(r * r);
  for (let i = 0; i < r * r; i++) A[i] = (f.q * MtM[i]!) / Ev + wk * KtK[i]!;
  const rhs = gemmF64(y0, M, 1, r, D);
  for (let i = 0; i < r; i++) rhs[i]! *= f.m / Ev;
  return pinvSolve(A, r, rhs);
}

/**
 * Relative error of the NoPE keys from a latent bias δ realised as δ·(uᵀx): the exact keys'
 * constant drops out of the softmax, so only δ·(uᵀx − m) counts, against the keys' own variation:
 * ‖K_δ‖²·(q − m²) / (tr(K S Kᵀ) − ‖Kμ‖²), K = W_UK·W_c [rows×D], K_δ = W_UK·δ.
 */
export function latentKeyResidual(f: ConstantFit, K: Float64Array, rows: number, Kdelta: Float64Array): number {
  const den = centredEnergy(f, K, rows);
  const err = dot(Kdelta, Kdelta) * Math.max(0, f.q - f.m * f.m);
  return den > 0 ? Math.max(0, err) / den : 0;
}
