// The TransMLA method (docs/methods.md#transmla): source GQA/MHA model → calibrate → RoRoPE +
// FreqFold (partial RoPE) → BKV-PCA (+ optional q low rank) → DeepSeek-V3 folder, measuring the
// perplexity of each stage (original → partial RoPE → MLA) and the fidelity (KL, top-1) of the
// converted models on the same tokens. It runs on the pipeline skeleton (pipeline.ts); what is
// its own is the shape choice, the searches and the per-layer step, which the in-memory and the
// streaming (`--no-eval`: one layer of weights at a time) conversions share.
//
// Calibration order (--calib-order):
// - 'faithful' (default, TransMLA): RoRoPE's key statistics come from the original model; then
//   the partial-RoPE model is re-run over the calibration set and BKV-PCA (and the query PCA)
//   use its layer inputs. Two passes over the N·L tokens.
// - 'sequential': one pass through the model being built: layer l's statistics come from the
//   hidden states after the already-converted (final MLA) layers 0..l−1, so each layer is fit
//   to the inputs it will really see. (A FreqFold search still needs a pass on the original.)
//
// Searches, scored on held-out calibration documents (the evaluation texts are never looked at):
// - --freqfold auto with a given d_R: as TransMLA, start at M = c = d/d_R and double M while the
//   partial-RoPE perplexity improves (up to d/2);
// - --kv-fraction without --rope-dim (or --rope-dim auto): the budget r + d_R is fixed and every
//   d_R (even divisor of head_dim) is tried with its own FreqFold search, scoring the MLA model
//   built from pass-1 statistics (shape-search.ts says why small heads need this).
import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { mlaConfigJson } from '../arch/deepseek.js';
import type { ModelArgs } from '../arch/args.js';
import { formatScore } from '../eval/fidelity.js';
import { peakRssBytes } from '../eval/memory.js';
import { checkOutputDir } from '../io/atomic-dir.js';
import { openCheckpoint, writeCheckpoint } from '../io/checkpoint.js';
import { assertFiniteStat } from '../io/finite.js';
import { interruptPoint, setStage, testPause } from '../io/interrupt.js';
import type { FloatDType } from '../kernels/types.js';
import type { DecoderLayer } from '../models/decoder.js';
import { bytesPerElement } from '../tensor.js';
import type { CalibOrder, ConvertReport, EvalReport } from '../schema/transmla-json.js';
import { bkvPca } from './bkv-pca.js';
import { Float64Spill, HiddenStates, projectedCov } from './calibrate.js';
import { latentFromGqa } from './gqa-to-mla.js';
import { checkKvRank, defaultRopeDim, kvForFraction, sourceKvWidth } from './kv-budget.js';
import { assembleMla, PCA_DAMP, type LatentLayer, type MlaLayerWeights } from './latent-layer.js';
import { assembleModel, buildMlaModel, gqaLayerSource, layerView, mlaDecoderLayer, mlaLayerTensors, mlaRopeTable } from './mla-build.js';
import {
  calibrationSet, calibrationTokens, convertInputs, cpuSeconds, describeCalibration, evaluateStages, evaluationTexts, openSource,
  outputTensors, secondsSince, sha256File, writeModelFolder,
  type CalibEvalOptions, type CalibrationSet, type ConversionSource,
} from './pipeline.js';
import { queryBasis } from './q-lora.js';
import { checkRoRope, roRope } from './rorope.js';
import { keyBlock, memoryStore, searchShape, type StatStore } from './shape-search.js';

export interface ConvertOptions extends CalibEvalOptions {
  model: string;
  /** The source path transmla.json records (default: model); a llama2.c .bin converted through a temporary folder records the .bin. */
  sourcePath?: string;
  /** Output folder; null converts and evaluates without saving. */
  out: string | null;
  overwrite?: boolean;
  /** r; or give kvFraction. */
  kvLoraRank?: number;
  /**
   * d_R. With kvFraction the default is 'auto' (the budget's best split, searched on held-out
   * documents); with kvLoraRank the default is defaultRopeDim.
   */
  ropeDim?: number | 'auto';
  /** Target (r + d_R) / (2·G·d); picks r (and d_R when not given). */
  kvFraction?: number;
  qLoraRank?: number | null;
  freqFold: number | 'auto';
  /** balance_kv_ratio (0 = no balancing). Default 1. */
  balanceKvRatio?: number;
  calib: string;
  calibOrder?: CalibOrder;
  /** Chunks of held-out calibration text per FreqFold candidate (default 16). */
  searchChunks?: number;
}

