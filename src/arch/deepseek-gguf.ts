// Reading llama.cpp deepseek2 GGUFs (what `transmla export --target gguf` writes, and dense
// DeepSeek GGUFs from llama.cpp's converter) as the DeepSeek family's stock semantics: the
// metadata becomes the equivalent stock config.json, the tensors get their HF names back.
// The layout facts are those export/gguf-deepseek2.ts writes (docs/stock-engines.md#llama-cpp):
// - MLA form (attention.key_length_mla present): head_count_kv 1; key_length_mla = qk_nope +
//   qk_rope, value_length_mla = v_head_dim; kv_b_proj is split into attn_k_b [H, r, d_nope]
//   (W_UK^h transposed) and attn_v_b [H, d_v, r], joined back here;
// - legacy form (no key_length_mla): head_count_kv = H, key_length = qk_nope + qk_rope,
//   value_length = v_head_dim, and kv_b_proj stored whole as attn_kv_b;
// - q_lora_rank 0 or absent: a plain attn_q; rope.dimension_count = qk_rope_head_dim; q_pe/k_pe
//   rows in DeepSeek's interleaved order (llama.cpp's "normal" RoPE), so nothing is permuted.
// - mixture-of-experts layers (il ≥ leading_dense_block_count, expert_count > 0): router
//   ffn_gate_inp [E, D], experts stacked [E, …] in ffn_{gate,up,down}_exps, one shared SwiGLU
//   ffn_{gate,up,down}_shexp (expert_feed_forward_length · expert_shared_count wide); the routing
//   keys become the stock config's (n_routed_experts, scoring_func, norm_topk_prob, …), so the
//   family's MoE parser refuses what the engine does not compute, naming the GGUF key.
//   llama.cpp's reading (src/models/deepseek2.cpp, src/llama-graph.cpp build_moe_ffn, at
//   de3ff815, the version node-llama-cpp bundles): leading_dense_block_count defaults to 0;
//   expert_gating_func absent or 0 means softmax; expert_weights_norm defaults to false;
//   expert_weights_scale 0 or 1 leaves the weights unscaled; expert_group_count > 1 selects
//   groups first; an exp_probs_b bias shifts the selection (DeepSeek-V3's noaux_tc).
// YaRN is refused by name: this engine runs deepseek2 models without RoPE scaling only.
import type { FloatData } from '../kernels/types.js';
import { GgufError, type GgufFile } from '../io/gguf.js';
import { f32Decimal, type GgufTensorSpec } from '../io/gguf-model.js';
import { deepseekMoeNames } from '../models/moe.js';
import type { ModelArgs } from './args.js';
import type { MlaMoe } from './deepseek-moe.js';
import type { MlaShapeFields } from './deepseek-stock.js';
import { moeGgufTensors } from './mixtral.js';

/** Tensor names of llama.cpp's MoE deepseek2 layers (router, routed and shared experts, selection bias). */
const EXPERT_TENSOR = /^blk\.\d+\.(ffn_gate_inp|ffn_(gate|up|down|gate_up)_(exps|shexp)|exp_probs_b)\./;

/** llama.cpp's expert_gating_func values (LLAMA_EXPERT_GATING_FUNC_TYPE_*, src/llama-hparams.h), as scoring_func names. */
const GATING_FUNC: Record<number, string> = { 1: 'softmax', 2: 'sigmoid', 3: 'softmax_weight', 4: 'sqrt_softplus' };

/** The deepseek2 GGUF key each stock MoE config key is read from (errors name the key in the file). */
const MOE_KEYS: Record<string, string> = {
  n_routed_experts: 'expert_count', num_experts_per_tok: 'expert_used_count', moe_intermediate_size: 'expert_feed_forward_length',
  n_shared_experts: 'expert_shared_count', first_k_dense_replace: 'leading_dense_block_count', scoring_func: 'expert_gating_func',
  norm_topk_prob: 'expert_weights_norm', routed_scaling_factor: 'expert_weights_scale', n_group: 'expert_group_count', topk_group: 'expert_group_used_count',
};

