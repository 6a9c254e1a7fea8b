// The Mixtral family (model_type mixtral, MixtralForCausalLM): Llama's decoder layer — RMSNorm →
// GQA attention with rotate-half RoPE as stored in HF checkpoints, no biases → RMSNorm — with a
// mixture-of-experts MLP (models/moe.ts; docs/methods.md#moe) in place of the dense SwiGLU.
//
// config.json (transformers MixtralConfig, src/transformers/models/mixtral/configuration_mixtral.py
// @008e5743): num_local_experts (alias num_experts; default 8), num_experts_per_tok (2),
// router_jitter_noise (0: noise on the MoE input while training only), output_router_logits and
// router_aux_loss_coef (the load-balancing term of transformers' training loss), sliding_window
// (null). Its defaults differ from Llama's: num_key_value_heads 8, rms_norm_eps 1e-5, rope_theta
// 1e6, max_position_embeddings 4096·32, bos/eos 1/2.
//
// GGUF (ggml-org/llama.cpp conversion/llama.py @7bca1fd9, src/models/llama.cpp @069be0ae,
// gguf-py tensor_mapping.py): convert_hf_to_gguf.py writes MixtralForCausalLM as architecture
// "llama" — attention as for Llama (q/k rows permuted to adjacent pairs) — with
// llama.expert_count = num_local_experts, llama.expert_used_count = num_experts_per_tok,
// feed_forward_length = the expert width, blk.N.ffn_gate_inp [E, D] (the router) and the experts
// stacked along a leading dimension: ffn_gate_exps (w1) and ffn_up_exps (w3) [E, I, D],
// ffn_down_exps (w2) [E, D, I]. llama.cpp builds the MoE branch whenever ffn_gate_inp exists,
// with softmax gating, top-k and renormalised weights (build_moe_ffn, norm_w = true).
import { GgufError, type GgufFile } from '../io/gguf.js';
import type { GgufTensorSpec } from '../io/gguf-model.js';
import { GqaAttention, gqaSummary } from '../models/attention.js';
import { normWeight, type LayerBuilder } from '../models/decoder.js';
import { mixtralMoeNames, MoeMlp, moeSummary, type MoeNames, type MoeShape } from '../models/moe.js';
import { RopeTable } from '../models/rope.js';
import { GqaAttentionLayer } from '../train/layers/attention-gqa.js';
import { MoeLayer } from '../train/layers/moe.js';
import { ConfigFields, HfConfigError, parseBaseFields, type ModelArgs } from './args.js';
import type { Family } from './family.js';
import { llamaConfigJson, llamaGgufArgs, llamaGgufTensors } from './llama.js';

export interface MoeFields {
  numExperts: number;
  /** num_experts_per_tok: experts each token is routed to. */
  topK: number;
  /** transformers multiplies the MoE input by U(1 − j, 1 + j) while training; inference ignores it. */
  routerJitterNoise: number;
}

export interface MixtralArgs extends ModelArgs {
  moe: MoeFields;
}

/** MixtralConfig's defaults where they are not Llama's (applied when a key is absent or null). */
const DEFAULTS: Record<string, unknown> = {
  num_key_value_heads: 8, rms_norm_eps: 1e-5, rope_theta: 1e6, max_position_embeddings: 4096 * 32,
  bos_token_id: 1, eos_token_id: 2, num_local_experts: 8, num_experts_per_tok: 2,
};

