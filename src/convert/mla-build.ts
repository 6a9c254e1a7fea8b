// Between the engine and the float64 stages: read a GQA layer out of a loaded model, turn
// per-layer MLA weights into checkpoint tensors (rounded to the saved dtype), and build an
// in-memory MLA model that shares embeddings, norms and MLPs with the source model.
import { kernels } from '../kernels/index.js';
import type { FloatDType, WeightDType } from '../kernels/types.js';
import type { NamedTensor } from '../io/safetensors.js';
import { GqaAttention } from '../models/attention.js';
import { Linear } from '../models/linear.js';
import { widen } from '../models/weights.js';
import { Decoder, type DecoderLayer } from '../models/decoder.js';
import { RopeTable, ropeInvFreq } from '../models/rope.js';
import { MlaAttention, type MlaMode } from '../models/mla-attention.js';
import { QkNormMlaAttention } from '../models/mla-qknorm-attention.js';
import type { Tensor } from '../tensor.js';
import type { GqaLayerSource } from './gqa-to-mla.js';
import type { LinearF64, MlaLayerWeights } from './latent-layer.js';

function f32Of(t: Tensor<WeightDType>): Float32Array {
  // A model loaded with --weights q8_0|q4_0 converts from its dequantized weights.
  return widen(t);
}

/** What the per-layer helpers read of a model: a whole Decoder, or one loaded layer (streaming). */
export type LayerView = Pick<Decoder, 'config' | 'layers'>;

/** A model view holding only layer l (a streaming conversion has one layer at a time). */
export function layerView(config: Decoder['config'], l: number, layer: DecoderLayer): LayerView {
  const layers: DecoderLayer[] = [];
  layers[l] = layer;
  return { config, layers };
}

/** Layer l of a GQA model as the input of latentFromGqa (weights widened to f32). */
export function gqaLayerSource(model: LayerView, l: number): GqaLayerSource {
  const a = model.layers[l]?.attn;
  if (!(a instanceof GqaAttention)) throw new Error(`layer ${l} is not GQA/MHA attention; only Llama-family (GQA/MHA) models can be converted`);
  const c = model.config;
  return {
    hidden: c.hiddenSize, nHeads: a.nHeads, nKvHeads: a.nKvHeads, headDim: a.headDim,
    wq: f32Of(a.q.weight), wk: f32Of(a.k.weight), wv: f32Of(a.v.weight),
    bq: a.q.bias, bk: a.k.bias, bv: a.v.bias,
    ropeLayout: a.ropeLayout,
    ropeInvFreq: ropeInvFreq(a.headDim, c.ropeTheta, c.ropeScaling),
  };
}

/** float64 values → a tensor of the given dtype (round to nearest even for f16/bf16). */
export function tensorOf(x: Float64Array, shape: number[], dtype: FloatDType): Tensor {
  const f = Float32Array.from(x);
  if (dtype === 'f32') return { dtype, shape, data: f };
  const bits = new Uint16Array(f.length);
  kernels().fromF32(f, dtype, bits);
  return { dtype, shape, data: bits };
}

function linearTensors(prefix: string, l: LinearF64, rows: number, cols: number, dtype: FloatDType): NamedTensor[] {
  const out: NamedTensor[] = [{ name: `${prefix}.weight`, tensor: tensorOf(l.w, [rows, cols], dtype) }];
  if (l.b) out.push({ name: `${prefix}.bias`, tensor: tensorOf(l.b, [rows], dtype) });
  return out;
}

/** The DeepSeek-V3 attention tensors of one layer (without o_proj, which is the source's), `prefix` = model.layers.N.self_attn. */
export function mlaLayerTensors(prefix: string, w: MlaLayerWeights, dtype: FloatDType): NamedTensor[] {
  const { hidden: D, nHeads: H, qkNopeHeadDim: dn, qkRopeHeadDim: dR, vHeadDim: dv, kvLoraRank: r, qLoraRank: rq } = w.dims;
  const out: NamedTensor[] = [];
  if (w.q) out.push(...linearTensors(`${prefix}.q_proj`, w.q, H * (dn + dR), D, dtype));
  else {
    out.push(...linearTensors(`${prefix}.q_a_proj`, w.qA!, rq!, D, dtype));
    out.push(...linearTensors(`${prefix}.q_b_proj`, w.qB!, H * (dn + dR), rq!, dtype));
  }
  out.push(...linearTensors(`${prefix}.kv_a_proj_with_mqa`, w.kvA, r + dR, D, dtype));
  out.push({ name: `${prefix}.kv_b_proj.weight`, tensor: tensorOf(w.kvB, [H * (dn + dv), r], dtype) });
  // The exact-structure form of a Qwen3 source (convert/qk-norm.ts): engine-only tensors.
  const n = w.qkNorm;
  if (n) {
    out.push({ name: `${prefix}.q_a_layernorm.weight`, tensor: tensorOf(n.qNorm, [rq!], dtype) });
    if (n.kProj) out.push(...linearTensors(`${prefix}.k_norm_proj`, n.kProj, n.kProj.w.length / D, D, dtype));
  }
  return out;
}

