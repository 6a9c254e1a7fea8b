// Choosing FreqFold M and, for a fixed cache budget, the RoPE width d_R (docs/methods.md#shape-search).
//
// FreqFold (TransMLA): start at M = c = d/d_R and double M while the score improves, up to d/2.
// d_R for a budget r + d_R = B: every even divisor of head_dim that leaves r ≥ 1 is tried, each
// with its own FreqFold search, and the best (d_R, M) wins. The trade-off is real: each RoPE dim
// costs a latent dim, and collapsing frequencies (c > 1) costs most when heads are small — with
// head_dim 8 the kept frequencies are 10× apart, so c = 2 discards half the positional signal.
//
// Two ways to score a candidate, both from pass-1 (original-model) statistics:
// - 'proxy' (default): the relative error of each scored layer's attention output on a few
//   calibration samples (the layer built for the candidate against the source layer, on the
//   source layer's inputs), averaged over the layers: cheap, and computed in the streaming sweep;
// - 'perplexity': the held-out perplexity of the whole candidate model (TransMLA's criterion),
//   which needs the model whole in memory and a full evaluation per candidate.
import { loadModel } from '../arch/load.js';
import type { HiddenStates } from '../eval/hidden-states.js';
import { perplexity, tokenizeEnough } from '../eval/perplexity.js';
import { interruptPoint, setStage } from '../io/interrupt.js';
import type { FloatDType } from '../kernels/types.js';
import type { Decoder, DecoderLayer } from '../models/decoder.js';
import type { Mlp } from '../models/mlp.js';
import { Workspace } from '../models/workspace.js';
import type { ConvertReport, ShapeScore } from '../schema/transmla-json.js';
import { bkvPca, rotateKvCov } from './bkv-pca.js';
import { latentFromGqa } from './gqa-to-mla.js';
import { assembleMla } from './latent-layer.js';
import { assembleModel, gqaLayerSource, mlaDecoderLayer, mlaRopeTable, type LayerView } from './mla-build.js';
import type { CalibrationSet, ConversionSource } from './pipeline.js';
import { freqFoldCandidates, roRope } from './rorope.js';

export type { ShapeScore } from '../schema/transmla-json.js';

/** TransMLA's greedy FreqFold search for one d_R; `fixed` restricts it to one given M. */
export async function searchFreqFold(
  headDim: number, ropeDim: number, fixed: number | null, score: (freqFold: number) => Promise<number>,
): Promise<{ freqFold: number; score: number; trace: { freqFold: number; score: number }[] }> {
  const candidates = fixed === null ? freqFoldCandidates(headDim, ropeDim) : [fixed];
  const trace: { freqFold: number; score: number }[] = [];
  let best = { freqFold: candidates[0]!, score: Infinity };
  for (const m of candidates) {
    const v = await score(m);
    trace.push({ freqFold: m, score: v });
    if (!(v < best.score)) break;
    best = { freqFold: m, score: v };
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
 * 'auto' searches it. score(d_R, M, r) scores that MLA model (lower is better).
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
    for (const t of res.trace) trace.push({ ropeDim: dR, freqFold: t.freqFold, kvLoraRank: r, score: t.score });
    if (!best || res.score < best.score) best = { ropeDim: dR, freqFold: res.freqFold, kvLoraRank: r, score: res.score };
  }
  if (!best) throw new Error(`no qk_rope_head_dim fits a budget of ${budget} values per token with freqfold ${freqFold}`);
  return { best, trace };
}

/** The key block [nK×nK] of a [K;V] covariance. */
export function keyBlock(C: Float64Array, nK: number): Float64Array {
  const N = 2 * nK, K = new Float64Array(nK * nK);
  for (let i = 0; i < nK; i++) K.set(C.subarray(i * N, i * N + nK), i * nK);
  return K;
}

