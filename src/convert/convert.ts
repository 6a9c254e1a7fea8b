// The TransMLA pipeline (algorithms.md §3): source GQA/MHA model → calibrate → RoRoPE +
// FreqFold (partial RoPE) → BKV-PCA (+ optional q low rank) → DeepSeek-V3 folder, measuring
// the perplexity of each stage (original → partial RoPE → MLA) and the fidelity (KL, top-1)
// of the converted models on the same tokens.
//
// Calibration order (--calib-order):
// - 'faithful' (default, TransMLA): RoRoPE's key statistics come from the original model; then
//   the partial-RoPE model is re-run over the calibration set and BKV-PCA (and the query PCA)
//   use its layer inputs. Two passes over the N·L tokens.
// - 'sequential': one pass through the model being built: layer l's statistics come from the
//   hidden states after the already-converted (final MLA) layers 0..l−1, so each layer is fit
//   to the inputs it will really see. (A FreqFold search still needs a pass on the original.)
//
// Searches, scored on held-out calibration documents (the last 10 %, never sampled for
// calibration; TransMLA scores on its test set, here the evaluation texts are never looked at):
// - --freqfold auto with a given d_R: as TransMLA, start at M = c = d/d_R and double M while the
//   partial-RoPE perplexity improves (up to d/2);
// - --kv-fraction without --rope-dim (or --rope-dim auto): the budget r + d_R is fixed and every
//   d_R (even divisor of head_dim) is tried with its own FreqFold search, scoring the MLA model
//   built from pass-1 statistics (shape-search.ts says why small heads need this).
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { checkOutputDir, withAtomicDir } from '../io/atomic-dir.js';
import { assertFiniteStat } from '../io/finite.js';
import { interruptPoint, setStage, testPause } from '../io/interrupt.js';
import { openCheckpoint, writeCheckpoint } from '../io/checkpoint.js';
import { writeHfFolderExtras } from '../io/hf-config.js';
import { mlaConfigJson } from '../io/mla-config.js';
import type { NamedTensor } from '../io/safetensors.js';
import type { FloatDType } from '../kernels/types.js';
import { fidelity, formatScore, type ModelScore } from '../eval/fidelity.js';
import { peakRssBytes } from '../eval/memory.js';
import { perplexity, readEvalText, tokenizeEnough, type TextMode } from '../eval/perplexity.js';
import { GqaAttention } from '../models/attention.js';
import type { LlamaModel } from '../models/llama.js';
import { loadModel } from '../models/load.js';
import { bytesPerElement } from '../tensor.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { bkvPca, rotateKvCov } from './bkv-pca.js';
import { calibrationSamples, HiddenStates, projectedCov, readDocuments } from './calibrate.js';
import { latentFromGqa } from './gqa-to-mla.js';
import { checkKvRank, kvForFraction, defaultRopeDim, sourceKvWidth } from './kv-budget.js';
import { assembleMla, PCA_DAMP, type LatentLayer, type MlaLayerWeights } from './latent-layer.js';
import { assembleModel, buildMlaModel, gqaLayerSource, mlaDecoderLayer, mlaLayerTensors, mlaRopeTable } from './mla-build.js';
import { queryBasis } from './q-lora.js';
import { checkRoRope, roRope } from './rorope.js';
import { searchFreqFold, searchRopeShape, type ShapeScore } from './shape-search.js';

export type CalibOrder = 'faithful' | 'sequential';

export interface EvalTextSpec {
  path: string;
  /** How the file becomes one string (perplexity.ts); WikiText-2 is read as 'lines' by the papers. */
  mode: TextMode;
}

/** Calibration sampling, evaluation and logging: what every conversion and export takes alike. */
export interface CalibEvalOptions {
  calibSamples?: number;
  calibSeqLen?: number;
  seed?: number;
  /** Texts to report perplexity/KL/top-1 on; empty → the held-out calibration documents. */
  evalTexts?: EvalTextSpec[];
  /** Chunk length of the evaluations (default min(2048, max_position_embeddings)). */
  evalCtx?: number;
  /** Evaluate at most this many chunks per text. */
  evalChunks?: number;
  /** Progress lines (stage banners, perplexities). */
  log?: (line: string) => void;
}

