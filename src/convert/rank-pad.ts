// Per-layer latent ranks in a folder format with one kv_lora_rank (the stock DeepSeek-V3 config,
// llama.cpp's deepseek2 GGUF): every layer padded to r_max (docs/methods.md#aware-budget).
// The padded latent is c' = [s·c ; 0] with s = √(r_max/r): its mean square over r_max entries is
// that of c over r, so kv_a_layernorm's RMS (with its ε) is unchanged, and the norm weight is
// divided by s; kv_b_proj gets zero columns for the padding. The layer computes the same
// function; its cache costs r_max + d_R values per token instead of r + d_R.

import type { MlaShape } from '../models/mla-attention.js';

export interface LayerTensor {
  name: string;
  data: Float64Array;
  shape: number[];
}

/** A layer's widths and the uniform ones it is padded to. */
export interface PadShape {
  /** Its kv_lora_rank and the target. */
  r: number;
  rMax: number;
  /** Its qk_rope_head_dim and the target (a multiple of it). */
  dR: number;
  dRMax?: number;
  /** Query heads and qk_nope_head_dim (needed only when dR is padded). */
  heads?: number;
  dn?: number;
}

/** A layer of shape `p` padded to the uniform widths `to` (kv_lora_rank, qk_rope_head_dim: the maxima). */
export const padShapeOf = (p: { p: MlaShape } | MlaShape, to: { kvLoraRank: number; qkRopeHeadDim: number }): PadShape => {
  const s = 'p' in p ? p.p : p;
  return { r: s.kvLoraRank, rMax: to.kvLoraRank, dR: s.qkRopeHeadDim, dRMax: to.qkRopeHeadDim, heads: s.nHeads, dn: s.qkNopeHeadDim };
};

/**
 * Pads one layer's attention tensors (names ending in kv_a_proj_with_mqa.{weight,bias},
 * kv_a_layernorm.weight, kv_b_proj.weight, and with a RoPE padding q_proj / q_b_proj .{weight,bias};
 * the rest pass through) from (r, d_R) to (r_max, d_R,max). RoPE rows are interleaved pairs
 * (2i, 2i+1), pair i rotating at θ^(−2i/d_R) = θ^(−2ik/d_R,max), k = d_R,max/d_R: it goes to pair
 * slot i·k, the other slots stay zero; the queries are scaled by √((d_n + d_R,max)/(d_n + d_R))
 * so the softmax scale (d_n + d_R)^−½ is the layer's own.
 */
