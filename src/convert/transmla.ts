// The TransMLA method (docs/methods.md#transmla) on the pipeline skeleton (pipeline.ts): source
// GQA/MHA model → RoRoPE + FreqFold (partial RoPE) → BKV-PCA (+ optional q low rank) → by default
// the strict DeepSeek-V3 folder stock engines run (calibrated kv_a_layernorm, stock-layer.ts),
// or with variant 'exact' transmla's exact folder — measuring the perplexity, KL and top-1 of every
// stage (original → partial RoPE → MLA → stock) on the same tokens.
//
// Everything streams, one decoder layer of weights at a time, in two sweeps over the layers:
//   1. the original model (when the calibration order or a search needs it): each layer's [K;V]
//      covariance, and the inputs and outputs of the layers the proxy search scores;
//   2. each layer converted from the statistics of the states it should see (faithful order:
//      the partial-RoPE model's; sequential: the converted prefix's), fitted to stock semantics
//      on the stock prefix's states, and every stage's evaluation states pushed through it.
// Hidden states wait on disk between layers (eval/hidden-states.ts), converted tensors in a
// spill checkpoint inside the output's temporary folder; memory holds one layer.
//
// Calibration order (--calib-order): 'faithful' (TransMLA: RoRoPE from the original model,
// BKV-PCA from the partial-RoPE model) or 'sequential' (both from the converted prefix).
import { conversionFlops, formatDuration, measureGemmRate } from './estimate.js';
import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { mlaConfigJson } from '../arch/deepseek.js';
import { stockDeepseekConfig } from '../arch/deepseek-stock.js';
import { sourceMoe } from '../arch/deepseek-moe.js';
import type { ModelArgs } from '../arch/args.js';
import { formatScore } from '../eval/fidelity.js';
import { Float64Spill, HiddenStates } from '../eval/hidden-states.js';
import { peakRssBytes } from '../eval/memory.js';
import { tokenizeEnough } from '../eval/perplexity.js';
import { evalChunks, StageSweep } from '../eval/stage-sweep.js';
import { checkOutputDir } from '../io/atomic-dir.js';
import { openCheckpoint, writeCheckpoint } from '../io/checkpoint.js';
import { interruptPoint, setStage, testPause } from '../io/interrupt.js';
import { createProgress } from '../io/progress.js';
import type { NamedTensor } from '../io/safetensors.js';
import { MlaAttention } from '../models/mla-attention.js';
import type { CalibOrder, ConvertReport, EvalReport, StockEvalReport, StockExportReport } from '../schema/transmla-json.js';
import { checkKvRank, sourceKvWidth } from './kv-budget.js';
import { mlaDecoderLayer, mlaLayerTensors, mlaRopeTable, tensorOf } from './mla-build.js';
import {
  calibrationSet, calibrationTokens, convertInputs, evalChunkCount, cpuSeconds, describeCalibration, evaluationTexts, openSource,
  outputTensors, secondsSince, stockOutputTensors, writeModelFolder, type CalibEvalOptions, type EvalText,
} from './pipeline.js';
import { checkExactVariant, stockStart } from './qk-norm.js';
import { checkRoRope } from './rorope.js';
import { captureProxyLayer, keyBlock, ropeDimCandidates, searchShape, type ProxyData } from './shape-search.js';
import { stockLayer, type StockLayer } from './stock-layer.js';
import { DEFAULT_MAX_BIAS_RESIDUAL, foldAttentionBiases, foldOrRefuse, type BiasPlan, type FoldedWeights } from './stock-bias.js';
import { modelCard, stockNotes, stockReport } from './stock-report.js';
import { exactReportHeader, resolveBudget } from './transmla-report.js';
import { hasBias, originalKvCov, transmlaLayer } from './transmla-layer.js';
import { qkNormOf } from './qk-norm.js';
import { awareLayer, isAware, type AwareShape, type LatentMethod, type RopeBasis } from './aware-layer.js';
import { allocateRanks, defaultRankMin, layerGains, leftOver, type RankAlloc } from './rank-alloc.js';
import { allocateBudgets, errorAt, layerBudgetCurves, rankGrid, ropeFamily, type BudgetCurve, type LayerShape } from './budget-alloc.js';
import type { DecoderLayer } from '../models/decoder.js';
import type { RopeTable } from '../models/rope.js';
import { paddedRanksNote, padLayerRank } from './rank-pad.js';

export type ConvertVariant = 'stock' | 'exact';