function linearFrom(map: Map<string, Tensor>, name: string): Linear | null {
  const w = map.get(`${name}.weight`);
  if (!w) return null;
  const b = map.get(`${name}.bias`);
  return new Linear(w, b ? f32Of(b) : null);
}

export interface BuildMlaOptions {
  /** Weights are rounded to this dtype first, so the model computes what the saved file holds. */
  dtype: FloatDType;
  /** RoPE pair frequencies; default θ^(−2i/d_R) with the source's rope scaling. */
  ropeInvFreq?: Float64Array;
  mode?: MlaMode;
}

/** The RoPE table of an MLA model derived from `source` (frequencies given, or DeepSeek's). */
export function mlaRopeTable(source: LayerView, ropeDim: number, invFreq?: Float64Array): RopeTable {
  const c = source.config;
  return new RopeTable(invFreq ?? ropeInvFreq(ropeDim, c.ropeTheta, c.ropeScaling));
}

/** Decoder layer l of `source` with its attention replaced by MLA (norms and MLP shared). */
export function mlaDecoderLayer(source: LayerView, l: number, w: MlaLayerWeights, rope: RopeTable, opts: BuildMlaOptions): DecoderLayer {
  const src = source.layers[l]!;
  if (!(src.attn instanceof GqaAttention)) throw new Error(`layer ${l} of the source is not GQA attention`);
  if (rope.dim !== w.dims.qkRopeHeadDim) throw new Error(`RoPE table of dim ${rope.dim} for qk_rope_head_dim ${w.dims.qkRopeHeadDim}`);
  const map = new Map(mlaLayerTensors('a', w, opts.dtype).map((t) => [t.name.slice(2), t.tensor]));
  const n = w.qkNorm;
  if (n) {
    const attn = new QkNormMlaAttention({
      ...w.dims,
      q: null, qA: linearFrom(map, 'q_a_proj'), qANorm: widen(map.get('q_a_layernorm.weight')!), qB: linearFrom(map, 'q_b_proj'),
      kvA: linearFrom(map, 'kv_a_proj_with_mqa')!, kvANorm: null, kvB: linearFrom(map, 'kv_b_proj')!, o: src.attn.o, rope,
      scale: 1 / Math.sqrt(w.dims.qkNopeHeadDim + w.dims.qkRopeHeadDim), normEps: n.eps, mode: opts.mode,
      qNormGroups: n.qGroups, keyScale: n.kProj ? { proj: linearFrom(map, 'k_norm_proj')!, groups: n.kGroups, eps: n.eps } : null,
    });
    return { ...src, attn };
  }
  const attn = new MlaAttention({
    ...w.dims,
    q: linearFrom(map, 'q_proj'), qA: linearFrom(map, 'q_a_proj'), qANorm: null, qB: linearFrom(map, 'q_b_proj'),
    kvA: linearFrom(map, 'kv_a_proj_with_mqa')!, kvANorm: null,
    kvB: linearFrom(map, 'kv_b_proj')!,
    o: src.attn.o,
    rope,
    scale: 1 / Math.sqrt(w.dims.qkNopeHeadDim + w.dims.qkRopeHeadDim),
    normEps: source.config.rmsNormEps,
    mode: opts.mode,
  });
  return { ...src, attn };
}

/** The source model with every attention layer replaced by MLA (other weights shared, not copied). */
export function buildMlaModel(source: Decoder, layers: readonly MlaLayerWeights[], opts: BuildMlaOptions): Decoder {
  if (layers.length !== source.layers.length) throw new Error(`${layers.length} MLA layers for a ${source.layers.length}-layer model`);
  const rope = mlaRopeTable(source, layers[0]!.dims.qkRopeHeadDim, opts.ropeInvFreq);
  return assembleModel(source, layers.map((w, l) => mlaDecoderLayer(source, l, w, rope, opts)));
}

/** A model with the source's embedding, final norm and head around the given decoder layers. */
export function assembleModel(source: Decoder, layers: DecoderLayer[]): Decoder {
  return new Decoder(source.config, source.embed, layers, source.norm, source.head);
}
