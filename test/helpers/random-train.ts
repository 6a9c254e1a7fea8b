// Small random models and packed rows for the trainer's tests: random MLA (DeepSeek-V3 layout)
// checkpoints in every variant the engine loads, and a float64 finite-difference checker.
import { mha2mlaConfigJson, parseMha2mlaConfig, type Mha2mlaArgs } from '../../src/arch/mha2mla.js';
import { mlaConfigJson, parseMlaConfig, type MlaArgs } from '../../src/arch/deepseek.js';
import type { Vec } from '../../src/train/backend.js';
import type { TrainRow } from '../../src/train/model.js';
import type { Tensor } from '../../src/tensor.js';
import { MapSource, mulberry32, randomLlama } from './random-llama.js';

export interface RandomMlaSpec {
  hidden: number;
  heads: number;
  inter: number;
  vocab: number;
  layers: number;
  nope: number;
  rope: number;
  v: number;
  rank: number;
  qLoraRank?: number | null;
  /** q_a_layernorm / kv_a_layernorm weights present. */
  norms?: boolean;
  /** Biases on q(/q_a, q_b), kv_a, kv_b and o. */
  biases?: boolean;
  tied?: boolean;
  ropeInterleave?: boolean;
  seed?: number;
}

/** A random MLA checkpoint: the config the converter would write and f32 tensors. */
export function randomMla(s: RandomMlaSpec): { json: Record<string, unknown>; cfg: MlaArgs; src: MapSource } {
  const base = randomLlama({ hidden: s.hidden, heads: s.heads, kvHeads: s.heads, headDim: s.nope, inter: s.inter, vocab: s.vocab, layers: s.layers, tied: s.tied ?? false, seed: s.seed ?? 7 });
  const json = mlaConfigJson(base.config, { kvLoraRank: s.rank, qLoraRank: s.qLoraRank ?? null, qkRopeHeadDim: s.rope, qkNopeHeadDim: s.nope, vHeadDim: s.v, attentionBias: s.biases ?? false });
  if (s.ropeInterleave === false) json.rope_interleave = false;
  const cfg = parseMlaConfig(JSON.parse(JSON.stringify(json)), 'random-mla/config.json');
  const rnd = mulberry32((s.seed ?? 7) + 1000);
  const map = new Map<string, Tensor>();
  for (const name of base.src.names()) if (!/self_attn\.[qkv]_proj|self_attn\.o_proj/.test(name)) map.set(name, base.src.get(name));
  const add = (name: string, shape: number[], scale: number, offset = 0): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    map.set(name, { dtype: 'f32', shape, data: Float32Array.from({ length: n }, () => offset + (2 * rnd() - 1) * scale) });
  };
  const D = s.hidden, H = s.heads, qOut = H * (s.nope + s.rope);
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.self_attn`;
    if (s.qLoraRank) {
      add(`${p}.q_a_proj.weight`, [s.qLoraRank, D], Math.sqrt(3 / D));
      if (s.norms) add(`${p}.q_a_layernorm.weight`, [s.qLoraRank], 0.2, 1);
      add(`${p}.q_b_proj.weight`, [qOut, s.qLoraRank], Math.sqrt(3 / s.qLoraRank));
      if (s.biases) { add(`${p}.q_a_proj.bias`, [s.qLoraRank], 0.3); add(`${p}.q_b_proj.bias`, [qOut], 0.3); }
    } else {
      add(`${p}.q_proj.weight`, [qOut, D], Math.sqrt(3 / D));
      if (s.biases) add(`${p}.q_proj.bias`, [qOut], 0.3);
    }
    add(`${p}.kv_a_proj_with_mqa.weight`, [s.rank + s.rope, D], Math.sqrt(3 / D));
    if (s.norms) add(`${p}.kv_a_layernorm.weight`, [s.rank], 0.2, 1);
    add(`${p}.kv_b_proj.weight`, [H * (s.nope + s.v), s.rank], Math.sqrt(3 / s.rank));
    add(`${p}.o_proj.weight`, [D, H * s.v], Math.sqrt(3 / (H * s.v)));
    if (s.biases) {
      add(`${p}.kv_a_proj_with_mqa.bias`, [s.rank + s.rope], 0.3);
      add(`${p}.kv_b_proj.bias`, [H * (s.nope + s.v)], 0.3);
      add(`${p}.o_proj.bias`, [D], 0.1);
    }
  }
  return { json, cfg, src: new MapSource(map) };
}

export interface RandomMha2mlaSpec {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  inter: number;
  vocab: number;
  layers: number;
  /** RoPE pairs per KV head (each head picks its own, at random). */
  pairs: number;
  rank: number;
  /** Biases on up_k / up_v (where MHA2MLA keeps the source's k/v biases). */
  biases?: boolean;
  tied?: boolean;
  seed?: number;
}

/** A random MHA2MLA checkpoint (per-KV-head RoPE keys + a shared latent), f32. */
export function randomMha2mla(s: RandomMha2mlaSpec): { json: Record<string, unknown>; cfg: Mha2mlaArgs; src: MapSource } {
  const base = randomLlama({ hidden: s.hidden, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, inter: s.inter, vocab: s.vocab, layers: s.layers, tied: s.tied ?? false, seed: s.seed ?? 9 });
  const rnd = mulberry32((s.seed ?? 9) + 2000);
  const half = s.headDim / 2;
  const ropePairs = Array.from({ length: s.layers }, () => Array.from({ length: s.kvHeads }, () => {
    const all = Array.from({ length: half }, (_, i) => i);
    for (let i = all.length - 1; i > 0; i--) { const j = Math.floor(rnd() * (i + 1)); [all[i], all[j]] = [all[j]!, all[i]!]; }
    return all.slice(0, s.pairs).sort((a, b) => a - b);
  }));
  const json = mha2mlaConfigJson(base.config, { kvLoraRank: s.rank, ropePairsPerHead: s.pairs, ropePairs });
  const cfg = parseMha2mlaConfig(JSON.parse(JSON.stringify(json)), 'random-mha2mla/config.json');
  const map = new Map<string, Tensor>();
  for (const name of base.src.names()) if (!/self_attn\.[kv]_proj/.test(name)) map.set(name, base.src.get(name));
  const add = (name: string, shape: number[], scale: number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    map.set(name, { dtype: 'f32', shape, data: Float32Array.from({ length: n }, () => (2 * rnd() - 1) * scale) });
  };
  const D = s.hidden, G = s.kvHeads, d = s.headDim, r = s.pairs, R = s.rank;
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.self_attn`;
    if (r > 0) add(`${p}.k_r_proj.weight`, [G * 2 * r, D], Math.sqrt(3 / D));
    add(`${p}.kv_proj.down_kv.weight`, [R, D], Math.sqrt(3 / D));
    add(`${p}.kv_proj.up_k.weight`, [G * (d - 2 * r), R], Math.sqrt(3 / R));
    add(`${p}.kv_proj.up_v.weight`, [G * d, R], Math.sqrt(3 / R));
    if (s.biases) { add(`${p}.kv_proj.up_k.bias`, [G * (d - 2 * r)], 0.3); add(`${p}.kv_proj.up_v.bias`, [G * d], 0.3); }
  }
  return { json, cfg, src: new MapSource(map) };
}

