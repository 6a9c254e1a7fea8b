// The DeepSeek-V2/V3 family: MLA attention (docs/methods.md#mla-target) with dense SwiGLU MLPs — the
// converter's output, and stock DeepSeek-V3 checkpoints with all-dense layers. A folder runs in
// one of two semantics (mlaSemantics): 'exact', transmla's own variant (no latent RMSNorm, biases
// wherever the checkpoint has them), or 'stock', DeepSeek-V3's code path (kv_a_layernorm and
// q_a_layernorm required, biases only where attention_bias allows, YaRN with its mscale).
// The dense-MLP, norm, embedding and RoPE-base fields are read as every family reads them.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MlaAttention, mlaSummary, type MlaShape } from '../models/mla-attention.js';
import { normWeight, type LayerBuilder } from '../models/decoder.js';
import { SwiGluMlp } from '../models/mlp.js';
import { RopeTable } from '../models/rope.js';
import { parseYarn, yarnAttentionFactor, yarnInvFreq, yarnSoftmaxFactor, type YarnScaling } from '../models/yarn.js';
import { MlaAttentionLayer } from '../train/layers/attention-mla.js';
import { MlpLayer } from '../train/layers/mlp.js';
import { MoeLayer } from '../train/layers/moe.js';
import { SharedExpertMoeLayer } from '../train/layers/moe-shared.js';
import type { TrainMlp } from '../train/layers/mlp.js';
import { deepseekMoeNames, mixtralMoeNames, MoeMlp, moeSummary, type MoeNames } from '../models/moe.js';
import { SharedExpertMoe, sharedMoeSummary } from '../models/moe-shared.js';
import type { Mlp } from '../models/mlp.js';
import type { WeightSource } from '../tensor.js';
import { parseMlaMoe, sourceMoe, type MlaMoe } from './deepseek-moe.js';
import { ConfigFields, HfConfigError, isObj, parseBaseFields, ropeScalingJson, type ModelArgs } from './args.js';
import { checkStockAttentionTensors, DEEPSEEK_ARCHITECTURES, DEEPSEEK_MODEL_TYPES, STOCK_VARIANT, type MlaShapeFields } from './deepseek-stock.js';
import { deepseek2ConfigJson, deepseek2MoeKey, deepseek2Tensors } from './deepseek-gguf.js';

/**
 * The exact variant's own identity: no stock loader takes it for a DeepSeek checkpoint (it has
 * no kv_a_layernorm and may carry biases stock code drops), while transmla runs, exports and
 * fine-tunes it. Folders written before it existed (model_type deepseek_v3 + transmla.json or
 * qk_latent_layernorm: false) still load as exact.
 */
export const EXACT_MODEL_TYPE = 'transmla_mla';
export const EXACT_ARCHITECTURE = 'TransmlaMlaForCausalLM';
const MODEL_TYPES: readonly string[] = [...DEEPSEEK_MODEL_TYPES, EXACT_MODEL_TYPE];
import type { Family } from './family.js';

export type MlaSemantics = 'exact' | 'stock';

export interface MlaFields extends MlaShapeFields {
  /** true: q_pe/k_pe pair adjacent elements (DeepSeek); false: rotate-half. */
  ropeInterleave: boolean;
  /** How the folder is run (mlaSemantics). Absent means 'exact' for in-memory configs built by the converter. */
  semantics?: MlaSemantics;
  /** rope_scaling of type yarn (stock semantics only); the base part then has no rope scaling. */
  yarn?: YarnScaling | null;
  /** attention_bias of the config (stock semantics: q_a/kv_a/o biases allowed). */
  attentionBias?: boolean;
  /**
   * Exact variant only: layer l's latent width (`kv_lora_ranks`, docs/methods.md#aware-budget);
   * kvLoraRank is then their maximum. Absent: every layer has kvLoraRank.
   */
  kvLoraRanks?: readonly number[] | null;
  /** Exact variant only: layer l's qk_rope_head_dim (`qk_rope_head_dims`); qkRopeHeadDim is their maximum. */
  qkRopeHeadDims?: readonly number[] | null;
}

