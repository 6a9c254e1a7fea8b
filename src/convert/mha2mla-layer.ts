// One MHA2MLA layer (docs/methods.md#mha2mla) from a GQA/MHA layer, in float64: partial RoPE by row
// selection, then a low-rank latent for the NoPE keys and the values.
//
// Partial RoPE: KV head g keeps the pairs S_g (rope-select.ts). Its query heads and its key get
// the same row order [S_g pairs, interleaved (re, im) | the other d − 2r elements ascending], so
// q_nope·k_nope pairs the same elements as before; the kept pairs rotate at their source θ_k and
// the rest lose RoPE (the lossy step of partial RoPE).
//
// Low rank of W_kv = [W_k,nope ; W_v] (G·(d−2r) + G·d rows, bias kept exactly on up_k/up_v):
//   joint  one truncated factorisation of the stacked matrix, rank R (MHA2MLA's SVD_joint);
//   split  separate factorisations of W_k,nope and W_v with ⌈R/2⌉ and ⌊R/2⌋ — the paper's
//          d_kv/2 each, so the cache equals joint's at the same R (the MHA2MLA code gives each the
//          full rank, doubling the cache); stored as one latent with block up-projections;
//   full   no truncation (R = all rows, up = I): the exact partial-RoPE model.
// The factorisation is the best rank-R Ŵ under an input second moment C — C = I is the weight-only
// truncated SVD of the paper (Eckart–Young), C = calibration E[xxᵀ] the activation-aware variant
// (linalg/svd.ts weightedLowRank). Either way up has orthonormal columns and down = upᵀ·W, so the
// latent is the K/V output expressed in an orthonormal basis: a latent error (cache quantization)
// maps to the same-sized K/V error. (The MHA2MLA code puts Σ in up and Vᵀ in down — same product.)
import type { NamedTensor } from '../io/safetensors.js';
import type { FloatDType } from '../kernels/types.js';
import { weightedLowRank } from '../linalg/svd.js';
import { Linear } from '../models/linear.js';
import type { DecoderLayer, Decoder } from '../models/decoder.js';
import { Mha2mlaAttention, perHeadRopeTables } from '../models/mha2mla-attention.js';
import { Mha2mlaQkNormAttention, type Mha2mlaKeyNorm } from '../models/mha2mla-qknorm-attention.js';
import type { MlaMode } from '../models/mla-attention.js';
import { GqaAttention } from '../models/attention.js';
import { widen } from '../models/weights.js';
import { ropePairElements, type GqaLayerSource } from './gqa-to-mla.js';
import type { LinearF64 } from './latent-layer.js';
import { tensorOf } from './mla-build.js';
import { OptionError } from '../option-error.js';

import type { LowRankInit } from '../schema/transmla-json.js';

export type { LowRankInit } from '../schema/transmla-json.js';

export interface Mha2mlaLayerOptions {
  /** [G][r] ascending pair indices (rope-select.ts). */
  ropePairs: number[][];
  /** Latent width R, or 'full' for the untruncated partial-RoPE layer. */
  kvRank: number | 'full';
  init: LowRankInit;
  /** Input second moment E[xxᵀ] [D×D] for the activation-aware factorisation; null: weight-only SVD. */
  inputCov: Float64Array | null;
  /** A Qwen3 source's q/k norm (its weights [d]) and how the key normaliser is computed (mha2mla-qknorm-attention.ts). */
  qkNorm?: { q: ArrayLike<number>; k: ArrayLike<number>; eps: number; keyNorm: Mha2mlaKeyNorm } | null;
}

export interface Mha2mlaDims {
  hidden: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  ropePairs: number;
  kvRank: number;
}