/** A stock config key's deepseek2 GGUF name (for the MoE parser's messages). */
export function deepseek2MoeKey(arch: string): (configKey: string) => string {
  return (k) => (MOE_KEYS[k] ? `${arch}.${MOE_KEYS[k]}` : k);
}

/** The stock DeepSeek-V3 config.json a deepseek2 GGUF's metadata describes (parsed by the family as a stock folder's). */
export function deepseek2ConfigJson(f: GgufFile, arch: string, path: string): Record<string, unknown> {
  const fail = (msg: string): never => { throw new GgufError(`${path}: ${msg}`); };
  const opt = (k: string): number | undefined => f.getNumber(`${arch}.${k}`);
  const u = (k: string): number => {
    const v = f.requireNumber(`${arch}.${k}`);
    if (!Number.isSafeInteger(v) || v <= 0) fail(`${arch}.${k} = ${v} must be a positive integer`);
    return v;
  };
  const L = u('block_count'), H = u('attention.head_count'), D = u('embedding_length');
  const experts = opt('expert_count') ?? 0;
  // llama.cpp's default is 0 (every layer MoE); files without experts and without the key stay dense.
  const dense = opt('leading_dense_block_count') ?? (experts > 0 ? 0 : L);
  const isMoe = experts > 0 && dense < L;
  const bias = f.tensors.find((t) => /\.exp_probs_b\./.test(t.name));
  if (bias) fail(`tensor ${bias.name} biases the expert selection (DeepSeek-V3's noaux_tc routing); this engine runs mixture-of-experts layers with Mixtral's routing only (docs/stock-engines.md#moe-routing)`);
  const stray = isMoe ? undefined : f.tensors.find((t) => EXPERT_TENSOR.test(t.name));
  if (stray) fail(`tensor ${stray.name} belongs to a mixture-of-experts layer, but the metadata declares none (${arch}.expert_count ${experts}, leading_dense_block_count ${dense} of ${L} blocks)`);
  const scaling = f.getString(`${arch}.rope.scaling.type`);
  let ropeScaling: Record<string, unknown> | null = null;
  if (scaling === 'linear') {
    const factor = opt('rope.scaling.factor');
    if (factor !== undefined && factor !== 1) ropeScaling = { type: 'linear', factor: f32Decimal(factor) };
  } else if (scaling !== undefined && scaling !== 'none') {
    fail(`RoPE scaling "${scaling}" is not supported for deepseek2 GGUFs (the engine's YaRN is checked against stock DeepSeek folders only)`);
  }
  const r = u('attention.kv_lora_rank');
  const qLora = opt('attention.q_lora_rank') ?? 0;
  const dR = u('rope.dimension_count');
  const kvHeads = opt('attention.head_count_kv') ?? H;
  const mla = opt('attention.key_length_mla') !== undefined;
  if (mla && kvHeads !== 1) fail(`${arch}.attention.head_count_kv is ${kvHeads}; the MLA form (key_length_mla present) has 1`);
  if (!mla && kvHeads !== H) fail(`${arch}.attention.head_count_kv is ${kvHeads}; the legacy form (no key_length_mla) has head_count ${H}`);
  const keyLen = mla ? u('attention.key_length_mla') : u('attention.key_length');
  const vDim = mla ? u('attention.value_length_mla') : u('attention.value_length');
  if (keyLen < dR) fail(`the key length ${keyLen} is shorter than rope.dimension_count ${dR}`);
  if (!f.has('token_embd.weight')) fail('no token_embd.weight tensor');
  const emb = f.tensorInfo('token_embd.weight');
  if (emb.shape.length !== 2 || emb.shape[1] !== D) fail(`token_embd.weight has shape [${emb.shape.join(', ')}], expected [vocab, ${D}]`);
  const dt = f.floatDType('token_embd.weight');
  const bos = f.getNumber('tokenizer.ggml.bos_token_id'), eos = f.getNumber('tokenizer.ggml.eos_token_id');
  return {
    architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3',
    torch_dtype: dt ? ({ f32: 'float32', f16: 'float16', bf16: 'bfloat16' } as const)[dt] : null,
    vocab_size: emb.shape[0], hidden_size: D, intermediate_size: u('feed_forward_length'), num_hidden_layers: L,
    num_attention_heads: H, num_key_value_heads: H,
    kv_lora_rank: r, q_lora_rank: qLora > 0 ? qLora : null, qk_rope_head_dim: dR, qk_nope_head_dim: keyLen - dR, v_head_dim: vDim,
    first_k_dense_replace: isMoe ? dense : L, n_routed_experts: null, hidden_act: 'silu',
    ...(isMoe && moeConfig(f, arch, experts)),
    max_position_embeddings: u('context_length'),
    rms_norm_eps: f32Decimal(f.requireNumber(`${arch}.attention.layer_norm_rms_epsilon`)),
    rope_theta: f32Decimal(opt('rope.freq_base') ?? 10000), rope_scaling: ropeScaling, rope_interleave: true,
    attention_bias: false, tie_word_embeddings: !f.has('output.weight'),
    bos_token_id: bos ?? null, eos_token_id: eos ?? null,
  };
}

