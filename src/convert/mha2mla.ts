// The MHA2MLA method (docs/methods.md#mha2mla), training-free: source GQA/MHA model → calibrate (only what
// the chosen options need) → partial RoPE (r pairs per KV head, selected by S_high / S_low /
// S_uniform / S_2-norm) → low-rank latent for the NoPE keys and values (SVD_joint or SVD_split,
// weight-only or activation-aware) → an MHA2MLA folder (per-KV-head RoPE keys, mla-config.ts),
// measuring original → partial-RoPE → MLA perplexity, KL and top-1 as the TransMLA pipeline does.
//
// It shares the TransMLA pipeline's machinery: calibration samples, held-out documents and the
// layer-by-layer hidden states (calibrate.ts), evaluation (eval/fidelity.ts) and the output
// folder writer (convert.ts outputTensors, io/checkpoint.ts, transmla.json).
//
// Statistics all come from the original model, one pass, layer by layer:
// - S_2-norm: per-pair query/key norms ('mean': exact mean of per-token pair norms, from the q/k
//   projections of every calibration token; 'rms': the root-mean-square surrogate from the Gram);
// - activation-aware factorisation: the layer input's second moment E[xxᵀ] (from the Gram).
// Weight-only SVD with a fixed selection needs no calibration at all.
import { resolve } from 'node:path';
import { mha2mlaConfigJson } from '../arch/mha2mla.js';
import { formatScore } from '../eval/fidelity.js';
import { peakRssBytes } from '../eval/memory.js';
import { checkOutputDir } from '../io/atomic-dir.js';
import { assertFiniteStat } from '../io/finite.js';
import { setStage } from '../io/interrupt.js';
import type { FloatDType } from '../kernels/types.js';
import { GqaAttention } from '../models/attention.js';
import type { Decoder } from '../models/decoder.js';
import { ropeInvFreq } from '../models/rope.js';
import type { EvalReport, Mha2mlaReport, Weighting } from '../schema/transmla-json.js';
import { bytesPerElement } from '../tensor.js';
import { HiddenStates } from '../eval/hidden-states.js';
import { withBias } from './gqa-to-mla.js';
import { maxMha2mlaRank, mha2mlaDecoderLayer, mha2mlaLayer, mha2mlaLayerTensors, type LowRankInit, type Mha2mlaLayerWeights } from './mha2mla-layer.js';
import { assembleModel, gqaLayerSource } from './mla-build.js';
import {
  calibrationSet, calibrationTokens, convertInputs, describeCalibration, evaluateStages, evaluationTexts, openSource,
  outputTensors, secondsSince, sha256File, writeModelFolder, type CalibEvalOptions,
} from './pipeline.js';
import { PairNormAccumulator, pairRmsFromGram, pairScores, selectRopePairs, type NormStat, type PairNorms, type RopeSelection } from './rope-select.js';

export type { Weighting } from '../schema/transmla-json.js';

/** MHA2MLA's default: r = d/16 pairs per head (4 for d = 64, 8 for d = 128), at least one. */
export function defaultRopePairs(headDim: number): number {
  return Math.max(1, Math.round(headDim / 16));
}

export interface Mha2mlaBudget {
  ropePairs: number;
  kvRank: number;
  /** Cached values per token per layer: G·2r + R. */
  width: number;
  /** width / (2·G·d). */
  fraction: number;
}

/**
 * r and R for a cache budget: the latent gets what the G·2r RoPE keys leave of ⌊F·2·G·d⌋ (or R is
 * given). Throws, saying what to change, when nothing is left for the latent.
 */