/** One scored layer: the source layer (attention and norms; MLP released), its normed inputs and attention outputs on `samples` sequences. */
export interface ProxyLayer {
  layer: DecoderLayer;
  samples: number;
  seqLen: number;
  xn: Float32Array;
  y: Float32Array;
}

export interface ProxyData {
  layers: Map<number, ProxyLayer>;
}

/** The first `n` sequences of `states` at this layer: normed inputs and the source attention's outputs. */
export function captureProxyLayer(states: HiddenStates, layer: DecoderLayer, n: number): ProxyLayer {
  const T = states.seqLen, D = states.hidden;
  const xn = new Float32Array(n * T * D), y = new Float32Array(n * T * D);
  const ws = new Workspace();
  let s = 0;
  states.visitNormed(layer.inputNorm, (x) => {
    if (s >= n) return;
    xn.set(x, s * T * D);
    layer.attn.forward(x, T, 0, layer.attn.createCache(), y.subarray(s * T * D, (s + 1) * T * D), ws);
    s++;
  });
  // Only the attention is scored: drop the MLP's weights (8 kept layers of an 8B model would hold
  // 2.8 GB of bf16 MLP weights through the search otherwise).
  return { layer: { ...layer, mlp: ATTENTION_ONLY }, samples: n, seqLen: T, xn, y };
}

/** The MLP slot of a proxy layer: the search never runs it, and must not. */
const ATTENTION_ONLY: Mlp = Object.freeze({
  forward(): void { throw new Error('a proxy-search layer keeps its attention only; its MLP was released'); },
  flops: () => 0, paramCount: () => 0, decodeWeightBytes: () => 0, summary: () => 'released (proxy search keeps attention only)',
});

/** Mean over layers of ||attn_candidate(x) − attn_source(x)||² / ||attn_source(x)||². */
function proxyError(proxy: ProxyData, build: (l: number, p: ProxyLayer) => DecoderLayer['attn']): number {
  let sum = 0;
  const ws = new Workspace();
  for (const [l, p] of proxy.layers) {
    const attn = build(l, p), T = p.seqLen, n = p.xn.length / p.samples;
    const out = new Float32Array(n);
    let err = 0, ref = 0;
    for (let s = 0; s < p.samples; s++) {
      attn.forward(p.xn.subarray(s * n, (s + 1) * n), T, 0, attn.createCache(), out, ws);
      for (let i = 0; i < n; i++) {
        const y = p.y[s * n + i]!, e = out[i]! - y;
        err += e * e; ref += y * y;
      }
    }
    sum += ref > 0 ? err / ref : 0;
  }
  return sum / proxy.layers.size;
}

/** What the searches read of the conversion options. */
export interface SearchOptions {
  freqFold: number | 'auto';
  search?: 'proxy' | 'perplexity';
  searchChunks?: number;
  log?: (line: string) => void;
}

export interface SearchInputs {
  d: number;
  G: number;
  budget: number;
  ropeDim: number | 'auto';
  balance: number;
  dtype: FloatDType;
  evalCtx: number;
  /** Pass-1 layer data for the proxy; null: score by held-out perplexity. */
  proxy: ProxyData | null;
}

/**
 * The (d_R, M) searches: every d_R of the budget with its FreqFold search (ropeDim 'auto'), or
 * FreqFold alone for a given d_R (TransMLA) — the MLA candidate built from pass-1 statistics,
 * or (FreqFold alone) the partial-RoPE candidate, scored by the proxy or by held-out perplexity.
 */