export interface Mha2mlaLayerWeights {
  dims: Mha2mlaDims;
  ropePairs: number[][];
  /** [H·d, D] rows per head [rope 2r | nope]. */
  q: LinearF64;
  /** [G·2r, D]; null when r = 0. */
  kRope: LinearF64 | null;
  /** [R, D] */
  down: Float64Array;
  /** [G·(d−2r), R] */
  upK: LinearF64;
  /** [G·d, R] */
  upV: LinearF64;
  /** Share of ‖W_kv·C^{1/2}‖² the latent keeps (C = I for weight-only); 1 for 'full'. */
  energy: number;
  /**
   * The factorisations' spectra: one ('keys+values', SVD_joint) or two ('keys', 'values', SVD_split),
   * each with its rank and every σ_j² of W·C^{1/2}, descending; empty for 'full'.
   */
  spectra: LowRankSpectrum[];
  /** Qwen3: γ_q, γ_k in each group's row order [G·d]; for 'cached', the pre-norm key rows (the source's k_proj). */
  qkNorm?: { q: Float64Array; k: Float64Array; eps: number; keyNorm: Mha2mlaKeyNorm; kProj: LinearF64 | null };
}

export interface LowRankSpectrum {
  part: 'keys+values' | 'keys' | 'values';
  rank: number;
  /** ‖W·C^{1/2}‖_F². */
  total: number;
  /** σ_j² of W·C^{1/2}, descending. */
  values: Float64Array;
}

/** Largest latent a joint factorisation admits: min(rows of W_kv, D). */
export function maxMha2mlaRank(s: { hidden: number; nKvHeads: number; headDim: number }, r: number): number {
  return Math.min(s.nKvHeads * (2 * s.headDim - 2 * r), s.hidden);
}

/** Row order of a head of KV group g: kept pairs interleaved, then the other elements ascending. */
export function headRowOrder(layout: GqaLayerSource['ropeLayout'], d: number, pairs: readonly number[]): Int32Array {
  const order = new Int32Array(d);
  const used = new Uint8Array(d);
  pairs.forEach((k, i) => {
    const [a, b] = ropePairElements(layout, d, k);
    order[2 * i] = a;
    order[2 * i + 1] = b;
    used[a] = used[b] = 1;
  });
  let j = 2 * pairs.length;
  for (let e = 0; e < d; e++) if (!used[e]) order[j++] = e;
  return order;
}

/** Rows `rows` (source indices) of W [*, D] (+ bias) as a float64 LinearF64. */
function pickRows(w: ArrayLike<number>, b: ArrayLike<number> | null | undefined, rows: ArrayLike<number>, D: number): LinearF64 {
  const out = new Float64Array(rows.length * D);
  const bias = b ? new Float64Array(rows.length) : null;
  for (let i = 0; i < rows.length; i++) {
    const src = rows[i]!;
    for (let j = 0; j < D; j++) out[i * D + j] = w[src * D + j]!;
    if (bias) bias[i] = b![src]!;
  }
  return { w: out, b: bias };
}

