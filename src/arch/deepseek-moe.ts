// Mixture-of-experts layers of MLA folders (docs/stock-engines.md#moe-routing): which layers are
// MoE, the routing the config asks for, and the DeepSeek-V2 config a converted Mixtral becomes.
//
// Two forms are read:
//   - transmla's exact variant of a Mixtral source (model_type transmla_mla): the source's keys
//     num_local_experts / num_experts_per_tok and its tensor names (block_sparse_moe.*) are kept;
//   - stock DeepSeek-V2/V3 configs: n_routed_experts, num_experts_per_tok, moe_intermediate_size,
//     n_shared_experts, first_k_dense_replace, moe_layer_freq, scoring_func, topk_method,
//     norm_topk_prob, routed_scaling_factor, n_group, topk_group; tensors mlp.gate,
//     mlp.experts.N.{gate,up,down}_proj, mlp.shared_experts.{gate,up,down}_proj.
// The engine computes Mixtral's routing (models/moe.ts: softmax over all experts, top-k,
// renormalised): a stock config asking for anything else is refused with the field that differs.
//
// What the engines read (the code, not their docs):
//   vLLM vllm/model_executor/models/deepseek_v2.py @002d6073: a layer is MoE when n_routed_experts
//     is not None, layer ≥ first_k_dense_replace and layer % moe_layer_freq == 0; routing
//     scoring_func (default softmax), grouped top-k over n_group/topk_group, renormalize =
//     norm_topk_prob, routed_scaling_factor; no shared expert when n_shared_experts is None.
//   SGLang python/sglang/srt/models/deepseek_v2.py @3e4a39ee: DeepseekV2MoE builds shared_experts
//     only when n_shared_experts is not None, yet _forward_shared_experts calls it whenever no
//     shared expert is fused (AttributeError), and the fused path adds n_shared_experts to top_k
//     (TypeError on None): SGLang needs n_shared_experts ≥ 1.
//   transformers src/transformers/models/deepseek_v2/modeling_deepseek_v2.py @0233e509:
//     DeepseekV2Moe softmax → top-k → × routed_scaling_factor, never renormalised, and adds
//     shared_experts(x) unconditionally; DeepseekV3 (modeling_deepseek_v3.py) scores with a sigmoid.
// Hence the export writes n_shared_experts 1 with an all-zero shared expert (it adds exactly 0),
// which every engine above loads, and llama.cpp's deepseek2 (which always builds one) too.
import { HfConfigError, ropeScalingJson, type ModelArgs } from './args.js';
import type { FloatDType } from '../kernels/types.js';

/** Which tensor names a folder's experts use. */
export type MoeNaming = 'mixtral' | 'deepseek';

/** The MoE layers of an MLA folder (the engine's view: Mixtral routing). */
export interface MlaMoe {
  naming: MoeNaming;
  numExperts: number;
  topK: number;
  /** Width of each routed expert (moe_intermediate_size; Mixtral: intermediate_size). */
  expertInter: number;
  /** Shared experts (n_shared_experts; 0 when null), each expertInter wide, in one SwiGLU. */
  sharedExperts: number;
  /** Layers before this one are dense (first_k_dense_replace). */
  firstDense: number;
}

/** The routing a Mixtral source has, as MoE widths (null for dense sources). */
export interface SourceMoe {
  numExperts: number;
  topK: number;
  expertInter: number;
}

/** A source's mixture of experts, when its family has one (Mixtral, or an MLA folder with MoE layers). */
export function sourceMoe(args: ModelArgs): SourceMoe | null {
  const a = args as ModelArgs & { moe?: { numExperts: number; topK: number; expertInter?: number } | null };
  if (!a.moe) return null;
  return { numExperts: a.moe.numExperts, topK: a.moe.topK, expertInter: a.moe.expertInter ?? args.intermediateSize };
}

/**
 * The MoE layers a DeepSeek/exact config declares (null when all layers are dense); refuses routing
 * the engine does not compute. `keyName` names a key in messages (a GGUF's own key, when the config was read from one).
 */
