// What stock DeepSeek-V2/V3 code (transformers, vLLM, SGLang, llama.cpp's deepseek2) expects of
// an MLA checkpoint, in one place: the config keys, the tensors a dense model has, which biases
// exist, and the config our strict export writes. The engine checks stock folders against it
// (arch/deepseek.ts), the strict export writes it (export/deepseek-v3.ts), the validator reports
// against it (validate/rules.ts). The engines' own code behind each fact is cited in
// docs/stock-engines.md.
import type { FloatDType } from '../kernels/types.js';
import type { WeightSource } from '../tensor.js';
import { ropeScalingJson, type ModelArgs } from './args.js';
import { sourceMoe, stockDeepseekV2MoeConfig } from './deepseek-moe.js';

export const DEEPSEEK_MODEL_TYPES = ['deepseek_v3', 'deepseek_v2'] as const;
export const DEEPSEEK_ARCHITECTURES: Readonly<Record<string, string>> = {
  DeepseekV3ForCausalLM: 'deepseek_v3',
  DeepseekV2ForCausalLM: 'deepseek_v2',
};

/** transmla.json `variant` of the strict (stock DeepSeek-V3) export. */
export const STOCK_VARIANT = 'deepseek-v3';

/** The keys DeepseekV3Config (transformers) defines, plus PretrainedConfig's identity/dtype keys. */
export const STOCK_DEEPSEEK_V3_KEYS: readonly string[] = [
  'architectures', 'model_type', 'torch_dtype',
  'vocab_size', 'hidden_size', 'intermediate_size', 'moe_intermediate_size', 'num_hidden_layers',
  'num_attention_heads', 'num_key_value_heads', 'n_shared_experts', 'n_routed_experts', 'routed_scaling_factor',
  'kv_lora_rank', 'q_lora_rank', 'qk_rope_head_dim', 'v_head_dim', 'qk_nope_head_dim', 'n_group', 'topk_group',
  'num_experts_per_tok', 'first_k_dense_replace', 'norm_topk_prob', 'hidden_act', 'max_position_embeddings',
  'initializer_range', 'rms_norm_eps', 'use_cache', 'pad_token_id', 'bos_token_id', 'eos_token_id',
  'pretraining_tp', 'tie_word_embeddings', 'rope_theta', 'rope_scaling', 'rope_interleave',
  'attention_bias', 'attention_dropout',
];

/** Keys DeepSeek's own configs carry that vLLM reads, and PretrainedConfig's bookkeeping keys: ignored by none, harmful to none. */
export const STOCK_DEEPSEEK_EXTRA_KEYS: readonly string[] = [
  'rope_parameters', 'head_dim', 'moe_layer_freq', 'topk_method', 'scoring_func', 'aux_loss_alpha', 'seq_aux', 'ep_size',
  'num_nextn_predict_layers', 'quantization_config', 'dtype', 'transformers_version', '_name_or_path',
  'auto_map', 'use_return_dict', 'output_hidden_states', 'output_attentions', 'return_dict', 'is_encoder_decoder',
  'decoder_start_token_id', 'sep_token_id', 'bad_words_ids', 'max_length', 'id2label', 'label2id', 'problem_type',
  'tokenizer_class', 'task_specific_params', 'chunk_size_feed_forward', 'name_or_path',
];

/** Attention projections stock code builds without a bias whatever the config says. */
export const NEVER_BIASED = ['q_proj', 'q_b_proj', 'kv_b_proj'] as const;
/** Attention projections transformers builds with bias=attention_bias (vLLM/SGLang: never). */
export const BIASED_WITH_ATTENTION_BIAS = ['q_a_proj', 'kv_a_proj_with_mqa', 'o_proj'] as const;

/** The MLA shape of a DeepSeek config (validated integers). */
export interface StockDims {
  layers: number;
  hidden: number;
  heads: number;
  vocab: number;
  intermediate: number;
  kvLoraRank: number;
  qLoraRank: number | null;
  qkRopeHeadDim: number;
  qkNopeHeadDim: number;
  vHeadDim: number;
  /** Layers with a dense MLP (the rest are mixture-of-experts, whose tensors are not listed). */
  denseLayers: number;
}

export interface StockTensor {
  name: string;
  shape: number[];
  /** An RMSNorm weight (transformers/SGLang silently use ones when it is missing). */
  norm?: boolean;
}

