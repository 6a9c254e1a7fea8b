// Calibrating the RMSNorm a stock DeepSeek-V3 layer puts on a low-rank latent (docs/methods.md#strict-export) (kv_a_layernorm
// on c, q_a_layernorm on the query latent), for a model converted without one.
//
// The exact model computes y = W·c from the latent c; the stock model computes
// y' = W'·(g ⊙ c/ρ(c)), ρ(c) = √(mean(c²) + ε) per token. A per-token scale cannot be undone by
// a linear map, so W' is the least-squares fit over calibration latents:
//   W' = W · S_cn · S_nn⁻¹ · diag(1/g),   S_cn = Σ c nᵀ, S_nn = Σ n nᵀ,  n = c/ρ(c)
// (float64 Grams of [c ; n]; S_nn inverted on its eigenbasis, eigenvalues below 1e-12·max
// dropped). g itself is then free (W' absorbs it); it is set per channel to RMS(c_i)/RMS(n_i)
// over the calibration tokens, so the normalised latent keeps the exact latent's scale (the
// cached values stay in the same range, and W' = W when ρ is constant). The fit minimises the
// plain output error Σ‖W'n' − Wc‖² of all rows of W together (every head's k_nope and v, or
// every query).
//
// What the refit cannot absorb is the per-token variation of rms(c). Before the fit the latent
// basis is rescaled per channel (c → s ⊙ c, a free reparametrisation: the down-projection's
// latent rows times s, W's columns divided by s) with s² chosen by least squares so that
// Σ_i s_i² c_i² is as constant as possible over the calibration tokens (LatentMomentStats,
// stabilizingScales). On kjv-gqa at 31.25 % this takes the perplexity gap to the exact model
// from +2.3 % to +0.5 %.
import { eigh } from '../linalg/eigh.js';
import { gemmF64 } from '../linalg/dense.js';
import { kernels } from '../kernels/index.js';

export class LatentNormStats {
  readonly r: number;
  readonly eps: number;
  /** Σ [c;n][c;n]ᵀ, (2r)². */
  readonly gram: Float64Array;
  tokens = 0;
  private buf = new Float32Array(0);

  constructor(r: number, eps: number) {
    this.r = r;
    this.eps = eps;
    this.gram = new Float64Array(4 * r * r);
  }

  /** Adds T latents, row t at rows[t·stride + offset .. + r), each channel i multiplied by scale[i] if given. */
  add(rows: Float32Array, T: number, stride: number, offset = 0, scale: Float64Array | null = null): void {
    const r = this.r, w = 2 * r;
    if (this.buf.length < T * w) this.buf = new Float32Array(T * w);
    const X = this.buf.subarray(0, T * w);
    for (let t = 0; t < T; t++) {
      const c = rows.subarray(t * stride + offset, t * stride + offset + r);
      let ss = 0;
      for (let i = 0; i < r; i++) { const v = scale ? c[i]! * scale[i]! : c[i]!; X[t * w + i] = v; ss += v * v; }
      const inv = 1 / Math.sqrt(ss / r + this.eps);
      for (let i = 0; i < r; i++) X[t * w + r + i] = X[t * w + i]! * inv;
    }
    kernels().gramAccumulate(X, T, w, this.gram);
    this.tokens += T;
  }

  private block(i0: number, j0: number): Float64Array {
    const r = this.r, w = 2 * r, out = new Float64Array(r * r);
    for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) out[i * r + j] = this.gram[(i0 + i) * w + j0 + j]!;
    return out;
  }
  get scc(): Float64Array { return this.block(0, 0); }
  get scn(): Float64Array { return this.block(0, this.r); }
  get snn(): Float64Array { return this.block(this.r, this.r); }
}

export interface LatentNormFit {
  /** The RMSNorm weight g [r]. */
  weight: Float64Array;
  /** M [r×r] with W' = W·M: S_cn·S_nn⁻¹·diag(1/g). */
  mix: Float64Array;
}

/** S_nn⁻¹ on its eigenbasis (tiny eigenvalues dropped: a pseudo-inverse). */
function pinvSym(A: Float64Array, n: number): Float64Array {
  const { values, vectors } = eigh(A, n);
  const floor = 1e-12 * Math.max(values[0] ?? 0, 0);
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const l = values[k]!;
    if (!(l > floor)) continue;
    const il = 1 / l;
    for (let i = 0; i < n; i++) {
      const vi = vectors[i * n + k]! * il;
      if (vi === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j]! += vi * vectors[j * n + k]!;
    }
  }
  return out;
}

/**
 * The scale α that brings the calibration latent to mean square 1 (α·c then enters the norm, so
 * its ε — which stock code and llama.cpp choose differently — is negligible against it).
 */
export function latentScale(s: LatentNormStats): number {
  const scc = s.scc, r = s.r;
  let tr = 0;
  for (let i = 0; i < r; i++) tr += scc[i * r + i]!;
  const ms = tr / (r * Math.max(1, s.tokens));
  return ms > 0 ? 1 / Math.sqrt(ms) : 1;
}

