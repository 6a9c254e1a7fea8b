// The Qwen3 family (model_type qwen3, Qwen3ForCausalLM; docs/methods.md#qk-norm): a Llama-style
// decoder — RMSNorm → GQA attention with rotate-half RoPE → RMSNorm → dense SwiGLU — whose
// attention RMS-normalises every head of the query and key projections over head_dim (q_norm,
// k_norm: one weight vector [head_dim] each per layer, shared by the heads) after the projection
// and before RoPE, as transformers' Qwen3Attention does (modeling_qwen3.py, huggingface/transformers
// @000c33fd). head_dim is explicit (Qwen3Config defaults it to 128, not hidden/heads);
// attention_bias puts biases on q/k/v *and* o_proj (Qwen3Attention builds all four with it).
//
// llama.cpp reads it as architecture "qwen3" (ggml-org/llama.cpp src/models/qwen3.cpp @069be0ae:
// attn_q_norm/attn_k_norm [n_embd_head_k] applied to Q/K before ggml_rope_ext, attn_output sized
// [n_embd_head_k·n_head, n_embd] with no bias; src/llama-model.cpp @a5410f04 llama_model_rope_type
// lists LLM_ARCH_QWEN3 under LLAMA_ROPE_TYPE_NEOX, i.e. rotate-half, so q/k rows are stored as in
// the HF checkpoint, unpermuted, as convert_hf_to_gguf.py's Qwen3Model (a Qwen2Model) writes them).
//
// Conversions: refused for now. The key norm divides each head's key by its own per-token rms,
// which no fixed linear map of the latent reproduces (docs/methods.md#qk-norm).
import { GqaAttention, gqaSummary } from '../models/attention.js';
import { normWeight, type LayerBuilder } from '../models/decoder.js';
import { SwiGluMlp } from '../models/mlp.js';
import { RopeTable } from '../models/rope.js';
import type { GgufFile } from '../io/gguf.js';
import type { GgufTensorSpec } from '../io/gguf-model.js';
import { GqaAttentionLayer } from '../train/layers/attention-gqa.js';
import { MlpLayer } from '../train/layers/mlp.js';
import { ConfigFields, parseBaseFields, ropeScalingJson, type ModelArgs } from './args.js';
import type { Family } from './family.js';
import { llamaGgufArgs, llamaGgufTensors } from './llama.js';

export type Qwen3Args = ModelArgs;

/** Qwen3Config defaults (transformers configuration_qwen3.py) used when a key is absent. */
const QWEN3_DEFAULT_HEAD_DIM = 128;
const QWEN3_DEFAULT_MAX_POSITIONS = 32768;

/** Why the conversions refuse a Qwen3 source (shown as is). */
export const QWEN3_CONVERSION_REFUSAL =
  'per-head key RMSNorm: U·RMSNorm(W_k x) ≠ RMSNorm(U·W_k x) — each KV head\'s key is divided by its own per-token rms, which no linear latent reproduces ' +
  '(docs/methods.md#qk-norm); Qwen3 conversion lands with the engine-native exact-structure MLA (a 1/rms scalar per KV head in the cache)';

/**
 * The attention window when some layer uses sliding-window attention, else null. Qwen3Config:
 * sliding_window applies only with use_sliding_window, to layers i ≥ max_window_layers (or to the
 * layers layer_types marks "sliding_attention").
 */
function slidingWindow(raw: Record<string, unknown>, layers: number): number | null {
  const sw = raw.sliding_window;
  if (raw.use_sliding_window !== true || typeof sw !== 'number' || !Number.isSafeInteger(sw) || sw <= 0) return null;
  const types = raw.layer_types;
  if (Array.isArray(types)) return types.includes('sliding_attention') ? sw : null;
  const mwl = typeof raw.max_window_layers === 'number' ? raw.max_window_layers : 28;
  return mwl < layers ? sw : null;
}

export function parseQwen3Fields(f0: ConfigFields): Qwen3Args {
  const json = f0.c;
  // Qwen3Config has head_dim = 128 when the key is absent; hidden/heads is not Qwen3's default.
  const f = json.head_dim === undefined || json.head_dim === null ? new ConfigFields({ ...json, head_dim: QWEN3_DEFAULT_HEAD_DIM }, f0.file) : f0;
  const base = parseBaseFields(f, QWEN3_DEFAULT_MAX_POSITIONS);
  const bias = f.bool('attention_bias', false);
  return { ...base, family: 'qwen3', modelType: 'qwen3', attentionBias: bias, oBias: bias, mlpBias: false, slidingWindow: slidingWindow(f.c, base.numLayers) };
}