export function mha2mlaBudget(s: { nKvHeads: number; headDim: number; hidden: number }, o: { ropePairs?: number; kvRank?: number; kvFraction?: number }): Mha2mlaBudget {
  const G = s.nKvHeads, d = s.headDim, full = 2 * G * d;
  const r = o.ropePairs ?? defaultRopePairs(d);
  if (!Number.isInteger(r) || r < 0 || 2 * r >= d) throw new Error(`--rope-pairs must be an integer in 0..${d / 2 - 1} for head_dim ${d}, got ${r}`);
  let R: number;
  if (o.kvFraction !== undefined) {
    if (o.kvRank !== undefined) throw new Error('give either --kv-rank or --kv-fraction, not both');
    if (!(o.kvFraction > 0 && o.kvFraction <= 1)) throw new Error(`--kv-fraction must be in (0, 1], got ${o.kvFraction}`);
    // A hair of tolerance so 0.3125·256 = 80 is not lost to rounding.
    const width = Math.floor(o.kvFraction * full + 1e-9);
    R = width - G * 2 * r;
    if (R < 1) throw new Error(`--kv-fraction ${o.kvFraction} gives ${width} values per token, all taken by the RoPE keys (${G} KV heads × 2·${r}); lower --rope-pairs`);
  } else if (o.kvRank !== undefined) {
    R = o.kvRank;
  } else {
    throw new Error('give --kv-rank R or --kv-fraction F');
  }
  const max = maxMha2mlaRank(s, r);
  if (!Number.isInteger(R) || R < 1 || R > max) throw new Error(`the latent width must be an integer in 1..${max} (min(G·(2d − 2r), hidden)), got ${R}`);
  return { ropePairs: r, kvRank: R, width: G * 2 * r + R, fraction: (G * 2 * r + R) / full };
}

export interface Mha2mlaLayerStats {
  pairNorms: PairNorms | null;
  /** E[xxᵀ] [D×D] of the layer's normed input (bias column dropped: biases stay exact). */
  inputCov: Float64Array | null;
}

export interface StatsNeeds {
  pairNorms: NormStat | null;
  inputCov: boolean;
}

/** What calibration the options require. */
export function statsNeeds(selection: RopeSelection, weighting: Weighting, normStat: NormStat): StatsNeeds {
  return { pairNorms: selection === '2norm' ? normStat : null, inputCov: weighting === 'activations' };
}

/**
 * One pass of the calibration samples through the original model; onLayer receives each layer's
 * statistics as soon as they exist (so a caller can convert that layer and drop them).
 */
export function calibrateMha2mla(src: Decoder, samples: readonly Int32Array[], need: StatsNeeds, onLayer: (l: number, s: Mha2mlaLayerStats) => void): void {
  const nLayers = src.layers.length, D = src.config.hiddenSize, Dp = D + 1;
  const states = HiddenStates.embed(src, samples);
  const tokens = samples.length * states.seqLen;
  try {
    for (let l = 0; l < nLayers; l++) {
      const layer = src.layers[l]!, a = layer.attn;
      if (!(a instanceof GqaAttention)) throw new Error(`layer ${l} is not GQA/MHA attention`);
      const gram = need.inputCov || need.pairNorms === 'rms' ? states.gram(layer.inputNorm) : null;
      const at = `calibration, layer ${l + 1}/${nLayers}`;
      if (gram) assertFiniteStat(gram, `${at}: the second moment of the attention input`);
      let pairNorms: PairNorms | null = null;
      if (need.pairNorms === 'mean') {
        const acc = new PairNormAccumulator(a.nHeads, a.nKvHeads, a.headDim, a.ropeLayout);
        const q = new Float32Array(states.seqLen * a.q.outFeatures), k = new Float32Array(states.seqLen * a.k.outFeatures);
        states.visitNormed(layer.inputNorm, (xn, T) => {
          a.q.forward(xn, T, q);
          a.k.forward(xn, T, k);
          acc.add(q, k, T);
        });
        pairNorms = acc.result();
      } else if (need.pairNorms === 'rms') {
        const s = gqaLayerSource(src, l);
        pairNorms = pairRmsFromGram(withBias(s.wq, s.bq, a.nHeads * a.headDim, D, 'q_proj'), withBias(s.wk, s.bk, a.nKvHeads * a.headDim, D, 'k_proj'),
          a.nHeads, a.nKvHeads, a.headDim, a.ropeLayout, gram!, Dp, tokens);
      }
      if (pairNorms) {
        assertFiniteStat(pairNorms.q, `${at}: the ${need.pairNorms} query pair norms`);
        assertFiniteStat(pairNorms.k, `${at}: the ${need.pairNorms} key pair norms`);
      }
      let inputCov: Float64Array | null = null;
      if (need.inputCov) {
        inputCov = new Float64Array(D * D);
        for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) inputCov[i * D + j] = gram![i * Dp + j]! / tokens;
      }
      onLayer(l, { pairNorms, inputCov });
      if (l + 1 < nLayers) states.advance(layer);
    }
  } finally {
    states.close();
  }
}