export function padLayerRank(ts: readonly LayerTensor[], p: PadShape): LayerTensor[] {
  const { r, rMax, dR } = p, dRMax = p.dRMax ?? dR;
  if (!(Number.isInteger(r) && Number.isInteger(rMax) && r >= 1 && r <= rMax)) throw new Error(`padLayerRank: rank ${r} cannot be padded to ${rMax}`);
  if (!(dR >= 2 && dRMax % dR === 0)) throw new Error(`padLayerRank: qk_rope_head_dim ${dR} cannot be padded to ${dRMax} (RoPE pairs line up only when ${dRMax} is a multiple of ${dR})`);
  if (r === rMax && dR === dRMax) return [...ts];
  const k = dRMax / dR;
  const hasNorm = ts.some((t) => t.name.endsWith('kv_a_layernorm.weight'));
  // Without kv_a_layernorm (the exact variant) zero padding alone is exact: no rescaling.
  const s = hasNorm ? Math.sqrt(rMax / r) : 1;
  const want = (t: LayerTensor, shape: number[]): void => {
    if (t.shape.length !== shape.length || t.shape.some((x, i) => x !== shape[i])) throw new Error(`padLayerRank: ${t.name} is [${t.shape.join(', ')}], expected [${shape.join(', ')}] for kv_lora_rank ${r}, qk_rope_head_dim ${dR}`);
  };
  /** Rows [latent r | RoPE dR] → [latent rMax | RoPE dRMax], `cols` values per row. */
  const kvRowsPad = (x: Float64Array, cols: number): Float64Array => {
    const out = new Float64Array((rMax + dRMax) * cols);
    for (let i = 0; i < r * cols; i++) out[i] = s * x[i]!;
    for (let i = 0; i < dR; i++) out.set(x.subarray((r + i) * cols, (r + i + 1) * cols), (rMax + (i >> 1) * 2 * k + (i & 1)) * cols);
    return out;
  };
  const H = p.heads ?? 0, dn = p.dn ?? 0, g = Math.sqrt((dn + dRMax) / (dn + dR));
  /** Per head [nope dn | RoPE dR] rows → [dn | dRMax], all scaled by g. */
  const qRowsPad = (x: Float64Array, cols: number): Float64Array => {
    const out = new Float64Array(H * (dn + dRMax) * cols);
    for (let h = 0; h < H; h++) {
      const src = h * (dn + dR), dst = h * (dn + dRMax);
      for (let i = 0; i < dn + dR; i++) {
        const to = i < dn ? dst + i : dst + dn + ((i - dn) >> 1) * 2 * k + ((i - dn) & 1);
        for (let j = 0; j < cols; j++) out[to * cols + j] = g * x[(src + i) * cols + j]!;
      }
    }
    return out;
  };
  return ts.map((t) => {
    if (t.name.endsWith('kv_a_proj_with_mqa.weight')) {
      const D = t.shape[1]!;
      want(t, [r + dR, D]);
      return { name: t.name, data: kvRowsPad(t.data, D), shape: [rMax + dRMax, D] };
    }
    if (t.name.endsWith('kv_a_proj_with_mqa.bias')) {
      want(t, [r + dR]);
      return { name: t.name, data: kvRowsPad(t.data, 1), shape: [rMax + dRMax] };
    }
    if (t.name.endsWith('kv_a_layernorm.weight')) {
      want(t, [r]);
      // The padded channels are zero before the norm, so their weight never matters: 1, as an untrained norm.
      const out = new Float64Array(rMax).fill(1);
      for (let i = 0; i < r; i++) out[i] = t.data[i]! / s;
      return { name: t.name, data: out, shape: [rMax] };
    }
    if (t.name.endsWith('kv_b_proj.weight')) {
      const rows = t.shape[0]!;
      want(t, [rows, r]);
      const out = new Float64Array(rows * rMax);
      for (let i = 0; i < rows; i++) out.set(t.data.subarray(i * r, (i + 1) * r), i * rMax);
      return { name: t.name, data: out, shape: [rows, rMax] };
    }
    if (dRMax !== dR && /\.(q_proj|q_b_proj)\.(weight|bias)$/.test(t.name)) {
      if (!(H > 0)) throw new Error('padLayerRank: padding qk_rope_head_dim needs the head count and qk_nope_head_dim');
      const bias = t.name.endsWith('.bias'), cols = bias ? 1 : t.shape[1]!;
      want(t, bias ? [H * (dn + dR)] : [H * (dn + dR), cols]);
      return { name: t.name, data: qRowsPad(t.data, cols), shape: bias ? [H * (dn + dRMax)] : [H * (dn + dRMax), cols] };
    }
    return t;
  });
}

/** The stock folder's note on padded ranks: what its cache costs against the exact variant's. */
export function paddedRanksNote(ranks: readonly number[], ropeDims: readonly number[]): string {
  const rMax = Math.max(...ranks), dRMax = Math.max(...ropeDims), L = ranks.length;
  const sum = ranks.reduce((a, b) => a + b, 0) + ropeDims.reduce((a, b) => a + b, 0);
  const what = [
    new Set(ranks).size > 1 ? `kv_lora_ranks (${ranks.join(', ')}) padded to kv_lora_rank ${rMax}` : null,
    new Set(ropeDims).size > 1 ? `qk_rope_head_dims (${ropeDims.join(', ')}) padded to qk_rope_head_dim ${dRMax} (pair i of a layer with d_R at slot i·d_R,max/d_R, queries × √((d_n + d_R,max)/(d_n + d_R)))` : null,
  ].filter(Boolean).join(' and ');
  return `per-layer ${what}, the one width DeepseekV3Config and deepseek2 GGUFs hold: ` +
    `exact (zero rows and columns; kv_a_proj's latent rows × √(r_max/r_l) and kv_a_layernorm's weight ÷ √(r_max/r_l), so the norm's RMS is unchanged), ` +
    `but the cache holds ${L} × (${rMax} + ${dRMax}) = ${L * (rMax + dRMax)} values per token, against Σ_l (r_l + d_R,l) = ${sum} in the exact variant`;
}
