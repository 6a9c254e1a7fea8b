// The Llama family: Llama 1–3, Mistral, Qwen2 (and SmolLM, which is model_type llama).
// Decoder layer: RMSNorm → GQA/MHA attention with RoPE (rotate-half as stored in HF checkpoints)
// → RMSNorm → dense SwiGLU MLP. Qwen2 always has q/k/v biases and no o_proj bias; Llama has
// all attention biases with attention_bias and MLP biases with mlp_bias. Mistral's (and Qwen2's,
// when enabled) sliding window is carried so the engine can refuse contexts past it.
import { GqaAttention, gqaSummary } from '../models/attention.js';
import { normWeight, type LayerBuilder } from '../models/decoder.js';
import { SwiGluMlp } from '../models/mlp.js';
import { RopeTable } from '../models/rope.js';
import type { GgufFile } from '../io/gguf.js';
import { GgufError } from '../io/gguf.js';
import { f32Decimal, type GgufTensorSpec } from '../io/gguf-model.js';
import { GqaAttentionLayer } from '../train/layers/attention-gqa.js';
import { MlpLayer } from '../train/layers/mlp.js';
import { ConfigFields, parseBaseFields, ropeScalingJson, type ModelArgs, type RopeScaling } from './args.js';
import type { Family } from './family.js';

export type LlamaArgs = ModelArgs;

const ARCHITECTURES: Record<string, string> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
};

/** transformers' max_position_embeddings defaults per model type (used only when the key is absent). */
const DEFAULT_MAX_POSITIONS: Record<string, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768 };

/**
 * The attention window of a config, or null for full attention: Mistral's `sliding_window`
 * (unless `use_sliding_window` is false), Qwen2's when `use_sliding_window` is true.
 */
function slidingWindow(modelType: string, raw: Record<string, unknown>): number | null {
  const sw = raw.sliding_window, use = raw.use_sliding_window;
  if (typeof sw !== 'number' || !Number.isSafeInteger(sw) || sw <= 0) return null;
  if (modelType === 'mistral') return use === false ? null : sw;
  if (modelType === 'qwen2') return use === true ? sw : null;
  return null;
}

/** The Llama-family arguments from config.json fields (model type already decided). */
export function parseLlamaFields(f: ConfigFields, modelType: string): LlamaArgs {
  const base = parseBaseFields(f, DEFAULT_MAX_POSITIONS[modelType] ?? 2048);
  let attentionBias = false, oBias = false, mlpBias = false;
  if (modelType === 'qwen2') {
    attentionBias = true;
  } else if (modelType === 'llama') {
    attentionBias = oBias = f.bool('attention_bias', false);
    mlpBias = f.bool('mlp_bias', false);
  }
  return { ...base, family: 'llama', modelType, attentionBias, oBias, mlpBias, slidingWindow: slidingWindow(modelType, f.c) };
}

