// A model's vital statistics: the `inspect` report, also used by bench and ppl headers.
import type { FloatDType, WeightDType } from '../kernels/types.js';
import { bytesPerElement, isQuantDType, QUANT_BLOCK } from '../tensor.js';
import { kvQuantName } from '../models/latent-quant.js';
import { KvCache } from '../models/kv-cache.js';
import type { LoadedModel } from './load.js';

export interface ModelDescription {
  path: string;
  format: string;
  modelType: string;
  layers: number;
  hidden: number;
  intermediate: number;
  /** The MLP as `inspect` prints it: the dense width, or the experts and how many a token uses. */
  mlp: string;
  vocab: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** 'MHA' | 'GQA' | 'MQA' for GqaAttention layers, otherwise the layer class name. */
  attention: string;
  /** GQA/MHA layers with per-head q/k RMSNorm (Qwen3). */
  qkNorm: boolean;
  rope: string;
  tiedEmbeddings: boolean;
  biases: string;
  params: number;
  /** How the weight matrices are stored (q8_0/q4_0 when quantized). */
  weightDtype: WeightDType;
  weightBytes: number;
  maxPositions: number;
  /** MLA models: the latent shape (the cache holds kvLoraRank + qkRopeHeadDim values per token per layer). */
  /** semantics: 'exact' (transmla's variant: no latent norms) or 'stock' (DeepSeek-V3's own code path). */
  mla?: { kvLoraRank: number; qkRopeHeadDim: number; qkNopeHeadDim: number; vHeadDim: number; qLoraRank: number | null; semantics: string };
  /** MHA2MLA models: per KV head 2·ropePairsPerHead RoPE key dims, plus the shared latent of kvLoraRank. */
  mha2mla?: { kvLoraRank: number; ropePairsPerHead: number; kvHeads: number };
  kvCache: {
    /** Latent-cache quantization ('none', or e.g. 'int8:g32': codes plus one f16 scale per group). */
    quant: string;
    elementsPerToken: number;
    dtype: FloatDType;
    bytesPerToken: number;
    bytesAt4K: number;
    bytesAt32K: number;
    /** How the engine stores the cache rows: f32, f16, bf16 (Decoder.kvDtype) or the latent quantization. */
    engineDtype: string;
    /** What the engine allocates per token, at engineDtype. */
    engineBytesPerToken: number;
  };
}

export function describeModel(m: LoadedModel): ModelDescription {
  const c = m.config, model = m.model;
  const summary = model.layers[0]?.attn.summary();
  const attention = summary?.label ?? 'none';
  const mla: ModelDescription['mla'] = summary?.mla && { ...summary.mla, semantics: m.mla?.semantics ?? 'exact' };
  const mha2mla: ModelDescription['mha2mla'] = summary?.mha2mla;
  // The reporting figure counts unquantized rows at the weights' dtype; the engine's own cache is model.kvDtype's.
  const cache = new KvCache(model.layers.map((l) => l.attn.createCache('f32')));
  const engine = model.newCache();
  const elems = cache.elementsPerToken;
  const dtype = model.weightDtype, storage = model.weightStorage;
  // A quantized cache counts its codes and scales; an f32 one is reported at the weights' dtype.
  const bpt = cache.bytesPerToken(dtype);
  const s = c.ropeScaling;
  const scaling = !s ? 'no scaling' : s.type === 'linear' ? `linear ×${s.factor}` :
    `llama3 ×${s.factor} (low ${s.lowFreqFactor}, high ${s.highFreqFactor}, original ${s.originalMaxPositionEmbeddings})`;
  const biases = [c.attentionBias && 'q/k/v', c.oBias && 'o', c.mlpBias && 'mlp'].filter(Boolean).join(', ') || 'none';
  const params = model.paramCount();
  return {
    path: m.path, format: m.format, modelType: mla || mha2mla ? String(c.raw.model_type) : c.modelType,
    layers: c.numLayers, hidden: c.hiddenSize, intermediate: c.intermediateSize, mlp: model.layers[0]?.mlp.summary() ?? String(c.intermediateSize), vocab: c.vocabSize,
    heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, attention, qkNorm: summary?.qkNorm ?? false,
    rope: `theta ${c.ropeTheta}, ${scaling}`, tiedEmbeddings: c.tieWordEmbeddings, biases,
    params, weightDtype: storage, weightBytes: isQuantDType(storage) ? Math.round((params * QUANT_BLOCK[storage].bytes) / QUANT_BLOCK[storage].elements) : params * bytesPerElement(dtype), maxPositions: c.maxPositionEmbeddings, mla, mha2mla,
    kvCache: { quant: kvQuantName(m.kvQuant ?? null), elementsPerToken: elems, dtype, bytesPerToken: bpt, bytesAt4K: bpt * 4096, bytesAt32K: bpt * 32768, engineDtype: m.kvQuant ? kvQuantName(m.kvQuant) : model.kvDtype, engineBytesPerToken: engine.bytesPerToken('f32') },
  };
}