/**
 * The fit for a latent that enters the norm scaled by α (the down-projection's rows multiplied
 * by α; n = c/rms(c) is unchanged by it, so only g scales). Statistics taken with ε = 0.
 */
export function fitLatentNorm(s: LatentNormStats, alpha = 1): LatentNormFit {
  const r = s.r;
  if (s.tokens === 0) throw new Error('latent norm calibration saw no tokens');
  const scc = s.scc, snn = s.snn;
  const weight = new Float64Array(r);
  for (let i = 0; i < r; i++) {
    const c2 = scc[i * r + i]!, n2 = snn[i * r + i]!;
    weight[i] = alpha * (n2 > 0 && c2 > 0 ? Math.sqrt(c2 / n2) : 1);
  }
  const M = gemmF64(s.scn, pinvSym(snn, r), r, r, r);
  for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) M[i * r + j]! /= weight[j]!;
  return { weight, mix: M };
}

/** W' = W·M for W [rows × r] (f32 or f64 values). */
export function refit(W: ArrayLike<number>, rows: number, fit: LatentNormFit): Float64Array {
  const r = fit.weight.length;
  return gemmF64(W, fit.mix, rows, r, r);
}

/**
 * Relative output error of the fit over the calibration tokens,
 * Σ‖W'n' − Wc‖² / Σ‖Wc‖² = tr(W(S_cc − M̃S_nc)Wᵀ) / tr(W S_cc Wᵀ) with M̃ = S_cn S_nn⁻¹.
 */
export function fitResidual(W: ArrayLike<number>, rows: number, s: LatentNormStats): number {
  const r = s.r;
  const Mt = gemmF64(s.scn, pinvSym(s.snn, r), r, r, r);
  const E = new Float64Array(s.scc);
  const MSnc = gemmF64(Mt, s.scn, r, r, r, true); // M̃·S_cnᵀ = M̃·S_nc
  for (let i = 0; i < r * r; i++) E[i]! -= MSnc[i]!;
  const tr = (A: Float64Array): number => {
    const WA = gemmF64(W, A, rows, r, r);
    let t = 0;
    for (let i = 0; i < rows * r; i++) t += WA[i]! * Number(W[i]);
    return t;
  };
  const den = tr(s.scc);
  return den > 0 ? Math.max(0, tr(E)) / den : 0;
}

/**
 * Fourth moments of the latent, Σ [c²;1][c²;1]ᵀ ((r+1)², float64), for choosing per-channel
 * scales s that make the latent's per-token RMS as constant as possible: with w = s²,
 * minimise Σ_t (Σ_i w_i c_{t,i}² − 1)² (then rms(s ⊙ c) varies least from token to token, which
 * is exactly what the norm's refit cannot absorb). s is a reparametrisation (the down-projection's
 * latent rows times s, the up-projection's columns divided by s), so it costs nothing when exact.
 */
export class LatentMomentStats {
  readonly r: number;
  readonly gram: Float64Array;
  tokens = 0;
  private buf = new Float32Array(0);

  constructor(r: number) {
    this.r = r;
    this.gram = new Float64Array((r + 1) * (r + 1));
  }

  add(rows: Float32Array, T: number, stride: number, offset = 0): void {
    const r = this.r, w = r + 1;
    if (this.buf.length < T * w) this.buf = new Float32Array(T * w);
    const X = this.buf.subarray(0, T * w);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < r; i++) { const v = rows[t * stride + offset + i]!; X[t * w + i] = v * v; }
      X[t * w + r] = 1;
    }
    kernels().gramAccumulate(X, T, w, this.gram);
    this.tokens += T;
  }
}

/**
 * Per-channel scales s (s² = w ≥ floor·max w) solving the least squares above; all ones when
 * the problem is degenerate.
 */
export function stabilizingScales(m: LatentMomentStats, floor = 1e-3): Float64Array {
  const r = m.r, w1 = r + 1;
  const A = new Float64Array(r * r), b = new Float64Array(r);
  for (let i = 0; i < r; i++) {
    b[i] = m.gram[i * w1 + r]!;
    for (let j = 0; j < r; j++) A[i * r + j] = m.gram[i * w1 + j]!;
  }
  // Mild ridge for conditioning (relative to the mean diagonal).
  let tr = 0;
  for (let i = 0; i < r; i++) tr += A[i * r + i]!;
  for (let i = 0; i < r; i++) A[i * r + i]! += 1e-9 * tr / r;
  const P = pinvSym(A, r);
  const w = new Float64Array(r);
  for (let i = 0; i < r; i++) { let x = 0; for (let j = 0; j < r; j++) x += P[i * r + j]! * b[j]!; w[i] = x; }
  let mx = 0;
  for (const x of w) mx = Math.max(mx, x);
  const s = new Float64Array(r).fill(1);
  if (!(mx > 0)) return s;
  for (let i = 0; i < r; i++) s[i] = Math.sqrt(Math.max(w[i]!, floor * mx) / mx);
  return s;
}
