// DeepSeek-V3 config.json for MLA checkpoints (algorithms.md §3.4): reading one for the engine,
// and writing the converter's from the source Llama config. The dense-MLP, RMSNorm, embedding
// and RoPE-base fields are the Llama ones, so reading normalises the file into a LlamaConfig
// (parsed by the Llama parser, which validates them) plus the MLA shape.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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

export function parseMlaConfig(json: unknown, file: string): MlaModelConfig {
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
  const rs = c.rope_scaling;
  if (isObj(rs) && (rs.type === 'yarn' || rs.rope_type === 'yarn' || rs.type === 'deepseek_yarn')) {
    err('rope_scaling', 'of type yarn is not supported (its softmax mscale is not implemented)');
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
  return parseMlaConfig(json, path);
}

export interface MlaConfigWriteOptions extends Omit<MlaFields, 'ropeInterleave'> {
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
function ropeScalingJson(s: RopeScaling | null): Record<string, unknown> | null {
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
