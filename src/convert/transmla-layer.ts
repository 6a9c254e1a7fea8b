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

/** [Wk ; Wv] of a latent layer: the rows whose joint covariance BKV-PCA needs. */
export function kvRows(L: LatentLayer): Float64Array {
  const W = new Float64Array((L.nK + L.nV) * (L.hidden + 1));
  W.set(L.wk);
  W.set(L.wv, L.wk.length);
  return W;
}

/** Layer l of the source as a latent layer (the exact GQA ≡ MLA rewrite, float64). */
export function sourceLatent(args: ModelArgs, l: number, layer: DecoderLayer): LatentLayer {
  return latentFromGqa(gqaLayerSource(layerView(args, l, layer), l));
}

/** The [K;V] output covariance of layer l of the original model, from its input Gram. */
export function originalKvCov(args: ModelArgs, l: number, layer: DecoderLayer, states: HiddenStates, where: string): Float64Array {
  const gram = states.gram(layer.inputNorm);
  assertFiniteStat(gram, `${where}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
  const L = sourceLatent(args, l, layer);
  return projectedCov(kvRows(L), L.nK + L.nV, gram, args.hiddenSize + 1);
}

export interface StepShape {
  ropeDim: number;
  freqFold: number;
  kvLoraRank: number;
  qLoraRank: number | null;
  balance: number;
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
  const gram = states.gram(layer.inputNorm);
  assertFiniteStat(gram, `${where}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
  const L0 = sourceLatent(args, l, layer);
  const { layer: P, ropeEnergy } = roRope(L0, keyCov ?? projectedCov(L0.wk, L0.nK, gram, D + 1), { nKvHeads: G, ropeDim: s.ropeDim, freqFold: s.freqFold });
  const kvCov = projectedCov(kvRows(P), P.nK + P.nV, gram, D + 1);
  assertFiniteStat(kvCov, `conversion, layer ${l + 1}/${args.numLayers}: the [K;V] output covariance`);
  const qb = s.qLoraRank === null ? null : queryBasis(P, projectedCov(P.wq, H * d, gram, D + 1), s.qLoraRank);
  const res = bkvPca(P, kvCov, { rank: s.kvLoraRank, balanceRatio: s.balance, queryBasis: qb });
  return {
    weights: res.weights,
    partial: assembleMla(P),
    stats: {
      ropeEnergy, alpha: res.alpha, kvEnergy: res.energy,
      ropeInvFreq: Array.from(P.ropeInvFreq),
      kvSpectrum: Array.from(res.energyCurve, (e, j) => Number((e - (j > 0 ? res.energyCurve[j - 1]! : 0)).toPrecision(4))),
    },
  };
}

/** Whether a layer's converted attention carries a bias (TransMLA's attention_bias flag). */
export const hasBias = (w: MlaLayerWeights): boolean => (w.q?.b ?? w.qB?.b ?? w.kvA.b) !== null;