export function mha2mlaLayer(s: GqaLayerSource, o: Mha2mlaLayerOptions): Mha2mlaLayerWeights {
  const { hidden: D, nHeads: H, nKvHeads: G, headDim: d } = s;
  const n = H / G;
  if (o.ropePairs.length !== G) throw new Error(`RoPE pairs given for ${o.ropePairs.length} KV heads, the layer has ${G}`);
  const r = o.ropePairs[0]!.length;
  if (o.ropePairs.some((p) => p.length !== r)) throw new Error('every KV head must keep the same number of RoPE pairs');
  if (2 * r >= d) throw new Error(`${r} RoPE pairs leave no NoPE key dims in heads of ${d}`);
  const dn = d - 2 * r;
  const orders = o.ropePairs.map((p) => headRowOrder(s.ropeLayout, d, p));

  const qRows = new Int32Array(H * d), kRopeRows = new Int32Array(G * 2 * r), kNopeRows = new Int32Array(G * dn);
  for (let h = 0; h < H; h++) for (let e = 0; e < d; e++) qRows[h * d + e] = h * d + orders[Math.floor(h / n)]![e]!;
  for (let g = 0; g < G; g++) {
    for (let e = 0; e < 2 * r; e++) kRopeRows[g * 2 * r + e] = g * d + orders[g]![e]!;
    for (let e = 0; e < dn; e++) kNopeRows[g * dn + e] = g * d + orders[g]![2 * r + e]!;
  }
  const q = pickRows(s.wq, s.bq, qRows, D);
  const kRope = r > 0 ? pickRows(s.wk, s.bk, kRopeRows, D) : null;
  const kNope = pickRows(s.wk, s.bk, kNopeRows, D);
  const v = pickRows(s.wv, s.bv, Int32Array.from({ length: G * d }, (_, i) => i), D);
  const mK = G * dn, mV = G * d, m = mK + mV;

  let R: number, down: Float64Array, upK: Float64Array, upV: Float64Array, energy: number;
  const spectra: LowRankSpectrum[] = [];
  if (o.kvRank === 'full') {
    // The latent is [K_nope ; V] itself: up = identity blocks.
    R = m;
    down = new Float64Array(m * D);
    down.set(kNope.w);
    down.set(v.w, mK * D);
    upK = new Float64Array(mK * R);
    upV = new Float64Array(mV * R);
    for (let i = 0; i < mK; i++) upK[i * R + i] = 1;
    for (let i = 0; i < mV; i++) upV[i * R + mK + i] = 1;
    energy = 1;
  } else {
    R = o.kvRank;
    const C = o.inputCov ?? identity(D);
    if (C.length !== D * D) throw new Error(`input covariance has ${C.length} values, expected ${D}²`);
    if (!Number.isInteger(R) || R < 1) throw new OptionError(`--kv-rank must be a positive integer, got ${R}`);
    if (o.init === 'joint') {
      const max = Math.min(m, D);
      if (R > max) throw new OptionError(`--kv-rank ${R} exceeds what a joint factorisation of [W_k,nope ; W_v] (${m}×${D}) admits: ${max}`);
      const W = new Float64Array(m * D);
      W.set(kNope.w);
      W.set(v.w, mK * D);
      const f = weightedLowRank(W, m, D, C, R);
      down = f.down;
      upK = f.up.slice(0, mK * R);
      upV = f.up.slice(mK * R);
      energy = f.total > 0 ? 1 - f.error / f.total : 1;
      spectra.push({ part: 'keys+values', rank: R, total: f.total, values: f.spectrum });
    } else {
      const rk = Math.min(Math.ceil(R / 2), mK, D), rv = R - rk;
      if (rv > Math.min(mV, D) || rv < 1) throw new OptionError(`--kv-rank ${R} cannot be split into key rank ${rk} ≤ ${Math.min(mK, D)} and value rank ${rv} in 1..${Math.min(mV, D)}`);
      const fk = weightedLowRank(kNope.w, mK, D, C, rk);
      const fv = weightedLowRank(v.w, mV, D, C, rv);
      down = new Float64Array(R * D);
      down.set(fk.down);
      down.set(fv.down, rk * D);
      upK = new Float64Array(mK * R);
      upV = new Float64Array(mV * R);
      for (let i = 0; i < mK; i++) for (let c = 0; c < rk; c++) upK[i * R + c] = fk.up[i * rk + c]!;
      for (let i = 0; i < mV; i++) for (let c = 0; c < rv; c++) upV[i * R + rk + c] = fv.up[i * rv + c]!;
      const total = fk.total + fv.total;
      energy = total > 0 ? 1 - (fk.error + fv.error) / total : 1;
      spectra.push({ part: 'keys', rank: rk, total: fk.total, values: fk.spectrum }, { part: 'values', rank: rv, total: fv.total, values: fv.spectrum });
    }
  }
  const qk = o.qkNorm ?? null;
  const permuted = (w: ArrayLike<number>): Float64Array => Float64Array.from({ length: G * d }, (_, i) => w[orders[Math.floor(i / d)]![i % d]!]!);
  return {
    ...(qk && {
      qkNorm: {
        q: permuted(qk.q), k: permuted(qk.k), eps: qk.eps, keyNorm: qk.keyNorm,
        kProj: qk.keyNorm === 'cached' ? pickRows(s.wk, s.bk, Int32Array.from({ length: G * d }, (_, i) => i), D) : null,
      },
    }),
    dims: { hidden: D, nHeads: H, nKvHeads: G, headDim: d, ropePairs: r, kvRank: R },
    ropePairs: o.ropePairs.map((p) => p.slice()),
    q, kRope, down,
    upK: { w: upK, b: kNope.b },
    upV: { w: upV, b: v.b },
    energy,
    spectra,
  };
}

function identity(n: number): Float64Array {
  const I = new Float64Array(n * n);
  for (let i = 0; i < n; i++) I[i * n + i] = 1;
  return I;
}