/** What both conversion paths describe alike. */
interface ExactConversionFacts {
  model: string;
  out: string | null;
  modelType: string;
  dims: { layers: number; hidden: number; heads: number; kvHeads: number; headDim: number };
  dtype: FloatDType;
  kvLoraRank: number;
  ropeDim: number;
  freqFold: number;
  requested: { freqFold: number | 'auto'; ropeDim: number | 'auto' };
  qLoraRank: number | null;
  collapse: number;
  balance: number;
  order: CalibOrder;
  attentionBias: boolean;
  search: ConvertReport['search'];
  calib: CalibrationSet;
  /** Cached values per token per layer before and after. */
  before: number;
  after: number;
}

/** The fields of transmla.json fixed by the conversion's shape and inputs. */
function exactReportHeader(f: ExactConversionFacts): Pick<ConvertReport, 'tool' | 'variant' | 'method' | 'created' | 'source' | 'output' | 'parameters' | 'search' | 'calibration' | 'kvCache'> {
  const { layers, headDim: d } = f.dims, dR = f.ropeDim, bpe = bytesPerElement(f.dtype), c = f.calib;
  return {
    tool: 'transmla',
    variant: 'exact',
    method: 'TransMLA (RoRoPE + FreqFold + BKV-PCA), training-free, exact variant without kv_a_layernorm',
    created: new Date().toISOString(),
    source: { path: resolve(f.model), modelType: f.modelType, ...f.dims, dtype: f.dtype },
    output: f.out ? resolve(f.out) : null,
    parameters: {
      kvLoraRank: f.kvLoraRank, qkRopeHeadDim: dR, qkNopeHeadDim: d, vHeadDim: d, qLoraRank: f.qLoraRank,
      kvFraction: f.after / f.before,
      freqFold: f.freqFold, freqFoldRequested: f.requested.freqFold, ropeDimRequested: f.requested.ropeDim, collapse: f.collapse,
      balanceKvRatio: f.balance, pcaDamp: PCA_DAMP, calibOrder: f.order,
      ropeLayout: `q_pe/k_pe rows stored as interleaved pairs (2i, 2i+1), pair i rotating at θ^(−2i/d_R) = source frequency ${f.collapse}·i (rope_interleave: true)`,
      softmaxScale: `(qk_nope_head_dim + qk_rope_head_dim)^−½, queries pre-multiplied by √(${d}+${dR})/√${d}`,
      attentionBias: f.attentionBias,
      dtype: f.dtype,
    },
    search: f.search,
    calibration: { file: resolve(c.file), sha256: sha256File(c.file), documents: c.docs.length, heldOutDocuments: c.heldOut.length, samples: c.samples, seqLen: c.seqLen, tokens: c.samples * c.seqLen, seed: c.seed },
    kvCache: {
      dtype: f.dtype,
      bytesPerTokenBefore: layers * f.before * bpe,
      bytesPerTokenAfter: layers * f.after * bpe,
      elementsPerTokenPerLayerBefore: f.before,
      elementsPerTokenPerLayerAfter: f.after,
      fraction: f.after / f.before,
    },
  };
}

/** [Wk ; Wv] of a latent layer: the rows whose joint covariance BKV-PCA needs. */
function kvRows(L: LatentLayer): Float64Array {
  const W = new Float64Array((L.nK + L.nV) * (L.hidden + 1));
  W.set(L.wk);
  W.set(L.wv, L.wk.length);
  return W;
}