/** Llama-layout arguments from GGUF metadata (also the base of other families' GGUF forms). */
export function llamaGgufArgs(f: GgufFile, arch: string, path: string): LlamaArgs {
  const fail = (msg: string): never => { throw new GgufError(`${path}: ${msg}`); };
  const u = (k: string): number => {
    const v = f.requireNumber(`${arch}.${k}`);
    if (!Number.isSafeInteger(v) || v <= 0) fail(`${arch}.${k} = ${v} must be a positive integer`);
    return v;
  };
  const opt = (k: string): number | undefined => f.getNumber(`${arch}.${k}`);
  const hidden = u('embedding_length'), heads = u('attention.head_count');
  const kvHeads = opt('attention.head_count_kv') ?? heads;
  const headDim = opt('attention.key_length') ?? hidden / heads;
  const vDim = opt('attention.value_length') ?? hidden / heads;
  if (!Number.isSafeInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) fail(`head size ${headDim} must be a positive even integer`);
  if (vDim !== headDim) fail(`value_length ${vDim} differs from key_length ${headDim}; not a Llama-family layout`);
  const rot = opt('rope.dimension_count') ?? headDim;
  if (rot !== headDim) fail(`rope.dimension_count ${rot} differs from the head size ${headDim} (partial RoPE is not a Llama-family layout)`);
  if (!Number.isSafeInteger(kvHeads) || kvHeads <= 0 || heads % kvHeads !== 0) fail(`head_count_kv ${kvHeads} must divide head_count ${heads}`);
  if (!f.has('token_embd.weight')) fail('no token_embd.weight tensor');
  const emb = f.tensorInfo('token_embd.weight');
  if (emb.shape.length !== 2 || emb.shape[1] !== hidden) fail(`token_embd.weight has shape [${emb.shape.join(', ')}], expected [vocab, ${hidden}]`);

  let ropeScaling: RopeScaling | null = null;
  const scalingType = f.getString(`${arch}.rope.scaling.type`);
  if (scalingType === 'linear') {
    const factor = opt('rope.scaling.factor');
    if (factor !== undefined && factor !== 1) ropeScaling = { type: 'linear', factor: f32Decimal(factor) };
  } else if (scalingType !== undefined && scalingType !== 'none') {
    fail(`RoPE scaling type "${scalingType}" is not supported`);
  }
  if (f.has('rope_freqs.weight')) {
    const k = LLAMA3_GGUF_KEYS;
    const factor = f.getNumber(k.factor), low = f.getNumber(k.lowFreqFactor), high = f.getNumber(k.highFreqFactor), orig = f.getNumber(k.originalMaxPositionEmbeddings);
    if (factor === undefined || low === undefined || high === undefined || orig === undefined) {
      fail('has a rope_freqs.weight tensor without the llama3 RoPE parameters transmla records; per-frequency RoPE factors cannot be expressed as a Llama config');
    }
    ropeScaling = { type: 'llama3', factor: factor!, lowFreqFactor: low!, highFreqFactor: high!, originalMaxPositionEmbeddings: orig! };
  }
  const q0 = f.has('blk.0.attn_q.weight') ? f.floatDType('blk.0.attn_q.weight') : null;
  const bos = f.getNumber('tokenizer.ggml.bos_token_id'), eos = f.getNumber('tokenizer.ggml.eos_token_id');
  const args: LlamaArgs = {
    family: 'llama',
    modelType: arch,
    hiddenSize: hidden,
    intermediateSize: u('feed_forward_length'),
    numLayers: u('block_count'),
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    vocabSize: emb.shape[0]!,
    rmsNormEps: f32Decimal(f.requireNumber(`${arch}.attention.layer_norm_rms_epsilon`)),
    ropeTheta: f32Decimal(opt('rope.freq_base') ?? 10000),
    ropeScaling,
    maxPositionEmbeddings: u('context_length'),
    tieWordEmbeddings: !f.has('output.weight'),
    attentionBias: f.has('blk.0.attn_q.bias'),
    oBias: f.has('blk.0.attn_output.bias'),
    mlpBias: f.has('blk.0.ffn_up.bias'),
    bosTokenId: bos ?? null,
    eosTokenId: eos ?? null,
    torchDtype: q0 ? ({ f32: 'float32', f16: 'float16', bf16: 'bfloat16' } as const)[q0] : null,
    slidingWindow: null,
    raw: {},
  };
  args.raw = llamaConfigJson(args);
  return args;
}

// Our own keys: llama.cpp has no metadata for llama3 RoPE parameters (it only reads the
// rope_freqs tensor), so the exporter records them to give the reader an exact config back.
export const LLAMA3_GGUF_KEYS = {
  factor: 'transmla.rope.llama3.factor',
  lowFreqFactor: 'transmla.rope.llama3.low_freq_factor',
  highFreqFactor: 'transmla.rope.llama3.high_freq_factor',
  originalMaxPositionEmbeddings: 'transmla.rope.llama3.original_max_position_embeddings',
} as const;

