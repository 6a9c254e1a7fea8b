// An MLA (DeepSeek-V3 layout, dense MLPs) model: the Llama decoder with MlaAttention layers.
import type { MlaModelConfig } from '../io/mla-config.js';
import type { WeightSource } from '../tensor.js';
import { LlamaModel } from './llama.js';
import { MlaAttention, type MlaMode } from './mla-attention.js';
import { Mha2mlaAttention } from './mha2mla-attention.js';
import type { KvQuant } from './latent-quant.js';
import { RopeTable } from './rope.js';
import { yarnAttentionFactor, yarnInvFreq, yarnSoftmaxFactor } from './yarn.js';

export interface MlaModelOptions {
  /** How attention runs (default 'auto': decompressed prefill, absorbed decode). */
  mode?: MlaMode;
  /**
   * RoPE frequencies of the d_R/2 pairs, overriding θ^(−2i/d_R) from the config. Only the
   * converter's intermediate (exact, untruncated) forms need this; saved checkpoints never do.
   */
  ropeInvFreq?: Float64Array;
}

export function mlaModelFromWeights(cfg: MlaModelConfig, src: WeightSource, opts: MlaModelOptions = {}): LlamaModel {
  const { llama: c, mla: m } = cfg;
  if (opts.ropeInvFreq && opts.ropeInvFreq.length * 2 !== m.qkRopeHeadDim) {
    throw new Error(`${opts.ropeInvFreq.length} RoPE frequencies for qk_rope_head_dim ${m.qkRopeHeadDim}`);
  }
  const stock = m.semantics === 'stock';
  const yarn = m.yarn ?? null;
  if (yarn && !stock) throw new Error('rope_scaling yarn is only supported for stock DeepSeek-V3 folders');
  const rope = opts.ropeInvFreq ? new RopeTable(opts.ropeInvFreq)
    : yarn ? new RopeTable(yarnInvFreq(m.qkRopeHeadDim, c.ropeTheta, yarn), yarnAttentionFactor(yarn))
    : RopeTable.create(m.qkRopeHeadDim, c.ropeTheta, c.ropeScaling);
  // DeepseekV3Attention: qk_head_dim^−½, times mscale(factor, mscale_all_dim)² under YaRN.
  const scale = (yarn ? yarnSoftmaxFactor(yarn) : 1) / Math.sqrt(m.qkNopeHeadDim + m.qkRopeHeadDim);
  if (stock) checkStockTensors(src, c.numLayers, m.qLoraRank !== null, m.attentionBias ?? false);
  const shape = {
    scale,
    hidden: c.hiddenSize,
    normEps: c.rmsNormEps,
    nHeads: c.numHeads,
    qkNopeHeadDim: m.qkNopeHeadDim,
    qkRopeHeadDim: m.qkRopeHeadDim,
    vHeadDim: m.vHeadDim,
    kvLoraRank: m.kvLoraRank,
    qLoraRank: m.qLoraRank,
    ropeLayout: m.ropeInterleave ? ('interleaved' as const) : ('half' as const),
  };
  const model = LlamaModel.fromWeights(c, src, {
    attention: (s, _i, prefix) => {
      const a = MlaAttention.load(s, prefix, shape, rope);
      if (opts.mode) a.mode = opts.mode;
      return a;
    },
  });
  return model;
}

/**
 * Stock DeepSeek-V3 semantics need the latent norms (HF would initialise missing ones to 1 and
 * warn; here a missing norm most likely means an exact-variant folder that lost its
 * transmla.json) and allow biases only on q_a_proj, kv_a_proj_with_mqa and o_proj, and only
 * with attention_bias: true (a stock loader would drop any other bias silently).
 */
function checkStockTensors(src: WeightSource, layers: number, qLora: boolean, attentionBias: boolean): void {
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.self_attn`;
    const need = [`${p}.kv_a_layernorm.weight`, ...(qLora ? [`${p}.q_a_layernorm.weight`] : [])];
    for (const n of need) {
      if (!src.has(n)) {
        throw new Error(`stock DeepSeek-V3 folder without ${n}: stock code RMS-normalises the latent. If this is a folder written by \`transmla convert\` (the exact variant, no kv_a_layernorm), restore its transmla.json (or config.json's qk_latent_layernorm: false), which marks it as such`);
      }
    }
    const never = ['q_proj', 'q_b_proj', 'kv_b_proj'].map((x) => `${p}.${x}.bias`);
    const optional = ['q_a_proj', 'kv_a_proj_with_mqa', 'o_proj'].map((x) => `${p}.${x}.bias`);
    for (const n of never) if (src.has(n)) throw new Error(`stock DeepSeek-V3 has no ${n} (a stock loader would ignore it); this checkpoint cannot run in stock semantics`);
    if (!attentionBias) for (const n of optional) if (src.has(n)) throw new Error(`${n} present but config attention_bias is not true: a stock loader would ignore it`);
  }
}

/** Sets the attention mode of every MLA layer (either variant) of a model (tests compare the two forms). */
export function setMlaMode(model: LlamaModel, mode: MlaMode): void {
  for (const l of model.layers) if (l.attn instanceof MlaAttention || l.attn instanceof Mha2mlaAttention) l.attn.mode = mode;
}

/**
 * Quantizes the latent cache of every layer (latent-quant.ts) for caches created from now on;
 * null returns to f32. Only MLA layers (either variant) have a latent cache to quantize.
 */
export function setKvQuant(model: LlamaModel, q: KvQuant | null): void {
  for (const l of model.layers) {
    if (!(l.attn instanceof MlaAttention || l.attn instanceof Mha2mlaAttention)) {
      throw new Error(`--kv-quant needs an MLA model (a latent cache); this model has ${l.attn.constructor.name} layers`);
    }
  }
  for (const l of model.layers) (l.attn as MlaAttention | Mha2mlaAttention).kvQuant = q;
}
