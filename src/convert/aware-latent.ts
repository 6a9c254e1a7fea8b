// Output-aware joint latent and the closed-form kv_b refit (docs/methods.md#aware-latent).
//
// BKV-PCA keeps the r directions of X = [c_N/α ; c_V] with the least reconstruction error ‖X − X̂‖².
// The model only uses the NoPE keys through q·k and the values through W_o·v, so here the error is
// measured in that metric: E‖W^{½}(X − X̂)‖² with
//   W = blockdiag( β·σ²·Σ_h γ_h·kUp_N^hᵀ Ĉ_q^h kUp_N^h ,  vUpᵀ W_oᵀW_o vUp ),
// Ĉ_q^h the per-token query moment of head h, σ the softmax scale, and γ_h = E‖W_o^h(v_h − v̄_h)‖²
// the spread of head h's output: to first order a logit error δ_j moves the attention output by
// Σ_j p_j δ_j (v_j − ō), a value error e_j by Σ_j p_j e_j, so both reach W_o·o with the same Σ p_j²
// factor and the weights above put them in one unit. β (--key-weight, default 1) scales the key
// term. Minimiser over rank-r factorisations X̂ = U·A·X: with Z = W^{½}X, A = U_rᵀW^{½} (U_r the top
// eigenvectors of W^{½}Σ_X W^{½}), then U by least squares, U = E[X cᵀ]·E[c cᵀ]⁻¹ with c = A·X —
// the refit, which in the same-states case equals W^{−½}U_r and with a target from other states
// (sequential calibration against the source model) corrects the prefix's drift.
import { gemmF64, transpose } from '../linalg/dense.js';
import { pca } from '../linalg/pca.js';
import { spdSolve, symPow } from '../linalg/sym.js';
import { AWARE_DAMP } from './aware-rope.js';
import { assembleMla, splitBias, type LatentLayer, type MlaLayerWeights, type QueryBasis } from './latent-layer.js';

export interface AwareLatentOptions {
  rank: number;
  /** β: weight of the key (logit) error against the value (output) error. Default 1. */
  keyWeight?: number;
  queryBasis?: QueryBasis | null;
}

export interface AwareLatentResult {
  weights: MlaLayerWeights;
  /** Share of the weighted energy tr(W·Σ_X) kept by the r components. */
  energy: number;
  energyCurve: Float64Array;
  /** Weighted LS residual of the refit on the calibration states, relative to tr(W·Σ_X target). */
  refitResidual: number;
}

/** Inputs of the metric, all from calibration statistics of the layer's input. */
export interface AwareStats {
  /** [(nK+nV)²] moment Σ_t of [Wk;Wv]·x̄ of L (regressor side, summed over tokens). */
  kvCov: Float64Array;
  /** Calibration tokens the sums run over. */
  tokens: number;
  /** Per head [d²] per-token query moments (÷ token count). */
  qCovs: Float64Array[];
  /** [nV] mean value latent per token. */
  vMean: Float64Array;
  /** W_oᵀW_o [(H·d)²]. */
  oGram: Float64Array;
  /** Optional refit target: [(nK+nV)²] cross moment E[X_target·X_regressorᵀ] (rows target) and the target's own moment; default: the same states. */
  cross?: { kvCross: Float64Array; kvTarget: Float64Array } | null;
}

/** The m×m metric W on X = [c_N ; c_V] (unnormalised blocks, β applied). */
export function latentMetric(L: LatentLayer, st: AwareStats, keyWeight: number): Float64Array {
  const { nHeads: H, headDim: d, nK, nV, ropeDim: dR } = L;
  const nN = nK - dR, m = nN + nV, N = nK + nV, Hd = H * d;
  const W = new Float64Array(m * m);
  // Centered value moment per head → γ_h = tr(W_o^h·Cov(v_h)·W_o^hᵀ).
  const cv = new Float64Array(nV * nV);
  for (let i = 0; i < nV; i++) {
    for (let j = 0; j < nV; j++) cv[i * nV + j] = st.kvCov[(nK + i) * N + nK + j]! / st.tokens - st.vMean[i]! * st.vMean[j]!;
  }
  // Value block: vUpᵀ·W_oᵀW_o·vUp.
  const OV = gemmF64(st.oGram, L.vUp, Hd, nV, Hd);
  const WV = gemmF64(transpose(L.vUp, Hd, nV), OV, nV, nV, Hd);
  for (let i = 0; i < nV; i++) for (let j = 0; j < nV; j++) W[(nN + i) * m + nN + j] = WV[i * nV + j]!;
  // Key block: σ²·Σ_h γ_h kUp_N^hᵀ Ĉ_q^h kUp_N^h.
  const s2 = L.scale * L.scale * keyWeight;
  for (let h = 0; h < H; h++) {
    const Vh = L.vUp.subarray(h * d * nV, (h + 1) * d * nV); // [d × nV]
    const covH = gemmF64(gemmF64(Vh, cv, d, nV, nV), Vh, d, d, nV, true);
    const Oh = new Float64Array(d * d);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) Oh[i * d + j] = st.oGram[(h * d + i) * Hd + h * d + j]!;
    let gamma = 0;
    for (let i = 0; i < d * d; i++) gamma += Oh[i]! * covH[i]!;
    gamma = Math.max(0, gamma);
    const Kh = new Float64Array(d * nN);
    for (let e = 0; e < d; e++) for (let i = 0; i < nN; i++) Kh[e * nN + i] = L.kUp[(h * d + e) * nK + dR + i]!;
    const S = gemmF64(transpose(Kh, d, nN), gemmF64(st.qCovs[h]!, Kh, d, nN, d), nN, nN, d);
    const f = s2 * gamma;
    for (let i = 0; i < nN; i++) for (let j = 0; j < nN; j++) W[i * m + j]! += f * S[i * nN + j]!;
  }
  return W;
}

