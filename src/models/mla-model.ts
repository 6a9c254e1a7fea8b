// An MLA (DeepSeek-V3 layout, dense MLPs) model: the Llama decoder with MlaAttention layers.
import type { MlaModelConfig } from '../io/mla-config.js';
import type { WeightSource } from '../tensor.js';
import { LlamaModel } from './llama.js';
import { MlaAttention, type MlaMode } from './mla-attention.js';
import { Mha2mlaAttention } from './mha2mla-attention.js';
import type { KvQuant } from './latent-quant.js';
import { RopeTable } from './rope.js';

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
  const rope = opts.ropeInvFreq ? new RopeTable(opts.ropeInvFreq) : RopeTable.create(m.qkRopeHeadDim, c.ropeTheta, c.ropeScaling);
  const shape = {
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