export function parseMixtralConfig(json: Record<string, unknown>, file: string): MixtralArgs {
  const c: Record<string, unknown> = { ...json };
  if (c.num_experts !== undefined && c.num_experts !== null) {
    // transformers maps num_experts onto num_local_experts (attribute_map).
    if (c.num_local_experts !== undefined && c.num_local_experts !== null && c.num_local_experts !== c.num_experts) {
      throw new HfConfigError(`${file}: num_experts (${String(c.num_experts)}) and num_local_experts (${String(c.num_local_experts)}) disagree`);
    }
    c.num_local_experts = c.num_experts;
  }
  for (const [k, v] of Object.entries(DEFAULTS)) if (c[k] === undefined || c[k] === null) c[k] = v;
  const f = new ConfigFields(c, file);
  if (f.bool('attention_bias', false) || f.bool('mlp_bias', false)) f.err(f.has('attention_bias') && c.attention_bias ? 'attention_bias' : 'mlp_bias', 'is true, but Mixtral layers have no biases');
  const base = parseBaseFields(f, 4096 * 32);
  const numExperts = f.posInt('num_local_experts');
  const topK = f.posInt('num_experts_per_tok');
  if (topK > numExperts) f.err('num_experts_per_tok', `(${topK}) exceeds num_local_experts (${numExperts})`);
  const jitter = c.router_jitter_noise ?? 0;
  if (typeof jitter !== 'number' || !Number.isFinite(jitter) || jitter < 0 || jitter >= 1) f.err('router_jitter_noise', `must be a number in [0, 1), got ${JSON.stringify(jitter)}`);
  const sw = c.sliding_window;
  const slidingWindow = typeof sw === 'number' && Number.isSafeInteger(sw) && sw > 0 ? sw : null;
  return {
    ...base, raw: json, family: 'mixtral', modelType: 'mixtral', attentionBias: false, oBias: false, mlpBias: false, slidingWindow,
    moe: { numExperts, topK, routerJitterNoise: jitter as number },
  };
}

/** A config.json equivalent of Mixtral arguments (for models read from GGUF). */
export function mixtralConfigJson(c: MixtralArgs): Record<string, unknown> {
  const { attention_bias: _a, mlp_bias: _m, ...rest } = llamaConfigJson(c);
  return {
    ...rest, architectures: ['MixtralForCausalLM'], model_type: 'mixtral',
    num_local_experts: c.moe.numExperts, num_experts_per_tok: c.moe.topK, router_jitter_noise: c.moe.routerJitterNoise,
    sliding_window: c.slidingWindow,
  };
}

export function moeShape(c: MixtralArgs): MoeShape {
  return { hidden: c.hiddenSize, expertInter: c.intermediateSize, numExperts: c.moe.numExperts, topK: c.moe.topK };
}

/** The GGUF tensors of one layer's router and stacked experts (llama.cpp's names, any family's HF names). */
export function moeGgufTensors(l: number, names: MoeNames, s: MoeShape): GgufTensorSpec[] {
  const b = `blk.${l}`, E = s.numExperts, D = s.hidden, I = s.expertInter;
  const specs: GgufTensorSpec[] = [{ gguf: `${b}.ffn_gate_inp.weight`, hf: `${names.router}.weight`, shape: [E, D] }];
  for (const [kind, shape] of [['gate', [I, D]], ['up', [I, D]], ['down', [D, I]]] as const) {
    for (let e = 0; e < E; e++) specs.push({ gguf: `${b}.ffn_${kind}_exps.weight`, hf: `${names.expert(e)[kind]}.weight`, shape: [...shape], stack: { index: e, count: E } });
  }
  return specs;
}

/** Llama's tensors with each layer's dense MLP replaced by the router and the stacked experts. */
export function mixtralGgufTensors(c: MixtralArgs, arch: string, embedName: string): GgufTensorSpec[] {
  const out: GgufTensorSpec[] = [];
  for (const s of llamaGgufTensors(c, arch, embedName)) {
    if (/^blk\.\d+\.ffn_(gate|up|down)\./.test(s.gguf)) continue;
    out.push(s);
    const m = /^blk\.(\d+)\.ffn_norm\.weight$/.exec(s.gguf);
    if (m) out.push(...moeGgufTensors(Number(m[1]), mixtralMoeNames(`model.layers.${m[1]}`), moeShape(c)));
  }
  return out;
}

/** llama.cpp metadata keys of the experts (beyond Llama's). */
export const MIXTRAL_GGUF_KEYS = { expertCount: 'expert_count', expertUsedCount: 'expert_used_count' } as const;

