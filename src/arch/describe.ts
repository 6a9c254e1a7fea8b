// A model's vital statistics: the `inspect` report (inspectModel: config and tensor headers only,
// no weights read), also used by bench on a loaded model (describeModel).
import type { FloatDType, QuantDType, WeightDType } from '../kernels/types.js';
import { bytesPerElement, isQuantDType, QUANT_BLOCK } from '../tensor.js';
import { createCacheStore, kvQuantName, type KvQuant } from '../models/latent-quant.js';
import { KvCache } from '../models/kv-cache.js';
import { embeddingName } from '../models/decoder.js';
import type { ModelArgs } from './args.js';
import type { MlaFields } from './deepseek.js';
import { checkStockAttentionTensors } from './deepseek-stock.js';
import { readModelHeaders, type TensorHeader } from './headers.js';
import type { LoadedModel } from './load.js';
import { familyFor } from './registry.js';

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
  /** inspectModel: parameters per stored dtype (norms are often kept wider than the matrices). */
  dtypes?: Record<string, number>;
  /** false when the description comes from config and headers only (inspectModel). */
  weightsRead?: boolean;
  maxPositions: number;
  /** MLA models: the latent shape (the cache holds kvLoraRank + qkRopeHeadDim values per token per layer). */
  /** semantics: 'exact' (transmla's variant: no latent norms) or 'stock' (DeepSeek-V3's own code path). */
  /** kvLoraRanks: per-layer latent widths when they differ (kvLoraRank is then the largest; the cache sums them). */
  mla?: { kvLoraRank: number; qkRopeHeadDim: number; qkNopeHeadDim: number; vHeadDim: number; qLoraRank: number | null; semantics: string; kvLoraRanks?: number[]; qkRopeHeadDims?: number[] };
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
  // Layer 0 speaks for the shape; per-layer ranks come from the config (kvLoraRank: the widest layer).
  const ranks = m.mla?.kvLoraRanks, ropes = m.mla?.qkRopeHeadDims;
  const mla: ModelDescription['mla'] = summary?.mla && {
    ...summary.mla, semantics: m.mla?.semantics ?? 'exact',
    ...(ranks ? { kvLoraRank: m.mla!.kvLoraRank, kvLoraRanks: [...ranks] } : {}), ...(ropes ? { qkRopeHeadDim: m.mla!.qkRopeHeadDim, qkRopeHeadDims: [...ropes] } : {}),
  };
  const mha2mla: ModelDescription['mha2mla'] = summary?.mha2mla;
  // The reporting figure counts unquantized rows at the weights' dtype; the engine's own cache is model.kvDtype's.
  const cache = new KvCache(model.layers.map((l) => l.attn.createCache('f32')));
  const engine = model.newCache();
  const elems = cache.elementsPerToken;
  const dtype = model.weightDtype, storage = model.weightStorage;
  // A quantized cache counts its codes and scales; an f32 one is reported at the weights' dtype.
  const bpt = cache.bytesPerToken(dtype);
  const params = model.paramCount();
  return {
    ...common(c, m.path, m.format, { attention, qkNorm: summary?.qkNorm ?? false, mlp: model.layers[0]?.mlp.summary() ?? String(c.intermediateSize), mla, mha2mla }),
    params, weightDtype: storage, weightBytes: isQuantDType(storage) ? Math.round((params * QUANT_BLOCK[storage].bytes) / QUANT_BLOCK[storage].elements) : params * bytesPerElement(dtype),
    kvCache: { quant: kvQuantName(m.kvQuant ?? null), elementsPerToken: elems, dtype, bytesPerToken: bpt, bytesAt4K: bpt * 4096, bytesAt32K: bpt * 32768, engineDtype: m.kvQuant ? kvQuantName(m.kvQuant) : model.kvDtype, engineBytesPerToken: engine.bytesPerToken('f32') },
  };
}