/** Layer l's kv_lora_rank. */
export const layerKvRank = (m: Pick<MlaFields, 'kvLoraRank' | 'kvLoraRanks'>, l: number): number => m.kvLoraRanks?.[l] ?? m.kvLoraRank;
/** Layer l's qk_rope_head_dim. */
export const layerRopeDim = (m: Pick<MlaFields, 'qkRopeHeadDim' | 'qkRopeHeadDims'>, l: number): number => m.qkRopeHeadDims?.[l] ?? m.qkRopeHeadDim;

/**
 * DeepSeek arguments. As the engine sees them: num_key_value_heads = num_attention_heads (MLA has
 * no KV-head grouping) and headDim = qk_rope_head_dim (the RoPE width, as HF's rotary reads it).
 */
export interface MlaArgs extends ModelArgs {
  mla: MlaFields;
  /** The mixture-of-experts layers (null: every MLP dense). */
  moe: MlaMoe | null;
}

/**
 * Which semantics a DeepSeek-V3 folder runs in. The converter marks its exact variant twice:
 * config.json's `qk_latent_layernorm: false` (TransMLA's own key: "no latent RMSNorm") and a
 * transmla.json with `tool: "transmla"`. Either makes the folder exact, unless transmla.json's
 * `variant` is "deepseek-v3" (the strict export, which is stock by construction). A folder with
 * neither — a stock checkpoint, no custom keys — runs in stock semantics.
 */
export function mlaSemantics(folder: string): MlaSemantics {
  const read = (name: string): Record<string, unknown> | null => {
    const f = join(folder, name);
    if (!existsSync(f)) return null;
    let j: unknown;
    try {
      j = JSON.parse(readFileSync(f, 'utf8'));
    } catch (e) {
      throw new HfConfigError(`${f}: not valid JSON (${(e as Error).message}); it decides whether the folder is the exact variant or a stock DeepSeek-V3 checkpoint`);
    }
    return isObj(j) ? j : null;
  };
  const report = read('transmla.json');
  const config = read('config.json');
  if (config?.model_type === EXACT_MODEL_TYPE) return 'exact';
  const ours = report !== null && report.tool === 'transmla';
  if (ours && report.variant === STOCK_VARIANT) return 'stock';
  if (ours) return 'exact';
  return config?.qk_latent_layernorm === false ? 'exact' : 'stock';
}

/** true when a parsed config.json declares an MLA (DeepSeek) model. */
export function isMlaConfigJson(json: unknown): boolean {
  return isObj(json) && MODEL_TYPES.includes(json.model_type as string);
}