function ggufArgs(f: GgufFile, arch: string, path: string): MixtralArgs {
  const fail = (msg: string): never => { throw new GgufError(`${path}: ${msg}`); };
  const base = llamaGgufArgs(f, arch, path);
  const E = f.requireNumber(`${arch}.${MIXTRAL_GGUF_KEYS.expertCount}`), k = f.requireNumber(`${arch}.${MIXTRAL_GGUF_KEYS.expertUsedCount}`);
  if (!Number.isSafeInteger(E) || E <= 0) fail(`${arch}.expert_count = ${E} must be a positive integer`);
  if (!Number.isSafeInteger(k) || k <= 0 || k > E) fail(`${arch}.expert_used_count = ${k} must be an integer in 1..${E}`);
  // What llama.cpp's llama graph would do differently from Mixtral's routing.
  const scale = f.getNumber(`${arch}.expert_weights_scale`);
  if (scale !== undefined && scale !== 0 && scale !== 1) fail(`${arch}.expert_weights_scale = ${scale}: scaled expert weights are not Mixtral routing`);
  const shared = f.getNumber(`${arch}.expert_shared_feed_forward_length`);
  if (shared !== undefined && shared > 0) fail(`${arch}.expert_shared_feed_forward_length = ${shared}: shared experts (Granite MoE) are not Mixtral layers`);
  if (base.attentionBias || base.oBias) fail('has attention biases, which Mixtral layers do not have');
  const args: MixtralArgs = { ...base, family: 'mixtral', modelType: 'mixtral', moe: { numExperts: E, topK: k, routerJitterNoise: 0 } };
  args.raw = mixtralConfigJson(args);
  return args;
}

export const mixtral: Family<MixtralArgs> = {
  id: 'mixtral',
  modelTypes: ['mixtral'],
  architectures: { MixtralForCausalLM: 'mixtral' },
  parse: (json, file) => parseMixtralConfig(json, file),
  engineLayers(c, opts = {}): LayerBuilder {
    const rope = RopeTable.create(c.headDim, c.ropeTheta, c.ropeScaling);
    const layout = opts.ropeLayout ?? 'half';
    const D = c.hiddenSize, shape = moeShape(c);
    return (src, l) => {
      const p = `model.layers.${l}`;
      return {
        inputNorm: normWeight(src, `${p}.input_layernorm.weight`, D),
        attn: GqaAttention.load(src, `${p}.self_attn`, c, rope, layout),
        postNorm: normWeight(src, `${p}.post_attention_layernorm.weight`, D),
        mlp: MoeMlp.load(src, mixtralMoeNames(p), shape),
      };
    };
  },
  trainLayers(be, ps, c) {
    const j = c.moe.routerJitterNoise;
    if (j > 0) {
      throw new Error(`router_jitter_noise ${j}: transformers multiplies the MoE input by uniform noise in [${1 - j}, ${1 + j}] while training, which transmla's trainer does not implement (set router_jitter_noise to 0 in config.json to fine-tune without it)`);
    }
    const rope = RopeTable.create(c.headDim, c.ropeTheta, c.ropeScaling);
    const shape = { hidden: c.hiddenSize, nHeads: c.numHeads, nKvHeads: c.numKvHeads, headDim: c.headDim };
    return (_l, prefix) => ({
      attn: new GqaAttentionLayer(be, ps, `${prefix}.self_attn`, shape, rope, 'half'),
      mlp: new MoeLayer(be, ps, mixtralMoeNames(prefix), moeShape(c)),
    });
  },
  // The attention a conversion rewrites; routers and experts stay frozen under --train attention.
  attentionLayout: (c) => ({ summary: gqaSummary(c.numHeads, c.numKvHeads), latent: false, cacheStores: Array.from({ length: c.numLayers }, () => [c.numKvHeads * c.headDim, c.numKvHeads * c.headDim]) }),
  mlpSummary: (c) => moeSummary(c.moe.numExperts, c.intermediateSize, c.moe.topK),
  attentionParams: (n) => /\.self_attn\.[qkvo]_proj\./.test(n),
  // The attention converts as for Llama; the router and experts are carried unchanged
  // (the stock export writes them in DeepSeek-V2's layout: arch/deepseek-moe.ts).
  conversions: { transmla: true, mha2mla: true },
  ggufExport: true,
  gguf: {
    archs: ['llama'],
    // A llama GGUF with experts is a Mixtral one: llama.cpp itself decides by expert_count.
    claims: (f, arch) => (f.getNumber(`${arch}.${MIXTRAL_GGUF_KEYS.expertCount}`) ?? 0) > 0,
    readArgs: ggufArgs,
    tensors: mixtralGgufTensors,
    extraTensors: ['rope_freqs.weight'],
  },
};