/** llama.cpp's tensor names for a llama/qwen2 model; q/k rows are adjacent-pair ordered in 'llama'. */
export function llamaGgufTensors(c: LlamaArgs, arch: string, embedName: string): GgufTensorSpec[] {
  const D = c.hiddenSize, H = c.numHeads, G = c.numKvHeads, d = c.headDim, I = c.intermediateSize, V = c.vocabSize;
  const permute = arch === 'llama';
  const specs: GgufTensorSpec[] = [{ gguf: 'token_embd.weight', hf: embedName, shape: [V, D] }];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`, b = `blk.${l}`;
    const qRope = permute ? { heads: H, headDim: d } : undefined;
    const kRope = permute ? { heads: G, headDim: d } : undefined;
    specs.push(
      { gguf: `${b}.attn_norm.weight`, hf: `${p}.input_layernorm.weight`, shape: [D] },
      { gguf: `${b}.attn_q.weight`, hf: `${p}.self_attn.q_proj.weight`, shape: [H * d, D], ...(qRope && { rope: qRope }) },
      { gguf: `${b}.attn_k.weight`, hf: `${p}.self_attn.k_proj.weight`, shape: [G * d, D], ...(kRope && { rope: kRope }) },
      { gguf: `${b}.attn_v.weight`, hf: `${p}.self_attn.v_proj.weight`, shape: [G * d, D] },
      { gguf: `${b}.attn_output.weight`, hf: `${p}.self_attn.o_proj.weight`, shape: [D, H * d] },
    );
    if (c.attentionBias) {
      specs.push(
        { gguf: `${b}.attn_q.bias`, hf: `${p}.self_attn.q_proj.bias`, shape: [H * d], ...(qRope && { rope: qRope }) },
        { gguf: `${b}.attn_k.bias`, hf: `${p}.self_attn.k_proj.bias`, shape: [G * d], ...(kRope && { rope: kRope }) },
        { gguf: `${b}.attn_v.bias`, hf: `${p}.self_attn.v_proj.bias`, shape: [G * d] },
      );
    }
    if (c.oBias) specs.push({ gguf: `${b}.attn_output.bias`, hf: `${p}.self_attn.o_proj.bias`, shape: [D] });
    specs.push(
      { gguf: `${b}.ffn_norm.weight`, hf: `${p}.post_attention_layernorm.weight`, shape: [D] },
      { gguf: `${b}.ffn_gate.weight`, hf: `${p}.mlp.gate_proj.weight`, shape: [I, D] },
      { gguf: `${b}.ffn_up.weight`, hf: `${p}.mlp.up_proj.weight`, shape: [I, D] },
      { gguf: `${b}.ffn_down.weight`, hf: `${p}.mlp.down_proj.weight`, shape: [D, I] },
    );
    if (c.mlpBias) {
      specs.push(
        { gguf: `${b}.ffn_gate.bias`, hf: `${p}.mlp.gate_proj.bias`, shape: [I] },
        { gguf: `${b}.ffn_up.bias`, hf: `${p}.mlp.up_proj.bias`, shape: [I] },
        { gguf: `${b}.ffn_down.bias`, hf: `${p}.mlp.down_proj.bias`, shape: [D] },
      );
    }
  }
  specs.push({ gguf: 'output_norm.weight', hf: 'model.norm.weight', shape: [D] });
  if (!c.tieWordEmbeddings) specs.push({ gguf: 'output.weight', hf: 'lm_head.weight', shape: [V, D] });
  return specs;
}

/** A config.json equivalent of Llama-family arguments (for models read from GGUF or llama2.c). */
export function llamaConfigJson(c: LlamaArgs): Record<string, unknown> {
  return {
    architectures: [c.modelType === 'qwen2' ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    model_type: c.modelType,
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
    mlp_bias: c.mlpBias,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    torch_dtype: c.torchDtype,
    hidden_act: 'silu',
  };
}

export const llama: Family<LlamaArgs> = {
  id: 'llama',
  modelTypes: ['llama', 'mistral', 'qwen2'],
  architectures: ARCHITECTURES,
  parse: (json, file, ctx) => parseLlamaFields(new ConfigFields(json, file), ctx.modelType),
  engineLayers(c, opts = {}): LayerBuilder {
    const rope = RopeTable.create(c.headDim, c.ropeTheta, c.ropeScaling);
    const layout = opts.ropeLayout ?? 'half';
    const D = c.hiddenSize;
    return (src, l) => {
      const p = `model.layers.${l}`;
      return {
        inputNorm: normWeight(src, `${p}.input_layernorm.weight`, D),
        attn: GqaAttention.load(src, `${p}.self_attn`, c, rope, layout),
        postNorm: normWeight(src, `${p}.post_attention_layernorm.weight`, D),
        mlp: SwiGluMlp.load(src, `${p}.mlp`, D, c.intermediateSize, c.mlpBias),
      };
    };
  },
  // Keys and values, G·d each (GqaAttention.createCache).
  attentionLayout: (c) => ({ summary: gqaSummary(c.numHeads, c.numKvHeads), latent: false, cacheStores: Array.from({ length: c.numLayers }, () => [c.numKvHeads * c.headDim, c.numKvHeads * c.headDim]) }),
  trainLayers(be, ps, c) {
    const rope = RopeTable.create(c.headDim, c.ropeTheta, c.ropeScaling);
    const shape = { hidden: c.hiddenSize, nHeads: c.numHeads, nKvHeads: c.numKvHeads, headDim: c.headDim };
    // HF Llama checkpoints pair RoPE elements rotate-half (as the engine loads them).
    return (_l, prefix) => ({
      attn: new GqaAttentionLayer(be, ps, `${prefix}.self_attn`, shape, rope, 'half'),
      mlp: new MlpLayer(be, ps, `${prefix}.mlp`, c.hiddenSize, c.intermediateSize),
    });
  },
  attentionParams: (n) => /\.self_attn\.[qkvo]_proj\./.test(n),
  conversions: { transmla: true, mha2mla: true },
  ggufExport: true,
  gguf: { archs: ['llama', 'qwen2'], readArgs: llamaGgufArgs, tensors: llamaGgufTensors, extraTensors: ['rope_freqs.weight'] },
};