/** `moeKey`: how the MoE parser names a routing key (deepseek2 GGUFs: the file's own key). */
export function parseMlaConfig(json: unknown, file: string, semantics: MlaSemantics = 'exact', moeKey?: (k: string) => string): MlaArgs {
  if (!isObj(json)) throw new HfConfigError(`${file}: expected a JSON object`);
  const c = json;
  const err = (key: string, msg: string): never => { throw new HfConfigError(`${file}: ${key} ${msg}`); };
  if (!isMlaConfigJson(c)) err('model_type', `${JSON.stringify(c.model_type)} is not an MLA model type (${MODEL_TYPES.join(', ')})`);
  if (c.model_type === EXACT_MODEL_TYPE && semantics === 'stock') err('model_type', `${EXACT_MODEL_TYPE} is transmla's exact variant, which has no stock semantics`);
  const int = (k: string, min: number): number => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) err(k, `must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const layers = int('num_hidden_layers', 1);
  // Mixture-of-experts layers: Mixtral's routing only (deepseek-moe.ts refuses any other).
  const moe = parseMlaMoe(c, file, layers, c.model_type === EXACT_MODEL_TYPE || semantics === 'exact', moeKey);
  const rs = c.rope_scaling ?? c.rope_parameters;
  let yarn: YarnScaling | null = null;
  if (isObj(rs) && (rs.type === 'yarn' || rs.rope_type === 'yarn' || rs.type === 'deepseek_yarn')) {
    if (semantics === 'exact') err('rope_scaling', 'of type yarn is not supported in an exact-variant folder (transmla.json marks it; the converter never writes YaRN): remove transmla.json to run the folder as a stock DeepSeek-V3 checkpoint');
    const mpe = c.max_position_embeddings;
    if (typeof mpe !== 'number' || !(mpe > 0)) err('max_position_embeddings', `must be a positive number, got ${JSON.stringify(mpe)}`);
    yarn = parseYarn(rs, mpe as number, err);
  }
  const qLora = c.q_lora_rank;
  if (qLora !== null && qLora !== undefined && (typeof qLora !== 'number' || !Number.isSafeInteger(qLora) || qLora < 1)) {
    err('q_lora_rank', `must be null or a positive integer, got ${JSON.stringify(qLora)}`);
  }
  const ri = c.rope_interleave;
  if (ri !== undefined && ri !== null && typeof ri !== 'boolean') err('rope_interleave', `must be true or false, got ${JSON.stringify(ri)}`);
  const mla: MlaFields = {
    kvLoraRank: int('kv_lora_rank', 1),
    qLoraRank: (qLora as number | null | undefined) ?? null,
    qkRopeHeadDim: int('qk_rope_head_dim', 2),
    qkNopeHeadDim: int('qk_nope_head_dim', 0),
    vHeadDim: int('v_head_dim', 1),
    // DeepSeek's reference code and vLLM rotate adjacent pairs; HF says so with rope_interleave.
    ropeInterleave: ri === undefined || ri === null ? true : (ri as boolean),
    semantics,
    yarn,
    attentionBias: c.attention_bias === true,
  };
  if (mla.qkRopeHeadDim % 2 !== 0) err('qk_rope_head_dim', `must be even, got ${mla.qkRopeHeadDim}`);
  if (c.kv_lora_ranks !== undefined && c.kv_lora_ranks !== null) mla.kvLoraRanks = parseLayerWidths('kv_lora_ranks', 'kv_lora_rank', c.kv_lora_ranks, mla.kvLoraRank, layers, semantics, err);
  if (c.qk_rope_head_dims !== undefined && c.qk_rope_head_dims !== null) {
    mla.qkRopeHeadDims = parseLayerWidths('qk_rope_head_dims', 'qk_rope_head_dim', c.qk_rope_head_dims, mla.qkRopeHeadDim, layers, semantics, err);
    mla.qkRopeHeadDims.forEach((x, l) => { if (x % 2 !== 0) err('qk_rope_head_dims', `[${l}] must be even (RoPE pairs), got ${x}`); });
  }
  // The shared fields as every family reads them; MLA has no KV-head grouping, its RoPE covers
  // qk_rope_head_dim, and its biases are whatever the checkpoint holds.
  const base: Record<string, unknown> = { ...c, num_key_value_heads: c.num_attention_heads, head_dim: mla.qkRopeHeadDim };
  delete base.rope_parameters;
  if (yarn) delete base.rope_scaling;
  const f = new ConfigFields(base, file);
  const args = parseBaseFields(f, 2048);
  return { ...args, family: 'deepseek', modelType: c.model_type as string, attentionBias: false, oBias: false, mlpBias: f.bool('mlp_bias', false), slidingWindow: null, raw: c, mla, moe };
}

/**
 * `kv_lora_ranks` / `qk_rope_head_dims`: one width per layer, each in [1, the uniform key], the
 * largest equal to it (so the one stock key still says what the widest layer needs). Only the
 * exact variant has them: stock code builds every layer from kv_lora_rank and qk_rope_head_dim.
 */
function parseLayerWidths(key: string, maxKey: string, v: unknown, max: number, layers: number, semantics: MlaSemantics, err: (key: string, msg: string) => never): number[] {
  if (semantics === 'stock') err(key, `is not a DeepSeek-V3 key: stock code builds every layer with ${maxKey}; per-layer widths exist only in the exact variant (model_type transmla_mla), and \`transmla export --target deepseek-v3\` pads them to the largest`);
  if (!Array.isArray(v) || v.length !== layers) err(key, `must be an array of num_hidden_layers = ${layers} integers, got ${JSON.stringify(v)}`);
  const xs = v as unknown[];
  xs.forEach((r, l) => {
    if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 1 || r > max) err(key, `[${l}] must be an integer in [1, ${maxKey} = ${max}], got ${JSON.stringify(r)}`);
  });
  const top = Math.max(...(xs as number[]));
  if (top !== max) err(key, `has largest value ${top}; ${maxKey} must equal it (it is ${max})`);
  return xs as number[];
}

