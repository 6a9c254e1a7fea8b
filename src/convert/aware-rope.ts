// Query-aware RoRoPE (docs/methods.md#aware-rope): which key directions keep RoPE, chosen by the
// score error their loss causes rather than by the key energy alone.
//
// Within one FreqFold group (n = G·M complex features, every one turning by ≈ the same angle) any
// invertible real n×n map T applied to the key's re and im parts alike commutes with RoPE; the
// absorbed query then transforms by T⁻ᵀ and every score is unchanged (RoRoPE is the orthogonal
// case T = Uᵀ). Dropping RoPE from component i changes the score by q'_i·k'_i·(e^{iθΔ} − 1), so
// with queries and keys independent the expected squared error of dropping a set D is
// ‖L_qᵀ·Π_D·L_k‖_F² (C_k = L_k L_kᵀ, C_q = L_q L_qᵀ the pooled key and absorbed-query second
// moments), minimised by Eckart–Young on L_qᵀL_k = U Σ Vᵀ: keep the top components of the balanced
// transform T = Σ^{−½}Uᵀ L_qᵀ, T⁻¹ = L_k V Σ^{−½} (both moments become Σ; error Σ_{i∈D} σ_i²).
// The NoPE components then get an orthonormal key basis (T⁻¹'s dropped columns orthonormalised),
// so the latent step measures their key error in the source key metric, as after RoRoPE.
import { gemmF64, transpose } from '../linalg/dense.js';
import { svd } from '../linalg/svd.js';
import { symPow } from '../linalg/sym.js';
import { checkRoRope } from './rorope.js';
import type { LatentLayer } from './latent-layer.js';

/** Relative damping of the two moments: keeps L_k, L_q invertible without moving the solution much. */
export const AWARE_DAMP = 1e-6;

export interface AwareRopeResult {
  layer: LatentLayer;
  /** Share of the predicted score error energy Σσ² kept under RoPE (the analogue of RoRoPE's key energy). */
  ropeEnergy: number;
}

/**
 * Σ_h kUp^hᵀ·C_q^h·kUp^h [nK²]: the second moment of the query as the shared key latent sees it
 * (each head's score error counts once). qCovs: per head d×d uncentered query moments.
 */
export function absorbedQueryCov(L: LatentLayer, qCovs: readonly Float64Array[]): Float64Array {
  const { nHeads: H, headDim: d, nK } = L;
  const out = new Float64Array(nK * nK);
  for (let h = 0; h < H; h++) {
    const K = L.kUp.subarray(h * d * nK, (h + 1) * d * nK); // [d × nK]
    const CK = gemmF64(qCovs[h]!, K, d, nK, d);
    const S = gemmF64(transpose(K, d, nK), CK, nK, nK, d);
    for (let i = 0; i < out.length; i++) out[i]! += S[i]!;
  }
  return out;
}

function damped(C: Float64Array, n: number): Float64Array {
  let tr = 0;
  for (let i = 0; i < n; i++) tr += C[i * n + i]!;
  const out = C.slice();
  const shift = AWARE_DAMP * (tr > 0 ? tr / n : 1);
  for (let i = 0; i < n; i++) out[i * n + i]! += shift;
  return out;
}

/**
 * L straight from latentFromGqa; keyCov, queryCov [nK²]: the key latent's and the absorbed
 * query's second moments (queryCov from absorbedQueryCov). Output: the layout roRope produces.
 */
