// An MHA2MLA model (per-KV-head RoPE keys + a shared latent): the Llama decoder with
// Mha2mlaAttention layers, each KV head rotating its kept pairs at the source frequencies.
import type { Mha2mlaModelConfig } from '../io/mla-config.js';
import type { WeightSource } from '../tensor.js';
import { LlamaModel } from './llama.js';
import { Mha2mlaAttention, perHeadRopeTables } from './mha2mla-attention.js';
import type { MlaMode } from './mla-attention.js';
import { ropeInvFreq } from './rope.js';

export function mha2mlaModelFromWeights(cfg: Mha2mlaModelConfig, src: WeightSource, opts: { mode?: MlaMode } = {}): LlamaModel {
  const { llama: c, mha2mla: m } = cfg;
  const inv = ropeInvFreq(c.headDim, c.ropeTheta, c.ropeScaling);
  const shape = {
    hidden: c.hiddenSize, nHeads: c.numHeads, nKvHeads: c.numKvHeads, headDim: c.headDim,
    ropePairs: m.ropePairsPerHead, kvLoraRank: m.kvLoraRank,
  };
  return LlamaModel.fromWeights(c, src, {
    attention: (s, i, prefix) => {
      const a = Mha2mlaAttention.load(s, prefix, shape, perHeadRopeTables(inv, m.ropePairs[i]!));
      if (opts.mode) a.mode = opts.mode;
      return a;
    },
  });
}