export function readMlaConfig(folder: string): MlaArgs {
  const path = join(folder, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new HfConfigError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return parseMlaConfig(json, path, mlaSemantics(folder));
}

export interface MlaConfigWriteOptions extends MlaShapeFields {
  /** Whether any attention projection carries a bias (TransMLA's attention_bias flag). */
  attentionBias: boolean;
  /** Per-layer latent widths (kv_lora_ranks; kvLoraRank must be their maximum); absent: uniform. */
  kvLoraRanks?: readonly number[] | null;
  /** Per-layer RoPE widths (qk_rope_head_dims; qkRopeHeadDim must be their maximum); absent: uniform. */
  qkRopeHeadDims?: readonly number[] | null;
}

/**
 * The exact variant's config.json: the source's keys, with the exact variant's own identity and
 * DeepSeek-V3's MLA shape keys.
 * All MLPs stay dense (first_k_dense_replace = layers; the MoE fields are set to harmless
 * values because some converters read them unconditionally). head_dim = d_R, as in TransMLA,
 * is what HF's rotary embedding reads for the RoPE width.
 */
export function mlaConfigJson(source: ModelArgs, o: MlaConfigWriteOptions): Record<string, unknown> {
  const raw = { ...source.raw };
  for (const k of ['rope_parameters', 'pretraining_tp', 'auto_map', 'sliding_window', 'use_sliding_window', 'max_window_layers']) delete raw[k];
  return {
    ...raw,
    architectures: [EXACT_ARCHITECTURE],
    model_type: EXACT_MODEL_TYPE,
    num_key_value_heads: source.numHeads,
    head_dim: o.qkRopeHeadDim,
    kv_lora_rank: o.kvLoraRank,
    ...(o.kvLoraRanks ? { kv_lora_ranks: [...o.kvLoraRanks] } : {}),
    ...(o.qkRopeHeadDims ? { qk_rope_head_dims: [...o.qkRopeHeadDims] } : {}),
    q_lora_rank: o.qLoraRank,
    qk_rope_head_dim: o.qkRopeHeadDim,
    qk_nope_head_dim: o.qkNopeHeadDim,
    v_head_dim: o.vHeadDim,
    rope_interleave: true,
    rope_theta: source.ropeTheta,
    rope_scaling: ropeScalingJson(source.ropeScaling),
    attention_bias: o.attentionBias,
    qk_latent_layernorm: false,
    hidden_act: 'silu',
    // A Mixtral source keeps its own MoE keys (num_local_experts, num_experts_per_tok) and
    // tensor names; the dense filler below would contradict them.
    ...(sourceMoe(source) ? {} : {
      first_k_dense_replace: source.numLayers,
      n_routed_experts: 1,
      n_shared_experts: 1,
      num_experts_per_tok: 1,
      moe_intermediate_size: source.intermediateSize,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1.0,
    }),
    tie_word_embeddings: source.tieWordEmbeddings,
  };
}

/** The RoPE table of an MLA model (of width dR: a layer's own): the converter's frequencies, YaRN's, or θ^(−2i/d_R) with the base scaling. */
export function mlaRope(c: MlaArgs, invFreq?: Float64Array, dR = c.mla.qkRopeHeadDim): RopeTable {
  const m = c.mla, yarn = m.yarn ?? null;
  if (invFreq) {
    if (invFreq.length * 2 !== dR) throw new Error(`${invFreq.length} RoPE frequencies for qk_rope_head_dim ${dR}`);
    return new RopeTable(invFreq);
  }
  return yarn ? new RopeTable(yarnInvFreq(dR, c.ropeTheta, yarn), yarnAttentionFactor(yarn))
    : RopeTable.create(dR, c.ropeTheta, c.ropeScaling);
}

/** Layer l's attention shape (l omitted: the widest layer's, as kv_lora_rank states it). */
function mlaShape(c: MlaArgs, l?: number): MlaShape {
  const m = c.mla;
  return {
    nHeads: c.numHeads, qkNopeHeadDim: m.qkNopeHeadDim, qkRopeHeadDim: l === undefined ? m.qkRopeHeadDim : layerRopeDim(m, l), vHeadDim: m.vHeadDim,
    kvLoraRank: l === undefined ? m.kvLoraRank : layerKvRank(m, l), qLoraRank: m.qLoraRank,
  };
}

function moeNames(moe: MlaMoe, layerPrefix: string): MoeNames {
  return moe.naming === 'mixtral' ? mixtralMoeNames(layerPrefix) : deepseekMoeNames(layerPrefix);
}

/** Layer l's MLP: dense SwiGLU, or the routed experts (plus the shared ones) from first_k_dense_replace on. */
function mlaMlp(c: MlaArgs, src: WeightSource, l: number): Mlp {
  const p = `model.layers.${l}`, moe = c.moe, D = c.hiddenSize;
  if (!moe || l < moe.firstDense) return SwiGluMlp.load(src, `${p}.mlp`, D, c.intermediateSize, c.mlpBias);
  const routed = MoeMlp.load(src, moeNames(moe, p), { hidden: D, expertInter: moe.expertInter, numExperts: moe.numExperts, topK: moe.topK });
  if (moe.sharedExperts === 0) return routed;
  return new SharedExpertMoe(routed, SwiGluMlp.load(src, `${p}.mlp.shared_experts`, D, moe.expertInter * moe.sharedExperts, false));
}

export const deepseek: Family<MlaArgs> = {
  id: 'deepseek',
  modelTypes: MODEL_TYPES,
  architectures: { ...DEEPSEEK_ARCHITECTURES, [EXACT_ARCHITECTURE]: EXACT_MODEL_TYPE },
  claims: isMlaConfigJson,
  parse: (json, file, ctx) => parseMlaConfig(json, file, ctx.folder ? mlaSemantics(ctx.folder) : 'exact'),
  engineLayers(c, opts = {}): LayerBuilder {
    const m = c.mla;
    const stock = m.semantics === 'stock';
    const yarn = m.yarn ?? null;
    if (yarn && !stock) throw new Error('rope_scaling yarn is only supported for stock DeepSeek-V3 folders');
    if (opts.ropeInvFreq && m.qkRopeHeadDims) throw new Error('one set of RoPE frequencies cannot serve per-layer qk_rope_head_dims');
    // One table per RoPE width (per-layer widths: each layer's own, θ^(−2i/d_R,l)).
    const ropes = new Map<number, RopeTable>();
    const ropeOf = (dR: number): RopeTable => ropes.get(dR) ?? ropes.set(dR, mlaRope(c, opts.ropeInvFreq, dR)).get(dR)!;
    // DeepseekV3Attention: qk_head_dim^−½, times mscale(factor, mscale_all_dim)² under YaRN.
    const scaleOf = (dR: number): number => (yarn ? yarnSoftmaxFactor(yarn) : 1) / Math.sqrt(m.qkNopeHeadDim + dR);
    const base = { hidden: c.hiddenSize, normEps: c.rmsNormEps, ropeLayout: m.ropeInterleave ? ('interleaved' as const) : ('half' as const) };
    const D = c.hiddenSize;
    let checked = false;
    return (src, l) => {
      if (stock && !checked) { checkStockAttentionTensors(src, c.numLayers, m.qLoraRank !== null, m.attentionBias ?? false); checked = true; }
      const p = `model.layers.${l}`;
      const inputNorm = normWeight(src, `${p}.input_layernorm.weight`, D);
      const shape = mlaShape(c, l);
      const attn = MlaAttention.load(src, `${p}.self_attn`, { ...shape, ...base, scale: scaleOf(shape.qkRopeHeadDim) }, ropeOf(shape.qkRopeHeadDim));
      if (opts.mode) attn.mode = opts.mode;
      return { inputNorm, attn, postNorm: normWeight(src, `${p}.post_attention_layernorm.weight`, D), mlp: mlaMlp(c, src, l) };
    };
  },
  // One latent row [c | k_pe] per token and layer (MlaAttention.createCache).
  attentionLayout: (c) => ({
    summary: mlaSummary(mlaShape(c), c.mla.kvLoraRanks, c.mla.qkRopeHeadDims),
    latent: true, cacheStores: Array.from({ length: c.numLayers }, (_, l) => [layerKvRank(c.mla, l) + layerRopeDim(c.mla, l)]),
  }),
  // Layer 0's MLP, as describeModel names it from the built layer (mlaMlp).
  mlpSummary(c) {
    const moe = c.moe;
    if (!moe || moe.firstDense > 0) return String(c.intermediateSize);
    const routed = moeSummary(moe.numExperts, moe.expertInter, moe.topK);
    return moe.sharedExperts === 0 ? routed : sharedMoeSummary(routed, moe.expertInter * moe.sharedExperts);
  },
  trainLayers(be, ps, c) {
    const m = c.mla;
    const ropeOf = (dR: number): RopeTable => RopeTable.create(dR, c.ropeTheta, c.ropeScaling);
    const layout = m.ropeInterleave ? 'interleaved' : 'half';
    const moe = c.moe, D = c.hiddenSize;
    const mlp = (l: number, prefix: string): TrainMlp => {
      if (!moe || l < moe.firstDense) return new MlpLayer(be, ps, `${prefix}.mlp`, D, c.intermediateSize);
      const routed = new MoeLayer(be, ps, moeNames(moe, prefix), { hidden: D, expertInter: moe.expertInter, numExperts: moe.numExperts, topK: moe.topK });
      if (moe.sharedExperts === 0) return routed;
      return new SharedExpertMoeLayer(be, routed, new MlpLayer(be, ps, `${prefix}.mlp.shared_experts`, D, moe.expertInter * moe.sharedExperts), D);
    };
    return (l, prefix) => {
      const shape = mlaShape(c, l);
      return { attn: new MlaAttentionLayer(be, ps, `${prefix}.self_attn`, { ...shape, hidden: c.hiddenSize, normEps: c.rmsNormEps }, ropeOf(shape.qkRopeHeadDim), layout), mlp: mlp(l, prefix) };
    };
  },
  // Every self_attn tensor except o_proj: the conversion rewrote them and kept o_proj verbatim.
  attentionParams: (n) => /\.self_attn\./.test(n) && !/\.self_attn\.o_proj\./.test(n),
  conversions: { transmla: 'it is already an MLA model', mha2mla: 'it is already an MLA model' },
  // Stock-semantics folders (a strict export, or a DeepSeek checkpoint) go to llama.cpp's deepseek2;
  // what that exporter refuses (YaRN, llama3 scaling, biases) is reported when it runs.
  // llama.cpp's deepseek2 files read back as stock-semantics models (dense or MoE layers).
  gguf: {
    archs: ['deepseek2'],
    readArgs: (f, arch, path) => parseMlaConfig(deepseek2ConfigJson(f, arch, path), `${path} (deepseek2 metadata)`, 'stock', deepseek2MoeKey(arch)),
    tensors: (c, _arch, embedName, f) => {
      // The layout read depends on the file (attn_k_b/attn_v_b or the legacy attn_kv_b); export/gguf-deepseek2.ts writes its own.
      if (!f) throw new Error('deepseek2 tensors are listed from a GGUF file being read; export/gguf-deepseek2.ts writes deepseek2 files');
      return deepseek2Tensors(c, f, embedName);
    },
  },
  ggufExport: (c) => c.mla.semantics === 'exact'
    ? 'the exact MLA variant (no kv_a_layernorm) has no llama.cpp form; `transmla export <folder> --target deepseek-v3` writes the stock folder llama.cpp runs (as deepseek2)'
    : true,
};