export interface Mha2mlaVariant {
  selection: RopeSelection;
  init: LowRankInit;
  weighting: Weighting;
  ropePairs: number;
  /** Latent width, or 'full' for the partial-RoPE model. */
  kvRank: number | 'full';
}

/** Layer l of the source converted with a variant, from that layer's statistics. */
export function convertMha2mlaLayer(src: Decoder, l: number, v: Mha2mlaVariant, stats: Mha2mlaLayerStats): Mha2mlaLayerWeights {
  const s = gqaLayerSource(src, l);
  const pairs = selectRopePairs(v.selection, v.ropePairs, s.headDim, s.nKvHeads, stats.pairNorms);
  if (v.weighting === 'activations' && v.kvRank !== 'full' && !stats.inputCov) throw new Error('the activation-aware factorisation needs the input covariance from calibration');
  return mha2mlaLayer(s, { ropePairs: pairs, kvRank: v.kvRank, init: v.init, inputCov: v.weighting === 'activations' ? stats.inputCov : null });
}

/** An in-memory MHA2MLA model: the source with these attention layers (rounded to `dtype`). */
export function buildMha2mlaModel(src: Decoder, layers: readonly Mha2mlaLayerWeights[], dtype: FloatDType): Decoder {
  const c = src.config;
  const inv = ropeInvFreq(c.headDim, c.ropeTheta, c.ropeScaling);
  return assembleModel(src, layers.map((w, l) => mha2mlaDecoderLayer(src, l, w, inv, { dtype })));
}

export interface Mha2mlaOptions extends CalibEvalOptions {
  model: string;
  /** The source path transmla.json records (default: model; see ConvertOptions.sourcePath). */
  sourcePath?: string;
  out: string | null;
  overwrite?: boolean;
  /** r pairs per KV head (default defaultRopePairs(d)). */
  ropePairs?: number;
  /** Latent width R; or give kvFraction. */
  kvRank?: number;
  kvFraction?: number;
  selection?: RopeSelection;
  init?: LowRankInit;
  weighting?: Weighting;
  normStat?: NormStat;
  calib: string;
}


/** Six significant digits: enough for a chart, and transmla.json stays small. */
function sig(x: number): number {
  return x === 0 || !Number.isFinite(x) ? x : Number(x.toPrecision(6));
}


