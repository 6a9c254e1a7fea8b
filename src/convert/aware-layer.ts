// The per-layer step of the aware TransMLA methods (docs/methods.md#aware): the same stages and
// tensors as transmlaLayer (transmla-layer.ts, the unchanged reference), with the RoPE basis and
// the joint latent chosen in the metric of what attention does with them:
//   ropeBasis 'pca'         RoRoPE as TransMLA       | 'query-aware'   aware-rope.ts
//   latent    'bkv-pca'     BKV-PCA as TransMLA      | 'output-aware'  aware-latent.ts (+ kv_b refit)
// With a `source` state stream (sequential calibration) the refit's target is the source model's
// keys and values on the source's own states, so each layer corrects the drift of the converted prefix.
import { assertFiniteStat } from '../io/finite.js';
import type { ModelArgs } from '../models/model-args.js';
import type { DecoderLayer } from '../models/decoder.js';
import { GqaAttention } from '../models/attention.js';
import { rmsNorm } from '../models/ops.js';
import { widen } from '../models/weights.js';
import { gemmF64, transpose } from '../linalg/dense.js';
import type { HiddenStates } from '../eval/hidden-states.js';
import { absorbedQueryCov, awareRoRope } from './aware-rope.js';
import { awareLatent, type AwareStats } from './aware-latent.js';
import { bkvPca } from './bkv-pca.js';
import { attentionLags, nopeRefit } from './nope-refit.js';
import { projectedCov } from './calibrate.js';
import { assembleMla, type LatentLayer } from './latent-layer.js';
import { queryBasis } from './q-lora.js';
import { roRope } from './rorope.js';
import { kvRows, sourceLatent, type LayerStep, type StepShape } from './transmla-layer.js';

export const ROPE_BASES = ['pca', 'query-aware'] as const;
export type RopeBasis = (typeof ROPE_BASES)[number];
export const LATENTS = ['bkv-pca', 'output-aware'] as const;
export type LatentMethod = (typeof LATENTS)[number];

export interface AwareShape extends StepShape {
  ropeBasis: RopeBasis;
  latent: LatentMethod;
  /** β of the output-aware metric (default 1). */
  keyWeight?: number;
  /** Refit the NoPE key columns to the source attention's lags (nope-refit.ts). */
  nopeRefit?: boolean;
}

/** Calibration samples the lag histogram of nopeRefit reads (the attention is O(T²) per sample). */
export const LAG_SAMPLES = 8;

/** Whether a shape asks for anything beyond faithful TransMLA. */
export const isAware = (s: { ropeBasis?: RopeBasis; latent?: LatentMethod; nopeRefit?: boolean }): boolean =>
  (s.ropeBasis ?? 'pca') !== 'pca' || (s.latent ?? 'bkv-pca') !== 'bkv-pca' || s.nopeRefit === true;

/** Σ_t [x̄_a;1][x̄_b;1]ᵀ [(D+1)²] over two state streams of the same samples (rows: a). */
export function crossGram(a: HiddenStates, b: HiddenStates, normA: Float32Array, normB: Float32Array, eps: number): Float64Array {
  const T = a.seqLen, D = a.hidden, Dp = D + 1;
  if (b.seqLen !== T || b.hidden !== D || b.samples !== a.samples) throw new Error('crossGram: the two state streams do not hold the same samples');
  const xa = new Float32Array(T * D), xb = new Float32Array(T * D);
  const Xa = new Float64Array(T * Dp), Xb = new Float64Array(T * Dp);
  const acc = new Float64Array(Dp * Dp);
  for (let s = 0; s < a.samples; s++) {
    rmsNorm(a.sample(s), T, D, normA, eps, xa);
    rmsNorm(b.sample(s), T, D, normB, eps, xb);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < D; j++) { Xa[t * Dp + j] = xa[t * D + j]!; Xb[t * Dp + j] = xb[t * D + j]!; }
      Xa[t * Dp + D] = 1;
      Xb[t * Dp + D] = 1;
    }
    const C = gemmF64(transpose(Xa, T, Dp), transpose(Xb, T, Dp), Dp, Dp, T, true);
    for (let i = 0; i < acc.length; i++) acc[i]! += C[i]!;
  }
  return acc;
}

/** Per head d×d per-token moments of the query outputs W_Q^h·x̄. */
export function headQueryCovs(wq: Float64Array, H: number, d: number, gram: Float64Array, Dp: number, tokens: number): Float64Array[] {
  const out: Float64Array[] = [];
  for (let h = 0; h < H; h++) {
    const C = projectedCov(wq.subarray(h * d * Dp, (h + 1) * d * Dp), d, gram, Dp);
    for (let i = 0; i < C.length; i++) C[i]! /= tokens;
    out.push(C);
  }
  return out;
}

/** What the aware step and the rank allocation (rank-alloc.ts) read off one layer's input statistics. */
export interface AwareInputs {
  gram: Float64Array;
  tokens: number;
  /** The source layer as a latent layer (unrotated). */
  L0: LatentLayer;
  /** After the RoPE basis (and the NoPE refit): the layer the latent is chosen for. */
  P: LatentLayer;
  ropeEnergy: number;
  meanRho: number | undefined;
  qCovs: Float64Array[];
  /** [Wk;Wv] rows of P and their moment. */
  rows: Float64Array;
  kvCov: Float64Array;
}

/** What several steps of one layer on the same states share (the budget search builds many shapes). */
export interface StepMemo {
  gram?: Float64Array;
  lags?: Float64Array[];
}

