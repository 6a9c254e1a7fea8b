// TransMLA's per-layer arithmetic (docs/methods.md#transmla): the original-model statistics of
// pass 1, and the RoRoPE + FreqFold + BKV-PCA step that turns one source GQA layer into its
// partial-RoPE and MLA forms from the statistics of the states the step is given.
import { assertFiniteStat } from '../io/finite.js';
import type { ModelArgs } from '../models/model-args.js';
import type { DecoderLayer } from '../models/decoder.js';
import type { HiddenStates } from '../eval/hidden-states.js';
import type { ConvertReport } from '../schema/transmla-json.js';
import { bkvPca } from './bkv-pca.js';
import { projectedCov } from './calibrate.js';
import { latentFromGqa } from './gqa-to-mla.js';
import { assembleMla, type LatentLayer, type MlaLayerWeights } from './latent-layer.js';
import { gqaLayerSource, layerView } from './mla-build.js';
import { queryBasis } from './q-lora.js';
import { roRope } from './rorope.js';
import { foldKeyGamma, identityQueryBasis, qkNormGrams, qkNormOf, qkNormWeights, weightedKvCov, type QkNormGrams } from './qk-norm.js';
import { GqaAttention } from '../models/attention.js';

/** [Wk ; Wv] of a latent layer: the rows whose joint covariance BKV-PCA needs. */
export function kvRows(L: LatentLayer): Float64Array {
  const W = new Float64Array((L.nK + L.nV) * (L.hidden + 1));
  W.set(L.wk);
  W.set(L.wv, L.wk.length);
  return W;
}

/**
 * Layer l of the source as a latent layer (the exact GQA ≡ MLA rewrite, float64). A Qwen3 layer's
 * keys are their linear part γ_k ⊙ W_k x (qk-norm.ts); the per-token normaliser is kept apart.
 */
export function sourceLatent(args: ModelArgs, l: number, layer: DecoderLayer): LatentLayer {
  const src = gqaLayerSource(layerView(args, l, layer), l);
  const n = qkNormOf(layer);
  if (!n) return latentFromGqa(src);
  if (src.bq || src.bk) throw new Error(`layer ${l}: a Qwen3 source with q/k biases (attention_bias: true) cannot be converted: the biases sit inside the per-head q/k norm`);
  const { wk } = foldKeyGamma(src.wk, null, n.k, src.nKvHeads, src.hidden);
  return latentFromGqa({ ...src, wk });
}