/** The m×m block of [K;V] moment rows/cols dR.. (the joint latent X = [c_N ; c_V]). */
function latentBlock(C: Float64Array, nK: number, nV: number, dR: number): Float64Array {
  const N = nK + nV, m = N - dR;
  const out = new Float64Array(m * m);
  for (let i = 0; i < m; i++) out.set(C.subarray((dR + i) * N + dR, (dR + i) * N + N), i * m);
  return out;
}

function trace(A: Float64Array, n: number): number {
  let t = 0;
  for (let i = 0; i < n; i++) t += A[i * n + i]!;
  return t;
}

/** One layer's latent in the output-aware metric, with kv_b refit by least squares. */
export function awareLatent(L: LatentLayer, st: AwareStats, opts: AwareLatentOptions): AwareLatentResult {
  const { hidden: D, nHeads: H, headDim: d, nK, nV, ropeDim: dR } = L;
  const m = nK - dR + nV, r = opts.rank, Dp = D + 1;
  if (!Number.isInteger(r) || r < 1 || r > m) throw new Error(`kv_lora_rank must be an integer in [1, 2·G·d − d_R = ${m}], got ${r}`);
  const W = latentMetric(L, st, opts.keyWeight ?? 1);
  const trW = trace(W, m);
  for (let i = 0; i < m; i++) W[i * m + i]! += AWARE_DAMP * (trW > 0 ? trW / m : 1);
  const Wh = symPow(W, m, 0.5);
  const Sx = latentBlock(st.kvCov, nK, nV, dR);
  const Z = gemmF64(gemmF64(Wh, Sx, m, m, m), Wh, m, m, m);
  const { components: Ur, energy } = pca(Z, m, { k: r });
  const A = gemmF64(transpose(Ur, m, r), Wh, r, m, m); // [r × m]
  // Refit U = E[X_tgt cᵀ]·E[c cᵀ]⁻¹, c = A·X_reg: E[c cᵀ] = A Σ_reg Aᵀ, E[X_tgt cᵀ] = Σ_cross Aᵀ.
  const cross = st.cross ? latentBlock(st.cross.kvCross, nK, nV, dR) : Sx;
  const target = st.cross ? latentBlock(st.cross.kvTarget, nK, nV, dR) : Sx;
  const At = transpose(A, r, m);
  const Ecc = gemmF64(A, gemmF64(Sx, At, m, r, m), r, r, m);
  const Exc = gemmF64(cross, At, m, r, m); // [m × r]
  const U = transpose(spdSolve(Ecc, r, transpose(Exc, m, r), m), r, m); // [m × r]
  // Residual in the metric: tr(W·(Σ_tgt − U·E[c Xᵀ]))/tr(W·Σ_tgt) (the LS optimum's cross term).
  const UEt = gemmF64(U, transpose(Exc, m, r), m, m, r);
  let num = 0, den = 0;
  for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) {
    num += W[i * m + j]! * (target[j * m + i]! - UEt[j * m + i]!);
    den += W[i * m + j]! * target[j * m + i]!;
  }
  // The full-latent tensors (no basis: kvA rows = [c_N ; c_V ; RoPE], kv_b = B), then A and U.
  const full = assembleMla(L, null, opts.queryBasis ?? null);
  const Hw = H * 2 * d;
  const wb = new Float64Array((m + dR) * Dp);
  for (let i = 0; i < m + dR; i++) {
    wb.set(full.kvA.w.subarray(i * D, (i + 1) * D), i * Dp);
    wb[i * Dp + D] = full.kvA.b ? full.kvA.b[i]! : 0;
  }
  const down = gemmF64(A, wb.subarray(0, m * Dp), r, Dp, m);
  const kvA = new Float64Array((r + dR) * Dp);
  kvA.set(down);
  kvA.set(wb.subarray(m * Dp), r * Dp);
  const kvB = gemmF64(full.kvB, U, Hw, r, m);
  return {
    weights: { ...full, dims: { ...full.dims, kvLoraRank: r }, kvA: splitBias(kvA, r + dR, D), kvB },
    energy: energy[r - 1]!,
    energyCurve: energy,
    refitResidual: den > 0 ? Math.max(0, num / den) : 0,
  };
}
