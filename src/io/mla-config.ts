// DeepSeek-V3 config.json for MLA checkpoints (algorithms.md §3.4): reading one for the engine,
// and writing the converter's from the source Llama config. The dense-MLP, RMSNorm, embedding
// and RoPE-base fields are the Llama ones, so reading normalises the file into a LlamaConfig
// (parsed by the Llama parser, which validates them) plus the MLA shape.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseYarn, type YarnScaling } from '../models/yarn.js';
import { HfConfigError, parseLlamaConfig, type LlamaConfig, type RopeScaling } from './hf-config.js';

export const MLA_MODEL_TYPES = ['deepseek_v3', 'deepseek_v2'] as const;

export interface MlaFields {
  kvLoraRank: number;
  qLoraRank: number | null;
  qkRopeHeadDim: number;
  qkNopeHeadDim: number;
  vHeadDim: number;
  /** true: q_pe/k_pe pair adjacent elements (DeepSeek); false: rotate-half. */
  ropeInterleave: boolean;
  /**
   * How the folder is run (mlaSemantics): 'exact' — the converter's exact variant (transmla.json
   * says so): no kv_a_layernorm required, biases wherever the checkpoint has them; 'stock' —
   * DeepSeek-V3's own semantics: kv_a_layernorm (and q_a_layernorm with q_lora_rank) required,
   * biases only where attention_bias allows them, YaRN with its mscale. Absent means 'exact'
   * for in-memory configs built by the converter.
   */
  semantics?: MlaSemantics;
  /** rope_scaling of type yarn (stock semantics only); the Llama part then has no rope scaling. */
  yarn?: YarnScaling | null;
  /** attention_bias of the config (stock semantics: q_a/kv_a/o biases allowed). */
  attentionBias?: boolean;
}

export type MlaSemantics = 'exact' | 'stock';

/** transmla.json `variant` of the strict (stock DeepSeek-V3) export. */
export const STOCK_VARIANT = 'deepseek-v3';

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
  const ours = report !== null && report.tool === 'transmla';
  if (ours && report.variant === STOCK_VARIANT) return 'stock';
  if (ours) return 'exact';
  return read('config.json')?.qk_latent_layernorm === false ? 'exact' : 'stock';
}

