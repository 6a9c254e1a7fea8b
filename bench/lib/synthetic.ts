// Random-weight Hugging Face folders of real model shapes, for measuring time and memory at scale
// (their quality means nothing). Tensors are generated and written one at a time, so a model far
// larger than memory can be made; the tokenizer is the shared kjv-gqa one (Llama 2 vocabulary),
// whose ids fit any vocabulary of at least 32,000 tokens.
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { writeCheckpoint } from '../../src/io/checkpoint.js';
import type { NamedTensor } from '../../src/io/safetensors.js';
import type { Tensor } from '../../src/tensor.js';

export interface Shape {
  name: string;
  modelType: 'llama' | 'qwen2';
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  tied: boolean;
  ropeTheta: number;
  maxPositions: number;
}

/** The shapes the benchmarks use (their real configs' sizes; layers may be cut by the caller). */
export const SHAPES: Record<string, Shape> = {
  'qwen2.5-0.5b': { name: 'Qwen2.5-0.5B', modelType: 'qwen2', hidden: 896, layers: 24, heads: 14, kvHeads: 2, headDim: 64, intermediate: 4864, vocab: 151936, tied: true, ropeTheta: 1e6, maxPositions: 32768 },
  'llama-3.2-1b': { name: 'Llama-3.2-1B', modelType: 'llama', hidden: 2048, layers: 16, heads: 32, kvHeads: 8, headDim: 64, intermediate: 8192, vocab: 128256, tied: true, ropeTheta: 500000, maxPositions: 131072 },
  'llama-3.1-8b': { name: 'Llama-3.1-8B', modelType: 'llama', hidden: 4096, layers: 32, heads: 32, kvHeads: 8, headDim: 128, intermediate: 14336, vocab: 128256, tied: false, ropeTheta: 500000, maxPositions: 131072 },
};

const ASSETS = resolve(import.meta.dirname, '..', '..', '..', 'shared', 'assets');

/** xorshift32 → bf16 bits of a uniform value in ±scale (fast enough for gigabytes). */
export function randomBf16(n: number, scale: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    f[0] = ((s / 4294967296) * 2 - 1) * scale;
    out[i] = u[0]! >>> 16;
  }
  return out;
}

export function ones(n: number): Uint16Array {
  return new Uint16Array(n).fill(0x3f80); // bf16 1.0
}

/** Writes a random bf16 model of `shape` (with `layers` decoder layers) to `dir`; returns the folder. */
export async function writeSyntheticModel(dir: string, shape: Shape, layers = shape.layers, seed = 1): Promise<string> {
  const { hidden: D, heads: H, kvHeads: G, headDim: d, intermediate: I, vocab: V } = shape;
  mkdirSync(dir, { recursive: true });
  const bias = shape.modelType === 'qwen2';
  const t = (shape_: number[], data: Uint16Array): Tensor => ({ dtype: 'bf16', shape: shape_, data });
  const lin = (out: number, inp: number, k: number): Uint16Array => randomBf16(out * inp, 1 / Math.sqrt(inp), seed * 1000 + k);
  function* tensors(): Generator<NamedTensor> {
    yield { name: 'model.embed_tokens.weight', tensor: t([V, D], randomBf16(V * D, 0.02, seed)) };
    for (let l = 0; l < layers; l++) {
      const p = `model.layers.${l}`, k = l * 16;
      yield { name: `${p}.input_layernorm.weight`, tensor: t([D], ones(D)) };
      yield { name: `${p}.self_attn.q_proj.weight`, tensor: t([H * d, D], lin(H * d, D, k + 1)) };
      yield { name: `${p}.self_attn.k_proj.weight`, tensor: t([G * d, D], lin(G * d, D, k + 2)) };
      yield { name: `${p}.self_attn.v_proj.weight`, tensor: t([G * d, D], lin(G * d, D, k + 3)) };
      if (bias) {
        yield { name: `${p}.self_attn.q_proj.bias`, tensor: t([H * d], randomBf16(H * d, 0.1, k + 4)) };
        yield { name: `${p}.self_attn.k_proj.bias`, tensor: t([G * d], randomBf16(G * d, 0.1, k + 5)) };
        yield { name: `${p}.self_attn.v_proj.bias`, tensor: t([G * d], randomBf16(G * d, 0.1, k + 6)) };
      }
      yield { name: `${p}.self_attn.o_proj.weight`, tensor: t([D, H * d], lin(D, H * d, k + 7)) };
      yield { name: `${p}.post_attention_layernorm.weight`, tensor: t([D], ones(D)) };
      yield { name: `${p}.mlp.gate_proj.weight`, tensor: t([I, D], lin(I, D, k + 8)) };
      yield { name: `${p}.mlp.up_proj.weight`, tensor: t([I, D], lin(I, D, k + 9)) };
      yield { name: `${p}.mlp.down_proj.weight`, tensor: t([D, I], lin(D, I, k + 10)) };
    }
    yield { name: 'model.norm.weight', tensor: t([D], ones(D)) };
    if (!shape.tied) yield { name: 'lm_head.weight', tensor: t([V, D], randomBf16(V * D, 0.02, seed + 7)) };
  }
  await writeCheckpoint(dir, tensors(), { maxShardBytes: 2 * 2 ** 30 });
  const config = {
    architectures: [shape.modelType === 'qwen2' ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    model_type: shape.modelType, hidden_size: D, intermediate_size: I, num_hidden_layers: layers,
    num_attention_heads: H, num_key_value_heads: G, head_dim: d, vocab_size: V, rms_norm_eps: 1e-5,
    rope_theta: shape.ropeTheta, max_position_embeddings: shape.maxPositions, tie_word_embeddings: shape.tied,
    hidden_act: 'silu', torch_dtype: 'bfloat16', bos_token_id: 1, eos_token_id: 2,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const tokDir = join(ASSETS, 'models', 'kjv-gqa');
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
    if (existsSync(join(tokDir, f))) copyFileSync(join(tokDir, f), join(dir, f));
  }
  return dir;
}

/** Parameters of `shape` with `layers` layers. */
export function paramCount(s: Shape, layers = s.layers): number {
  const perLayer = 2 * s.hidden + s.hidden * s.heads * s.headDim * 2 + 2 * s.hidden * s.kvHeads * s.headDim + 3 * s.hidden * s.intermediate
    + (s.modelType === 'qwen2' ? s.heads * s.headDim + 2 * s.kvHeads * s.headDim : 0);
  return layers * perLayer + s.vocab * s.hidden * (s.tied ? 1 : 2) + s.hidden;
}