/** Elements of a tensor shape. */
function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The tensors the engine reads for these arguments: the embedding (a tied head once), the head
 * when untied, the final norm, and every tensor of layers 0..L−1 (extra layers such as DeepSeek's
 * multi-token-prediction block, and buffers such as rotary inv_freq, are not parameters it runs).
 */
function engineTensors(c: ModelArgs, tensors: ReadonlyMap<string, TensorHeader>): string[] {
  const embed = embeddingName({ has: (n) => tensors.has(n) }, c);
  const names = [embed, ...(c.tieWordEmbeddings ? [] : ['lm_head.weight']), 'model.norm.weight'];
  for (const n of names) if (!tensors.has(n)) throw new Error(`the checkpoint has no tensor "${n}"`);
  const emb = tensors.get(embed)!.shape;
  if (emb.length !== 2 || emb[0] !== c.vocabSize || emb[1] !== c.hiddenSize) throw new Error(`tensor "${embed}" has shape [${emb.join(', ')}], expected [${c.vocabSize}, ${c.hiddenSize}]`);
  for (const n of tensors.keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(n);
    if (m && Number(m[1]) < c.numLayers && !n.endsWith('.inv_freq')) names.push(n);
  }
  return names;
}

/**
 * `inspect`: the description of the model at `path` from its config and tensor headers alone
 * (safetensors headers, the GGUF directory, the llama2.c header): parameters and dtypes from the
 * shapes, the KV cache from the family's attention layout. Weights are never read, so a 16 GB
 * checkpoint needs no more memory than a small one; value checks (NaN/Inf) and the layers' own
 * shape checks happen when a command loads the model. `weights` (--weights) counts the matrices as
 * the engine would quantize them at load; `kvDtype` (--kv-dtype) is the engine's cache dtype.
 */
export function inspectModel(path: string, opts: { kvQuant?: KvQuant | null; weights?: QuantDType | null; kvDtype?: FloatDType } = {}): ModelDescription {
  const h = readModelHeaders(path);
  const c = h.config;
  const family = familyFor(c);
  const layout = family.attentionLayout(c);
  const kvQuant = opts.kvQuant ?? null;
  if (kvQuant && !layout.latent) throw new Error(`${path}: --kv-quant quantizes an MLA latent cache; this is a ${c.modelType} model with a GQA/MHA cache`);
  const mlaArgs = (c as ModelArgs & { mla?: MlaFields }).mla;
  if (mlaArgs?.semantics === 'stock') checkStockAttentionTensors({ has: (n) => h.tensors.has(n) }, c.numLayers, mlaArgs.qLoraRank !== null, mlaArgs.attentionBias ?? false);
  const names = engineTensors(c, h.tensors);
  const dtypes: Record<string, number> = {};
  let params = 0;
  for (const n of names) {
    const t = h.tensors.get(n)!;
    const k = numel(t.shape);
    params += k;
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + k;
  }
  const embDtype = h.tensors.get(names[0]!)!.dtype;
  if (!isWeightDType(embDtype)) throw new Error(`${path}: the embedding is stored as ${embDtype}; only F32, F16, BF16, Q8_0 and Q4_0 models can be run`);
  // KV bytes are reported at the weights' float dtype (a quantized model's is f32, as the engine's).
  const dtype: FloatDType = isQuantDType(embDtype) ? 'f32' : embDtype;
  const storage: WeightDType = opts.weights ?? embDtype;
  // The engine quantizes matrices (2-D tensors) at load with --weights; vectors keep their dtype.
  const stored = (x: string): number => {
    const t = h.tensors.get(x)!;
    return t.shape.length === 2 && opts.weights ? dtypeBytes(opts.weights, numel(t.shape)) : dtypeBytes(t.dtype, numel(t.shape));
  };
  // The cache as the engine would allocate it: one store per width, quantized or at the cache dtype.
  const widths = layout.cacheStores.flat();
  const report = widths.map((w) => createCacheStore(w, layout.latent ? kvQuant : null));
  const engine = widths.map((w) => createCacheStore(w, layout.latent ? kvQuant : null, opts.kvDtype ?? 'f32'));
  const elems = report.reduce((n, st) => n + st.width, 0);
  const bpt = report.reduce((n, st) => n + st.bytesPerToken(dtype), 0);
  const summary = layout.summary;
  const mla: ModelDescription['mla'] = summary.mla && { ...summary.mla, semantics: mlaArgs?.semantics ?? 'exact' };
  return {
    ...common(c, path, h.format, { attention: summary.label, qkNorm: summary.qkNorm ?? false, mlp: family.mlpSummary?.(c) ?? String(c.intermediateSize), mla, mha2mla: summary.mha2mla }),
    params, weightDtype: storage, weightBytes: names.reduce((n, x) => n + stored(x), 0),
    dtypes: opts.weights ? {} : dtypes, weightsRead: false,
    kvCache: {
      quant: kvQuantName(kvQuant), elementsPerToken: elems, dtype, bytesPerToken: bpt, bytesAt4K: bpt * 4096, bytesAt32K: bpt * 32768,
      engineDtype: kvQuant && layout.latent ? kvQuantName(kvQuant) : opts.kvDtype ?? 'f32', engineBytesPerToken: engine.reduce((n, st) => n + st.bytesPerToken('f32'), 0),
    },
  };
}