export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

export function fmtCount(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} B` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} K` : String(n);
}

export function formatModelReport(d: ModelDescription): string {
  const k = d.kvCache;
  const perLayer = k.elementsPerToken / d.layers;
  const shape = d.attention === 'MHA' || d.attention === 'GQA' || d.attention === 'MQA'
    ? `${d.layers} layers × 2 (K,V) × ${d.kvHeads} KV heads × ${d.headDim}`
    : d.mla ? `${d.layers} layers × latent (kv_lora_rank ${d.mla.kvLoraRank} + qk_rope_head_dim ${d.mla.qkRopeHeadDim})`
    : d.mha2mla ? `${d.layers} layers × (${d.mha2mla.kvHeads} KV heads × 2·${d.mha2mla.ropePairsPerHead} RoPE key dims + latent ${d.mha2mla.kvLoraRank})`
    : `${d.layers} layers × ${perLayer}`;
  const m = d.mla, h = d.mha2mla;
  const attn = m
    ? `MLA: ${d.heads} heads, kv_lora_rank ${m.kvLoraRank}, qk_rope_head_dim ${m.qkRopeHeadDim}, qk_nope_head_dim ${m.qkNopeHeadDim}, v_head_dim ${m.vHeadDim}, q_lora_rank ${m.qLoraRank ?? 'none'}; RoPE ${d.rope}\n             ${m.semantics === 'stock' ? 'stock DeepSeek-V3 semantics (latent RMSNorms, interleaved RoPE), as stock code computes it (`transmla validate` says which engines load it)' : 'exact variant (no latent norms; transmla only: `transmla export --target deepseek-v3` for stock engines)'}`
    : h ? `${d.attention}: ${d.heads} heads / ${h.kvHeads} KV heads, head_dim ${d.headDim}, ${h.ropePairsPerHead} RoPE pairs per KV head, kv_lora_rank ${h.kvLoraRank}; RoPE ${d.rope}`
    : `${d.attention}: ${d.heads} heads / ${d.kvHeads} KV heads, head_dim ${d.headDim}${d.qkNorm ? ', per-head q/k RMSNorm' : ''}; RoPE ${d.rope}; biases ${d.biases}`;
  const at = k.quant === 'none' ? `at ${k.dtype}` : `with ${k.quant} codes + f16 scales`;
  return [
    `model        ${d.path} (${d.format})`,
    `architecture ${d.modelType}: ${d.layers} layers, hidden ${d.hidden}, MLP ${d.mlp}, vocab ${d.vocab}`,
    `attention    ${attn}`,
    `parameters   ${fmtCount(d.params)} (${d.params.toLocaleString('en-US')}), ${d.weightDtype} weights ${fmtBytes(d.weightBytes)}, ${d.tiedEmbeddings ? 'tied' : 'untied'} embeddings`,
    `context      ${d.maxPositions} positions (max_position_embeddings)`,
    `KV cache     ${k.bytesPerToken.toLocaleString('en-US')} B/token ${at} (${shape} = ${k.elementsPerToken} elements)`,
    `             4K context: ${fmtBytes(k.bytesAt4K)}   32K context: ${fmtBytes(k.bytesAt32K)}   (engine keeps ${k.engineDtype}: ${k.engineBytesPerToken.toLocaleString('en-US')} B/token)`,
  ].join('\n');
}