/** The cache budget r + d_R, and d_R ('auto': searched), from the options. */
function resolveBudget(o: ConvertOptions, G: number, d: number): { budget: number; ropeDim: number | 'auto' } {
  const shape = { nKvHeads: G, headDim: d };
  const before = sourceKvWidth(shape);
  if (o.kvFraction !== undefined) {
    if (o.kvLoraRank !== undefined) throw new Error('give either --kv-lora-rank or --kv-fraction, not both');
    if (!(o.kvFraction > 0 && o.kvFraction <= 1)) throw new Error(`--kv-fraction must be in (0, 1], got ${o.kvFraction}`);
    const ropeDim = o.ropeDim ?? 'auto';
    if (ropeDim !== 'auto') {
      const k = kvForFraction(shape, o.kvFraction, ropeDim);
      return { budget: k.kvLoraRank + k.ropeDim, ropeDim };
    }
    // A hair of tolerance so 0.3125·256 = 80 is not lost to rounding.
    const budget = Math.floor(o.kvFraction * before + 1e-9);
    if (budget < 3) throw new Error(`--kv-fraction ${o.kvFraction} gives ${budget} values per token: too small for a RoPE pair and a latent`);
    return { budget, ropeDim };
  }
  if (o.kvLoraRank !== undefined) {
    if (o.ropeDim === 'auto') throw new Error('--rope-dim auto needs --kv-fraction (a fixed cache budget to split between r and d_R)');
    // Default d_R: the largest even divisor of d that is ≤ d/2 and ≤ r.
    const ropeDim = o.ropeDim ?? defaultRopeDim(d, 2 * o.kvLoraRank);
    checkKvRank(shape, o.kvLoraRank, ropeDim);
    return { budget: o.kvLoraRank + ropeDim, ropeDim };
  }
  throw new Error('give --kv-lora-rank R or --kv-fraction F');
}

interface LayerStep {
  weights: MlaLayerWeights;
  /** The lossless partial-RoPE form of the layer (RoRoPE only). */
  partial: MlaLayerWeights;
  stats: ConvertReport['layers'][number];
}

interface StepShape {
  G: number; H: number; d: number; D: number; dR: number; M: number; r: number;
  qLoraRank: number | null; balance: number; order: CalibOrder; dtype: FloatDType;
}

/**
 * Pass 2, the per-layer step both paths share: each layer's RoRoPE + BKV-PCA from the
 * calibration states, yielded as soon as it exists; the states then advance through the model
 * the next layer's statistics should come from (faithful: partial RoPE; sequential: final MLA).
 */