export function parseMlaMoe(c: Record<string, unknown>, file: string, layers: number, exact: boolean, keyName: (k: string) => string = (k) => k): MlaMoe | null {
  const err = (key: string, msg: string): never => { throw new HfConfigError(`${file}: ${keyName(key)} ${msg}`); };
  const posInt = (k: string): number => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) err(k, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  if (exact && c.num_local_experts !== undefined && c.num_local_experts !== null) {
    const E = posInt('num_local_experts'), k = posInt('num_experts_per_tok');
    if (k > E) err('num_experts_per_tok', `(${k}) exceeds num_local_experts (${E})`);
    return { naming: 'mixtral', numExperts: E, topK: k, expertInter: posInt('intermediate_size'), sharedExperts: 0, firstDense: 0 };
  }
  const experts = c.n_routed_experts;
  if (experts === undefined || experts === null) return null;
  const firstDense = typeof c.first_k_dense_replace === 'number' ? c.first_k_dense_replace : 0;
  if (typeof experts !== 'number' || experts < 1 || firstDense >= layers) return null;
  const E = posInt('n_routed_experts'), k = posInt('num_experts_per_tok');
  if (k > E) err('num_experts_per_tok', `(${k}) exceeds ${keyName('n_routed_experts')} (${E})`);
  const why = (key: string, got: unknown, want: string): never =>
    err(key, `is ${got === undefined ? 'absent' : JSON.stringify(got)}: this engine runs mixture-of-experts layers with Mixtral's routing only (${want}; docs/stock-engines.md#moe-routing)`);
  const freq = c.moe_layer_freq ?? 1;
  if (freq !== 1) why('moe_layer_freq', freq, 'every layer from first_k_dense_replace on is MoE: moe_layer_freq 1');
  const scoring = c.scoring_func ?? 'softmax';
  if (scoring !== 'softmax') why('scoring_func', scoring, 'softmax scores');
  const method = c.topk_method ?? 'greedy';
  const groups = c.n_group ?? 1, topkGroup = c.topk_group ?? 1;
  if (method !== 'greedy' && !(method === 'group_limited_greedy' && groups === 1 && topkGroup === 1)) why('topk_method', method, 'greedy top-k (or one group)');
  if (groups !== 1 && groups !== null) why('n_group', groups, 'one expert group');
  if (topkGroup !== 1 && topkGroup !== null) why('topk_group', topkGroup, 'one expert group');
  // Even at top-1: unrenormalised, the one weight is its probability, not 1.
  if (c.norm_topk_prob !== true) why('norm_topk_prob', c.norm_topk_prob, `the top-k weights renormalised to sum 1: ${keyName('norm_topk_prob')} true`);
  const scale = c.routed_scaling_factor ?? 1;
  if (scale !== 1) why('routed_scaling_factor', scale, `unscaled expert weights: ${keyName('routed_scaling_factor')} 1`);
  const shared = c.n_shared_experts ?? 0;
  if (typeof shared !== 'number' || !Number.isSafeInteger(shared) || shared < 0) err('n_shared_experts', `must be null or an integer ≥ 0, got ${JSON.stringify(shared)}`);
  return { naming: 'deepseek', numExperts: E, topK: k, expertInter: posInt('moe_intermediate_size'), sharedExperts: shared as number, firstDense: Math.max(0, firstDense) };
}

const TORCH_DTYPE: Record<FloatDType, string> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

/** Shared experts the stock export writes (all zero; see the header). */
export const STOCK_SHARED_EXPERTS = 1;

/**
 * A stock DeepSeek-V2 config.json for an MLA model whose every layer is a Mixtral MoE: the keys
 * transformers' DeepseekV2Config defines, with Mixtral's routing spelled as vLLM and SGLang read it.
 */
export function stockDeepseekV2MoeConfig(c: ModelArgs, moe: SourceMoe, m: { kvLoraRank: number; qLoraRank: number | null; qkRopeHeadDim: number; qkNopeHeadDim: number; vHeadDim: number }, dtype: FloatDType): Record<string, unknown> {
  const out: Record<string, unknown> = {
    architectures: ['DeepseekV2ForCausalLM'],
    model_type: 'deepseek_v2',
    torch_dtype: TORCH_DTYPE[dtype],
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: moe.expertInter,
    moe_intermediate_size: moe.expertInter,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numHeads,
    n_shared_experts: STOCK_SHARED_EXPERTS,
    n_routed_experts: moe.numExperts,
    routed_scaling_factor: 1.0,
    kv_lora_rank: m.kvLoraRank,
    q_lora_rank: m.qLoraRank,
    qk_rope_head_dim: m.qkRopeHeadDim,
    v_head_dim: m.vHeadDim,
    qk_nope_head_dim: m.qkNopeHeadDim,
    topk_method: 'greedy',
    n_group: 1,
    topk_group: 1,
    num_experts_per_tok: moe.topK,
    moe_layer_freq: 1,
    first_k_dense_replace: 0,
    norm_topk_prob: true,
    scoring_func: 'softmax',
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
    attention_bias: false,
    attention_dropout: 0.0,
  };
  const pad = c.raw.pad_token_id;
  if (typeof pad === 'number') out.pad_token_id = pad;
  return out;
}
