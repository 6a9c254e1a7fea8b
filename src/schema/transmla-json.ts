// The JSON documents transmla writes (transmla.json of every conversion and export), as types.
// A leaf module: conversions write them, report/ reads them, neither imports the other.

/** How a text file becomes one string (eval/perplexity.ts). */
export type TextMode = 'file' | 'jsonl' | 'lines';

import type { FloatDType } from '../kernels/types.js';

export type CalibOrder = 'faithful' | 'sequential';

/** MHA2MLA's partial-RoPE selections (docs/methods.md#partial-rope). */
export const ROPE_SELECTIONS = ['high', 'low', 'uniform', '2norm'] as const;
export type RopeSelection = (typeof ROPE_SELECTIONS)[number];
export type NormStat = 'mean' | 'rms';
/** SVD_joint or SVD_split (docs/methods.md#low-rank). */
export type LowRankInit = 'joint' | 'split';
export type Weighting = 'weights' | 'activations';

export interface ModelScore {
  ppl: number;
  nll: number;
  /** Mean KL(reference ‖ this model) per predicted token, nats (0 for the reference). */
  kl: number;
  /** Share of positions whose argmax equals the reference's. */
  top1: number;
}

export interface ShapeScore {
  ropeDim: number;
  freqFold: number;
  kvLoraRank: number;
  /** What `search.scoredOn` says (lower is better): held-out perplexity, or the proxy's error. */
  score: number;
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
    /** Only for the aware methods (docs/methods.md#aware). */
    ropeBasis?: 'pca' | 'query-aware';
    latent?: 'bkv-pca' | 'output-aware';
    keyWeight?: number;
    nopeRefit?: boolean;
    /**
     * Only with per-layer ranks (docs/methods.md#aware-budget): layer l's latent width; their sum is
     * layers × kvLoraRank (the uniform budget), and config.json's kv_lora_rank is their maximum.
     */
    kvLoraRanks?: number[];
    /** Only with `--rank-alloc joint`: layer l's qk_rope_head_dim and FreqFold (config.json's qk_rope_head_dim is the maximum). */
    qkRopeHeadDims?: number[];
    freqFolds?: number[];
    /**
     * How the per-layer widths were chosen: the floor, the total (Σ r_l, or Σ (r_l + d_R,l) for joint),
     * the unit of the scores and the error they predict (uniform vs allocated); joint: every measured curve.
     */
    rankAlloc?: {
      method: 'greedy' | 'joint' | 'uniform'; rankMin: number; total: number; unit: string; errorUniform: number; errorAllocated: number; seconds: number;
      curves?: { ropeDim: number; freqFold: number; grid: { rank: number; error: number }[] }[][];
    };
  };
  /** How (d_R, M) were chosen when searched, with every candidate's score. */
  search: { scoredOn: string; trace: ShapeScore[] };
  calibration: { file: string; sha256: string; documents: number; heldOutDocuments: number; samples: number; seqLen: number; tokens: number; seed: number };
  kvCache: { dtype: FloatDType; bytesPerTokenBefore: number; bytesPerTokenAfter: number; elementsPerTokenPerLayerBefore: number; elementsPerTokenPerLayerAfter: number; fraction: number };
  /** Per layer; ropeInvFreq: the kept RoPE pairs' frequencies; kvSpectrum: each BKV-PCA component's share of the latent variance (4 digits). */
  layers: { ropeEnergy: number; alpha: number; kvEnergy: number; ropeInvFreq: number[]; kvSpectrum: number[]; refitResidual?: number; nopeRho?: number }[];
  evaluations: EvalReport[];
  /**
   * Wall seconds. pass1: original-model statistics; conversion: RoRoPE + BKV-PCA with their
   * calibration pass (in the default convert also the stock fit and the stages' evaluation
   * states, which advance in the same sweep); evaluation: the final scoring of those states;
   * convertTotal: the whole run, evaluation included; convertCpu: CPU seconds (user + system,
   * all threads) of the same span, which other load on the machine does not inflate.
   * estimate: the plan line's forecast (GEMM work / GEMM rate measured at the start), with both.
   */
  seconds: {
    load: number; pass1: number; freqFoldSearch: number; conversion: number; evaluation: number; save: number; convertTotal: number; convertCpu: number;
    estimate?: { seconds: number; flops: number; gemmFlopsPerSecond: number };
  };
  peakRssBytes: number;
}