async function* convertLayers(src: ConversionSource, samples: Int32Array[], s: StepShape, keyCov0: ((l: number) => Float64Array) | null, pass: number, log: (line: string) => void): AsyncGenerator<LayerStep> {
  const nLayers = src.args.numLayers;
  const rope = mlaRopeTable({ config: src.args, layers: [] }, s.dR);
  const states = HiddenStates.fromEmbedding(src.args, src.embedding(), samples);
  try {
    for (let l = 0; l < nLayers; l++) {
      setStage(`conversion pass ${pass} (RoRoPE + BKV-PCA), layer ${l + 1}/${nLayers}`);
      const layer = src.layer(l);
      const gram = states.gram(layer.inputNorm);
      assertFiniteStat(gram, `calibration pass ${pass} (${s.order === 'faithful' ? 'partial-RoPE' : 'converted prefix'} model), layer ${l + 1}/${nLayers}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
      const L0 = latentFromGqa(gqaLayerSource(layerView(src.args, l, layer), l));
      const keyCov = s.order === 'faithful' ? keyCov0!(l) : projectedCov(L0.wk, L0.nK, gram, s.D + 1);
      const { layer: P, ropeEnergy } = roRope(L0, keyCov, { nKvHeads: s.G, ropeDim: s.dR, freqFold: s.M });
      const kvCov = projectedCov(kvRows(P), P.nK + P.nV, gram, s.D + 1);
      assertFiniteStat(kvCov, `conversion, layer ${l + 1}/${nLayers}: the [K;V] output covariance`);
      const qb = s.qLoraRank === null ? null : queryBasis(P, projectedCov(P.wq, s.H * s.d, gram, s.D + 1), s.qLoraRank);
      const res = bkvPca(P, kvCov, { rank: s.r, balanceRatio: s.balance, queryBasis: qb });
      const partial = assembleMla(P);
      yield {
        weights: res.weights, partial,
        stats: {
          ropeEnergy, alpha: res.alpha, kvEnergy: res.energy,
          ropeInvFreq: Array.from(P.ropeInvFreq),
          kvSpectrum: Array.from(res.energyCurve, (e, j) => Number((e - (j > 0 ? res.energyCurve[j - 1]! : 0)).toPrecision(4))),
        },
      };
      if (l + 1 < nLayers) states.advance(mlaDecoderLayer(layerView(src.args, l, layer), l, s.order === 'faithful' ? partial : res.weights, rope, { dtype: s.dtype }));
      log(`  pass ${pass} layer ${l + 1}/${nLayers}: RoPE energy kept ${(100 * ropeEnergy).toFixed(1)} %, α ${res.alpha.toFixed(3)}, latent energy kept ${(100 * res.energy).toFixed(1)} %`);
      if (l === 0) await testPause('conversion');
      await interruptPoint();
    }
  } finally {
    states.close();
  }
}

/**
 * Pass 1 (original model): per-layer covariance of the [K ; V] outputs (keys in latent order),
 * for RoRoPE in the faithful order and for the searches.
 */
async function originalCovariances(src: ConversionSource, samples: Int32Array[], log: (line: string) => void): Promise<StatStore> {
  const nLayers = src.args.numLayers, D = src.args.hiddenSize;
  const spill: StatStore = src.model ? memoryStore() : new Float64Spill();
  const states = HiddenStates.fromEmbedding(src.args, src.embedding(), samples);
  try {
    for (let l = 0; l < nLayers; l++) {
      setStage(`calibration pass 1 (original model), layer ${l + 1}/${nLayers}`);
      const layer = src.layer(l);
      const gram = states.gram(layer.inputNorm);
      assertFiniteStat(gram, `calibration pass 1 (original model), layer ${l + 1}/${nLayers}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
      const L = latentFromGqa(gqaLayerSource(layerView(src.args, l, layer), l));
      spill.push(projectedCov(kvRows(L), L.nK + L.nV, gram, D + 1));
      if (l + 1 < nLayers) states.advance(layer);
      log(`  pass 1 (original model) layer ${l + 1}/${nLayers}`);
      if (l === 0) await testPause('calibration');
      await interruptPoint();
    }
  } catch (e) {
    spill.close();
    throw e;
  } finally {
    states.close();
  }
  return spill;
}

function exactConfig(args: ModelArgs, p: ConvertReport['parameters']): string {
  return JSON.stringify(mlaConfigJson(args, {
    kvLoraRank: p.kvLoraRank, qLoraRank: p.qLoraRank, qkRopeHeadDim: p.qkRopeHeadDim,
    qkNopeHeadDim: p.qkNopeHeadDim, vHeadDim: p.vHeadDim, attentionBias: p.attentionBias,
  }), null, 2);
}

const hasBias = (w: MlaLayerWeights): boolean => (w.q?.b ?? w.qB?.b ?? w.kvA.b) !== null;

/**
 * Converts a model with TransMLA. `stream` (`--no-eval`): no model is ever whole in memory —
 * each pass reads one decoder layer from the checkpoint, converted tensors go to a spill
 * checkpoint inside the output's temporary folder, and the folder is assembled tensor by tensor;
 * it needs a fixed shape (the searches and evaluation score whole models) and writes the same
 * bytes as the in-memory conversion.
 */
export async function convertModel(o: ConvertOptions & { stream?: boolean }): Promise<ConvertReport> {
  const log = o.log ?? (() => {});
  const stream = o.stream ?? false;
  const tStart = performance.now();
  const cpuStart = cpuSeconds();
  if (stream) {
    if (!o.out) throw new Error('--no-eval converts without evaluating; it needs --out (there is nothing else to show)');
    if (o.ropeDim === undefined || o.ropeDim === 'auto' || o.freqFold === 'auto') {
      throw new Error('--no-eval needs a fixed shape: give --rope-dim D and --freqfold M (the searches score whole models)');
    }
    if ((o.evalTexts ?? []).length > 0) throw new Error('--no-eval and --eval-text contradict each other');
  }
  // Refuse a bad --out before the long computation, not after it.
  if (o.out) checkOutputDir(o.out, { overwrite: o.overwrite, source: convertInputs(o) });
  const src = openSource(o.model, 'transmla', !stream);
  let covs: StatStore | null = null;
  try {
    const cfg = src.args;
    const H = cfg.numHeads, G = cfg.numKvHeads, d = cfg.headDim, D = cfg.hiddenSize, nLayers = cfg.numLayers;
    const dtype = src.dtype;
    const tLoad = secondsSince(tStart);
    const { budget, ropeDim } = resolveBudget(o, G, d);
    if (ropeDim !== 'auto') checkRoRope(d, ropeDim, o.freqFold === 'auto' ? d / ropeDim : o.freqFold);
    const qLoraRank = o.qLoraRank ?? null, balance = o.balanceKvRatio ?? 1, order = o.calibOrder ?? 'faithful';
    const evalCtx = o.evalCtx ?? Math.min(2048, cfg.maxPositionEmbeddings);
    const before = sourceKvWidth({ nKvHeads: G, headDim: d });
    log(`source: ${o.model} (${cfg.modelType}, ${nLayers} layers, ${H} heads / ${G} KV heads × ${d}, ${dtype})${stream ? '; streaming, no evaluation' : ''}`);
    log(`target: ${budget} cached values per token per layer = kv_lora_rank + qk_rope_head_dim${ropeDim === 'auto' ? ' (split searched)' : ` (${budget - ropeDim} + ${ropeDim})`}; was 2·${G}·${d} = ${before} (${(100 * budget / before).toFixed(2)} %)`);

    const c = calibrationSet(o.calib, o);
    const samples = calibrationTokens(src.tokenizer, c);
    log(`calibration: ${describeCalibration(c)}, order ${order}`);

    const searching = o.freqFold === 'auto' || ropeDim === 'auto';
    const tCal = performance.now();
    if (order === 'faithful' || searching) covs = await originalCovariances(src, samples, log);
    const tPass1 = secondsSince(tCal);

    const tSearch = performance.now();
    let dR: number, M: number, search: ConvertReport['search'] = { scoredOn: stream ? 'none (--no-eval: fixed shape)' : 'none', trace: [] };
    if (searching) ({ dR, M, search } = await searchShape(src.model!, src, covs!, c, o, { d, G, budget, ropeDim, balance, dtype, evalCtx }));
    else { dR = ropeDim as number; M = o.freqFold as number; }
    const r = budget - dR;
    const collapse = checkRoRope(d, dR, M);
    checkKvRank({ nKvHeads: G, headDim: d }, r, dR);
    const tSearchS = secondsSince(tSearch);

    const shape: StepShape = { G, H, d, D, dR, M, r, qLoraRank, balance, order, dtype };
    const nK = G * d, spilled = covs;
    const keyCov0 = order === 'faithful' ? (l: number) => keyBlock(spilled!.read(l), nK) : null;
    const stats: ConvertReport['layers'] = [];
    const report: ConvertReport = {
      ...exactReportHeader({
        model: o.sourcePath ?? o.model, out: o.out, modelType: cfg.modelType, dims: { layers: nLayers, hidden: D, heads: H, kvHeads: G, headDim: d }, dtype,
        kvLoraRank: r, ropeDim: dR, freqFold: M, requested: { freqFold: o.freqFold, ropeDim }, qLoraRank, collapse, balance, order,
        attentionBias: false, search, calib: c, before, after: budget,
      }),
      layers: stats,
      evaluations: [],
      seconds: { load: tLoad, pass1: tPass1, freqFoldSearch: tSearchS, conversion: 0, evaluation: 0, save: 0, convertTotal: 0, convertCpu: 0 },
      peakRssBytes: 0,
    };
    const finish = (): ConvertReport => {
      report.seconds.convertTotal = secondsSince(tStart);
      report.seconds.convertCpu = cpuSeconds() - cpuStart;
      report.peakRssBytes = peakRssBytes();
      return report;
    };

    if (stream) {
      // Converted attention tensors wait in a spill checkpoint inside the output's temp folder.
      const names: string[][] = [];
      await writeModelFolder(o.out!, { overwrite: o.overwrite ?? false, inputs: convertInputs(o) }, async (dir) => {
        const tConv = performance.now();
        const spill = join(dir, '.converted-layers');
        mkdirSync(spill);
        await writeCheckpoint(spill, (async function* () {
          let l = 0;
          for await (const step of convertLayers(src, samples, shape, keyCov0, covs ? 2 : 1, log)) {
            report.parameters.attentionBias ||= hasBias(step.weights);
            stats.push(step.stats);
            const tensors = mlaLayerTensors(`model.layers.${l}.self_attn`, step.weights, dtype);
            names[l++] = tensors.map((t) => t.name);
            yield* tensors;
          }
        })());
        report.seconds.conversion = secondsSince(tConv);
        const conv = openCheckpoint(spill);
        const tSave = performance.now();
        return {
          srcDir: o.model, inputs: convertInputs(o), overwrite: o.overwrite ?? false,
          tensors: (function* () {
            try {
              yield* outputTensors(o.model, nLayers, (l) => names[l]!.map((name) => ({ name, tensor: conv.get(name) })));
            } finally {
              conv.close();
              rmSync(spill, { recursive: true, force: true });
            }
          })(),
          config: exactConfig(cfg, report.parameters),
          report: () => { report.seconds.save = secondsSince(tSave); return finish(); },
          html: true, log,
        };
      });
      log(`saved ${resolve(o.out!)}`);
      return report;
    }

    // --- In memory: the stage models exist whole, for evaluation.
    const model = src.model!;
    const tConv = performance.now();
    const mla: MlaLayerWeights[] = [];
    const partialLayers: DecoderLayer[] = [];
    const rope = mlaRopeTable(model, dR);
    for await (const step of convertLayers(src, samples, shape, keyCov0, covs ? 2 : 1, log)) {
      partialLayers.push(mlaDecoderLayer(model, mla.length, step.partial, rope, { dtype }));
      mla.push(step.weights);
      stats.push(step.stats);
    }
    report.parameters.attentionBias = mla.some(hasBias);
    const partialModel = assembleModel(model, partialLayers);
    const mlaModel = buildMlaModel(model, mla, { dtype });
    report.seconds.conversion = secondsSince(tConv);
    report.seconds.convertTotal = secondsSince(tStart);
    report.seconds.convertCpu = cpuSeconds() - cpuStart;

    const tEval = performance.now();
    for (const { text: t, result: f } of await evaluateStages(model, [partialModel, mlaModel], src.tokenizer, evaluationTexts(o, c), o)) {
      const e: EvalReport = {
        text: t.name, sha256: t.sha, mode: t.mode, ctx: f.ctx, chunks: f.chunks, predictions: f.predictions, convention: f.convention,
        original: f.reference, partialRope: f.models[0]!, mla: f.models[1]!,
      };
      report.evaluations.push(e);
      log(`${t.name}: ${f.chunks} chunks × ${f.ctx} tokens`);
      log(`  original      ${formatScore(f.reference, true)}`);
      log(`  partial RoPE  ${formatScore(f.models[0]!)}`);
      log(`  MLA           ${formatScore(f.models[1]!)}`);
      log(`  convention: ${f.convention}`);
    }
    report.seconds.evaluation = secondsSince(tEval);
    log(`KV cache per token (${dtype}): ${report.kvCache.bytesPerTokenBefore} B → ${report.kvCache.bytesPerTokenAfter} B`);

    if (!o.out) {
      report.peakRssBytes = peakRssBytes();
      return report;
    }
    setStage(`writing ${resolve(o.out)}`);
    const convTotal = report.seconds.convertTotal, convCpu = report.seconds.convertCpu;
    await writeModelFolder(o.out, { overwrite: o.overwrite ?? false, inputs: convertInputs(o) }, async () => {
      const tSave = performance.now(), cpuSave = cpuSeconds();
      return {
        srcDir: o.model, inputs: convertInputs(o), overwrite: o.overwrite ?? false,
        tensors: outputTensors(o.model, nLayers, (l, prefix) => mlaLayerTensors(prefix, mla[l]!, dtype)),
        config: exactConfig(cfg, report.parameters),
        report: () => {
          report.seconds.save = secondsSince(tSave);
          report.seconds.convertTotal = convTotal + report.seconds.save;
          report.seconds.convertCpu = convCpu + cpuSeconds() - cpuSave;
          report.peakRssBytes = peakRssBytes();
          return report;
        },
        html: true, log,
      };
    });
    log(`saved ${resolve(o.out)}`);
    return report;
  } finally {
    covs?.close();
    src.close();
  }
}

/** `convert --no-eval`: the streaming conversion (one layer of weights in memory at a time). */
export async function convertStreaming(o: ConvertOptions): Promise<ConvertReport> {
  return convertModel({ ...o, stream: true });
}