/**
 * The stock MoE keys of a deepseek2 GGUF with expert layers, as llama.cpp reads its metadata
 * (header). Values the engine does not compute are passed on as they are, for parseMlaMoe to refuse.
 */
function moeConfig(f: GgufFile, arch: string, experts: number): Record<string, unknown> {
  const key = (k: string): string => `${arch}.${MOE_KEYS[k]}`;
  const gating = f.getNumber(key('scoring_func')) ?? 0;
  const scale = f.getNumber(key('routed_scaling_factor')) ?? 0;
  const groups = f.getNumber(key('n_group')) ?? 0;
  return {
    n_routed_experts: experts,
    num_experts_per_tok: f.getNumber(key('num_experts_per_tok')),
    moe_intermediate_size: f.getNumber(key('moe_intermediate_size')),
    n_shared_experts: f.getNumber(key('n_shared_experts')) ?? 0,
    moe_layer_freq: 1,
    scoring_func: gating === 0 ? 'softmax' : GATING_FUNC[gating] ?? `gating function ${gating}`,
    norm_topk_prob: f.getBool(key('norm_topk_prob')),
    routed_scaling_factor: scale === 0 ? 1 : f32Decimal(scale),
    topk_method: 'greedy',
    n_group: groups > 1 ? groups : 1,
    topk_group: groups > 1 ? f.getNumber(key('topk_group')) : 1,
  };
}

/** kv_b_proj [H·(d_n+d_v), r] from attn_k_b [H, r, d_n] and attn_v_b [H, d_v, r] (element moves only). */
function joinKvB(H: number, r: number, dn: number, dv: number): (parts: FloatData[]) => FloatData {
  return ([kb, vb]) => {
    const out = new (kb!.constructor as { new (n: number): FloatData })(H * (dn + dv) * r);
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < dn; i++) {
        const row = (h * (dn + dv) + i) * r;
        for (let j = 0; j < r; j++) out[row + j] = kb![(h * r + j) * dn + i]!;
      }
      out.set(vb!.subarray(h * dv * r, (h + 1) * dv * r), (h * (dn + dv) + dn) * r);
    }
    return out;
  };
}

/** One MoE layer's shared experts (llama.cpp: one SwiGLU n_shared·I wide). */
function sharedExpertTensors(l: number, moe: MlaMoe, D: number): GgufTensorSpec[] {
  const W = moe.expertInter * moe.sharedExperts, b = `blk.${l}`, p = `model.layers.${l}.mlp.shared_experts`;
  return [
    { gguf: `${b}.ffn_gate_shexp.weight`, hf: `${p}.gate_proj.weight`, shape: [W, D] },
    { gguf: `${b}.ffn_up_shexp.weight`, hf: `${p}.up_proj.weight`, shape: [W, D] },
    { gguf: `${b}.ffn_down_shexp.weight`, hf: `${p}.down_proj.weight`, shape: [D, W] },
  ];
}