function linearTensors(name: string, l: LinearF64, rows: number, cols: number, dtype: FloatDType): NamedTensor[] {
  const out: NamedTensor[] = [{ name: `${name}.weight`, tensor: tensorOf(l.w, [rows, cols], dtype) }];
  if (l.b) out.push({ name: `${name}.bias`, tensor: tensorOf(l.b, [rows], dtype) });
  return out;
}

/** The attention tensors of one MHA2MLA layer (o_proj is the source's), `prefix` = model.layers.N.self_attn. */
export function mha2mlaLayerTensors(prefix: string, w: Mha2mlaLayerWeights, dtype: FloatDType): NamedTensor[] {
  const { hidden: D, nHeads: H, nKvHeads: G, headDim: d, ropePairs: r, kvRank: R } = w.dims;
  return [
    ...linearTensors(`${prefix}.q_proj`, w.q, H * d, D, dtype),
    ...(w.kRope ? linearTensors(`${prefix}.k_r_proj`, w.kRope, G * 2 * r, D, dtype) : []),
    ...linearTensors(`${prefix}.kv_proj.down_kv`, { w: w.down, b: null }, R, D, dtype),
    ...linearTensors(`${prefix}.kv_proj.up_k`, w.upK, G * (d - 2 * r), R, dtype),
    ...linearTensors(`${prefix}.kv_proj.up_v`, w.upV, G * d, R, dtype),
  ];
}

export interface BuildMha2mlaOptions {
  /** Weights are rounded to this dtype first, so the model computes what the saved file holds. */
  dtype: FloatDType;
  mode?: MlaMode;
}

/** Decoder layer l of `source` with its attention replaced by the MHA2MLA layer (norms, MLP and o_proj shared). */
export function mha2mlaDecoderLayer(source: Decoder, l: number, w: Mha2mlaLayerWeights, invFreq: Float64Array, opts: BuildMha2mlaOptions): DecoderLayer {
  const src = source.layers[l]!;
  if (!(src.attn instanceof GqaAttention)) throw new Error(`layer ${l} of the source is not GQA attention`);
  const map = new Map(mha2mlaLayerTensors('a', w, opts.dtype).map((t) => [t.name.slice(2), t.tensor]));
  const lin = (name: string): Linear => {
    const b = map.get(`${name}.bias`);
    return new Linear(map.get(`${name}.weight`)!, b ? widen(b) : null);
  };
  const { dims } = w;
  const qk = w.qkNorm;
  if (qk) {
    const kp = qk.kProj ? linearTensors('k', qk.kProj, dims.nKvHeads * dims.headDim, dims.hidden, opts.dtype) : [];
    const attn = new Mha2mlaQkNormAttention({
      nHeads: dims.nHeads, nKvHeads: dims.nKvHeads, headDim: dims.headDim, ropePairs: dims.ropePairs, kvLoraRank: dims.kvRank,
      q: lin('q_proj'), kRope: dims.ropePairs > 0 ? lin('k_r_proj') : null,
      down: lin('kv_proj.down_kv'), upK: lin('kv_proj.up_k'), upV: lin('kv_proj.up_v'), o: src.attn.o,
      ropes: perHeadRopeTables(invFreq, w.ropePairs), mode: opts.mode,
      qNorm: Float32Array.from(qk.q), kNorm: Float32Array.from(qk.k), eps: qk.eps, keyNorm: qk.keyNorm,
      kProj: kp.length ? new Linear(kp[0]!.tensor, kp[1] ? widen(kp[1].tensor) : null) : null,
    });
    return { ...src, attn };
  }
  const attn = new Mha2mlaAttention({
    nHeads: dims.nHeads, nKvHeads: dims.nKvHeads, headDim: dims.headDim, ropePairs: dims.ropePairs, kvLoraRank: dims.kvRank,
    q: lin('q_proj'), kRope: dims.ropePairs > 0 ? lin('k_r_proj') : null,
    down: lin('kv_proj.down_kv'), upK: lin('kv_proj.up_k'), upV: lin('kv_proj.up_v'),
    o: src.attn.o,
    ropes: perHeadRopeTables(invFreq, w.ropePairs),
    mode: opts.mode,
  });
  return { ...src, attn };
}