export async function convertMha2mla(o: Mha2mlaOptions): Promise<Mha2mlaReport> {
  const log = o.log ?? (() => {});
  const tStart = performance.now();
  // Refuse a bad --out before the long computation, not after it.
  if (o.out) checkOutputDir(o.out, { overwrite: o.overwrite, source: convertInputs(o) });
  const source = openSource(o.model, 'mha2mla', true);
  const src = source.model!, cfg = source.args, tok = source.tokenizer;
  const H = cfg.numHeads, G = cfg.numKvHeads, d = cfg.headDim, D = cfg.hiddenSize, nLayers = cfg.numLayers;
  const dtype = source.dtype;
  const budget = mha2mlaBudget({ nKvHeads: G, headDim: d, hidden: D }, o);
  const variant: Mha2mlaVariant = {
    selection: o.selection ?? '2norm', init: o.init ?? 'joint', weighting: o.weighting ?? 'weights',
    ropePairs: budget.ropePairs, kvRank: budget.kvRank,
  };
  const normStat = o.normStat ?? 'mean';
  const need = statsNeeds(variant.selection, variant.weighting, normStat);
  const before = 2 * G * d;
  const tLoad = secondsSince(tStart);
  log(`source: ${o.model} (${cfg.modelType}, ${nLayers} layers, ${H} heads / ${G} KV heads × ${d}, ${dtype})`);
  log(`target: ${budget.width} cached values per token per layer = ${G} KV heads × 2·${budget.ropePairs} RoPE + latent ${budget.kvRank}; was ${before} (${(100 * budget.fraction).toFixed(2)} %)`);
  log(`method: MHA2MLA, S_${variant.selection} selection${need.pairNorms ? ` (${need.pairNorms} pair norms)` : ''}, SVD_${variant.init}, ${variant.weighting === 'weights' ? 'weight-only' : 'activation-aware'}`);

  // Calibration samples (also when no statistic is needed: the held-out split is the same).
  const c = calibrationSet(o.calib, o);
  const statistics = [need.pairNorms && `${need.pairNorms} query/key pair norms`, need.inputCov && 'layer-input second moment'].filter((x): x is string => !!x);

  // --- Calibrate and convert, layer by layer (each layer's statistics dropped once used).
  const tCal = performance.now();
  let tConvSecs = 0;
  const mla: Mha2mlaLayerWeights[] = [];
  const partial: Mha2mlaLayerWeights[] = [];
  const scores: (number[][] | null)[] = [];
  const convertLayer = (l: number, stats: Mha2mlaLayerStats): void => {
    const t = performance.now();
    setStage(`calibration and conversion, layer ${l + 1}/${nLayers}`);
    const w = convertMha2mlaLayer(src, l, variant, stats);
    mla.push(w);
    scores.push(stats.pairNorms ? pairScores(stats.pairNorms).map((row) => row.map(sig)) : null);
    partial.push(mha2mlaLayer(gqaLayerSource(src, l), { ropePairs: w.ropePairs, kvRank: 'full', init: variant.init, inputCov: null }));
    tConvSecs += secondsSince(t);
    log(`  layer ${l + 1}/${nLayers}: RoPE pairs ${w.ropePairs.map((p) => `[${p.join(',')}]`).join(' ')}, latent energy kept ${(100 * w.energy).toFixed(1)} %`);
  };
  if (need.pairNorms || need.inputCov) {
    const samples = await calibrationTokens(tok, c);
    log(`calibration: ${describeCalibration(c)}: ${statistics.join(', ')}`);
    calibrateMha2mla(src, samples, need, convertLayer);
  } else {
    log('calibration: none needed (fixed selection, weight-only factorisation)');
    for (let l = 0; l < nLayers; l++) convertLayer(l, { pairNorms: null, inputCov: null });
  }
  const calSecs = secondsSince(tCal) - tConvSecs;
  const partialModel = buildMha2mlaModel(src, partial, dtype);
  const mlaModel = buildMha2mlaModel(src, mla, dtype);
  const convertTotal = secondsSince(tStart);

  // --- Evaluation: original → partial RoPE → MLA on the same tokens.
  const tEval = performance.now();
  const evaluations: EvalReport[] = [];
  for (const { text: t, result: f } of await evaluateStages(src, [partialModel, mlaModel], tok, evaluationTexts(o, c), o)) {
    evaluations.push({
      text: t.name, sha256: t.sha, mode: t.mode, ctx: f.ctx, chunks: f.chunks, predictions: f.predictions, convention: f.convention,
      original: f.reference, partialRope: f.models[0]!, mla: f.models[1]!,
    });
    log(`${t.name}: ${f.chunks} chunks × ${f.ctx} tokens`);
    log(`  original      ${formatScore(f.reference, true)}`);
    log(`  partial RoPE  ${formatScore(f.models[0]!)}`);
    log(`  MLA           ${formatScore(f.models[1]!)}`);
  }
  const evalSecs = secondsSince(tEval);

  const bpe = bytesPerElement(dtype);
  const report: Mha2mlaReport = {
    tool: 'transmla',
    method: 'mha2mla',
    methodDescription: 'MHA2MLA (partial RoPE per KV head + low-rank NoPE-key/value latent), training-free',
    created: new Date().toISOString(),
    source: {
      path: resolve(o.sourcePath ?? o.model), modelType: cfg.modelType, layers: nLayers, hidden: D, heads: H, kvHeads: G, headDim: d, dtype,
      ropeInvFreq: Array.from(ropeInvFreq(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling)),
    },
    output: o.out ? resolve(o.out) : null,
    parameters: {
      ropePairsPerHead: budget.ropePairs, kvLoraRank: budget.kvRank, kvFraction: budget.fraction,
      selection: variant.selection, lowRank: variant.init, weighting: variant.weighting, normStat: need.pairNorms,
      ropePairs: mla.map((w) => w.ropePairs),
      ropeLayout: 'q_proj and k_r_proj rows per head: kept pairs first as interleaved (2i, 2i+1), pair i rotating at the source frequency θ_{S_g[i]}; then the NoPE elements in source order',
      softmaxScale: `head_dim^−½ (qk width unchanged: 2r + (d − 2r) = ${d})`,
      dtype,
    },
    calibration: {
      file: resolve(o.calib), sha256: sha256File(o.calib), documents: c.docs.length, heldOutDocuments: c.heldOut.length,
      samples: statistics.length ? c.samples : 0, seqLen: c.seqLen, tokens: statistics.length ? c.samples * c.seqLen : 0, seed: c.seed, statistics,
    },
    kvCache: {
      dtype, bytesPerTokenBefore: nLayers * before * bpe, bytesPerTokenAfter: nLayers * budget.width * bpe,
      elementsPerTokenPerLayerBefore: before, elementsPerTokenPerLayerAfter: budget.width, fraction: budget.fraction,
    },
    layers: mla.map((w, l) => ({
      energy: w.energy,
      spectra: w.spectra.map((x) => ({ part: x.part, rank: x.rank, shares: Array.from(x.values, (v) => (x.total > 0 ? sig(v / x.total) : 0)) })),
      pairScores: scores[l]!,
    })),
    evaluations,
    seconds: { load: tLoad, calibration: calSecs, conversion: tConvSecs, evaluation: evalSecs, save: 0, convertTotal },
    peakRssBytes: 0,
  };
  log(`KV cache per token (${dtype}): ${report.kvCache.bytesPerTokenBefore} B → ${report.kvCache.bytesPerTokenAfter} B`);

  if (!o.out) {
    report.peakRssBytes = peakRssBytes();
    return report;
  }
  setStage(`writing ${resolve(o.out)}`);
  const configJson = mha2mlaConfigJson(cfg, { kvLoraRank: budget.kvRank, ropePairsPerHead: budget.ropePairs, ropePairs: report.parameters.ropePairs });
  // Innermost number lists (the kept pairs of one KV head) on one line each; a raw newline
  // after "[" cannot occur inside a JSON string, so string values are never touched.
  const config = JSON.stringify(configJson, null, 2).replace(/\[\n\s*(-?\d+(?:,\n\s*-?\d+)*)\n\s*\]/g, (_m, nums: string) => `[${nums.split(/,\s*/).join(', ')}]`);
  await writeModelFolder(o.out, { overwrite: o.overwrite ?? false, inputs: convertInputs(o) }, async () => {
    const tSave = performance.now();
    return {
      srcDir: o.model, inputs: convertInputs(o), overwrite: o.overwrite ?? false,
      tensors: outputTensors(o.model, nLayers, (l, prefix) => mha2mlaLayerTensors(prefix, mla[l]!, dtype)),
      config,
      // Final timings written inside the atomic folder: an interrupted save leaves nothing behind.
      report: () => {
        report.seconds.save = secondsSince(tSave);
        report.seconds.convertTotal += report.seconds.save;
        report.peakRssBytes = peakRssBytes();
        return report;
      },
      html: true, log,
    };
  });
  return report;
}