/** Every tensor of a deepseek2 GGUF with these arguments, under both names. */
export function deepseek2Tensors(c: ModelArgs & { mla: MlaShapeFields; moe: MlaMoe | null }, f: GgufFile, embedName: string): GgufTensorSpec[] {
  const m = c.mla, D = c.hiddenSize, H = c.numHeads, I = c.intermediateSize, V = c.vocabSize;
  const dn = m.qkNopeHeadDim, dR = m.qkRopeHeadDim, dv = m.vHeadDim, r = m.kvLoraRank, rq = m.qLoraRank, qh = dn + dR;
  // The legacy form keeps kv_b_proj whole (the reader tells the forms apart by key_length_mla).
  const legacy = f.getNumber('deepseek2.attention.key_length_mla') === undefined;
  const specs: GgufTensorSpec[] = [{ gguf: 'token_embd.weight', hf: embedName, shape: [V, D] }];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`, s = `${p}.self_attn`, b = `blk.${l}`;
    specs.push({ gguf: `${b}.attn_norm.weight`, hf: `${p}.input_layernorm.weight`, shape: [D] });
    if (rq === null) specs.push({ gguf: `${b}.attn_q.weight`, hf: `${s}.q_proj.weight`, shape: [H * qh, D] });
    else {
      specs.push(
        { gguf: `${b}.attn_q_a.weight`, hf: `${s}.q_a_proj.weight`, shape: [rq, D] },
        { gguf: `${b}.attn_q_a_norm.weight`, hf: `${s}.q_a_layernorm.weight`, shape: [rq] },
        { gguf: `${b}.attn_q_b.weight`, hf: `${s}.q_b_proj.weight`, shape: [H * qh, rq] },
      );
    }
    specs.push(
      { gguf: `${b}.attn_kv_a_mqa.weight`, hf: `${s}.kv_a_proj_with_mqa.weight`, shape: [r + dR, D] },
      { gguf: `${b}.attn_kv_a_norm.weight`, hf: `${s}.kv_a_layernorm.weight`, shape: [r] },
      legacy
        ? { gguf: `${b}.attn_kv_b.weight`, hf: `${s}.kv_b_proj.weight`, shape: [H * (dn + dv), r] }
        : {
          gguf: `${b}.attn_k_b.weight`, hf: `${s}.kv_b_proj.weight`, shape: [H * (dn + dv), r],
          parts: [{ gguf: `${b}.attn_k_b.weight`, shape: [H, r, dn] }, { gguf: `${b}.attn_v_b.weight`, shape: [H, dv, r] }],
          join: joinKvB(H, r, dn, dv),
        },
      { gguf: `${b}.attn_output.weight`, hf: `${s}.o_proj.weight`, shape: [D, H * dv] },
      { gguf: `${b}.ffn_norm.weight`, hf: `${p}.post_attention_layernorm.weight`, shape: [D] },
    );
    const moe = c.moe;
    if (moe && l >= moe.firstDense) {
      // The routed experts read per expert from the stacked tensors, as Mixtral's.
      specs.push(...moeGgufTensors(l, deepseekMoeNames(p), { hidden: D, expertInter: moe.expertInter, numExperts: moe.numExperts, topK: moe.topK }), ...(moe.sharedExperts > 0 ? sharedExpertTensors(l, moe, D) : []));
    } else {
      specs.push(
        { gguf: `${b}.ffn_gate.weight`, hf: `${p}.mlp.gate_proj.weight`, shape: [I, D] },
        { gguf: `${b}.ffn_up.weight`, hf: `${p}.mlp.up_proj.weight`, shape: [I, D] },
        { gguf: `${b}.ffn_down.weight`, hf: `${p}.mlp.down_proj.weight`, shape: [D, I] },
      );
    }
  }
  specs.push({ gguf: 'output_norm.weight', hf: 'model.norm.weight', shape: [D] });
  if (!c.tieWordEmbeddings) specs.push({ gguf: 'output.weight', hf: 'lm_head.weight', shape: [V, D] });
  return specs;
}
