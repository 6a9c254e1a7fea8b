// Per-layer latent budgets (docs/methods.md#aware-budget): the total latent width Σ_l r_l = L·r
// (the cache bytes of uniform ranks) shared out greedily by marginal gain, in one unit for every
// layer — the first-order squared error each latent component removes from the layer's attention
// output (W_o·o), per calibration token, in the metric of the output-aware latent (aware-latent.ts).
//   latent 'output-aware': the gains are the eigenvalues of W^{½}Σ_X W^{½}, exactly what the
//     weighted objective loses per dropped component;
//   latent 'bkv-pca': BKV-PCA keeps its own components (top eigenvectors u_i of the balanced Σ_X),
//     and dropping u_i costs λ_i·u_iᵀW u_i in that metric (Σ_X is diagonal in the u basis, so the
//     truncation error is exactly the sum of these terms).
// The gains come from the original model's statistics, before pass 2 (see transmla.ts): every
// layer's spectrum is needed before the first layer is converted.
import { eigh } from '../linalg/eigh.js';
import { gemmF64 } from '../linalg/dense.js';
import { symPow } from '../linalg/sym.js';
import type { ModelArgs } from '../models/model-args.js';
import type { DecoderLayer } from '../models/decoder.js';
import type { HiddenStates } from '../eval/hidden-states.js';
import { awareInputs, metricStats, type AwareShape } from './aware-layer.js';
import { latentMetric } from './aware-latent.js';
import { AWARE_DAMP } from './aware-rope.js';
import { balancedLatentCov } from './bkv-pca.js';
import { qkNormOf } from './qk-norm.js';

export const RANK_ALLOCS = ['uniform', 'greedy', 'joint'] as const;
export type RankAlloc = (typeof RANK_ALLOCS)[number];

/** The default floor of a layer's rank: a quarter of the uniform rank (calibration noise must not starve a layer). */
export const defaultRankMin = (r: number): number => Math.max(1, Math.ceil(r / 4));

/**
 * gains[i]: what latent component i of layer l (in the order the layer's latent step keeps them)
 * removes from the layer's first-order output error, per calibration token. `states`: the layer's
 * inputs (the original model's); the RoPE basis and the NoPE refit are those of the step.
 */
export function layerGains(args: ModelArgs, l: number, layer: DecoderLayer, states: HiddenStates, s: AwareShape, where: string): Float64Array {
  if (qkNormOf(layer)) throw new Error(`layer ${l}: --rank-alloc greedy does not model Qwen3's per-head q/k RMSNorm yet; convert this model with uniform ranks`);
  const x = awareInputs(args, l, layer, states, null, s, where);
  const P = x.P, m = P.nK - P.ropeDim + P.nV, nN = P.nK - P.ropeDim;
  const W = latentMetric(P, metricStats(P, layer, x, l), s.keyWeight ?? 1);
  const block = (C: Float64Array): Float64Array => {
    const N = P.nK + P.nV, out = new Float64Array(m * m);
    for (let i = 0; i < m; i++) out.set(C.subarray((P.ropeDim + i) * N + P.ropeDim, (P.ropeDim + i) * N + N), i * m);
    return out;
  };
  const g = new Float64Array(m);
  if (s.latent === 'output-aware') {
    // As awareLatent: the damped metric's square root around the latent moment.
    let trW = 0;
    for (let i = 0; i < m; i++) trW += W[i * m + i]!;
    for (let i = 0; i < m; i++) W[i * m + i]! += AWARE_DAMP * (trW > 0 ? trW / m : 1);
    const Wh = symPow(W, m, 0.5);
    const Z = gemmF64(gemmF64(Wh, block(x.kvCov), m, m, m), Wh, m, m, m);
    const { values } = eigh(Z, m);
    for (let i = 0; i < m; i++) g[i] = Math.max(0, values[i]!) / x.tokens;
    return g;
  }
  // BKV-PCA's coordinates are [c_N/α ; c_V]: an error e there is diag(α, 1)·e in the metric's.
  const { alpha, sigma } = balancedLatentCov(P, x.kvCov, s.balance);
  const { values, vectors: U } = eigh(sigma, m);
  const f = (i: number): number => (i < nN ? alpha : 1);
  for (let k = 0; k < m; k++) {
    let q = 0;
    for (let i = 0; i < m; i++) {
      const ui = U[i * m + k]! * f(i);
      if (ui === 0) continue;
      let wu = 0;
      for (let j = 0; j < m; j++) wu += W[i * m + j]! * U[j * m + k]! * f(j);
      q += ui * wu;
    }
    g[k] = Math.max(0, values[k]!) * Math.max(0, q) / x.tokens;
  }
  return g;
}

/**
 * Ranks r_l ∈ [min, gains[l].length] with Σ r_l = total that maximise Σ_l Σ_{i<r_l} gains[l][i]
 * on each layer's upper concave envelope: each layer's cumulative gain curve from `min` is cut
 * into hull segments (slopes decreasing within a layer), all segments are taken by slope, the
 * last one in part. Optimal when every curve is concave (the output-aware spectra are);
 * otherwise optimal on the envelope. Ties go to the lower layer.
 */
export function allocateRanks(gains: readonly Float64Array[], total: number, min: number): number[] {
  const L = gains.length;
  if (!Number.isInteger(min) || min < 1) throw new Error(`rank floor must be a positive integer, got ${min}`);
  const cap = gains.reduce((n, g) => n + g.length, 0);
  for (let l = 0; l < L; l++) if (gains[l]!.length < min) throw new Error(`layer ${l}: its latent has ${gains[l]!.length} components, fewer than the rank floor ${min}`);
  if (L * min > total || total > cap) throw new Error(`a total latent width of ${total} cannot be shared by ${L} layers with ranks in [${min}, full rank] (${L * min}…${cap})`);
  const segs: { l: number; from: number; to: number; slope: number }[] = [];
  for (let l = 0; l < L; l++) {
    const g = gains[l]!, n = g.length;
    // Cumulative gain F(k) for k = min…n, then its upper hull (monotone chain).
    const F = new Float64Array(n + 1);
    for (let k = 0; k < n; k++) F[k + 1] = F[k]! + g[k]!;
    const hull: number[] = [];
    for (let k = min; k <= n; k++) {
      while (hull.length >= 2) {
        const a = hull[hull.length - 2]!, b = hull[hull.length - 1]!;
        // b lies on or below the chord a→k: drop it.
        if ((F[b]! - F[a]!) * (k - a) <= (F[k]! - F[a]!) * (b - a)) hull.pop();
        else break;
      }
      hull.push(k);
    }
    for (let i = 0; i + 1 < hull.length; i++) segs.push({ l, from: hull[i]!, to: hull[i + 1]!, slope: (F[hull[i + 1]!]! - F[hull[i]!]!) / (hull[i + 1]! - hull[i]!) });
  }
  segs.sort((a, b) => b.slope - a.slope || a.l - b.l || a.from - b.from);
  const ranks = Array<number>(L).fill(min);
  let left = total - L * min;
  for (const s of segs) {
    if (left === 0) break;
    const take = Math.min(left, s.to - s.from);
    ranks[s.l]! += take;
    left -= take;
  }
  return ranks;
}

/** Σ_{i ≥ r_l} gains: the first-order output error the ranks leave, summed over layers. */
export function leftOver(gains: readonly Float64Array[], ranks: readonly number[]): number {
  let e = 0;
  gains.forEach((g, l) => { for (let i = ranks[l]!; i < g.length; i++) e += g[i]!; });
  return e;
}