export interface Mha2mlaReport {
  tool: 'transmla';
  method: 'mha2mla';
  methodDescription: string;
  created: string;
  source: {
    path: string; modelType: string; layers: number; hidden: number; heads: number; kvHeads: number; headDim: number; dtype: FloatDType;
    /** The source's rotary frequency ω_k of every pair k (d/2 values, k = 0 fastest): pair k turns by ω_k per position. */
    ropeInvFreq?: number[];
  };
  output: string | null;
  parameters: {
    ropePairsPerHead: number;
    kvLoraRank: number;
    kvFraction: number;
    selection: RopeSelection;
    lowRank: LowRankInit;
    weighting: Weighting;
    normStat: NormStat | null;
    /** [layer][kv head] kept frequency indices. */
    ropePairs: number[][][];
    ropeLayout: string;
    softmaxScale: string;
    dtype: FloatDType;
  };
  calibration: { file: string; sha256: string; documents: number; heldOutDocuments: number; samples: number; seqLen: number; tokens: number; seed: number; statistics: string[] };
  kvCache: { dtype: FloatDType; bytesPerTokenBefore: number; bytesPerTokenAfter: number; elementsPerTokenPerLayerBefore: number; elementsPerTokenPerLayerAfter: number; fraction: number };
  /**
   * Per layer: share of the (weighted) [K_nope ; V] energy the latent keeps; the factorisations'
   * spectra as shares of their total (σ_j² / Σσ², descending; one for SVD_joint, keys and values
   * for SVD_split); S_2-norm's score of every pair per KV head [G][d/2] (null for fixed selections).
   * Conversions before these were recorded have `energy` only.
   */
  layers: { energy: number; spectra?: { part: string; rank: number; shares: number[] }[]; pairScores?: number[][] | null }[];
  evaluations: EvalReport[];
  seconds: { load: number; calibration: number; conversion: number; evaluation: number; save: number; convertTotal: number };
  peakRssBytes: number;
}

export interface StockEvalReport {
  text: string;
  sha256: string;
  ctx: number;
  chunks: number;
  predictions: number;
  convention: string;
  /** The exact MLA model (the input folder) is the reference of KL/top-1. */
  exact: ModelScore;
  stock: ModelScore;
  /** 100·(ppl_stock / ppl_exact − 1). */
  pplGapPercent: number;
}

/**
 * The calibrated bias fold of one layer of the strict export (docs/methods.md#bias-fold): relative
 * mean-square errors of the projections the folded biases enter (null: no such bias), constant =
 * E(1 − uᵀx)² (the part of a bias no linear function of the layer input reproduces), and the
 * measured error of the layer's attention output.
 */
export interface BiasFoldReport {
  constant: number;
  query: number | null;
  ropeKey: number | null;
  value: number | null;
  latentKey: number | null;
  /** The weight of the NoPE-key error chosen for the value fold (null: no value fold). */
  lambda: number | null;
  /**
   * Measured Σ‖Δy‖²/Σ‖y‖² of the layer's attention output over the calibration tokens, all folds
   * together, through the softmax (what --max-bias-residual bounds).
   */
  attention: number;
}

export interface StockExportReport {
  tool: 'transmla';
  variant: 'deepseek-v3';
  method: string;
  created: string;
  /** path: the original (GQA/MHA) model recorded by the conversion, if known; exactFolder: the exported exact folder (null when convert wrote the stock folder directly). */
  source: { path: string | null; exactFolder: string | null };
  output: string;
  /** The source folder's transmla.json (its conversion report), when it has one. */
  conversion: Record<string, unknown> | null;
  parameters: {
    kvLoraRank: number; qLoraRank: number | null; qkRopeHeadDim: number; qkNopeHeadDim: number; vHeadDim: number;
    dtype: FloatDType; ropePermuted: boolean; ropeScaling: string; latentNormFit: string; softmaxScale: string;
  };
  /**
   * Per layer: relative least-squares output error of the refit kv_b_proj (and q_b_proj); whether
   * a latent bias reaching only the NoPE keys was dropped (exact); the calibrated bias fold (absent
   * when the layer needed none).
   */
  layers: { kvResidual: number; qResidual: number | null; kvNormKept: boolean; latentBiasFolded: boolean; biasFold?: BiasFoldReport }[];
  /** The bound on a layer's bias-fold residual above which the export refuses (--max-bias-residual). */
  maxBiasResidual?: number;
  calibration: { file: string; sha256: string; samples: number; seqLen: number; tokens: number; seed: number; order: 'sequential' };
  evaluations: StockEvalReport[];
  notes: string[];
  seconds: { calibration: number; evaluation: number; save: number };
}

