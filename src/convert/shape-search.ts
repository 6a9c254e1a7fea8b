// Choosing FreqFold M and, for a fixed cache budget, the RoPE width d_R by held-out perplexity.
//
// FreqFold (TransMLA): start at M = c = d/d_R and double M while the score improves, up to d/2.
// d_R for a budget r + d_R = B: every even divisor of head_dim that leaves r ≥ 1 is tried, each
// with its own FreqFold search, and the best (d_R, M) wins. The trade-off is real: each RoPE dim
// costs a latent dim, and collapsing frequencies (c > 1) costs most when heads are small — with
// head_dim 8 the kept frequencies are 10× apart, so c = 2 discards half the positional signal.
import type { ShapeScore } from '../schema/transmla-json.js';
import { freqFoldCandidates } from './rorope.js';

export type { ShapeScore } from '../schema/transmla-json.js';

/** TransMLA's greedy FreqFold search for one d_R; `fixed` restricts it to one given M. */
export async function searchFreqFold(
  headDim: number, ropeDim: number, fixed: number | null, score: (freqFold: number) => Promise<number>,
): Promise<{ freqFold: number; ppl: number; trace: { freqFold: number; ppl: number }[] }> {
  const candidates = fixed === null ? freqFoldCandidates(headDim, ropeDim) : [fixed];
  const trace: { freqFold: number; ppl: number }[] = [];
  let best = { freqFold: candidates[0]!, ppl: Infinity };
  for (const m of candidates) {
    const ppl = await score(m);
    trace.push({ freqFold: m, ppl });
    if (!(ppl < best.ppl)) break;
    best = { freqFold: m, ppl };
  }
  return { ...best, trace };
}

/** The d_R values a budget of B cached values per token per layer admits (descending). */
export function ropeDimCandidates(headDim: number, budget: number, maxRank: (ropeDim: number) => number): number[] {
  const out: number[] = [];
  for (let x = headDim; x >= 2; x--) {
    if (x % 2 !== 0 || headDim % x !== 0) continue;
    const r = budget - x;
    if (r >= 1 && r <= maxRank(x)) out.push(x);
  }
  return out;
}

/**
 * Best (d_R, M) for a budget; `freqFold` fixes M where valid for a d_R (others are skipped),
 * 'auto' searches it. score(d_R, M, r) is the held-out perplexity of that MLA model.
 */
export async function searchRopeShape(
  headDim: number, budget: number, freqFold: number | 'auto', maxRank: (ropeDim: number) => number,
  score: (ropeDim: number, freqFold: number, kvLoraRank: number) => Promise<number>,
): Promise<{ best: ShapeScore; trace: ShapeScore[] }> {
  const trace: ShapeScore[] = [];
  let best: ShapeScore | null = null;
  for (const dR of ropeDimCandidates(headDim, budget, maxRank)) {
    const c = headDim / dR;
    if (freqFold !== 'auto' && (freqFold % c !== 0 || (headDim / 2) % freqFold !== 0)) continue;
    const r = budget - dR;
    const res = await searchFreqFold(headDim, dR, freqFold === 'auto' ? null : freqFold, (m) => score(dR, m, r));
    for (const t of res.trace) trace.push({ ropeDim: dR, freqFold: t.freqFold, kvLoraRank: r, ppl: t.ppl });
    if (!best || res.ppl < best.ppl) best = { ropeDim: dR, freqFold: res.freqFold, kvLoraRank: r, ppl: res.ppl };
  }
  if (!best) throw new Error(`no qk_rope_head_dim fits a budget of ${budget} values per token with freqfold ${freqFold}`);
  return { best, trace };
}