export function awareRoRope(L: LatentLayer, keyCov: Float64Array, queryCov: Float64Array, opts: { nKvHeads: number; ropeDim: number; freqFold: number }): AwareRopeResult {
  const G = opts.nKvHeads, d = L.headDim, nK = L.nK, Dp = L.hidden + 1, Hd = L.nHeads * d;
  if (nK !== G * d || L.ropeDim !== nK) throw new Error('awareRoRope expects the untouched GQA latent (every key dim under RoPE)');
  if (keyCov.length !== nK * nK || queryCov.length !== nK * nK) throw new Error(`awareRoRope: moments must be ${nK}²`);
  const M = opts.freqFold, dR = opts.ropeDim;
  const c = checkRoRope(d, dR, M);
  const keep = M / c, nGroups = d / 2 / M, n = G * M, nDrop = n - keep;
  const wk = new Float64Array(nK * Dp);
  const kUp = new Float64Array(Hd * nK);
  const ropeInvFreq = new Float64Array(dR / 2);
  let nopeRow = dR, total = 0, kept = 0;
  const ck = new Float64Array(n * n), cq = new Float64Array(n * n);
  for (let a = 0; a < nGroups; a++) {
    const p0 = a * n;
    for (let f = 0; f < n; f++) {
      const rf = 2 * (p0 + f);
      for (let f2 = 0; f2 < n; f2++) {
        const rf2 = 2 * (p0 + f2);
        ck[f * n + f2] = keyCov[rf * nK + rf2]! + keyCov[(rf + 1) * nK + rf2 + 1]!;
        cq[f * n + f2] = queryCov[rf * nK + rf2]! + queryCov[(rf + 1) * nK + rf2 + 1]!;
      }
    }
    // Symmetric square roots serve as the factors (C = L·Lᵀ with L = C^½).
    const Lk = symPow(damped(ck, n), n, 0.5), Lq = symPow(damped(cq, n), n, 0.5);
    const { U, S, Vt } = svd(gemmF64(Lq, Lk, n, n, n), n, n);
    const s0 = S[0]! > 0 ? S[0]! : 1;
    const isq = S.map((s) => 1 / Math.sqrt(Math.max(s, 1e-12 * s0)));
    // T [n×n] = Σ^{−½}Uᵀ Lq (rows: new key features), Tinv [n×n] = Lk V Σ^{−½} (columns).
    const T = gemmF64(transpose(U, n, n), Lq, n, n, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) T[i * n + j]! *= isq[i]!;
    const Tinv = gemmF64(Lk, transpose(Vt, n, n), n, n, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) Tinv[i * n + j]! *= isq[j]!;
    for (let i = 0; i < n; i++) {
      total += S[i]! ** 2;
      if (i < keep) kept += S[i]! ** 2;
    }
    // NoPE part: Tinv_D = Q·R (Q orthonormal via SVD) → features R·T_D with up-projection Q.
    if (nDrop > 0) {
      const TiD = new Float64Array(n * nDrop);
      for (let i = 0; i < n; i++) for (let j = 0; j < nDrop; j++) TiD[i * nDrop + j] = Tinv[i * n + keep + j]!;
      const o = svd(TiD, n, nDrop);
      // TiD = Uo So Vo ⇒ Q = Uo, R = So·Vo.
      const R = o.Vt.slice();
      for (let i = 0; i < nDrop; i++) for (let j = 0; j < nDrop; j++) R[i * nDrop + j]! *= o.S[i]!;
      const TD = gemmF64(R, T.subarray(keep * n), nDrop, n, nDrop);
      T.set(TD, keep * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < nDrop; j++) Tinv[i * n + keep + j] = o.U[i * nDrop + j]!;
    }
    for (let q = 0; q < n; q++) {
      let reRow: number;
      if (q < keep) {
        const pair = a * keep + q;
        reRow = 2 * pair;
        ropeInvFreq[pair] = L.ropeInvFreq[(a * M + q * c) * G]!;
      } else {
        reRow = nopeRow;
        nopeRow += 2;
      }
      for (let f = 0; f < n; f++) {
        const t = T[q * n + f]!, ti = Tinv[f * n + q]!;
        const src = 2 * (p0 + f);
        for (let part = 0; part < 2; part++) {
          if (t !== 0) {
            const so = (src + part) * Dp, dOff = (reRow + part) * Dp;
            for (let j = 0; j < Dp; j++) wk[dOff + j]! += t * L.wk[so + j]!;
          }
          if (ti !== 0) for (let i = 0; i < Hd; i++) kUp[i * nK + reRow + part]! += ti * L.kUp[i * nK + src + part]!;
        }
      }
    }
  }
  return { layer: { ...L, wk, kUp, ropeDim: dR, ropeInvFreq }, ropeEnergy: total > 0 ? kept / total : 1 };
}