export interface MlaModelConfig {
  /** The Llama-shaped part (hidden sizes, norms, RoPE base/scaling, vocabulary, dtype, tie). */
  llama: LlamaConfig;
  mla: MlaFields;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** true when a parsed config.json declares an MLA (DeepSeek) model. */
export function isMlaConfigJson(json: unknown): boolean {
  return isObj(json) && (MLA_MODEL_TYPES as readonly unknown[]).includes(json.model_type);
}

export function parseMlaConfig(json: unknown, file: string, semantics: MlaSemantics = 'exact'): MlaModelConfig {
  if (!isObj(json)) throw new HfConfigError(`${file}: expected a JSON object`);
  const c = json;
  const err = (key: string, msg: string): never => { throw new HfConfigError(`${file}: ${key} ${msg}`); };
  if (!isMlaConfigJson(c)) err('model_type', `${JSON.stringify(c.model_type)} is not an MLA model type (${MLA_MODEL_TYPES.join(', ')})`);
  const int = (k: string, min: number): number => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) err(k, `must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const layers = int('num_hidden_layers', 1);
  // Only all-dense checkpoints (what the converter writes) run here: refuse MoE layers clearly.
  const experts = c.n_routed_experts;
  const firstDense = typeof c.first_k_dense_replace === 'number' ? c.first_k_dense_replace : 0;
  if (typeof experts === 'number' && experts > 0 && firstDense < layers) {
    err('n_routed_experts', `(${experts}) with first_k_dense_replace ${firstDense} < ${layers} layers declares mixture-of-experts layers, which this engine does not run`);
  }
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
  // The Llama parser validates the shared fields; MLA attention has no KV-head grouping, its
  // RoPE covers qk_rope_head_dim, and its biases are whatever the checkpoint holds.
  const llamaJson: Record<string, unknown> = {
    ...c,
    model_type: 'llama',
    architectures: ['LlamaForCausalLM'],
    num_key_value_heads: c.num_attention_heads,
    head_dim: mla.qkRopeHeadDim,
    attention_bias: false,
  };
  delete llamaJson.rope_parameters;
  if (yarn) delete llamaJson.rope_scaling;
  const llama = parseLlamaConfig(llamaJson, file);
  return { llama: { ...llama, raw: c }, mla };
}

export function readMlaConfig(folder: string): MlaModelConfig {
  const path = join(folder, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new HfConfigError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return parseMlaConfig(json, path, mlaSemantics(folder));
}

export interface MlaConfigWriteOptions extends Omit<MlaFields, 'ropeInterleave' | 'semantics' | 'yarn' | 'attentionBias'> {
  /** Whether any attention projection carries a bias (TransMLA's attention_bias flag). */
  attentionBias: boolean;
}

/**
 * The converted model's config.json: the source's keys, with DeepSeek-V3 identity and MLA
 * shape. All MLPs stay dense (first_k_dense_replace = layers; the MoE fields are set to
 * harmless values because some converters read them unconditionally). head_dim = d_R, as in
 * TransMLA, is what HF's rotary embedding reads for the RoPE width.
 */
export function mlaConfigJson(source: LlamaConfig, o: MlaConfigWriteOptions): Record<string, unknown> {
  const raw = { ...source.raw };
  for (const k of ['rope_parameters', 'pretraining_tp', 'auto_map', 'sliding_window', 'use_sliding_window', 'max_window_layers']) delete raw[k];
  return {
    ...raw,
    architectures: ['DeepseekV3ForCausalLM'],
    model_type: 'deepseek_v3',
    num_key_value_heads: source.numHeads,
    head_dim: o.qkRopeHeadDim,
    kv_lora_rank: o.kvLoraRank,
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
    first_k_dense_replace: source.numLayers,
    n_routed_experts: 1,
    n_shared_experts: 1,
    num_experts_per_tok: 1,
    moe_intermediate_size: source.intermediateSize,
    n_group: 1,
    topk_group: 1,
    routed_scaling_factor: 1.0,
    tie_word_embeddings: source.tieWordEmbeddings,
  };
}

/** The HF JSON form of a parsed rope scaling (written back top-level, as DeepSeek configs do). */
export function ropeScalingJson(s: RopeScaling | null): Record<string, unknown> | null {
  if (!s) return null;
  if (s.type === 'linear') return { rope_type: 'linear', factor: s.factor };
  return {
    rope_type: 'llama3',
    factor: s.factor,
    low_freq_factor: s.lowFreqFactor,
    high_freq_factor: s.highFreqFactor,
    original_max_position_embeddings: s.originalMaxPositionEmbeddings,
  };
}

// ---------------------------------------------------------------------------------------------
// The MHA2MLA variant (algorithms.md §4): MLA with a small RoPE key per KV head, which the
// DeepSeek layout cannot express, so it is its own model type. config.json is the source Llama
// config plus:
//   model_type "llama_mha2mla", architectures ["LlamaMHA2MLAForCausalLM"], transmla_variant "mha2mla";
//   kv_lora_rank          the latent c shared by all heads of a layer (values per token);
//   rope_pairs_per_head   r: frequency pairs each KV head keeps under RoPE (2r dims);
//   mha2mla_rope_pairs    [layer][kv head] → the r source frequency indices k ∈ [0, head_dim/2)
//                         kept, ascending; pair k rotates at the source's θ_k (with its scaling).
// num_key_value_heads and head_dim stay the source's. Per token and layer the cache holds
// G·2r + kv_lora_rank values.

export const MHA2MLA_MODEL_TYPE = 'llama_mha2mla';

export interface Mha2mlaFields {
  kvLoraRank: number;
  ropePairsPerHead: number;
  /** [layer][kvHead] → ascending frequency indices, ropePairsPerHead each. */
  ropePairs: number[][][];
}

export interface Mha2mlaModelConfig {
  llama: LlamaConfig;
  mha2mla: Mha2mlaFields;
}

/** true when a parsed config.json declares the MHA2MLA variant. */
export function isMha2mlaConfigJson(json: unknown): boolean {
  return isObj(json) && (json.transmla_variant === 'mha2mla' || json.model_type === MHA2MLA_MODEL_TYPE);
}

export function parseMha2mlaConfig(json: unknown, file: string): Mha2mlaModelConfig {
  if (!isObj(json)) throw new HfConfigError(`${file}: expected a JSON object`);
  const c = json;
  const err = (key: string, msg: string): never => { throw new HfConfigError(`${file}: ${key} ${msg}`); };
  if (c.transmla_variant !== 'mha2mla') err('transmla_variant', `must be "mha2mla", got ${JSON.stringify(c.transmla_variant)}`);
  // The Llama parser validates the shared fields (heads, KV heads, head_dim, RoPE base and scaling);
  // biases are whatever the checkpoint holds.
  const llama = parseLlamaConfig({ ...c, model_type: 'llama', architectures: ['LlamaForCausalLM'], attention_bias: false }, file);
  const int = (k: string, min: number, max: number): number => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) err(k, `must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const half = llama.headDim / 2;
  // At least one pair per head must be NoPE: the latent carries the NoPE keys.
  const r = int('rope_pairs_per_head', 0, half - 1);
  const kvLoraRank = int('kv_lora_rank', 1, Number.MAX_SAFE_INTEGER);
  const sel = c.mha2mla_rope_pairs;
  const L = llama.numLayers, G = llama.numKvHeads;
  if (!Array.isArray(sel) || sel.length !== L) err('mha2mla_rope_pairs', `must list ${L} layers`);
  const ropePairs = (sel as unknown[]).map((layer, l) => {
    if (!Array.isArray(layer) || layer.length !== G) err('mha2mla_rope_pairs', `[${l}] must list ${G} KV heads`);
    return (layer as unknown[]).map((head, g) => {
      const where = `[${l}][${g}]`;
      if (!Array.isArray(head) || head.length !== r) err('mha2mla_rope_pairs', `${where} must hold ${r} frequency indices`);
      const ks = head as unknown[];
      ks.forEach((k, i) => {
        if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 0 || k >= half) err('mha2mla_rope_pairs', `${where} index ${JSON.stringify(k)} is not in 0..${half - 1}`);
        if (i > 0 && (k as number) <= (ks[i - 1] as number)) err('mha2mla_rope_pairs', `${where} must be strictly ascending`);
      });
      return ks as number[];
    });
  });
  return { llama: { ...llama, raw: c }, mha2mla: { kvLoraRank, ropePairsPerHead: r, ropePairs } };
}

export function readMha2mlaConfig(folder: string): Mha2mlaModelConfig {
  const path = join(folder, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new HfConfigError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return parseMha2mlaConfig(json, path);
}

/** The MHA2MLA model's config.json: the source's keys plus the variant's identity and shape. */
export function mha2mlaConfigJson(source: LlamaConfig, f: Mha2mlaFields): Record<string, unknown> {
  const raw = { ...source.raw };
  for (const k of ['auto_map', 'pretraining_tp']) delete raw[k];
  return {
    ...raw,
    architectures: ['LlamaMHA2MLAForCausalLM'],
    model_type: MHA2MLA_MODEL_TYPE,
    transmla_variant: 'mha2mla',
    num_key_value_heads: source.numKvHeads,
    head_dim: source.headDim,
    kv_lora_rank: f.kvLoraRank,
    rope_pairs_per_head: f.ropePairsPerHead,
    mha2mla_rope_pairs: f.ropePairs,
    tie_word_embeddings: source.tieWordEmbeddings,
  };
}