/** llama.cpp's tensor names for a qwen3 model: the llama/qwen2 set plus attn_q_norm/attn_k_norm. */
export function qwen3GgufTensors(c: Qwen3Args, arch: string, embedName: string): GgufTensorSpec[] {
  const out: GgufTensorSpec[] = [];
  for (const s of llamaGgufTensors(c, arch, embedName)) {
    out.push(s);
    const m = /^blk\.(\d+)\.attn_k\.weight$/.exec(s.gguf);
    if (!m) continue;
    const p = `model.layers.${m[1]}.self_attn`, b = `blk.${m[1]}`;
    out.push(
      { gguf: `${b}.attn_q_norm.weight`, hf: `${p}.q_norm.weight`, shape: [c.headDim] },
      { gguf: `${b}.attn_k_norm.weight`, hf: `${p}.k_norm.weight`, shape: [c.headDim] },
    );
  }
  return out;
}

/** A config.json equivalent of Qwen3 arguments (for models read from GGUF). */
export function qwen3ConfigJson(c: Qwen3Args): Record<string, unknown> {
  return {
    architectures: ['Qwen3ForCausalLM'],
    model_type: 'qwen3',
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    vocab_size: c.vocabSize,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: ropeScalingJson(c.ropeScaling),
    max_position_embeddings: c.maxPositionEmbeddings,
    tie_word_embeddings: c.tieWordEmbeddings,
    attention_bias: c.attentionBias,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    torch_dtype: c.torchDtype,
    hidden_act: 'silu',
  };
}

function ggufArgs(f: GgufFile, arch: string, path: string): Qwen3Args {
  const a = llamaGgufArgs(f, arch, path);
  const args: Qwen3Args = { ...a, family: 'qwen3', modelType: 'qwen3', raw: {} };
  args.raw = qwen3ConfigJson(args);
  return args;
}

export const qwen3: Family<Qwen3Args> = {
  id: 'qwen3',
  modelTypes: ['qwen3'],
  architectures: { Qwen3ForCausalLM: 'qwen3' },
  parse: (json, file) => parseQwen3Fields(new ConfigFields(json, file)),
  engineLayers(c): LayerBuilder {
    const rope = RopeTable.create(c.headDim, c.ropeTheta, c.ropeScaling);
    const D = c.hiddenSize;
    const shape = { ...c, qkNorm: { eps: c.rmsNormEps } };
    return (src, l) => {
      const p = `model.layers.${l}`;
      return {
        inputNorm: normWeight(src, `${p}.input_layernorm.weight`, D),
        attn: GqaAttention.load(src, `${p}.self_attn`, shape, rope, 'half'),
        postNorm: normWeight(src, `${p}.post_attention_layernorm.weight`, D),
        mlp: SwiGluMlp.load(src, `${p}.mlp`, D, c.intermediateSize, false),
      };
    };
  },
  trainLayers(be, ps, c) {
    const rope = RopeTable.create(c.headDim, c.ropeTheta, c.ropeScaling);
    const shape = { hidden: c.hiddenSize, nHeads: c.numHeads, nKvHeads: c.numKvHeads, headDim: c.headDim, qkNormEps: c.rmsNormEps };
    return (_l, prefix) => ({
      attn: new GqaAttentionLayer(be, ps, `${prefix}.self_attn`, shape, rope, 'half'),
      mlp: new MlpLayer(be, ps, `${prefix}.mlp`, c.hiddenSize, c.intermediateSize),
    });
  },
  attentionLayout: (c) => ({ summary: { ...gqaSummary(c.numHeads, c.numKvHeads), qkNorm: true }, latent: false, cacheStores: Array.from({ length: c.numLayers }, () => [c.numKvHeads * c.headDim, c.numKvHeads * c.headDim]) }),
  attentionParams: (n) => /\.self_attn\.([qkvo]_proj|[qk]_norm)\./.test(n),
  conversions: { transmla: QWEN3_CONVERSION_REFUSAL, mha2mla: QWEN3_CONVERSION_REFUSAL },
  ggufExport: (c) => (c.oBias ? 'llama.cpp\'s qwen3 architecture has no attn_output bias (this Qwen3 checkpoint has attention_bias: true, which gives o_proj a bias)' : true),
  gguf: { archs: ['qwen3'], readArgs: ggufArgs, tensors: qwen3GgufTensors },
};
