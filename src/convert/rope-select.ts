// MHA2MLA partial-RoPE selection (docs/methods.md#partial-rope): which r of a head's d/2 frequency pairs
// keep RoPE. Pair k of a head is the two elements ropePairElements(layout, d, k), rotating at θ_k.
//   high     {0 … r−1}: the fastest-rotating pairs
//   low      {d/2−r … d/2−1}: the slowest
//   uniform  {⌊k·d/(2r)⌋ : k < r}: evenly spaced
//   2norm    per layer and KV group, the top r of (Σ_{h∈group} ‖q_h^{[k]}‖)·‖k_g^{[k]}‖ — by
//            Cauchy–Schwarz a bound on pair k's share of the logits. The group's query norms are
//            summed, as the MHA2MLA code does (the paper averages: same ranking).
// ‖·^{[k]}‖ is the pair's 2-norm averaged over calibration tokens ('mean', the paper's statistic,
// accumulated exactly from the projections of every token), or its root mean square ('rms'), which
// the per-layer input Gram gives for free: √(w Σ wᵀ / N) summed over the pair's two rows. The
// two rank pairs similarly but not identically (mean ≤ rms, with equality for constant norms).
import { gemmF64 } from '../linalg/dense.js';
import { ropePairElements } from './gqa-to-mla.js';
import type { RopeLayout } from '../models/rope.js';
import { OptionError } from '../option-error.js';

import { ROPE_SELECTIONS, type NormStat, type RopeSelection } from '../schema/transmla-json.js';

export { ROPE_SELECTIONS, type NormStat, type RopeSelection } from '../schema/transmla-json.js';

/** Per-pair norms of one layer's queries [H × d/2] and keys [G × d/2] (pre-RoPE; RoPE keeps them). */
export interface PairNorms {
  nHeads: number;
  nKvHeads: number;
  /** d/2 */
  pairs: number;
  q: Float64Array;
  k: Float64Array;
  stat: NormStat;
}

/** Accumulates the mean per-token pair norms of q [T × H·d] and k [T × G·d] projections. */
export class PairNormAccumulator {
  private readonly q: Float64Array;
  private readonly k: Float64Array;
  private tokens = 0;

  constructor(readonly nHeads: number, readonly nKvHeads: number, readonly headDim: number, readonly layout: RopeLayout) {
    this.q = new Float64Array(nHeads * (headDim / 2));
    this.k = new Float64Array(nKvHeads * (headDim / 2));
  }

  add(q: Float32Array, k: Float32Array, T: number): void {
    const d = this.headDim, half = d / 2;
    const acc = (x: Float32Array, heads: number, out: Float64Array): void => {
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < heads; h++) {
          const o = (t * heads + h) * d;
          for (let p = 0; p < half; p++) {
            const [a, b] = ropePairElements(this.layout, d, p);
            out[h * half + p]! += Math.hypot(x[o + a]!, x[o + b]!);
          }
        }
      }
    };
    acc(q, this.nHeads, this.q);
    acc(k, this.nKvHeads, this.k);
    this.tokens += T;
  }

  result(): PairNorms {
    if (this.tokens === 0) throw new Error('pair norms: no calibration tokens seen');
    const n = this.tokens;
    return { nHeads: this.nHeads, nKvHeads: this.nKvHeads, pairs: this.headDim / 2, q: this.q.map((v) => v / n), k: this.k.map((v) => v / n), stat: 'mean' };
  }
}

/**
 * RMS pair norms from a layer's input Gram Σ [(D+1)²] over N tokens: W [rows × (D+1)] holds the
 * projection rows with their bias in the last column (LatentLayer layout), heads of width d.
 */
export function pairRmsFromGram(wq: Float64Array, wk: Float64Array, nHeads: number, nKvHeads: number, headDim: number, layout: RopeLayout, gram: Float64Array, Dp: number, tokens: number): PairNorms {
  const half = headDim / 2;
  const rms = (W: Float64Array, heads: number): Float64Array => {
    const rows = heads * headDim;
    if (W.length !== rows * Dp || gram.length !== Dp * Dp) throw new Error('pairRmsFromGram: shapes do not match');
    // Only the diagonal of W·Σ·Wᵀ is needed: row i of W·Σ dotted with row i of W.
    const WS = gemmF64(W, gram, rows, Dp, Dp);
    const out = new Float64Array(heads * half);
    const diag = new Float64Array(rows);
    for (let i = 0; i < rows; i++) {
      let v = 0;
      for (let j = 0; j < Dp; j++) v += WS[i * Dp + j]! * W[i * Dp + j]!;
      diag[i] = v;
    }
    for (let h = 0; h < heads; h++) {
      for (let p = 0; p < half; p++) {
        const [a, b] = ropePairElements(layout, headDim, p);
        out[h * half + p] = Math.sqrt(Math.max(0, diag[h * headDim + a]! + diag[h * headDim + b]!) / tokens);
      }
    }
    return out;
  };
  return { nHeads, nKvHeads, pairs: half, q: rms(wq, nHeads), k: rms(wk, nKvHeads), stat: 'rms' };
}

/** S_2-norm's score of every pair per KV head [G][d/2]: (Σ over the group's query heads of ‖q_pair‖) · ‖k_pair‖. */
export function pairScores(norms: PairNorms): number[][] {
  const half = norms.pairs, n = norms.nHeads / norms.nKvHeads;
  return Array.from({ length: norms.nKvHeads }, (_, g) => Array.from({ length: half }, (_, p) => {
    let qs = 0;
    for (let j = 0; j < n; j++) qs += norms.q[(g * n + j) * half + p]!;
    return qs * norms.k[g * half + p]!;
  }));
}

/**
 * The r pairs each of G KV heads keeps under RoPE, ascending: [G][r]. `norms` is required for
 * '2norm' (and ignored otherwise).
 */
export function selectRopePairs(strategy: RopeSelection, r: number, headDim: number, nKvHeads: number, norms: PairNorms | null = null): number[][] {
  const half = headDim / 2;
  if (!Number.isInteger(r) || r < 0 || r >= half) throw new OptionError(`--rope-pairs must be an integer in 0..${half - 1} (head_dim ${headDim} has ${half} pairs; at least one must go to the latent), got ${r}`);
  const same = (ks: number[]): number[][] => Array.from({ length: nKvHeads }, () => ks.slice());
  switch (strategy) {
    case 'high': return same(Array.from({ length: r }, (_, i) => i));
    case 'low': return same(Array.from({ length: r }, (_, i) => half - r + i));
    case 'uniform': return same(Array.from({ length: r }, (_, i) => Math.floor((i * half) / r)));
    case '2norm': {
      if (!norms) throw new Error('2-norm selection needs calibration statistics (query and key pair norms)');
      if (norms.pairs !== half || norms.nKvHeads !== nKvHeads) throw new Error('pair norms do not match the layer shape');
      const scores = pairScores(norms);
      return scores.map((row) => {
        const score = row.map((s, p) => ({ p, s }));
        // Highest score first; ties go to the faster frequency, so the choice is deterministic.
        score.sort((a, b) => b.s - a.s || a.p - b.p);
        return score.slice(0, r).map((x) => x.p).sort((a, b) => a - b);
      });
    }
    default: throw new Error(`unknown RoPE selection "${String(strategy)}" (${ROPE_SELECTIONS.join(', ')})`);
  }
}