/**
 * A packed row of documents with the given lengths: positions restart per document, each
 * token predicts the next one of its document, the last token of a document predicts nothing.
 */
export function packedRow(segLens: number[], vocab: number, seed: number): TrainRow {
  const T = segLens.reduce((a, b) => a + b, 0);
  const rnd = mulberry32(seed);
  const tokens = Int32Array.from({ length: T }, () => Math.floor(rnd() * vocab));
  const targets = new Int32Array(T).fill(-1);
  const positions = new Int32Array(T);
  const segments = new Int32Array(segLens.length);
  let t0 = 0;
  segLens.forEach((n, s) => {
    segments[s] = t0;
    for (let i = 0; i < n; i++) {
      positions[t0 + i] = i;
      if (i + 1 < n) targets[t0 + i] = tokens[t0 + i + 1]!;
    }
    t0 += n;
  });
  return { T, tokens, targets, positions, segments };
}

export function randomVec(n: number, seed: number, scale = 1): Float64Array {
  const r = mulberry32(seed);
  return Float64Array.from({ length: n }, () => (2 * r() - 1) * scale);
}

/**
 * Max over coordinates of |analytic − central difference| divided by the largest |central
 * difference| of the tensor: the relative error of the whole gradient tensor. Every coordinate
 * is perturbed (the models are tiny), step h in float64.
 */
export function gradError(data: Vec, grad: ArrayLike<number>, loss: () => number, h = 1e-5): number {
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    data[i] = x + h;
    const lp = loss();
    data[i] = x - h;
    const lm = loss();
    data[i] = x;
    const num = (lp - lm) / (2 * h);
    maxDiff = Math.max(maxDiff, Math.abs(num - grad[i]!));
    maxRef = Math.max(maxRef, Math.abs(num));
  }
  // A gradient that is zero by an invariance (MHA2MLA's NoPE-key bias shifts every logit of a
  // query equally, which softmax ignores) has no scale to be relative to: there both sides
  // must be zero to within the differences' rounding (losses are O(1) here, h = 1e-5).
  if (maxRef < 1e-9) return maxDiff < 1e-9 ? 0 : Infinity;
  return maxDiff / maxRef;
}