export interface ConvertOptions extends CalibEvalOptions {
  model: string;
  /** The source path transmla.json records (default: model); a llama2.c .bin converted through a temporary folder records the .bin. */
  sourcePath?: string;
  /** Output folder; null converts and evaluates without saving. */
  out: string | null;
  overwrite?: boolean;
  /** r; or give kvFraction. */
  kvLoraRank?: number;
  /** d_R. With kvFraction the default is 'auto' (the budget's best split, searched); with kvLoraRank, defaultRopeDim. */
  ropeDim?: number | 'auto';
  /** Target (r + d_R) / (2·G·d); picks r (and d_R when not given). */
  kvFraction?: number;
  qLoraRank?: number | null;
  freqFold: number | 'auto';
  /** balance_kv_ratio (0 = no balancing). Default 1. */
  balanceKvRatio?: number;
  /** The aware methods (aware-layer.ts): RoPE basis 'pca' (TransMLA, default) or 'query-aware'. */
  ropeBasis?: RopeBasis;
  /** Joint latent 'bkv-pca' (TransMLA, default) or 'output-aware' (with the kv_b refit). */
  latent?: LatentMethod;
  /** β of the output-aware metric (default 1). */
  keyWeight?: number;
  /** Refit the NoPE keys to the source attention's lags (nope-refit.ts). */
  nopeRefit?: boolean;
  /** 'uniform' (default: every layer rank r) or 'greedy': Σ_l r_l = L·r shared by marginal output-error gain (rank-alloc.ts). */
  rankAlloc?: RankAlloc;
  /** Greedy allocation: the smallest rank a layer gets (default ⌈r/4⌉). */
  rankMin?: number;
  calib: string;
  calibOrder?: CalibOrder;
  /**
   * How searched shapes are scored: 'proxy' (default: each layer's attention-output error on
   * calibration states, in the pass-1 sweep) or 'perplexity' (held-out perplexity of whole
   * candidate models, TransMLA's own criterion; the model is loaded whole for it).
   */
  search?: 'proxy' | 'perplexity';
  /** Chunks of held-out calibration text per candidate (perplexity search; default 16). */
  searchChunks?: number;
  /** 'stock' (default): the strict DeepSeek-V3 folder stock engines run; 'exact': transmla's exact variant. */
  variant?: ConvertVariant;
  /** Evaluate the stages (default true; `--no-eval` is false). */
  evaluate?: boolean;
  /** Stock variant: the per-channel latent rescaling before the norm fit (default true). */
  stabilize?: boolean;
  /** Stock variant: refuse a layer whose calibrated bias fold leaves a larger attention-output error (default DEFAULT_MAX_BIAS_RESIDUAL). */
  maxBiasResidual?: number;
  /** A progress bar per stage on stderr (the CLI turns it on). */
  progress?: boolean;
}

/** The conversion's report, and the stock folder's (null for the exact variant). */
export interface ConversionResult extends ConvertReport {
  stockExport: StockExportReport | null;
}

const DEFAULT_PROXY_SAMPLES = 4;

/** Layers the proxy search scores: all of a small model, 8 spread over a larger one. */
export function proxyLayers(n: number): number[] {
  if (n <= 8) return Array.from({ length: n }, (_, l) => l);
  return [...new Set(Array.from({ length: 8 }, (_, i) => Math.round((i * (n - 1)) / 7)))];
}

