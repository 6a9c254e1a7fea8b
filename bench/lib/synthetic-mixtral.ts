// Random-weight Mixtral folders of real widths (bench/lib/synthetic.ts style: tensors generated
// and written one at a time, so the folder may be far larger than memory; quality means nothing).
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { writeCheckpoint } from '../../src/io/checkpoint.js';
import type { NamedTensor } from '../../src/io/safetensors.js';
import type { Tensor } from '../../src/tensor.js';
import { ones, randomBf16 } from './synthetic.js';

export interface MixtralShape {
  name: string;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Width of each expert. */
  intermediate: number;
  experts: number;
  topK: number;
  vocab: number;
  ropeTheta: number;
  maxPositions: number;
}

/** mistralai/Mixtral-8x7B-v0.1's config.json widths. */
export const MIXTRAL_8X7B: MixtralShape = {
  name: 'Mixtral-8x7B', hidden: 4096, layers: 32, heads: 32, kvHeads: 8, headDim: 128, intermediate: 14336,
  experts: 8, topK: 2, vocab: 32000, ropeTheta: 1e6, maxPositions: 32768,
};

const ASSETS = resolve(import.meta.dirname, '..', '..', '..', 'shared', 'assets');

/** bf16 bytes of one decoder layer, and of everything else (embedding, head, final norm). */
export function mixtralBytes(s: MixtralShape): { perLayer: number; rest: number } {
  const { hidden: D, heads: H, kvHeads: G, headDim: d, intermediate: I, experts: E, vocab: V } = s;
  const perLayer = 2 * (2 * D + 2 * D * H * d + 2 * D * G * d + E * D + E * 3 * D * I);
  return { perLayer, rest: 2 * (2 * V * D + D) };
}

/** Writes a random bf16 Mixtral of `shape` with `layers` decoder layers to `dir` (one shard per ~2 GiB). */
export async function writeSyntheticMixtral(dir: string, shape: MixtralShape, layers: number, seed = 1, log: (l: string) => void = () => {}): Promise<string> {
  const { hidden: D, heads: H, kvHeads: G, headDim: d, intermediate: I, experts: E, vocab: V } = shape;
  mkdirSync(dir, { recursive: true });
  const t = (sh: number[], data: Uint16Array): Tensor => ({ dtype: 'bf16', shape: sh, data });
  const lin = (out: number, inp: number, k: number): Uint16Array => randomBf16(out * inp, 1 / Math.sqrt(inp), seed * 100000 + k);
  function* tensors(): Generator<NamedTensor> {
    yield { name: 'model.embed_tokens.weight', tensor: t([V, D], randomBf16(V * D, 0.02, seed)) };
    for (let l = 0; l < layers; l++) {
      const p = `model.layers.${l}`, k = l * 1000;
      log(`writing layer ${l + 1}/${layers}`);
      yield { name: `${p}.input_layernorm.weight`, tensor: t([D], ones(D)) };
      yield { name: `${p}.self_attn.q_proj.weight`, tensor: t([H * d, D], lin(H * d, D, k + 1)) };
      yield { name: `${p}.self_attn.k_proj.weight`, tensor: t([G * d, D], lin(G * d, D, k + 2)) };
      yield { name: `${p}.self_attn.v_proj.weight`, tensor: t([G * d, D], lin(G * d, D, k + 3)) };
      yield { name: `${p}.self_attn.o_proj.weight`, tensor: t([D, H * d], lin(D, H * d, k + 4)) };
      yield { name: `${p}.post_attention_layernorm.weight`, tensor: t([D], ones(D)) };
      // A decisive router (3/√D) so that routing is not uniform.
      yield { name: `${p}.block_sparse_moe.gate.weight`, tensor: t([E, D], randomBf16(E * D, 3 / Math.sqrt(D), seed * 100000 + k + 5)) };
      for (let e = 0; e < E; e++) {
        const q = `${p}.block_sparse_moe.experts.${e}`, j = k + 10 + 3 * e;
        yield { name: `${q}.w1.weight`, tensor: t([I, D], lin(I, D, j)) };
        yield { name: `${q}.w3.weight`, tensor: t([I, D], lin(I, D, j + 1)) };
        yield { name: `${q}.w2.weight`, tensor: t([D, I], lin(D, I, j + 2)) };
      }
    }
    yield { name: 'model.norm.weight', tensor: t([D], ones(D)) };
    yield { name: 'lm_head.weight', tensor: t([V, D], randomBf16(V * D, 0.02, seed + 7)) };
  }
  await writeCheckpoint(dir, tensors(), { maxShardBytes: 2 * 2 ** 30 });
  const config = {
    architectures: ['MixtralForCausalLM'], model_type: 'mixtral', hidden_size: D, intermediate_size: I, num_hidden_layers: layers,
    num_attention_heads: H, num_key_value_heads: G, head_dim: d, vocab_size: V, rms_norm_eps: 1e-5, rope_theta: shape.ropeTheta,
    max_position_embeddings: shape.maxPositions, tie_word_embeddings: false, hidden_act: 'silu', torch_dtype: 'bfloat16',
    bos_token_id: 1, eos_token_id: 2, num_local_experts: E, num_experts_per_tok: shape.topK, router_jitter_noise: 0, sliding_window: null,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const tokDir = join(ASSETS, 'models', 'kjv-mixtral');
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
    if (existsSync(join(tokDir, f))) copyFileSync(join(tokDir, f), join(dir, f));
  }
  return dir;
}
