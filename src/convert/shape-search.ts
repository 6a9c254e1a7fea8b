// Choosing FreqFold M and, for a fixed cache budget, the RoPE width d_R by held-out perplexity. (docs/methods.md#shape-search)
//
// FreqFold (TransMLA): start at M = c = d/d_R and double M while the score improves, up to d/2.
// d_R for a budget r + d_R = B: every even divisor of head_dim that leaves r ≥ 1 is tried, each
// with its own FreqFold search, and the best (d_R, M) wins. The trade-off is real: each RoPE dim
// costs a latent dim, and collapsing frequencies (c > 1) costs most when heads are small — with
// head_dim 8 the kept frequencies are 10× apart, so c = 2 discards half the positional signal.
import type { ShapeScore } from '../schema/transmla-json.js';
import type { Decoder } from '../models/decoder.js';
import { perplexity } from '../eval/perplexity.js';
import { setStage } from '../io/interrupt.js';
import type { FloatDType } from '../kernels/types.js';
import type { ConvertReport } from '../schema/transmla-json.js';
import { bkvPca, rotateKvCov } from './bkv-pca.js';
import { latentFromGqa } from './gqa-to-mla.js';
import { assembleMla, type LatentLayer } from './latent-layer.js';
import { assembleModel, gqaLayerSource, mlaDecoderLayer, mlaRopeTable } from './mla-build.js';
import { tokenizeEnough, type CalibrationSet, type ConversionSource } from './pipeline.js';
import { freqFoldCandidates, roRope } from './rorope.js';

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

/** Per-layer statistics kept between passes: in memory beside a whole model, on disk when streaming. */
export interface StatStore {
  push(a: Float64Array): void;
  read(l: number): Float64Array;
  close(): void;
}

export function memoryStore(): StatStore {
  const xs: Float64Array[] = [];
  return { push: (a) => { xs.push(a); }, read: (l) => xs[l]!, close: () => { xs.length = 0; } };
}

/** The key block [nK×nK] of a [K;V] covariance. */
export function keyBlock(C: Float64Array, nK: number): Float64Array {
  const N = 2 * nK, K = new Float64Array(nK * nK);
  for (let i = 0; i < nK; i++) K.set(C.subarray(i * N, i * N + nK), i * nK);
  return K;
}

/** What the searches read of the conversion options. */
export interface SearchOptions {
  freqFold: number | 'auto';
  searchChunks?: number;
  log?: (line: string) => void;
}

/**
 * The (d_R, M) searches on held-out calibration documents, scoring models built from pass-1
 * statistics: every d_R of the budget with its FreqFold search (ropeDim 'auto'), or FreqFold
 * alone for a given d_R (TransMLA).
 */
export async function searchShape(model: Decoder, src: ConversionSource, covs: StatStore, c: CalibrationSet, o: SearchOptions, x: { d: number; G: number; budget: number; ropeDim: number | 'auto'; balance: number; dtype: FloatDType; evalCtx: number }): Promise<{ dR: number; M: number; search: ConvertReport['search'] }> {
  const log = o.log ?? (() => {});
  const { d, G, budget, balance, dtype } = x, nK = G * d;
  const latentOf = (l: number): LatentLayer => latentFromGqa(gqaLayerSource(model, l));
  const partialModelFor = (dRx: number, fold: number): Decoder => {
    const ropeX = mlaRopeTable(model, dRx);
    return assembleModel(model, model.layers.map((_, l) => {
      const P = roRope(latentOf(l), keyBlock(covs.read(l), nK), { nKvHeads: G, ropeDim: dRx, freqFold: fold }).layer;
      return mlaDecoderLayer(model, l, assembleMla(P), ropeX, { dtype });
    }));
  };
  const pass1MlaModelFor = (dRx: number, fold: number, rx: number): Decoder => {
    const ropeX = mlaRopeTable(model, dRx);
    return assembleModel(model, model.layers.map((_, l) => {
      const C = covs.read(l);
      const { layer: P, rotation } = roRope(latentOf(l), keyBlock(C, nK), { nKvHeads: G, ropeDim: dRx, freqFold: fold });
      const w = bkvPca(P, rotateKvCov(C, rotation, P.nK, P.nV), { rank: rx, balanceRatio: balance }).weights;
      return mlaDecoderLayer(model, l, w, ropeX, { dtype });
    }));
  };
  if (c.heldOut.length === 0) throw new Error('searching --freqfold/--rope-dim needs held-out documents: give a calibration text with at least 2 documents');
  const chunks = o.searchChunks ?? 16;
  const { ids, bos } = await tokenizeEnough(src.tokenizer, c.heldOut.join('\n\n'), chunks * x.evalCtx);
  const ctx = Math.min(x.evalCtx, Math.max(2, Math.floor(ids.length / 2)));
  const heldOutPpl = async (m: Decoder): Promise<number> => (await perplexity(m, ids, bos, { ctx, maxChunks: chunks })).ppl;
  if (x.ropeDim === 'auto') {
    const res = await searchRopeShape(d, budget, o.freqFold, (dRx) => 2 * nK - dRx, async (dRx, fold, rx) => {
      setStage(`shape search (d_R ${dRx}, freqfold ${fold}, r ${rx})`);
      const ppl = await heldOutPpl(pass1MlaModelFor(dRx, fold, rx));
      log(`  d_R ${dRx}, freqfold ${fold}, r ${rx}: held-out MLA ppl ${ppl.toFixed(4)}`);
      return ppl;
    });
    log(`rope-dim auto → d_R ${res.best.ropeDim}, freqfold ${res.best.freqFold}, kv_lora_rank ${budget - res.best.ropeDim}`);
    return { dR: res.best.ropeDim, M: res.best.freqFold, search: { scoredOn: 'held-out perplexity of the MLA model built from pass-1 (original-model) statistics', trace: res.trace } };
  }
  const dR = x.ropeDim;
  const res = await searchFreqFold(d, dR, null, async (fold) => {
    setStage(`freqfold search (freqfold ${fold})`);
    const ppl = await heldOutPpl(partialModelFor(dR, fold));
    log(`  freqfold ${fold}: held-out partial-RoPE ppl ${ppl.toFixed(4)}`);
    return ppl;
  });
  log(`freqfold auto → ${res.freqFold}`);
  return { dR, M: res.freqFold, search: { scoredOn: 'held-out perplexity of the partial-RoPE model (TransMLA)', trace: res.trace.map((t) => ({ ropeDim: dR, freqFold: t.freqFold, kvLoraRank: budget - dR, ppl: t.ppl })) } };
}