export async function convertModel(o: ConvertOptions & { stream?: boolean }): Promise<ConversionResult> {
  const log = o.log ?? (() => {});
  const variant = o.variant ?? 'stock';
  const evaluate = o.evaluate ?? !o.stream;
  const tStart = performance.now();
  const cpuStart = cpuSeconds();
  if (!evaluate && (o.evalTexts ?? []).length > 0) throw new Error('--no-eval and --eval-text contradict each other');
  if (!evaluate && !o.out) throw new Error('--no-eval converts without evaluating; it needs --out (there is nothing else to show)');
  // Refuse a bad --out before the long computation, not after it.
  if (o.out) checkOutputDir(o.out, { overwrite: o.overwrite, source: convertInputs(o) });
  const src = openSource(o.model, 'transmla', false);
  let covs: Float64Spill | null = null;
  try {
    if (variant === 'exact') checkExactVariant(src.layer(0));
    if (isAware({ ropeBasis: o.ropeBasis ?? 'pca', latent: o.latent ?? 'bkv-pca', nopeRefit: o.nopeRefit ?? false }) && qkNormOf(src.layer(0))) {
      throw new Error(`${o.model}: the aware methods (--rope-basis query-aware, --latent output-aware, --nope-refit) do not model Qwen3's per-head q/k RMSNorm yet; convert this model without them`);
    }
    const cfg = src.args;
    const H = cfg.numHeads, G = cfg.numKvHeads, d = cfg.headDim, D = cfg.hiddenSize, nLayers = cfg.numLayers;
    const dtype = src.dtype;
    const tLoad = secondsSince(tStart);
    const { budget, ropeDim } = resolveBudget(o, G, d);
    if (ropeDim !== 'auto') checkRoRope(d, ropeDim, o.freqFold === 'auto' ? d / ropeDim : o.freqFold);
    const qLoraRank = o.qLoraRank ?? null, balance = o.balanceKvRatio ?? 1, order = o.calibOrder ?? 'faithful';
    const evalCtx = o.evalCtx ?? Math.min(2048, cfg.maxPositionEmbeddings);
    const before = sourceKvWidth({ nKvHeads: G, headDim: d });
    const searching = o.freqFold === 'auto' || ropeDim === 'auto';
    const search = o.search ?? 'proxy';
    log(`source: ${o.model} (${cfg.modelType}, ${nLayers} layers, ${H} heads / ${G} KV heads × ${d}, ${dtype})`);
    log(`target: ${budget} cached values per token per layer = kv_lora_rank + qk_rope_head_dim${ropeDim === 'auto' ? ' (split searched)' : ` (${budget - ropeDim} + ${ropeDim})`}; was 2·${G}·${d} = ${before} (${(100 * budget / before).toFixed(2)} %); writes the ${variant === 'stock' ? (sourceMoe(cfg) ? 'stock DeepSeek-V2 (MoE)' : 'stock DeepSeek-V3') : 'exact'} variant`);

    const c = calibrationSet(o.calib, o);
    const samples = await calibrationTokens(src.tokenizer, c);
    log(`calibration: ${describeCalibration(c)}, order ${order}`);
    const texts: EvalText[] = evaluate ? evaluationTexts(o, c) : [];
    const evalData = await Promise.all(texts.map(async (t) => {
      const chunks = evalChunkCount(o, evalCtx);
      const { ids, bos } = await tokenizeEnough(src.tokenizer, t.text, chunks === undefined ? undefined : chunks * evalCtx);
      return evalChunks(ids, bos, Math.min(evalCtx, ids.length), chunks);
    }));
    const stageNames = ['original', 'partial RoPE', 'MLA', ...(variant === 'stock' ? ['stock'] : [])];
    const plan = [
      order === 'faithful' || searching ? `pass 1 (original model${searching ? `; ${search} search` : ''})` : null,
      `pass 2 (RoRoPE + BKV-PCA${variant === 'stock' ? ' + stock norm fit' : ''}${evaluate ? `; evaluation of ${stageNames.length} stages on ${evalData.reduce((n, e) => n + e.chunks.length * e.ctx, 0)} tokens` : ''})`,
      o.out ? 'writing' : null,
    ].filter(Boolean).join(' → ');
    const calibTokens = samples.length * c.seqLen;
    const pass1 = order === 'faithful' || searching;
    // Proxy candidates: each admissible d_R with its FreqFold steps (at most two here, usually).
    const candidates = searching && search === 'proxy' ? 2 * (ropeDim === 'auto' ? ropeDimCandidates(d, budget, (x) => 2 * G * d - x).length : 1) : 0;
    const work = {
      calibForwards: calibTokens * ((pass1 ? 1 : 0) + 1 + (variant === 'stock' ? 1 : 0)),
      calibGrams: (pass1 ? 1 : 0) + 1, calibTokens,
      proxyTokenLayers: candidates * proxyLayers(nLayers).length * Math.min(DEFAULT_PROXY_SAMPLES, samples.length) * c.seqLen,
      calibSeqLen: c.seqLen, evalCtx,
      evalTokens: evalData.reduce((n, e) => n + e.chunks.length * e.ctx, 0), evalStages: stageNames.length,
    };
    const flops = conversionFlops(cfg, work), rate = measureGemmRate(D);
    log(`plan: ${plan}; ≈ ${formatDuration(flops / rate)} of GEMM work (${(flops / 1e12).toFixed(2)} TFLOP at ${(rate / 1e9).toFixed(0)} GFLOP/s measured now${searching && search === 'perplexity' ? ', not counting the perplexity search' : ''})`);
    const bar = (label: string) => (o.progress ? createProgress({ label, total: nLayers, unit: 'layers' }) : null);

    // --- Sweep 1: the original model's statistics (and the proxy search's layer data).
    const tCal = performance.now();
    const proxy: ProxyData | null = searching && search === 'proxy' ? { layers: new Map() } : null;
    const alloc = o.rankAlloc ?? 'uniform';
    if (alloc !== 'uniform' && qkNormOf(src.layer(0))) throw new Error(`${o.model}: --rank-alloc ${alloc} does not model Qwen3's per-head q/k RMSNorm yet; convert this model with uniform ranks`);
    // The allocation's spectra need the shape (d_R, M); when it is given they come with pass 1.
    const gains: Float64Array[] = [], curves: BudgetCurve[][] = [];
    const gainShape = (dR: number, M: number): AwareShape => ({
      ropeDim: dR, freqFold: M, kvLoraRank: 1, qLoraRank: null, balance, ropeBasis: o.ropeBasis ?? 'pca', latent: o.latent ?? 'bkv-pca', keyWeight: o.keyWeight, nopeRefit: o.nopeRefit ?? false,
    });
    const gainsInPass1 = alloc !== 'uniform' && !searching && (order === 'faithful' || searching);
    const rankFloor = (r: number): number => o.rankMin ?? defaultRankMin(r);
    // Seconds of allocation work done inside pass 1 (its states are shared, its time is not).
    let allocPass1Seconds = 0;
    /** Layer l's allocation inputs from its original-model states: the latent gains (greedy) or the measured shape curves (joint). */
    const allocInputs = (l: number, layer: DecoderLayer, states: HiddenStates, dR: number, M: number, where: string): void => {
      if (alloc === 'greedy') { gains.push(layerGains(cfg, l, layer, states, gainShape(dR, M), where)); return; }
      const B = budget, full = (x: number): number => 2 * G * d - x;
      curves.push(layerBudgetCurves({
        args: cfg, l, layer, states, base: gainShape(dR, M), family: ropeFamily(d, dR, M, full), samples: Math.min(DEFAULT_PROXY_SAMPLES, samples.length),
        grid: (x) => rankGrid(B - dR, Math.min(rankFloor(B - dR), full(x)), Math.min(full(x), 2 * B - x)), dtype, where,
      }));
    };
    const proxyAt = new Set(proxy ? proxyLayers(nLayers) : []);
    if (order === 'faithful' || searching) {
      covs = new Float64Spill();
      const states = HiddenStates.fromEmbedding(cfg, src.embedding(), samples);
      const p1 = bar(`pass 1 (original model, ${samples.length * c.seqLen} tokens)`);
      try {
        for (let l = 0; l < nLayers; l++) {
          const where = `calibration pass 1 (original model), layer ${l + 1}/${nLayers}`;
          setStage(where);
          const layer = src.layer(l);
          covs.push(originalKvCov(cfg, l, layer, states, where));
          if (gainsInPass1) {
            const t = performance.now();
            allocInputs(l, layer, states, ropeDim as number, o.freqFold as number, where);
            allocPass1Seconds += secondsSince(t);
          }
          if (proxyAt.has(l)) proxy!.layers.set(l, captureProxyLayer(states, layer, Math.min(DEFAULT_PROXY_SAMPLES, samples.length)));
          if (l + 1 < nLayers) states.advance(layer);
          log(`  pass 1 (original model) layer ${l + 1}/${nLayers}`);
          p1?.update(l + 1);
          if (l === 0) await testPause('calibration');
          await interruptPoint();
        }
      } finally {
        p1?.finish();
        states.close();
      }
    }
    const tPass1 = secondsSince(tCal);

    // --- The shape: given, or searched.
    const tSearch = performance.now();
    let dR: number, M: number, searchReport: ConvertReport['search'] = { scoredOn: 'none', trace: [] };
    if (searching) {
      ({ dR, M, search: searchReport } = await searchShape(src, covs!, c, o, { d, G, budget, ropeDim, balance, dtype, evalCtx, proxy }));
    } else {
      dR = ropeDim as number;
      M = o.freqFold as number;
    }
    const r = budget - dR;
    const collapse = checkRoRope(d, dR, M);
    checkKvRank({ nKvHeads: G, headDim: d }, r, dR);
    const tSearchS = secondsSince(tSearch);

    // --- Per-layer ranks (rank-alloc.ts): every layer's gains, from the original model, before pass 2.
    let ranks: number[] | null = null, layerShapes: LayerShape[] | null = null, allocReport: ConvertReport['parameters']['rankAlloc'];
    if (alloc !== 'uniform') {
      const tAlloc = performance.now();
      if (!gainsInPass1) {
        const states = HiddenStates.fromEmbedding(cfg, src.embedding(), samples);
        const pa = bar(`rank allocation (original model, ${samples.length * c.seqLen} tokens)`);
        try {
          for (let l = 0; l < nLayers; l++) {
            const where = `rank allocation (original model), layer ${l + 1}/${nLayers}`;
            setStage(where);
            const layer = src.layer(l);
            allocInputs(l, layer, states, dR, M, where);
            if (l + 1 < nLayers) states.advance(layer);
            pa?.update(l + 1);
            await interruptPoint();
          }
        } finally {
          pa?.finish();
          states.close();
        }
      }
      const rankMin = rankFloor(r);
      if (!Number.isInteger(rankMin) || rankMin < 1 || rankMin > r) throw new Error(`--rank-min must be an integer in [1, kv_lora_rank ${r}], got ${rankMin}`);
      const uniform = Array<number>(nLayers).fill(r);
      if (alloc === 'greedy') {
        ranks = allocateRanks(gains, nLayers * r, rankMin);
        allocReport = {
          method: alloc, rankMin, total: nLayers * r,
          unit: 'first-order squared attention-output error per calibration token, in the output-aware metric (original model statistics)',
          errorUniform: leftOver(gains, uniform), errorAllocated: leftOver(gains, ranks), seconds: allocPass1Seconds + secondsSince(tAlloc),
        };
      } else {
        const res = allocateBudgets(curves, nLayers * budget);
        ranks = res.shapes.map((x) => x.rank);
        layerShapes = res.shapes;
        const at = (cs: BudgetCurve[]): number => errorAt(cs.find((x) => x.ropeDim === dR)!, r);
        allocReport = {
          method: alloc, rankMin, total: nLayers * budget,
          unit: 'measured attention-output error of the method\'s step at each (d_R, M, r) on calibration samples, relative to the residual stream (original model statistics)',
          errorUniform: curves.reduce((e, cs) => e + at(cs), 0), errorAllocated: res.error, seconds: allocPass1Seconds + secondsSince(tAlloc),
          curves: curves.map((cs) => cs.map((x) => ({ ropeDim: x.ropeDim, freqFold: x.freqFold, grid: x.grid.map((g) => ({ rank: g.rank, error: Number(g.error.toPrecision(5)) })) }))),
        };
      }
      const shapesText = layerShapes ? layerShapes.map((x) => `${x.rank}+${x.ropeDim}`).join(' ') : ranks.join(' ');
      log(`rank allocation (${alloc}, total ${allocReport.total}, floor ${rankMin}): ${shapesText}; ${alloc === 'greedy' ? 'first-order' : 'measured'} output error ${allocReport.errorUniform.toPrecision(4)} (uniform) → ${allocReport.errorAllocated.toPrecision(4)}`);
    }
    const rankOf = (l: number): number => ranks?.[l] ?? r;
    const ropeDimOf = (l: number): number => layerShapes?.[l]!.ropeDim ?? dR;
    const rMax = ranks ? Math.max(...ranks) : r, dRMax = layerShapes ? Math.max(...layerShapes.map((x) => x.ropeDim)) : dR;
    const ropeDims = layerShapes ? layerShapes.map((x) => x.ropeDim) : null;
    if (ranks && variant === 'stock') {
      // One kv_lora_rank in the stock config: every layer padded to r_max (rank-pad.ts).
      if (rMax + dRMax >= before) throw new Error(`${o.model}: the stock DeepSeek-V3 folder has one kv_lora_rank and one qk_rope_head_dim, so per-layer widths are padded to the largest, ${rMax} + ${dRMax} ≥ the source's ${before} cached values per layer: the stock folder would save no cache; convert with --variant exact (transmla runs per-layer widths natively)`);
      log(`  stock folder: every layer padded to kv_lora_rank ${rMax} + qk_rope_head_dim ${dRMax} (one of each in DeepseekV3Config): its cache costs ${nLayers} × ${rMax + dRMax} = ${nLayers * (rMax + dRMax)} values per token, against the exact variant's ${nLayers * budget}`);
    }

    const stats: ConvertReport['layers'] = [];
    const report: ConvertReport = {
      ...exactReportHeader({
        model: o.sourcePath ?? o.model, out: variant === 'exact' ? o.out : null, modelType: cfg.modelType, dims: { layers: nLayers, hidden: D, heads: H, kvHeads: G, headDim: d }, dtype,
        kvLoraRank: r, ropeDim: dR, freqFold: M, requested: { freqFold: o.freqFold, ropeDim }, qLoraRank, collapse, balance, order,
        attentionBias: false, search: searchReport, calib: c, before, after: budget,
      }),
      layers: stats,
      evaluations: [],
      seconds: { load: tLoad, pass1: tPass1, freqFoldSearch: tSearchS, conversion: 0, evaluation: 0, save: 0, convertTotal: 0, convertCpu: 0, estimate: { seconds: flops / rate, flops, gemmFlopsPerSecond: rate } },
      peakRssBytes: 0,
    };

    // --- Sweep 2: convert, fit to stock semantics, push every stage's evaluation states.
    const shape = { ropeDim: dR, freqFold: M, kvLoraRank: r, qLoraRank, balance, ropeBasis: o.ropeBasis ?? 'pca', latent: o.latent ?? 'bkv-pca', keyWeight: o.keyWeight, nopeRefit: o.nopeRefit ?? false };
    const aware = isAware(shape);
    if (ranks) Object.assign(report.parameters, { kvLoraRanks: ranks, ...(layerShapes ? { qkRopeHeadDims: ropeDims, freqFolds: layerShapes.map((x) => x.freqFold) } : {}), rankAlloc: allocReport });
    if (aware) Object.assign(report.parameters, { ropeBasis: shape.ropeBasis, latent: shape.latent, ...(o.keyWeight === undefined ? {} : { keyWeight: o.keyWeight }), nopeRefit: shape.nopeRefit });
    const ropes = new Map<number, RopeTable>();
    const ropeFor = (x: number): RopeTable => ropes.get(x) ?? ropes.set(x, mlaRopeTable({ config: cfg, layers: [] }, x)).get(x)!;
    const stock: Pick<StockLayer, 'kvResidual' | 'qResidual' | 'kvNormKept'>[] = [];
    const plans: BiasPlan[] = [], folds: (FoldedWeights | null)[] = [];
    const maxBias = o.maxBiasResidual ?? DEFAULT_MAX_BIAS_RESIDUAL;
    const exactNames: string[][] = [], stockNames: string[][] = [];
    const sweep2 = async function* (): AsyncGenerator<NamedTensor> {
      const pass = covs ? 2 : 1;
      const statsStates = HiddenStates.fromEmbedding(cfg, src.embedding(), samples);
      const stockStates = variant === 'stock' ? HiddenStates.fromEmbedding(cfg, src.embedding(), samples) : null;
      const evals = evalData.map((e) => StageSweep.open(cfg, src.embedding(), e, stageNames.length));
      // Aware, sequential, output-aware: the refit's target is the source model on its own states.
      const sourceStates = aware && order === 'sequential' && shape.latent === 'output-aware' ? HiddenStates.fromEmbedding(cfg, src.embedding(), samples) : null;
      const p2 = bar(`pass ${pass} (conversion${variant === 'stock' ? ' + stock fit' : ''}${evaluate ? ' + evaluation' : ''})`);
      try {
        for (let l = 0; l < nLayers; l++) {
          const where = `calibration pass ${pass} (${order === 'faithful' ? 'partial-RoPE' : 'converted prefix'} model), layer ${l + 1}/${nLayers}`;
          setStage(`conversion pass ${pass} (RoRoPE + BKV-PCA), layer ${l + 1}/${nLayers}`);
          const layer = src.layer(l);
          const keyCov = order === 'faithful' ? keyBlock(covs!.read(l), G * d) : null;
          const lShape = ranks ? { ...shape, kvLoraRank: rankOf(l), ...(layerShapes ? { ropeDim: layerShapes[l]!.ropeDim, freqFold: layerShapes[l]!.freqFold } : {}) } : shape;
          const rope = ropeFor(ropeDimOf(l));
          const step = aware ? awareLayer(cfg, l, layer, statsStates, keyCov, lShape, where, sourceStates) : transmlaLayer(cfg, l, layer, statsStates, keyCov, lShape, where);
          if (sourceStates && l + 1 < nLayers) sourceStates.advance(layer);
          const view = { config: cfg, layers: Object.assign([], { [l]: layer }) };
          const partialLayer = mlaDecoderLayer(view, l, step.partial, rope, { dtype });
          const mlaLayer = mlaDecoderLayer(view, l, step.weights, rope, { dtype });
          stats.push(step.stats);
          report.parameters.attentionBias ||= hasBias(step.weights);
          const exact = mlaLayerTensors(`model.layers.${l}.self_attn`, step.weights, dtype);
          exactNames[l] = exact.map((t) => t.name);
          yield* exact;
          let stockDecoder = null;
          if (stockStates) {
            const start = stockStart(view, l, step.weights, mlaLayer, layer, stockStates, rope, dtype);
            if (start.note) log(`  layer ${l + 1}/${nLayers}: ${start.note}`);
            plans.push(foldAttentionBiases(start.layer.attn as MlaAttention, l));
            const fold = foldOrRefuse(start.layer, l, plans[l]!, stockStates, maxBias, log, nLayers);
            folds.push(fold);
            const s = stockLayer(start.layer, l, stockStates, { stabilize: o.stabilize ?? true, dtype, permute: false, fold });
            // The residuals only: s.layer holds this layer's MLP (for Mixtral, 2.8 GB of experts), which must not outlive the layer.
            stock.push({ kvResidual: s.kvResidual, qResidual: s.qResidual, kvNormKept: s.kvNormKept });
            const padded = ranks ? padLayerRank(s.tensors, { r: rankOf(l), rMax, dR: ropeDimOf(l), dRMax, heads: H, dn: d }) : s.tensors;
            const ts = padded.map((t) => ({ name: `stock.${t.name}`, tensor: tensorOf(t.data, t.shape, dtype) }));
            stockNames[l] = ts.map((t) => t.name);
            yield* ts;
            stockDecoder = s.layer;
            if (l + 1 < nLayers) stockStates.advance(s.layer);
            log(`  layer ${l + 1}/${nLayers}: kv_b_proj refit residual ${(100 * s.kvResidual).toFixed(3)} %${s.qResidual === null ? '' : `, q_b_proj ${(100 * s.qResidual).toFixed(3)} %`}`);
          }
          for (const e of evals) e.advance([layer, partialLayer, mlaLayer, ...(stockDecoder ? [stockDecoder] : [])]);
          if (l + 1 < nLayers) statsStates.advance(order === 'faithful' ? partialLayer : mlaLayer);
          const st = step.stats;
          log(`  pass ${pass} layer ${l + 1}/${nLayers}: RoPE energy kept ${(100 * st.ropeEnergy).toFixed(1)} %, α ${st.alpha.toFixed(3)}, latent energy kept ${(100 * st.kvEnergy).toFixed(1)} %`);
          p2?.update(l + 1);
          if (l === 0) await testPause('conversion');
          await interruptPoint();
        }
        p2?.finish();
        if (evaluate) {
          setStage('evaluation');
          await testPause('evaluation');
          const tEval = performance.now();
          await finishEvaluations(src, evals, texts, report, stockEvals, log, o.progress ?? false);
          report.seconds.evaluation = secondsSince(tEval);
        }
      } finally {
        statsStates.close();
        stockStates?.close();
        sourceStates?.close();
        for (const e of evals) e.close();
      }
    };
    const stockEvals: StockEvalReport[] = [];
    const finishReport = (): void => {
      report.seconds.convertTotal = secondsSince(tStart);
      report.seconds.convertCpu = cpuSeconds() - cpuStart;
      report.peakRssBytes = peakRssBytes();
    };
    const stockExportOf = (): StockExportReport => stockReport({
      conversion: JSON.parse(JSON.stringify(report)) as Record<string, unknown>, sourcePath: resolve(o.sourcePath ?? o.model), exactFolder: null, out: o.out ?? '',
      args: cfg, mla: { kvLoraRank: rMax, qLoraRank, qkRopeHeadDim: dRMax, qkNopeHeadDim: d, vHeadDim: d }, dtype, permute: false,
      stabilize: o.stabilize ?? true, built: stock, plans, folds, maxBiasResidual: maxBias, calib: c, evaluations: stockEvals, notes: [...stockNotes(plans, maxBias, false, cfg.ropeScaling), ...(ranks ? [paddedRanksNote(ranks, ropeDims ?? ranks.map(() => dR))] : [])],
      seconds: { calibration: report.seconds.conversion, evaluation: report.seconds.evaluation, save: report.seconds.save },
    });

    if (!o.out) {
      // Evaluate without saving: the converted tensors are computed and dropped.
      const tConv = performance.now();
      for await (const t of sweep2()) void t;
      report.seconds.conversion = secondsSince(tConv) - report.seconds.evaluation;
      finishReport();
      return { ...report, stockExport: variant === 'stock' ? stockExportOf() : null };
    }
    let result: ConversionResult | null = null;
    await writeModelFolder(o.out, { overwrite: o.overwrite ?? false, inputs: convertInputs(o) }, async (dir) => {
      const tConv = performance.now();
      const spill = join(dir, '.converted-layers');
      mkdirSync(spill);
      await writeCheckpoint(spill, sweep2());
      report.seconds.conversion = secondsSince(tConv) - report.seconds.evaluation;
      const conv = openCheckpoint(spill);
      const tSave = performance.now();
      const fromSpill = (names: string[], strip: string) => names.map((name) => ({ name: name.slice(strip.length), tensor: conv.get(name) }));
      const cleanup = (): void => { conv.close(); rmSync(spill, { recursive: true, force: true }); };
      const tensors = variant === 'stock'
        ? stockOutputTensors(o.model, nLayers, (l) => fromSpill(stockNames[l]!, 'stock.'), cfg.tieWordEmbeddings)
        : outputTensors(o.model, nLayers, (l) => fromSpill(exactNames[l]!, ''));
      const stockConfig = variant === 'stock' ? stockDeepseekConfig(cfg, { kvLoraRank: rMax, qLoraRank, qkRopeHeadDim: dRMax, qkNopeHeadDim: d, vHeadDim: d }, dtype) : null;
      return {
        srcDir: o.model, inputs: convertInputs(o), overwrite: o.overwrite ?? false,
        tensors: (function* () { try { yield* tensors; } finally { cleanup(); } })(),
        config: JSON.stringify(stockConfig ?? exactConfig(cfg, report.parameters), null, 2),
        report: () => {
          report.seconds.save = secondsSince(tSave);
          finishReport();
          if (variant === 'exact') {
            result = { ...report, stockExport: null };
            return report;
          }
          const stockExport = stockExportOf();
          result = { ...report, stockExport };
          return stockExport;
        },
        files: variant === 'stock' ? () => [{ name: 'README.md', text: modelCard(result!.stockExport!, stockConfig!) }] : undefined,
        html: true, log,
      };
    });
    return result!;
  } finally {
    covs?.close();
    src.close();
  }
}