export interface ConvertOptions extends CalibEvalOptions {
  model: string;
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

export interface EvalReport {
  text: string;
  sha256: string;
  mode: TextMode | 'held-out calibration documents';
  ctx: number;
  chunks: number;
  predictions: number;
  convention: string;
  original: ModelScore;
  partialRope: ModelScore;
  mla: ModelScore;
}

export interface ConvertReport {
  tool: 'transmla';
  /** 'exact': no kv_a_layernorm; loaders run it in exact semantics (io/mla-config.ts mlaSemantics). */
  variant: 'exact';
  method: string;
  created: string;
  source: { path: string; modelType: string; layers: number; hidden: number; heads: number; kvHeads: number; headDim: number; dtype: FloatDType };
  output: string | null;
  parameters: {
    kvLoraRank: number;
    qkRopeHeadDim: number;
    qkNopeHeadDim: number;
    vHeadDim: number;
    qLoraRank: number | null;
    kvFraction: number;
    freqFold: number;
    freqFoldRequested: number | 'auto';
    ropeDimRequested: number | 'auto';
    collapse: number;
    balanceKvRatio: number;
    pcaDamp: number;
    calibOrder: CalibOrder;
    ropeLayout: string;
    softmaxScale: string;
    attentionBias: boolean;
    dtype: FloatDType;
  };
  /** How (d_R, M) were chosen when searched, with every candidate's score. */
  search: { scoredOn: string; trace: ShapeScore[] };
  calibration: { file: string; sha256: string; documents: number; heldOutDocuments: number; samples: number; seqLen: number; tokens: number; seed: number };
  kvCache: { dtype: FloatDType; bytesPerTokenBefore: number; bytesPerTokenAfter: number; elementsPerTokenPerLayerBefore: number; elementsPerTokenPerLayerAfter: number; fraction: number };
  /** Per layer; ropeInvFreq: the kept RoPE pairs' frequencies; kvSpectrum: each BKV-PCA component's share of the latent variance (4 digits). */
  layers: { ropeEnergy: number; alpha: number; kvEnergy: number; ropeInvFreq: number[]; kvSpectrum: number[] }[];
  evaluations: EvalReport[];
  /**
   * Wall seconds. pass1: original-model statistics; conversion: RoRoPE + BKV-PCA with their
   * calibration pass; convertTotal excludes evaluation; convertCpu: CPU seconds (user + system,
   * all threads) of the same span, which other load on the machine does not inflate.
   */
  seconds: { load: number; pass1: number; freqFoldSearch: number; conversion: number; evaluation: number; save: number; convertTotal: number; convertCpu: number };
  peakRssBytes: number;
}

export const HELD_OUT_FRACTION = 0.1;

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** [Wk ; Wv] of a latent layer: the rows whose joint covariance BKV-PCA needs. */
function kvRows(L: LatentLayer): Float64Array {
  const Dp = L.hidden + 1;
  const W = new Float64Array((L.nK + L.nV) * Dp);
  W.set(L.wk);
  W.set(L.wv, L.nK * Dp);
  return W;
}

// Moved to the evaluation layer (perplexity.ts); re-exported for the conversion modules.
export { tokenizeEnough } from '../eval/perplexity.js';

function cpuSeconds(): number {
  const u = process.resourceUsage();
  return (u.userCPUTime + u.systemCPUTime) / 1e6;
}

function secondsSince(t: number): number {
  return (performance.now() - t) / 1000;
}

/** What both conversion paths (in memory here, streaming in stream.ts) describe alike. */
export interface ExactConversionFacts {
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
  calib: { file: string; documents: number; heldOutDocuments: number; samples: number; seqLen: number; seed: number };
  /** Cached values per token per layer before and after. */
  before: number;
  after: number;
}

/** The fields of transmla.json fixed by the conversion's shape and inputs. */
export function exactReportHeader(f: ExactConversionFacts): Pick<ConvertReport, 'tool' | 'variant' | 'method' | 'created' | 'source' | 'output' | 'parameters' | 'search' | 'calibration' | 'kvCache'> {
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
    calibration: { file: resolve(c.file), sha256: sha256File(c.file), documents: c.documents, heldOutDocuments: c.heldOutDocuments, samples: c.samples, seqLen: c.seqLen, tokens: c.samples * c.seqLen, seed: c.seed },
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

export async function convertModel(o: ConvertOptions): Promise<ConvertReport> {
  const log = o.log ?? (() => {});
  const tStart = performance.now();
  const cpuStart = cpuSeconds();
  // Refuse a bad --out before the long computation, not after it.
  if (o.out) checkOutputDir(o.out, { overwrite: o.overwrite, source: convertInputs(o) });
  setStage(`loading ${o.model}`);
  const loaded = loadModel(o.model);
  if (loaded.mla) throw new Error(`${o.model} is already an MLA (${String(loaded.config.raw.model_type)}) model`);
  if (loaded.format !== 'hf') throw new Error(`${o.model}: convert takes a Hugging Face folder (import llama2.c checkpoints first)`);
  const src = loaded.model, cfg = loaded.config;
  const tok = loaded.tokenizer;
  if (!tok) throw new Error(`${o.model} has no tokenizer (tokenizer.json); calibration needs one`);
  const attn0 = src.layers[0]!.attn;
  if (!(attn0 instanceof GqaAttention)) throw new Error('only GQA/MHA attention can be converted');
  const H = attn0.nHeads, G = attn0.nKvHeads, d = attn0.headDim, D = cfg.hiddenSize, nLayers = src.layers.length;
  const dtype = src.weightDtype;
  const tLoad = secondsSince(tStart);

  // --- Shape: the cache budget r + d_R, and d_R (searched when 'auto').
  const shape = { nKvHeads: G, headDim: d };
  const before = sourceKvWidth(shape);
  let budget: number;
  let ropeDim: number | 'auto';
  if (o.kvFraction !== undefined) {
    if (o.kvLoraRank !== undefined) throw new Error('give either --kv-lora-rank or --kv-fraction, not both');
    if (!(o.kvFraction > 0 && o.kvFraction <= 1)) throw new Error(`--kv-fraction must be in (0, 1], got ${o.kvFraction}`);
    ropeDim = o.ropeDim ?? 'auto';
    if (ropeDim === 'auto') {
      // A hair of tolerance so 0.3125·256 = 80 is not lost to rounding.
      budget = Math.floor(o.kvFraction * before + 1e-9);
      if (budget < 3) throw new Error(`--kv-fraction ${o.kvFraction} gives ${budget} values per token: too small for a RoPE pair and a latent`);
    } else {
      const k = kvForFraction(shape, o.kvFraction, ropeDim);
      budget = k.kvLoraRank + k.ropeDim;
    }
  } else if (o.kvLoraRank !== undefined) {
    if (o.ropeDim === 'auto') throw new Error('--rope-dim auto needs --kv-fraction (a fixed cache budget to split between r and d_R)');
    // Default d_R: the largest even divisor of d that is ≤ d/2 and ≤ r.
    ropeDim = o.ropeDim ?? defaultRopeDim(d, 2 * o.kvLoraRank);
    checkKvRank(shape, o.kvLoraRank, ropeDim);
    budget = o.kvLoraRank + ropeDim;
  } else {
    throw new Error('give --kv-lora-rank R or --kv-fraction F');
  }
  if (ropeDim !== 'auto') checkRoRope(d, ropeDim, o.freqFold === 'auto' ? d / ropeDim : o.freqFold);
  const qLoraRank = o.qLoraRank ?? null;
  const balance = o.balanceKvRatio ?? 1;
  const order = o.calibOrder ?? 'faithful';
  const evalCtx = o.evalCtx ?? Math.min(2048, cfg.maxPositionEmbeddings);
  log(`source: ${o.model} (${cfg.modelType}, ${nLayers} layers, ${H} heads / ${G} KV heads × ${d}, ${dtype})`);
  log(`target: ${budget} cached values per token per layer = kv_lora_rank + qk_rope_head_dim${ropeDim === 'auto' ? ' (split searched)' : ` (${budget - ropeDim} + ${ropeDim})`}; was 2·${G}·${d} = ${before} (${(100 * budget / before).toFixed(2)} %)`);

  // --- Calibration data.
  const tCal = performance.now();
  const docs = readDocuments(o.calib);
  const nHeld = docs.length >= 2 ? Math.max(1, Math.round(docs.length * HELD_OUT_FRACTION)) : 0;
  const calibDocs = docs.slice(0, docs.length - nHeld);
  const heldDocs = docs.slice(docs.length - nHeld);
  const calib = { samples: o.calibSamples ?? 128, seqLen: o.calibSeqLen ?? 256, seed: o.seed ?? 42 };
  const samples = calibrationSamples(tok, calibDocs, calib);
  log(`calibration: ${calib.samples} × ${calib.seqLen} tokens from ${o.calib} (${calibDocs.length} documents, seed ${calib.seed}; ${nHeld} held out), order ${order}`);

  // --- Pass 1 (original model): per-layer covariance of [K ; V] outputs (keys in latent order),
  // for RoRoPE in the faithful order and for the searches.
  const latentOf = (l: number): LatentLayer => latentFromGqa(gqaLayerSource(src, l));
  const searching = o.freqFold === 'auto' || ropeDim === 'auto';
  const needPass1 = order === 'faithful' || searching;
  const kvCovs0: Float64Array[] = [];
  if (needPass1) {
    const states = HiddenStates.embed(src, samples);
    try {
      for (let l = 0; l < nLayers; l++) {
        setStage(`calibration pass 1 (original model), layer ${l + 1}/${nLayers}`);
        const gram = states.gram(src.layers[l]!.inputNorm);
        assertFiniteStat(gram, `calibration pass 1 (original model), layer ${l + 1}/${nLayers}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
        const L = latentOf(l);
        kvCovs0.push(projectedCov(kvRows(L), L.nK + L.nV, gram, D + 1));
        if (l + 1 < nLayers) states.advance(src.layers[l]!);
        log(`  pass 1 (original model) layer ${l + 1}/${nLayers}`);
        if (l === 0) await testPause('calibration');
        await interruptPoint();
      }
    } finally {
      states.close();
    }
  }
  const nK = G * d;
  const keyCov0 = (l: number): Float64Array => {
    const C = kvCovs0[l]!, N = 2 * nK, K = new Float64Array(nK * nK);
    for (let i = 0; i < nK; i++) K.set(C.subarray(i * N, i * N + nK), i * nK);
    return K;
  };
  const tCalib = secondsSince(tCal);

  // --- Searches (held-out calibration documents).
  const tSearch = performance.now();
  // The partial-RoPE model for (d_R, M), from pass-1 statistics (one layer in float64 at a time).
  const partialModelFor = (dRx: number, fold: number): LlamaModel => {
    const ropeX = mlaRopeTable(src, dRx);
    return assembleModel(src, src.layers.map((_, l) => {
      const P = roRope(latentOf(l), keyCov0(l), { nKvHeads: G, ropeDim: dRx, freqFold: fold }).layer;
      return mlaDecoderLayer(src, l, assembleMla(P), ropeX, { dtype });
    }));
  };
  // The MLA model for (d_R, M, r) entirely from pass-1 statistics (BKV-PCA on the rotated covariance).
  const pass1MlaModelFor = (dRx: number, fold: number, rx: number): LlamaModel => {
    const ropeX = mlaRopeTable(src, dRx);
    return assembleModel(src, src.layers.map((_, l) => {
      const { layer: P, rotation } = roRope(latentOf(l), keyCov0(l), { nKvHeads: G, ropeDim: dRx, freqFold: fold });
      const w = bkvPca(P, rotateKvCov(kvCovs0[l]!, rotation, P.nK, P.nV), { rank: rx, balanceRatio: balance }).weights;
      return mlaDecoderLayer(src, l, w, ropeX, { dtype });
    }));
  };
  let heldOut: { ids: number[]; bos: boolean; ctx: number; chunks: number } | null = null;
  if (searching) {
    if (heldDocs.length === 0) throw new Error('searching --freqfold/--rope-dim needs held-out documents: give a calibration text with at least 2 documents');
    const chunks = o.searchChunks ?? 16;
    const { ids, bos } = await tokenizeEnough(tok, heldDocs.join('\n\n'), chunks * evalCtx);
    heldOut = { ids, bos, chunks, ctx: Math.min(evalCtx, Math.max(2, Math.floor(ids.length / 2))) };
  }
  const heldOutPpl = async (model: LlamaModel): Promise<number> =>
    (await perplexity(model, heldOut!.ids, heldOut!.bos, { ctx: heldOut!.ctx, maxChunks: heldOut!.chunks })).ppl;
  let dR: number, M: number;
  const search: ConvertReport['search'] = { scoredOn: 'none', trace: [] };
  if (ropeDim === 'auto') {
    const res = await searchRopeShape(d, budget, o.freqFold, (x) => 2 * nK - x, async (dRx, fold, rx) => {
      setStage(`shape search (d_R ${dRx}, freqfold ${fold}, r ${rx})`);
      const ppl = await heldOutPpl(pass1MlaModelFor(dRx, fold, rx));
      log(`  d_R ${dRx}, freqfold ${fold}, r ${rx}: held-out MLA ppl ${ppl.toFixed(4)}`);
      return ppl;
    });
    ({ ropeDim: dR, freqFold: M } = res.best);
    search.scoredOn = 'held-out perplexity of the MLA model built from pass-1 (original-model) statistics';
    search.trace = res.trace;
    log(`rope-dim auto → d_R ${dR}, freqfold ${M}, kv_lora_rank ${budget - dR}`);
  } else if (o.freqFold === 'auto') {
    dR = ropeDim;
    const res = await searchFreqFold(d, dR, null, async (fold) => {
      setStage(`freqfold search (freqfold ${fold})`);
      const ppl = await heldOutPpl(partialModelFor(dR, fold));
      log(`  freqfold ${fold}: held-out partial-RoPE ppl ${ppl.toFixed(4)}`);
      return ppl;
    });
    M = res.freqFold;
    search.scoredOn = 'held-out perplexity of the partial-RoPE model (TransMLA)';
    search.trace = res.trace.map((t) => ({ ropeDim: dR, freqFold: t.freqFold, kvLoraRank: budget - dR, ppl: t.ppl }));
    log(`freqfold auto → ${M}`);
  } else {
    dR = ropeDim;
    M = o.freqFold;
  }
  const r = budget - dR;
  const after = budget;
  const collapse = checkRoRope(d, dR, M);
  checkKvRank(shape, r, dR);
  const rope = mlaRopeTable(src, dR);
  const tSearchS = secondsSince(tSearch);

  // --- RoRoPE + BKV-PCA (+ query PCA), layer by layer over the calibration set.
  const tConv = performance.now();
  const mla: MlaLayerWeights[] = [];
  const partial: MlaLayerWeights[] = [];
  const stats: ConvertReport['layers'] = [];
  // Faithful: the partial-RoPE model exists up front; its layers feed BKV-PCA's statistics.
  let partialModel: LlamaModel | null = order === 'faithful' ? partialModelFor(dR, M) : null;
  const states = HiddenStates.embed(src, samples);
  try {
    for (let l = 0; l < nLayers; l++) {
      setStage(`conversion pass ${needPass1 ? 2 : 1} (RoRoPE + BKV-PCA), layer ${l + 1}/${nLayers}`);
      const gram = states.gram(src.layers[l]!.inputNorm);
      assertFiniteStat(gram, `calibration pass ${needPass1 ? 2 : 1} (${order === 'faithful' ? 'partial-RoPE' : 'converted prefix'} model), layer ${l + 1}/${nLayers}: the second moment Σ[x;1][x;1]ᵀ of the attention input`);
      const L0 = latentOf(l);
      const keyCov = order === 'faithful' ? keyCov0(l) : projectedCov(L0.wk, L0.nK, gram, D + 1);
      const { layer: P, ropeEnergy } = roRope(L0, keyCov, { nKvHeads: G, ropeDim: dR, freqFold: M });
      if (order === 'sequential') partial.push(assembleMla(P));
      const kvCov = projectedCov(kvRows(P), P.nK + P.nV, gram, D + 1);
      assertFiniteStat(kvCov, `conversion, layer ${l + 1}/${nLayers}: the [K;V] output covariance`);
      const qb = qLoraRank === null ? null : queryBasis(P, projectedCov(P.wq, H * d, gram, D + 1), qLoraRank);
      const res = bkvPca(P, kvCov, { rank: r, balanceRatio: balance, queryBasis: qb });
      mla.push(res.weights);
      stats.push({
        ropeEnergy, alpha: res.alpha, kvEnergy: res.energy,
        ropeInvFreq: Array.from(P.ropeInvFreq),
        kvSpectrum: Array.from(res.energyCurve, (e, j) => Number((e - (j > 0 ? res.energyCurve[j - 1]! : 0)).toPrecision(4))),
      });
      if (l + 1 < nLayers) {
        // Advance through the model whose inputs the next layer's statistics should come from.
        states.advance(order === 'faithful' ? partialModel!.layers[l]! : mlaDecoderLayer(src, l, res.weights, rope, { dtype }));
      }
      log(`  pass ${needPass1 ? 2 : 1} layer ${l + 1}/${nLayers}: RoPE energy kept ${(100 * ropeEnergy).toFixed(1)} %, α ${res.alpha.toFixed(3)}, latent energy kept ${(100 * res.energy).toFixed(1)} %`);
      if (l === 0) await testPause('conversion');
      await interruptPoint();
    }
  } finally {
    states.close();
  }
  partialModel ??= buildMlaModel(src, partial, { dtype });
  const mlaModel = buildMlaModel(src, mla, { dtype });
  const convSecs = secondsSince(tConv);
  const convertTotal = secondsSince(tStart);
  const convertCpu = cpuSeconds() - cpuStart;

  // --- Evaluation.
  const tEval = performance.now();
  const evaluations: EvalReport[] = [];
  const texts: { name: string; sha: string; mode: EvalReport['mode']; text: string }[] = (o.evalTexts ?? []).map((t) => ({
    name: resolve(t.path), sha: sha256File(t.path), mode: t.mode, text: readEvalText(t.path, t.mode).text,
  }));
  if (texts.length === 0) {
    if (heldDocs.length === 0) throw new Error('no --eval-text and no held-out calibration documents to evaluate on');
    const text = heldDocs.join('\n\n');
    texts.push({ name: `${resolve(o.calib)} (last ${nHeld} documents, held out)`, sha: createHash('sha256').update(text).digest('hex'), mode: 'held-out calibration documents', text });
  }
  for (const t of texts) {
    setStage(`evaluation on ${t.name}`);
    await testPause('evaluation');
    const { ids, bos } = await tokenizeEnough(tok, t.text, o.evalChunks === undefined ? undefined : o.evalChunks * evalCtx);
    const ctx = Math.min(evalCtx, ids.length);
    const f = await fidelity(src, [partialModel, mlaModel], ids, bos, { ctx, maxChunks: o.evalChunks });
    evaluations.push({
      text: t.name, sha256: t.sha, mode: t.mode, ctx: f.ctx, chunks: f.chunks, predictions: f.predictions, convention: f.convention,
      original: f.reference, partialRope: f.models[0]!, mla: f.models[1]!,
    });
    log(`${t.name}: ${f.chunks} chunks × ${f.ctx} tokens`);
    log(`  original      ${formatScore(f.reference, true)}`);
    log(`  partial RoPE  ${formatScore(f.models[0]!)}`);
    log(`  MLA           ${formatScore(f.models[1]!)}`);
    log(`  convention: ${f.convention}`);
  }
  const evalSecs = secondsSince(tEval);

  const report: ConvertReport = {
    ...exactReportHeader({
      model: o.model, out: o.out, modelType: cfg.modelType, dims: { layers: nLayers, hidden: D, heads: H, kvHeads: G, headDim: d }, dtype,
      kvLoraRank: r, ropeDim: dR, freqFold: M, requested: { freqFold: o.freqFold, ropeDim }, qLoraRank, collapse, balance, order,
      attentionBias: mla.some((w) => (w.q?.b ?? w.qB?.b ?? w.kvA.b) !== null),
      calib: { file: o.calib, documents: calibDocs.length, heldOutDocuments: nHeld, ...calib },
      search, before, after,
    }),
    layers: stats,
    evaluations,
    seconds: { load: tLoad, pass1: tCalib, freqFoldSearch: tSearchS, conversion: convSecs, evaluation: evalSecs, save: 0, convertTotal, convertCpu },
    peakRssBytes: 0,
  };
  log(`KV cache per token (${dtype}): ${report.kvCache.bytesPerTokenBefore} B → ${report.kvCache.bytesPerTokenAfter} B`);

  if (o.out) {
    setStage(`writing ${resolve(o.out)}`);
    await saveMlaFolder(o.model, o.out, mla, report, cfg, { overwrite: o.overwrite ?? false, dtype, inputs: convertInputs(o), log });
    log(`saved ${resolve(o.out)}`);
  } else {
    report.peakRssBytes = peakRssBytes();
  }
  return report;
}

/**
 * Source tensors in checkpoint order with each layer's q/k/v projections replaced by
 * layerTensors(l, 'model.layers.l.self_attn') (its converted attention; o_proj stays the source's).
 * Shared by both conversion methods.
 */
export function* outputTensors(srcDir: string, nLayers: number, layerTensors: (l: number, prefix: string) => NamedTensor[]): Generator<NamedTensor> {
  const ck = openCheckpoint(srcDir);
  try {
    const done = new Set<number>();
    for (const name of ck.names()) {
      const m = /^model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$/.exec(name);
      if (!m) {
        if (/\.rotary_emb\.inv_freq$/.test(name)) continue;
        yield { name, tensor: ck.get(name) };
        continue;
      }
      const l = Number(m[1]);
      if (done.has(l)) continue;
      done.add(l);
      if (l >= nLayers) throw new Error(`no converted weights for layer ${l}`);
      setStage(`writing layer ${l + 1}/${nLayers} attention tensors`);
      yield* layerTensors(l, `model.layers.${l}.self_attn`);
    }
    if (done.size !== nLayers) throw new Error(`the checkpoint has attention tensors for ${done.size} layers, the conversion ${nLayers}`);
  } finally {
    ck.close();
  }
}

/** Every file a conversion reads: the output folder must not be or contain any of them. */
export function convertInputs(o: { model: string; calib: string; evalTexts?: readonly { path: string }[] }): string[] {
  return [o.model, o.calib, ...(o.evalTexts ?? []).map((t) => t.path)];
}

/**
 * Writes the whole folder (weights, config, transmla.json with the save timing, report.html)
 * inside one atomic folder, so an interrupted save leaves nothing behind.
 */
async function saveMlaFolder(
  srcDir: string, outDir: string, mla: readonly MlaLayerWeights[], report: ConvertReport,
  cfg: Parameters<typeof mlaConfigJson>[0], o: { overwrite: boolean; dtype: FloatDType; inputs: string[]; log: (line: string) => void },
): Promise<void> {
  const p = report.parameters;
  const configJson = mlaConfigJson(cfg, {
    kvLoraRank: p.kvLoraRank, qLoraRank: p.qLoraRank, qkRopeHeadDim: p.qkRopeHeadDim,
    qkNopeHeadDim: p.qkNopeHeadDim, vHeadDim: p.vHeadDim, attentionBias: p.attentionBias,
  });
  // Loaded on demand: the charting library is only needed once a folder is written.
  const { writeReport } = await import('../report/report.js');
  await withAtomicDir(outDir, { overwrite: o.overwrite, source: o.inputs }, async (dir) => {
    const tSave = performance.now(), cpuSave = cpuSeconds();
    await writeCheckpoint(dir, outputTensors(srcDir, mla.length, (l, prefix) => mlaLayerTensors(prefix, mla[l]!, o.dtype)));
    setStage(`writing ${resolve(outDir)}: config, transmla.json, report.html`);
    await testPause('write');
    writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson, null, 2) + '\n');
    writeHfFolderExtras(srcDir, dir);
    report.seconds.save = secondsSince(tSave);
    report.seconds.convertTotal += report.seconds.save;
    report.seconds.convertCpu += cpuSeconds() - cpuSave;
    report.peakRssBytes = peakRssBytes();
    writeFileSync(join(dir, 'transmla.json'), JSON.stringify(report, null, 2) + '\n');
    try {
      await writeReport(dir);
      o.log(`report ${join(resolve(outDir), 'report.html')}`);
    } catch (e) {
      o.log(`warning: report.html not written: ${(e as Error).message}`);
    }
  });
}