/** The statistics of one layer's inputs: the Gram, or for a Qwen3 layer the three weighted Grams. */
function inputStats(layer: DecoderLayer, states: HiddenStates, where: string, weighted = true): { gram: Float64Array; qk: QkNormGrams | null } {
  const qk = qkNormOf(layer) ? qkNormGrams(states, layer, weighted) : null;
  const gram = qk ? qk.plain : states.gram(layer.inputNorm);
  assertFiniteStat(gram, `${where}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
  if (qk) assertFiniteStat(qk.full, `${where}: the key-normaliser-weighted second moment of the attention input`);
  return { gram, qk };
}

/** The [K;V] covariance of a latent layer: from the Gram, or key-normaliser weighted (Qwen3). */
function layerKvCov(L: LatentLayer, s: { gram: Float64Array; qk: QkNormGrams | null }): Float64Array {
  const Dp = L.hidden + 1;
  return s.qk ? weightedKvCov(L.wk, L.nK, L.wv, L.nV, s.qk, Dp) : projectedCov(kvRows(L), L.nK + L.nV, s.gram, Dp);
}

/** The [K;V] output covariance of layer l of the original model, from its input Gram. */
export function originalKvCov(args: ModelArgs, l: number, layer: DecoderLayer, states: HiddenStates, where: string, qkWeighted = true): Float64Array {
  return layerKvCov(sourceLatent(args, l, layer), inputStats(layer, states, where, qkWeighted));
}

export interface StepShape {
  ropeDim: number;
  freqFold: number;
  kvLoraRank: number;
  qLoraRank: number | null;
  balance: number;
  /** Qwen3: weight the key statistics by the per-token normaliser (default true; false: the plain Gram, for comparison). */
  qkWeighted?: boolean;
}

export interface LayerStep {
  /** The MLA (exact variant) weights. */
  weights: MlaLayerWeights;
  /** The lossless partial-RoPE form of the layer (RoRoPE only). */
  partial: MlaLayerWeights;
  stats: ConvertReport['layers'][number];
}

/**
 * RoRoPE + FreqFold + BKV-PCA (+ q-lora) of one layer. `keyCov`: the key covariance RoRoPE
 * rotates by (faithful order: the original model's, from pass 1); `states`: the inputs whose
 * [K;V] statistics BKV-PCA uses (faithful: the partial-RoPE model's; sequential: the converted
 * prefix's); with keyCov null the key covariance also comes from `states` (sequential order).
 */
export function transmlaLayer(args: ModelArgs, l: number, layer: DecoderLayer, states: HiddenStates, keyCov: Float64Array | null, s: StepShape, where: string): LayerStep {
  const D = args.hiddenSize, H = args.numHeads, d = args.headDim, G = args.numKvHeads;
  const st = inputStats(layer, states, where, s.qkWeighted ?? true);
  const gram = st.gram;
  const L0 = sourceLatent(args, l, layer);
  const { layer: P, ropeEnergy } = roRope(L0, keyCov ?? projectedCov(L0.wk, L0.nK, st.qk?.full ?? gram, D + 1), { nKvHeads: G, ropeDim: s.ropeDim, freqFold: s.freqFold });
  const kvCov = layerKvCov(P, st);
  assertFiniteStat(kvCov, `conversion, layer ${l + 1}/${args.numLayers}: the [K;V] output covariance`);
  // Qwen3: the query keeps its exact per-head norm, q_a_proj = q_proj (an identity q basis).
  if (st.qk && s.qLoraRank !== null) throw new Error('a Qwen3 source keeps its per-head query norm (q_a_proj = q_proj); --q-lora-rank is not supported for it');
  const qb = st.qk ? identityQueryBasis(H * d) : s.qLoraRank === null ? null : queryBasis(P, projectedCov(P.wq, H * d, gram, D + 1), s.qLoraRank);
  const res = bkvPca(P, kvCov, { rank: s.kvLoraRank, balanceRatio: s.balance, queryBasis: qb });
  const extra = st.qk ? { qkNorm: qkNormWeights(layer.attn as GqaAttention) } : {};
  return {
    weights: { ...res.weights, ...extra },
    // The partial-RoPE stage keeps the full query, except Qwen3's per-head query norm.
    partial: { ...assembleMla(P, null, st.qk ? qb : null), ...extra },
    stats: {
      ropeEnergy, alpha: res.alpha, kvEnergy: res.energy,
      ropeInvFreq: Array.from(P.ropeInvFreq),
      kvSpectrum: Array.from(res.energyCurve, (e, j) => Number((e - (j > 0 ? res.energyCurve[j - 1]! : 0)).toPrecision(4))),
    },
  };
}

/**
 * A candidate layer of the shape search (shape-search.ts) from RoRoPE's output P: the partial-RoPE
 * form, or BKV-PCA at rank `kv.rank` — for a Qwen3 layer with its exact per-head q/k norm.
 */
export function candidateWeights(P: LatentLayer, layer: DecoderLayer, kv: { cov: Float64Array; rank: number; balance: number } | null): MlaLayerWeights {
  const a = layer.attn as GqaAttention, qk = qkNormOf(layer) !== null;
  const qb = qk ? identityQueryBasis(a.nHeads * a.headDim) : null;
  const w = kv ? bkvPca(P, kv.cov, { rank: kv.rank, balanceRatio: kv.balance, queryBasis: qb }).weights : assembleMla(P, null, qb);
  return qk ? { ...w, qkNorm: qkNormWeights(a) } : w;
}

/** Whether a layer's converted attention carries a bias (TransMLA's attention_bias flag). */
export const hasBias = (w: MlaLayerWeights): boolean => (w.q?.b ?? w.qB?.b ?? w.kvA.b) !== null;

