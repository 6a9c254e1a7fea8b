// TransMLA's shape from the options (the cache budget r + d_R and d_R), and the fields of
// transmla.json fixed by the conversion's shape and inputs.
import { resolve } from 'node:path';
import type { FloatDType } from '../kernels/types.js';
import type { CalibOrder, ConvertReport } from '../schema/transmla-json.js';
import { bytesPerElement } from '../tensor.js';
import { checkKvRank, defaultRopeDim, kvForFraction, sourceKvWidth } from './kv-budget.js';
import { PCA_DAMP } from './latent-layer.js';
import { sha256File, type CalibrationSet } from './pipeline.js';

/** The options the shape comes from. */
export interface BudgetOptions {
  kvLoraRank?: number;
  ropeDim?: number | 'auto';
  kvFraction?: number;
}

/** What both conversion paths describe alike. */
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
  calib: CalibrationSet;
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

/** The cache budget r + d_R, and d_R ('auto': searched), from the options. */
export function resolveBudget(o: BudgetOptions, G: number, d: number): { budget: number; ropeDim: number | 'auto' } {
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