/** Every tensor stock DeepseekV3 code creates for a model of these dimensions (lm_head and MoE experts aside). */
export function stockTensors(d: StockDims): StockTensor[] {
  const { hidden: D, heads: H, kvLoraRank: r, qkRopeHeadDim: dR, qkNopeHeadDim: dn, vHeadDim: dv, intermediate: I } = d;
  const out: StockTensor[] = [{ name: 'model.embed_tokens.weight', shape: [d.vocab, D] }, { name: 'model.norm.weight', shape: [D], norm: true }];
  for (let l = 0; l < d.layers; l++) {
    const p = `model.layers.${l}`, a = `${p}.self_attn`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [D], norm: true }, { name: `${p}.post_attention_layernorm.weight`, shape: [D], norm: true });
    if (d.qLoraRank === null) out.push({ name: `${a}.q_proj.weight`, shape: [H * (dn + dR), D] });
    else {
      out.push(
        { name: `${a}.q_a_proj.weight`, shape: [d.qLoraRank, D] },
        { name: `${a}.q_a_layernorm.weight`, shape: [d.qLoraRank], norm: true },
        { name: `${a}.q_b_proj.weight`, shape: [H * (dn + dR), d.qLoraRank] },
      );
    }
    out.push(
      { name: `${a}.kv_a_proj_with_mqa.weight`, shape: [r + dR, D] },
      { name: `${a}.kv_a_layernorm.weight`, shape: [r], norm: true },
      { name: `${a}.kv_b_proj.weight`, shape: [H * (dn + dv), r] },
      { name: `${a}.o_proj.weight`, shape: [D, H * dv] },
    );
    if (l < d.denseLayers) {
      out.push(
        { name: `${p}.mlp.gate_proj.weight`, shape: [I, D] },
        { name: `${p}.mlp.up_proj.weight`, shape: [I, D] },
        { name: `${p}.mlp.down_proj.weight`, shape: [D, I] },
      );
    }
  }
  return out;
}

/**
 * Stock DeepSeek-V3 semantics need the latent norms (HF would initialise missing ones to 1 and
 * warn; here a missing norm most likely means an exact-variant folder that lost its
 * transmla.json) and allow biases only on q_a_proj, kv_a_proj_with_mqa and o_proj, and only
 * with attention_bias: true (a stock loader would drop any other bias silently).
 */
export function checkStockAttentionTensors(src: Pick<WeightSource, 'has'>, layers: number, qLora: boolean, attentionBias: boolean): void {
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.self_attn`;
    const need = [`${p}.kv_a_layernorm.weight`, ...(qLora ? [`${p}.q_a_layernorm.weight`] : [])];
    for (const n of need) {
      if (!src.has(n)) {
        throw new Error(`stock DeepSeek-V3 folder without ${n}: stock code RMS-normalises the latent. If this is a folder written by \`transmla convert\` (the exact variant, no kv_a_layernorm), restore its transmla.json (or config.json's qk_latent_layernorm: false), which marks it as such`);
      }
    }
    for (const n of NEVER_BIASED.map((x) => `${p}.${x}.bias`)) if (src.has(n)) throw new Error(`stock DeepSeek-V3 has no ${n} (a stock loader would ignore it); this checkpoint cannot run in stock semantics`);
    if (!attentionBias) for (const n of BIASED_WITH_ATTENTION_BIAS.map((x) => `${p}.${x}.bias`)) if (src.has(n)) throw new Error(`${n} present but config attention_bias is not true: a stock loader would ignore it`);
  }
}

const TORCH_DTYPE: Record<FloatDType, string> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

/** The MLA shape our exports write. */
export interface MlaShapeFields {
  kvLoraRank: number;
  qLoraRank: number | null;
  qkRopeHeadDim: number;
  qkNopeHeadDim: number;
  vHeadDim: number;
}

/**
 * The stock config of an MLA model made from `c`: DeepSeek-V3 with dense MLPs, or for a
 * mixture-of-experts source the DeepSeek-V2 MoE layout (arch/deepseek-moe.ts).
 */
export function stockDeepseekConfig(c: ModelArgs, m: MlaShapeFields, dtype: FloatDType): Record<string, unknown> {
  const moe = sourceMoe(c);
  return moe ? stockDeepseekV2MoeConfig(c, moe, m, dtype) : stockDeepseekV3Config(c, m, dtype);
}

/** A stock DeepSeek-V3 config.json for an all-dense MLA model. */
export function stockDeepseekV3Config(c: ModelArgs, m: MlaShapeFields, dtype: FloatDType): Record<string, unknown> {
  const out: Record<string, unknown> = {
    architectures: ['DeepseekV3ForCausalLM'],
    model_type: 'deepseek_v3',
    torch_dtype: TORCH_DTYPE[dtype],
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    // MoE fields: no layer is MoE (first_k_dense_replace = num_hidden_layers); the values are
    // the smallest valid ones, for loaders that read them unconditionally.
    moe_intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numHeads,
    n_shared_experts: 1,
    n_routed_experts: 1,
    routed_scaling_factor: 1.0,
    kv_lora_rank: m.kvLoraRank,
    q_lora_rank: m.qLoraRank,
    qk_rope_head_dim: m.qkRopeHeadDim,
    v_head_dim: m.vHeadDim,
    qk_nope_head_dim: m.qkNopeHeadDim,
    n_group: 1,
    topk_group: 1,
    num_experts_per_tok: 1,
    first_k_dense_replace: c.numLayers,
    norm_topk_prob: true,
    hidden_act: 'silu',
    max_position_embeddings: c.maxPositionEmbeddings,
    initializer_range: 0.02,
    rms_norm_eps: c.rmsNormEps,
    use_cache: true,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    tie_word_embeddings: c.tieWordEmbeddings,
    rope_theta: c.ropeTheta,
    rope_scaling: ropeScalingJson(c.ropeScaling),
    rope_interleave: true,
    attention_bias: false,
    attention_dropout: 0.0,
  };
  const pad = c.raw.pad_token_id;
  if (typeof pad === 'number') out.pad_token_id = pad;
  return out;
}