function isWeightDType(d: string): d is WeightDType {
  return d === 'f32' || d === 'f16' || d === 'bf16' || d === 'q8_0' || d === 'q4_0';
}

/** Bytes of `n` elements of a stored dtype (quantized: whole blocks; other types are refused above). */
function dtypeBytes(d: string, n: number): number {
  if (d === 'q8_0' || d === 'q4_0') return Math.round((n * QUANT_BLOCK[d].bytes) / QUANT_BLOCK[d].elements);
  return d === 'f32' || d === 'f16' || d === 'bf16' ? n * bytesPerElement(d) : 0;
}

/** What describeModel (from the built layers) and inspectModel (from the family's layout) tell apart. */
interface LayerParts {
  attention: string;
  qkNorm: boolean;
  mlp: string;
  mla: ModelDescription['mla'];
  mha2mla: ModelDescription['mha2mla'];
}

function common(c: ModelArgs, path: string, format: string, p: LayerParts) {
  const s = c.ropeScaling;
  const scaling = !s ? 'no scaling' : s.type === 'linear' ? `linear ×${s.factor}` :
    `llama3 ×${s.factor} (low ${s.lowFreqFactor}, high ${s.highFreqFactor}, original ${s.originalMaxPositionEmbeddings})`;
  const biases = [c.attentionBias && 'q/k/v', c.oBias && 'o', c.mlpBias && 'mlp'].filter(Boolean).join(', ') || 'none';
  return {
    path, format, modelType: p.mla || p.mha2mla ? String(c.raw.model_type) : c.modelType,
    layers: c.numLayers, hidden: c.hiddenSize, intermediate: c.intermediateSize, mlp: p.mlp, vocab: c.vocabSize,
    heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, attention: p.attention, qkNorm: p.qkNorm,
    rope: `theta ${c.ropeTheta}, ${scaling}`, tiedEmbeddings: c.tieWordEmbeddings, biases, maxPositions: c.maxPositionEmbeddings, mla: p.mla, mha2mla: p.mha2mla,
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

/** The weights' dtype, or each dtype's share when they are mixed (e.g. f32 norms beside bf16 matrices). */
function dtypeText(d: ModelDescription): string {
  const ds = Object.entries(d.dtypes ?? {});
  if (ds.length <= 1) return d.weightDtype;
  return ds.sort((a, b) => b[1] - a[1]).map(([t, n]) => `${t} ${(100 * n / d.params).toFixed(n / d.params < 0.01 ? 2 : 1)} %`).join(' + ');
}

export function formatModelReport(d: ModelDescription): string {
  const k = d.kvCache;
  const perLayer = k.elementsPerToken / d.layers;
  const shape = d.attention === 'MHA' || d.attention === 'GQA' || d.attention === 'MQA'
    ? `${d.layers} layers × 2 (K,V) × ${d.kvHeads} KV heads × ${d.headDim}`
    : d.mla?.kvLoraRanks || d.mla?.qkRopeHeadDims ? `Σ over ${d.layers} layers of latent (kv_lora_rank ${d.mla.kvLoraRanks ? `per layer ${d.mla.kvLoraRanks.join(', ')}` : d.mla.kvLoraRank} + qk_rope_head_dim ${d.mla.qkRopeHeadDims ? `per layer ${d.mla.qkRopeHeadDims.join(', ')}` : d.mla.qkRopeHeadDim})`
    : d.mla ? `${d.layers} layers × latent (kv_lora_rank ${d.mla.kvLoraRank} + qk_rope_head_dim ${d.mla.qkRopeHeadDim})`
    : d.mha2mla ? `${d.layers} layers × (${d.mha2mla.kvHeads} KV heads × 2·${d.mha2mla.ropePairsPerHead} RoPE key dims + latent ${d.mha2mla.kvLoraRank})`
    : `${d.layers} layers × ${perLayer}`;
  const m = d.mla, h = d.mha2mla;
  const attn = m
    ? `MLA: ${d.heads} heads, kv_lora_rank ${m.kvLoraRanks ? `per layer (max ${m.kvLoraRank}, Σ ${m.kvLoraRanks.reduce((a, b) => a + b, 0)})` : m.kvLoraRank}, qk_rope_head_dim ${m.qkRopeHeadDims ? `per layer (max ${m.qkRopeHeadDim}, Σ ${m.qkRopeHeadDims.reduce((a, b) => a + b, 0)})` : m.qkRopeHeadDim}, qk_nope_head_dim ${m.qkNopeHeadDim}, v_head_dim ${m.vHeadDim}, q_lora_rank ${m.qLoraRank ?? 'none'}; RoPE ${d.rope}\n             ${m.semantics === 'stock' ? 'stock DeepSeek-V3 semantics (latent RMSNorms, interleaved RoPE), as stock code computes it (`transmla validate` says which engines load it)' : 'exact variant (no latent norms; transmla only: `transmla export --target deepseek-v3` for stock engines)'}`
    : h ? `${d.attention}: ${d.heads} heads / ${h.kvHeads} KV heads, head_dim ${d.headDim}, ${h.ropePairsPerHead} RoPE pairs per KV head, kv_lora_rank ${h.kvLoraRank}; RoPE ${d.rope}`
    : `${d.attention}: ${d.heads} heads / ${d.kvHeads} KV heads, head_dim ${d.headDim}${d.qkNorm ? ', per-head q/k RMSNorm' : ''}; RoPE ${d.rope}; biases ${d.biases}`;
  const at = k.quant === 'none' ? `at ${k.dtype}` : `with ${k.quant} codes + f16 scales`;
  return [
    `model        ${d.path} (${d.format})`,
    `architecture ${d.modelType}: ${d.layers} layers, hidden ${d.hidden}, MLP ${d.mlp}, vocab ${d.vocab}`,
    `attention    ${attn}`,
    `parameters   ${fmtCount(d.params)} (${d.params.toLocaleString('en-US')}), ${dtypeText(d)} weights ${fmtBytes(d.weightBytes)}, ${d.tiedEmbeddings ? 'tied' : 'untied'} embeddings`,
    `context      ${d.maxPositions} positions (max_position_embeddings)`,
    `KV cache     ${k.bytesPerToken.toLocaleString('en-US')} B/token ${at} (${shape} = ${k.elementsPerToken} elements)`,
    `             4K context: ${fmtBytes(k.bytesAt4K)}   32K context: ${fmtBytes(k.bytesAt32K)}   (engine keeps ${k.engineDtype}: ${k.engineBytesPerToken.toLocaleString('en-US')} B/token)`,
    ...(d.weightsRead === false ? ['weights      not read: config and tensor headers only (values, e.g. NaN/Inf, are checked by the commands that load them: ppl, generate, serve)'] : []),
  ].join('\n');
}