/** The RoPE basis (and NoPE refit) of layer l from `states`, and the moments the latent step needs. */
export function awareInputs(args: ModelArgs, l: number, layer: DecoderLayer, states: HiddenStates, keyCov: Float64Array | null, s: AwareShape, where: string, memo?: StepMemo): AwareInputs {
  const D = args.hiddenSize, H = args.numHeads, d = args.headDim, G = args.numKvHeads, Dp = D + 1;
  const gram = memo?.gram ?? states.gram(layer.inputNorm);
  if (memo) memo.gram = gram;
  assertFiniteStat(gram, `${where}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
  const tokens = gram[Dp * Dp - 1]!;
  const L0 = sourceLatent(args, l, layer);
  const qCovs = headQueryCovs(L0.wq, H, d, gram, Dp, tokens);
  const kCov = projectedCov(L0.wk, L0.nK, gram, Dp);
  const rope = s.ropeBasis === 'query-aware'
    ? awareRoRope(L0, kCov, absorbedQueryCov(L0, qCovs), { nKvHeads: G, ropeDim: s.ropeDim, freqFold: s.freqFold })
    : roRope(L0, keyCov ?? kCov, { nKvHeads: G, ropeDim: s.ropeDim, freqFold: s.freqFold });
  let P = rope.layer, meanRho: number | undefined;
  if (s.nopeRefit) {
    // The lags depend on the source layer and the states only, not on the shape: a memo reuses them.
    const lags = memo?.lags ?? attentionLags(L0, states, layer.inputNorm, args.rmsNormEps, LAG_SAMPLES);
    if (memo) memo.lags = lags;
    ({ layer: P, meanRho } = nopeRefit(P, L0, lags));
  }
  const rows = kvRows(P);
  const kvCov = projectedCov(rows, P.nK + P.nV, gram, Dp);
  assertFiniteStat(kvCov, `conversion, layer ${l + 1}/${args.numLayers}: the [K;V] output covariance`);
  return { gram, tokens, L0, P, ropeEnergy: rope.ropeEnergy, meanRho, qCovs, rows, kvCov };
}

/** The output-aware metric's statistics of P without a refit target (aware-latent.ts AwareStats). */
export function metricStats(P: LatentLayer, layer: DecoderLayer, x: Pick<AwareInputs, 'gram' | 'tokens' | 'qCovs' | 'kvCov'>, l: number): AwareStats {
  const D = P.hidden, Dp = D + 1, H = P.nHeads, d = P.headDim, gram = x.gram, tokens = x.tokens;
  const a = layer.attn;
  if (!(a instanceof GqaAttention)) throw new Error(`layer ${l} is not GQA/MHA attention`);
  const Wo = Float64Array.from(widen(a.o.weight)); // [D × H·d]
  const Hd = H * d;
  const oGram = gemmF64(transpose(Wo, D, Hd), Wo, Hd, Hd, D);
  const vMean = new Float64Array(P.nV);
  for (let i = 0; i < P.nV; i++) {
    let m = 0;
    for (let j = 0; j < Dp; j++) m += P.wv[i * Dp + j]! * gram[j * Dp + D]!;
    vMean[i] = m / tokens;
  }
  return { kvCov: x.kvCov, tokens, qCovs: x.qCovs, vMean, oGram, cross: null };
}

/**
 * The aware step of layer l. `states`: the layer's inputs the statistics come from (as for
 * transmlaLayer); keyCov: RoRoPE's key moment for the 'pca' basis (faithful order: pass 1's);
 * source: the source model's states at this layer (sequential refit target), or null.
 */
export function awareLayer(args: ModelArgs, l: number, layer: DecoderLayer, states: HiddenStates, keyCov: Float64Array | null, s: AwareShape, where: string, source: HiddenStates | null = null, memo?: StepMemo): LayerStep {
  const D = args.hiddenSize, H = args.numHeads, d = args.headDim, Dp = D + 1;
  const x = awareInputs(args, l, layer, states, keyCov, s, where, memo);
  const { gram, P, rows, kvCov, meanRho } = x;
  const qb = s.qLoraRank === null ? null : queryBasis(P, projectedCov(P.wq, H * d, gram, Dp), s.qLoraRank);
  const base = { ropeEnergy: x.ropeEnergy, ropeInvFreq: Array.from(P.ropeInvFreq), ...(meanRho === undefined ? {} : { nopeRho: meanRho }) };
  const spectrum = (c: Float64Array): number[] => Array.from(c, (e, j) => Number((e - (j > 0 ? c[j - 1]! : 0)).toPrecision(4)));
  if (s.latent === 'bkv-pca') {
    const res = bkvPca(P, kvCov, { rank: s.kvLoraRank, balanceRatio: s.balance, queryBasis: qb });
    return { weights: res.weights, partial: assembleMla(P), stats: { ...base, alpha: res.alpha, kvEnergy: res.energy, kvSpectrum: spectrum(res.energyCurve) } };
  }
  const st = metricStats(P, layer, x, l);
  if (source) {
    const Soc = crossGram(source, states, layer.inputNorm, layer.inputNorm, args.rmsNormEps);
    const Soo = source.gram(layer.inputNorm);
    const N = P.nK + P.nV;
    st.cross = { kvCross: gemmF64(gemmF64(rows, Soc, N, Dp, Dp), rows, N, N, Dp, true), kvTarget: projectedCov(rows, N, Soo, Dp) };
  }
  const res = awareLatent(P, st, { rank: s.kvLoraRank, keyWeight: s.keyWeight, queryBasis: qb });
  return {
    weights: res.weights, partial: assembleMla(P),
    stats: { ...base, alpha: 1, kvEnergy: res.energy, kvSpectrum: spectrum(res.energyCurve), refitResidual: res.refitResidual },
  };
}