function exactConfig(args: ModelArgs, p: ConvertReport['parameters']): Record<string, unknown> {
  // Per-layer ranks: kv_lora_rank is the widest layer's, kv_lora_ranks every layer's.
  const ranks = p.kvLoraRanks, ropes = p.qkRopeHeadDims;
  return mlaConfigJson(args, {
    kvLoraRank: ranks ? Math.max(...ranks) : p.kvLoraRank, qLoraRank: p.qLoraRank, qkRopeHeadDim: ropes ? Math.max(...ropes) : p.qkRopeHeadDim,
    qkNopeHeadDim: p.qkNopeHeadDim, vHeadDim: p.vHeadDim, attentionBias: p.attentionBias, ...(ranks ? { kvLoraRanks: ranks } : {}), ...(ropes ? { qkRopeHeadDims: ropes } : {}),
  });
}

/** Scores every stage on each text from the sweeps' final states, into the reports (and the log). */
async function finishEvaluations(src: import('./pipeline.js').ConversionSource, evals: StageSweep[], texts: EvalText[], report: ConvertReport, stockEvals: StockEvalReport[], log: (line: string) => void, progress: boolean): Promise<void> {
  const finals = src.finals();
  for (let i = 0; i < evals.length; i++) {
    const t = texts[i]!, e = evals[i]!;
    const stock = e.models === 4;
    const bar = progress ? createProgress({ label: `scoring ${e.models} stages on ${t.name}`, total: e.data.chunks.length, unit: 'chunks' }) : null;
    const [f, g] = await e.finish(Array(e.models).fill(finals), [{ reference: 0, models: [1, 2, ...(stock ? [3] : [])] }, ...(stock ? [{ reference: 2, models: [3] }] : [])], undefined, (done) => bar?.update(done));
    bar?.finish();
    const ev: EvalReport = {
      text: t.name, sha256: t.sha, mode: t.mode, ctx: f!.ctx, chunks: f!.chunks, predictions: f!.predictions, convention: f!.convention,
      original: f!.reference, partialRope: f!.models[0]!, mla: f!.models[1]!,
    };
    report.evaluations.push(ev);
    log(`${t.name}: ${f!.chunks} chunks × ${f!.ctx} tokens`);
    log(`  original      ${formatScore(f!.reference, true)}`);
    log(`  partial RoPE  ${formatScore(f!.models[0]!)}`);
    log(`  MLA           ${formatScore(f!.models[1]!)}`);
    if (g) {
      const s = g.models[0]!, gap = 100 * (s.ppl / g.reference.ppl - 1);
      stockEvals.push({ text: t.name, sha256: t.sha, ctx: g.ctx, chunks: g.chunks, predictions: g.predictions, convention: g.convention, exact: g.reference, stock: s, pplGapPercent: gap });
      log(`  stock         ${formatScore(f!.models[2]!)}  (vs exact MLA: ${gap >= 0 ? '+' : ''}${gap.toFixed(2)} %, KL ${s.kl.toFixed(5)}, top-1 ${(100 * s.top1).toFixed(2)} %)`);
    }
    log(`  convention: ${f!.convention}`);
  }
  log(`KV cache per token (${report.kvCache.dtype}): ${report.kvCache.bytesPerTokenBefore} B → ${report.kvCache.bytesPerTokenAfter} B`);
}

/** `convert --no-eval`: the conversion without the stage evaluation. */
export async function convertStreaming(o: ConvertOptions): Promise<ConversionResult> {
  return convertModel({ ...o, evaluate: false });
}
