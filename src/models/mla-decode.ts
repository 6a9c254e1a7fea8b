// MLA's decode layout (docs/methods.md#mla-target, the absorbed form): the query absorbs W_UK^h,
// q̂_h = W_UK^hᵀ·q_nope^h, which is a GEMV over W_UK^h transposed. kv_b_proj stores W_UK^h as
// rows h·(d_n+d_v) … +d_n of [H·(d_n+d_v), r]; this file lays the transposes out once at load,
// [H·r, d_n] (head after head), as llama.cpp's deepseek2 attn_k_b holds them ([H, r, d_n]).
// W_UV^h is already a row block of kv_b ([d_v, r] rows h·(d_n+d_v)+d_n …), read in place.
import { kernels } from '../kernels/index.js';
import type { WeightData, WeightDType } from '../kernels/types.js';
import { isQuantDType, tensorBytes, type Tensor } from '../tensor.js';
import { widen } from './weights.js';

/** Rows [r0, r0+n) of a [rows × cols] weight as a view of its storage (whole rows of blocks when quantized). */
export function weightRows(t: Tensor<WeightDType>, r0: number, n: number): WeightData {
  const cols = t.shape[1]!;
  if (isQuantDType(t.dtype)) {
    const rb = tensorBytes(t.dtype, cols);
    return (t.data as Uint8Array).subarray(r0 * rb, (r0 + n) * rb);
  }
  return t.data.subarray(r0 * cols, (r0 + n) * cols);
}

/**
 * W_UK^h transposed for every head, [H·r, d_n], stored as `store`: a float kv_b at its own dtype
 * is transposed bit for bit; otherwise the f32 values are transposed and narrowed or quantized
 * (q8_0/q4_0 along d_n, which must then be a multiple of 32).
 */
export function ukTransposed(kvB: Tensor<WeightDType>, H: number, dn: number, dv: number, r: number, store: WeightDType): Tensor<WeightDType> {
  const hw = dn + dv, n = H * r * dn;
  const transpose = <A extends Float32Array | Uint16Array>(src: A, out: A): A => {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < dn; i++) {
        const s = (h * hw + i) * r;
        for (let j = 0; j < r; j++) out[(h * r + j) * dn + i] = src[s + j]!;
      }
    }
    return out;
  };
  if (store === kvB.dtype && !isQuantDType(store)) {
    const data = kvB.dtype === 'f32' ? transpose(kvB.data as Float32Array, new Float32Array(n)) : transpose(kvB.data as Uint16Array, new Uint16Array(n));
    return { dtype: store, shape: [H * r, dn], data } as Tensor<WeightDType>;
  }
  const f = transpose(widen(kvB), new Float32Array(n));
  if (store === 'f32') return { dtype: 'f32', shape: [H * r, dn], data: f };
  if (isQuantDType(store)) {
    if (dn % 32 !== 0) throw new Error(`W_UK in decode layout cannot be ${store}: qk_nope_head_dim ${dn} is not a multiple of 32`);
    const out = new Uint8Array(tensorBytes(store, n));
    kernels().fromF32(f, store, out);
    return { dtype: store, shape: [H * r, dn], data: out };
  }
  const bits = new Uint16Array(n);
  kernels().fromF32(f, store, bits);
  return { dtype: store, shape: [H * r, dn], data: bits };
}

/** How W_UK's transposes are stored for a kv_b of `kvBType` when weights are quantized to `quant` (or not). */
export function ukStoreType(kvBType: WeightDType, quant: WeightDType | null | undefined, dn: number): WeightDType {
  const q = quant ?? (isQuantDType(kvBType) ? kvBType : null);
  if (q && isQuantDType(q)) return dn % 32 === 0 ? q : 'f32';
  return kvBType;
}