export async function searchShape(src: ConversionSource, covs: { read(l: number): Float64Array }, c: CalibrationSet, o: SearchOptions, x: SearchInputs): Promise<{ dR: number; M: number; search: ConvertReport['search'] }> {
  const log = o.log ?? (() => {});
  const { d, G, budget, balance, dtype } = x, nK = G * d, args = src.args;
  const candidateLayer = (view: LayerView, l: number, dRx: number, fold: number, rx: number | null): DecoderLayer => {
    const C = covs.read(l);
    const { layer: P, rotation } = roRope(latentFromGqa(gqaLayerSource(view, l)), keyBlock(C, nK), { nKvHeads: G, ropeDim: dRx, freqFold: fold });
    const w = rx === null ? assembleMla(P) : bkvPca(P, rotateKvCov(C, rotation, P.nK, P.nV), { rank: rx, balanceRatio: balance }).weights;
    return mlaDecoderLayer(view, l, w, mlaRopeTable(view, dRx), { dtype });
  };
  let score: (dRx: number, fold: number, rx: number | null) => Promise<number>;
  let scoredOn: string;
  let whole: Decoder | null = null;
  if (x.proxy) {
    const proxy = x.proxy;
    const at = [...proxy.layers.keys()].map((l) => l + 1).join(', ');
    scoredOn = `mean relative attention-output error of layer${proxy.layers.size > 1 ? 's' : ''} ${at} on ${proxy.layers.values().next().value!.samples} calibration samples (original-model inputs; candidates built from pass-1 statistics)`;
    score = async (dRx, fold, rx) => proxyError(proxy, (l, p) => candidateLayer({ config: args, layers: Object.assign([], { [l]: p.layer }) }, l, dRx, fold, rx).attn);
  } else {
    if (c.heldOut.length === 0) throw new Error('searching --freqfold/--rope-dim needs held-out documents: give a calibration text with at least 2 documents');
    whole = loadModel(src.path).model;
    const model = whole;
    const chunks = o.searchChunks ?? 16;
    const { ids, bos } = await tokenizeEnough(src.tokenizer, c.heldOut.join('\n\n'), chunks * x.evalCtx);
    const ctx = Math.min(x.evalCtx, Math.max(2, Math.floor(ids.length / 2)));
    scoredOn = x.ropeDim === 'auto' ? 'held-out perplexity of the MLA model built from pass-1 (original-model) statistics' : 'held-out perplexity of the partial-RoPE model (TransMLA)';
    score = async (dRx, fold, rx) => {
      const m = assembleModel(model, model.layers.map((_, l) => candidateLayer(model, l, dRx, fold, rx)));
      return (await perplexity(m, ids, bos, { ctx, maxChunks: chunks })).ppl;
    };
  }
  const unit = x.proxy ? 'attention-output error' : 'ppl';
  if (x.ropeDim === 'auto') {
    const res = await searchRopeShape(d, budget, o.freqFold, (dRx) => 2 * nK - dRx, async (dRx, fold, rx) => {
      setStage(`shape search (d_R ${dRx}, freqfold ${fold}, r ${rx})`);
      const v = await score(dRx, fold, rx);
      log(`  d_R ${dRx}, freqfold ${fold}, r ${rx}: ${x.proxy ? 'calibration-sample' : 'held-out'} MLA ${unit} ${v.toPrecision(6)}`);
      await interruptPoint();
      return v;
    });
    log(`rope-dim auto → d_R ${res.best.ropeDim}, freqfold ${res.best.freqFold}, kv_lora_rank ${budget - res.best.ropeDim}`);
    return { dR: res.best.ropeDim, M: res.best.freqFold, search: { scoredOn, trace: res.trace } };
  }
  const dR = x.ropeDim;
  const res = await searchFreqFold(d, dR, null, async (fold) => {
    setStage(`freqfold search (freqfold ${fold})`);
    const v = await score(dR, fold, null);
    log(`  freqfold ${fold}: partial-RoPE ${unit} ${v.toPrecision(6)}`);
    await interruptPoint();
    return v;
  });
  log(`freqfold auto → ${res.freqFold}`);
  return { dR, M: res.freqFold, search: { scoredOn, trace: res.trace.map((t) => ({ ropeDim: dR, freqFold: t.freqFold, kvLoraRank: budget - dR, score: t.score })) } };
}
