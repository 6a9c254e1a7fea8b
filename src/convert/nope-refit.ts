// The logit refit of the NoPE keys (docs/methods.md#nope-refit). After RoRoPE a dropped component
// still meets the query unrotated: its term in the score of head h, for the source pair of
// frequency ω, becomes Re(z_q·z̄_k) where the source had Re(z_q·z̄_k·e^{iωΔ}), Δ = t − s. The
// best position-free stand-in is ρ·Re(z_q·z̄_k) with, by least squares over the query/key pairs the
// attention actually uses (weights p_ts of the source layer, the z's independent of Δ),
//   ρ_h(ω) = Σ_{t,s} p_ts cos(ωΔ) / Σ_{t,s} p_ts,
// ≈ 1 for slow frequencies (NoPE is harmless there), ≈ 0 for fast ones (where TransMLA's NoPE
// term is a position-free bias the source never had). Each entry kUp^h[e, c] of a NoPE column is
// scaled by ρ_h of head-local dim e's frequency: a change of kv_b_proj's key rows only.
import { gemmF64 } from '../linalg/dense.js';
import { rmsNorm } from '../models/ops.js';
import type { HiddenStates } from '../eval/hidden-states.js';
import type { LatentLayer } from './latent-layer.js';

/** Per head h, hist[h][Δ] = Σ p_ts over query/key pairs at lag Δ (the source attention), over ≤ maxSamples samples. */
export function attentionLags(L: LatentLayer, states: HiddenStates, norm: Float32Array, eps: number, maxSamples: number): Float64Array[] {
  const { hidden: D, nHeads: H, headDim: d, nK } = L;
  const Dp = D + 1, T = states.seqLen, P = nK / 2;
  if (L.ropeDim !== nK) throw new Error('attentionLags expects the untouched GQA latent');
  // Query of head h in latent coordinates: kUp^hᵀ·Wq^h [nK × Dp], all heads stacked.
  const Qw = new Float64Array(H * nK * Dp);
  for (let h = 0; h < H; h++) {
    const K = L.kUp.subarray(h * d * nK, (h + 1) * d * nK);
    const W = L.wq.subarray(h * d * Dp, (h + 1) * d * Dp);
    for (let e = 0; e < d; e++) {
      for (let c = 0; c < nK; c++) {
        const u = K[e * nK + c]!;
        if (u === 0) continue;
        const o = (h * nK + c) * Dp;
        for (let j = 0; j < Dp; j++) Qw[o + j]! += u * W[e * Dp + j]!;
      }
    }
  }
  const hist = Array.from({ length: H }, () => new Float64Array(T));
  const xn = new Float32Array(T * D), X = new Float64Array(T * Dp);
  const cosT = new Float64Array(T * P), sinT = new Float64Array(T * P);
  for (let t = 0; t < T; t++) for (let p = 0; p < P; p++) { cosT[t * P + p] = Math.cos(t * L.ropeInvFreq[p]!); sinT[t * P + p] = Math.sin(t * L.ropeInvFreq[p]!); }
  const rotate = (Y: Float64Array, cols: number, off: number): void => {
    for (let t = 0; t < T; t++) {
      for (let p = 0; p < P; p++) {
        const i = t * cols + off + 2 * p, c = cosT[t * P + p]!, s = sinT[t * P + p]!;
        const re = Y[i]!, im = Y[i + 1]!;
        Y[i] = re * c - im * s;
        Y[i + 1] = re * s + im * c;
      }
    }
  };
  const n = Math.min(maxSamples, states.samples);
  const row = new Float64Array(T);
  for (let smp = 0; smp < n; smp++) {
    rmsNorm(states.sample(smp), T, D, norm, eps, xn);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < D; j++) X[t * Dp + j] = xn[t * D + j]!;
      X[t * Dp + D] = 1;
    }
    const Kr = gemmF64(X, L.wk, T, nK, Dp, true); // [T × nK]
    rotate(Kr, nK, 0);
    const Qr = gemmF64(X, Qw, T, H * nK, Dp, true); // [T × H·nK]
    for (let h = 0; h < H; h++) rotate(Qr, H * nK, h * nK);
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        let mx = -Infinity;
        for (let s = 0; s <= t; s++) {
          let z = 0;
          const qo = t * H * nK + h * nK, ko = s * nK;
          for (let c = 0; c < nK; c++) z += Qr[qo + c]! * Kr[ko + c]!;
          row[s] = z * L.scale;
          if (row[s]! > mx) mx = row[s]!;
        }
        let sum = 0;
        for (let s = 0; s <= t; s++) { row[s] = Math.exp(row[s]! - mx); sum += row[s]!; }
        const hh = hist[h]!;
        for (let s = 0; s <= t; s++) hh[t - s]! += row[s]! / sum;
      }
    }
  }
  return hist;
}

/** ρ_h(ω) = E_p[cos ωΔ] from a lag histogram. */
export function lagCosine(hist: Float64Array, omega: number): number {
  let num = 0, den = 0;
  for (let k = 0; k < hist.length; k++) { num += hist[k]! * Math.cos(omega * k); den += hist[k]!; }
  return den > 0 ? num / den : 1;
}

/**
 * P: the layer after (aware) RoRoPE; L0: the same layer before it (for each head-local dim's
 * source frequency). Returns P with every NoPE column of kUp refit, and the mean ρ applied.
 * (The complex stand-in ρ_c + iρ_s, which also keeps E_p[sin ωΔ], measured no better on kjv-gqa:
 * docs/methods.md#nope-refit.)
 */
export function nopeRefit(P: LatentLayer, L0: LatentLayer, hists: readonly Float64Array[]): { layer: LatentLayer; meanRho: number } {
  const { nHeads: H, headDim: d, nK, ropeDim: dR } = P;
  const kUp = P.kUp.slice();
  let sum = 0, cnt = 0;
  for (let h = 0; h < H; h++) {
    for (let e = 0; e < d; e++) {
      const r0 = (h * d + e) * nK;
      // Head-local dim e reads one latent row in the source form (identity selectors).
      let src = -1;
      for (let c = 0; c < nK; c++) if (L0.kUp[r0 + c] !== 0) { src = c; break; }
      if (src < 0) continue;
      const rho = lagCosine(hists[h]!, L0.ropeInvFreq[src >> 1]!);
      sum += rho;
      cnt++;
      for (let c = dR; c < nK; c++) kUp[r0 + c]! *= rho;
    }
  }
  return { layer: { ...P, kUp }, meanRho: cnt > 0 ? sum / cnt : 1 };
}
