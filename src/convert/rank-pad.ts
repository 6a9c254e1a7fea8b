// Per-layer latent ranks in a folder format with one kv_lora_rank (the stock DeepSeek-V3 config,
// llama.cpp's deepseek2 GGUF): every layer padded to r_max (docs/methods.md#aware-budget).
// The padded latent is c' = [s·c ; 0] with s = √(r_max/r): its mean square over r_max entries is
// that of c over r, so kv_a_layernorm's RMS (with its ε) is unchanged, and the norm weight is
// divided by s; kv_b_proj gets zero columns for the padding. The layer computes the same
// function; its cache costs r_max + d_R values per token instead of r + d_R.

export interface LayerTensor {
  name: string;
  data: Float64Array;
  shape: number[];
}

/**
 * Pads one layer's attention tensors (names ending in kv_a_proj_with_mqa.{weight,bias},
 * kv_a_layernorm.weight, kv_b_proj.weight; the rest pass through) from rank r to rMax.
 * dR: the RoPE rows after the latent in kv_a_proj_with_mqa.
 */
export function padLayerRank(ts: readonly LayerTensor[], r: number, rMax: number, dR: number): LayerTensor[] {
  if (!(Number.isInteger(r) && Number.isInteger(rMax) && r >= 1 && r <= rMax)) throw new Error(`padLayerRank: rank ${r} cannot be padded to ${rMax}`);
  if (r === rMax) return [...ts];
  const hasNorm = ts.some((t) => t.name.endsWith('kv_a_layernorm.weight'));
  // Without kv_a_layernorm (the exact variant) zero padding alone is exact: no rescaling.
  const s = hasNorm ? Math.sqrt(rMax / r) : 1;
  const want = (t: LayerTensor, shape: number[]): void => {
    if (t.shape.length !== shape.length || t.shape.some((x, i) => x !== shape[i])) throw new Error(`padLayerRank: ${t.name} is [${t.shape.join(', ')}], expected [${shape.join(', ')}] for rank ${r}`);
  };
  return ts.map((t) => {
    if (t.name.endsWith('kv_a_proj_with_mqa.weight')) {
      const D = t.shape[1]!;
      want(t, [r + dR, D]);
      const out = new Float64Array((rMax + dR) * D);
      for (let i = 0; i < r * D; i++) out[i] = s * t.data[i]!;
      out.set(t.data.subarray(r * D), rMax * D);
      return { name: t.name, data: out, shape: [rMax + dR, D] };
    }
    if (t.name.endsWith('kv_a_proj_with_mqa.bias')) {
      want(t, [r + dR]);
      const out = new Float64Array(rMax + dR);
      for (let i = 0; i < r; i++) out[i] = s * t.data[i]!;
      out.set(t.data.subarray(r), rMax);
      return { name: t.name, data: out, shape: [rMax + dR] };
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
    return t;
  });
}

/** The stock folder's note on padded ranks: what its cache costs against the exact variant's. */
export function paddedRanksNote(ranks: readonly number[], dR: number): string {
  const rMax = Math.max(...ranks), L = ranks.length, sum = ranks.reduce((a, b) => a + b, 0);
  return `per-layer kv_lora_ranks (${ranks.join(', ')}) padded to kv_lora_rank ${rMax}, the one rank DeepseekV3Config and deepseek2 GGUFs hold: ` +
    `exact (zero latent rows and kv_b_proj columns; kv_a_proj's latent rows × √(r_max/r_l) and kv_a_layernorm's weight ÷ √(r_max/r_l), so the norm's RMS is unchanged), ` +
    `but the cache holds ${L} × (${rMax} + ${dR}) = ${L * (rMax + dR)} values per token, against Σ_l (r_l + ${dR}) = ${sum + L * dR} in the exact variant`;
}
