// Small random Llama-family models for exactness tests, and an independent float64 reference
// forward pass written the plain way (no cache, full causal attention recomputed per call).
import { parseConfig } from '../../src/arch/registry.js';
import type { ModelArgs } from '../../src/arch/args.js';
import { kernels } from '../../src/kernels/index.js';
import type { FloatDType } from '../../src/kernels/types.js';
import type { Tensor, WeightSource } from '../../src/tensor.js';

export interface RandomSpec {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim?: number;
  inter: number;
  vocab: number;
  layers: number;
  tied?: boolean;
  /** Store a tied weight as lm_head.weight only (as one shared asset does). */
  tiedAsLmHead?: boolean;
  /** qwen3: per-head q_norm/k_norm (weights near 1) and, with attentionBias, q/k/v/o biases. */
  modelType?: 'llama' | 'qwen2' | 'mistral' | 'qwen3';
  /** config sliding_window (Mistral). */
  slidingWindow?: number;
  /** llama/qwen3 attention_bias (q/k/v/o biases). qwen2 always has q/k/v biases. */
  attentionBias?: boolean;
  dtype?: FloatDType;
  ropeTheta?: number;
  ropeScaling?: Record<string, unknown> | null;
  eps?: number;
  seed?: number;
  /** Weight scale (std-ish); default 0.3/√hidden for projections. */
  scale?: number;
  /**
   * Amplitudes of the uniform q/k/v/o biases (default 0.5 for q/k/v, 0.1 for o). Projections
   * output O(1) values, so k: 10 gives Qwen2.5-like key biases an order of magnitude larger.
   */
  biasScale?: { q?: number; k?: number; v?: number; o?: number };
  /**
   * A "massive activation": this value added to embedding channel 0 of every token (relative to
   * the O(1) embedding entries), so every layer's normed input has a nearly constant channel.
   */
  massive?: number;
}

export class MapSource implements WeightSource {
  constructor(readonly map: Map<string, Tensor>) {}
  names(): string[] { return [...this.map.keys()]; }
  has(name: string): boolean { return this.map.has(name); }
  get(name: string): Tensor {
    const t = this.map.get(name);
    if (!t) throw new Error(`no tensor "${name}"`);
    return t;
  }
}

export interface RandomModel {
  json: Record<string, unknown>;
  config: ModelArgs;
  src: MapSource;
  /** The same weights as float64 (exactly the values stored, after dtype rounding). */
  f64: Map<string, Float64Array>;
}

/** mulberry32: deterministic uniform [0,1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const f32b = new Float32Array(1);
const u32b = new Uint32Array(f32b.buffer);

/** f32 → bf16 bits, round to nearest even (finite inputs). */
export function toBf16Bits(x: number): number {
  f32b[0] = x;
  const u = u32b[0]!;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToNumber(b: number): number {
  u32b[0] = b << 16;
  return f32b[0]!;
}

export function randomLlama(spec: RandomSpec): RandomModel {
  const D = spec.hidden, H = spec.heads, G = spec.kvHeads, d = spec.headDim ?? D / H, I = spec.inter, V = spec.vocab;
  const modelType = spec.modelType ?? 'llama';
  const dtype = spec.dtype ?? 'f32';
  const json: Record<string, unknown> = {
    architectures: [{ llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', mistral: 'MistralForCausalLM', qwen3: 'Qwen3ForCausalLM' }[modelType]],
    model_type: modelType,
    hidden_size: D, intermediate_size: I, num_hidden_layers: spec.layers,
    num_attention_heads: H, num_key_value_heads: G, head_dim: d, vocab_size: V,
    rms_norm_eps: spec.eps ?? 1e-5, rope_theta: spec.ropeTheta ?? 10000, rope_scaling: spec.ropeScaling ?? null,
    max_position_embeddings: 4096, tie_word_embeddings: spec.tied ?? false,
    attention_bias: spec.attentionBias ?? false, bos_token_id: 1, eos_token_id: 2,
    torch_dtype: { f32: 'float32', bf16: 'bfloat16', f16: 'float16' }[dtype], hidden_act: 'silu',
  };
  if (spec.slidingWindow !== undefined) json.sliding_window = spec.slidingWindow;
  const config = parseConfig(json, 'random-config.json');
  const rnd = mulberry32(spec.seed ?? 1);
  const map = new Map<string, Tensor>();
  const f64 = new Map<string, Float64Array>();
  const add = (name: string, shape: number[], gen: () => number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const vals = new Float64Array(n);
    if (dtype === 'f32') {
      const data = new Float32Array(n);
      for (let i = 0; i < n; i++) { data[i] = gen(); vals[i] = data[i]!; }
      map.set(name, { dtype, shape, data });
    } else if (dtype === 'bf16') {
      const data = new Uint16Array(n);
      for (let i = 0; i < n; i++) { data[i] = toBf16Bits(gen()); vals[i] = bf16BitsToNumber(data[i]!); }
      map.set(name, { dtype, shape, data });
    } else {
      // f16 rounding comes from the kernels (tested against their own oracle in kernels.test.ts).
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) f[i] = gen();
      const data = new Uint16Array(n);
      kernels().fromF32(f, 'f16', data);
      const back = new Float32Array(n);
      kernels().toF32(data, 'f16', back);
      for (let i = 0; i < n; i++) vals[i] = back[i]!;
      map.set(name, { dtype, shape, data });
    }
    f64.set(name, vals);
  };
  const s = spec.scale ?? 1;
  const u = (a: number) => () => (2 * rnd() - 1) * a * s;
  const w = (fanIn: number) => u(Math.sqrt(3 / fanIn));
  const norm = () => 1 + (2 * rnd() - 1) * 0.2;
  const embName = spec.tied && spec.tiedAsLmHead ? 'lm_head.weight' : 'model.embed_tokens.weight';
  const massive = spec.massive ?? 0;
  if (massive === 0) add(embName, [V, D], u(1));
  else {
    let k = 0;
    add(embName, [V, D], () => (k++ % D === 0 ? massive : 0) + (2 * rnd() - 1) * s);
  }
  for (let l = 0; l < spec.layers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [D], norm);
    add(`${p}.self_attn.q_proj.weight`, [H * d, D], w(D));
    add(`${p}.self_attn.k_proj.weight`, [G * d, D], w(D));
    add(`${p}.self_attn.v_proj.weight`, [G * d, D], w(D));
    add(`${p}.self_attn.o_proj.weight`, [D, H * d], w(H * d));
    const bs = spec.biasScale ?? {};
    if (config.attentionBias) {
      add(`${p}.self_attn.q_proj.bias`, [H * d], u(bs.q ?? 0.5));
      add(`${p}.self_attn.k_proj.bias`, [G * d], u(bs.k ?? 0.5));
      add(`${p}.self_attn.v_proj.bias`, [G * d], u(bs.v ?? 0.5));
    }
    if (config.oBias) add(`${p}.self_attn.o_proj.bias`, [D], u(bs.o ?? 0.1));
    if (modelType === 'qwen3') {
      // Spread the per-dimension gains so a wrong pairing of norm weight and element shows.
      add(`${p}.self_attn.q_norm.weight`, [d], () => 1 + (2 * rnd() - 1) * 0.5);
      add(`${p}.self_attn.k_norm.weight`, [d], () => 1 + (2 * rnd() - 1) * 0.5);
    }
    add(`${p}.post_attention_layernorm.weight`, [D], norm);
    add(`${p}.mlp.gate_proj.weight`, [I, D], w(D));
    add(`${p}.mlp.up_proj.weight`, [I, D], w(D));
    add(`${p}.mlp.down_proj.weight`, [D, I], w(I));
  }
  add('model.norm.weight', [D], norm);
  if (!spec.tied) add('lm_head.weight', [V, D], w(D));
  return { json, config, src: new MapSource(map), f64 };
}

// ---------------------------------------------------------------------------------------------
// float64 reference

function refInvFreq(c: ModelArgs): number[] {
  const d = c.headDim;
  const out: number[] = [];
  for (let i = 0; i < d / 2; i++) {
    let f = Math.pow(c.ropeTheta, -(2 * i) / d);
    const s = c.ropeScaling;
    if (s?.type === 'linear') f /= s.factor;
    if (s?.type === 'llama3') {
      const wl = (2 * Math.PI) / f;
      const lowWl = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
      const highWl = s.originalMaxPositionEmbeddings / s.highFreqFactor;
      if (wl > lowWl) f = f / s.factor;
      else if (wl >= highWl) {
        const sm = (s.originalMaxPositionEmbeddings / wl - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        f = (1 - sm) * (f / s.factor) + sm * f;
      }
    }
    out.push(f);
  }
  return out;
}

/** y[out] = W[out×in]·x (+b). */
function mv(W: Float64Array, x: Float64Array, out: number, b?: Float64Array): Float64Array {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b[o]! : 0;
    for (let i = 0; i < n; i++) s += W[o * n + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

function rms(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]!);
}

/** HF rotate-half RoPE on one head vector at position p (only pairs `kept` accepts, when given). */
function ropeHalf(v: Float64Array, off: number, d: number, p: number, inv: number[], kept?: (pair: number) => boolean): void {
  const h = d / 2;
  for (let i = 0; i < h; i++) {
    if (kept && !kept(i)) continue;
    const a = v[off + i]!, b = v[off + h + i]!;
    const c = Math.cos(p * inv[i]!), s = Math.sin(p * inv[i]!);
    v[off + i] = a * c - b * s;
    v[off + h + i] = b * c + a * s;
  }
}

/** A float64 feed-forward block of layer `layer` on one normed hidden state (the dense SwiGLU unless replaced). */
export type ReferenceMlp = (layer: number, xn: Float64Array) => Float64Array;

/**
 * Logits (float64) for every position of `tokens`, from scratch. ropeKept: partial RoPE (MHA2MLA),
 * pair `pair` of KV head `kvHead`'s queries and key rotates only when it returns true. mlp:
 * another feed-forward block (a mixture of experts).
 */
export function referenceLogits(m: RandomModel, tokens: readonly number[], ropeKept?: (layer: number, kvHead: number, pair: number) => boolean, mlp?: ReferenceMlp): Float64Array[] {
  const c = m.config, W = m.f64;
  const D = c.hiddenSize, H = c.numHeads, G = c.numKvHeads, d = c.headDim, V = c.vocabSize, I = c.intermediateSize;
  const inv = refInvFreq(c);
  const get = (n: string) => { const t = W.get(n); if (!t) throw new Error(`ref: no ${n}`); return t; };
  const opt = (n: string) => W.get(n);
  const emb = W.get('model.embed_tokens.weight') ?? get('lm_head.weight');
  let xs: Float64Array[] = tokens.map((t) => emb.slice(t * D, (t + 1) * D));
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    const qs: Float64Array[] = [], ks: Float64Array[] = [], vs: Float64Array[] = [];
    for (let t = 0; t < xs.length; t++) {
      const xn = rms(xs[t]!, get(`${p}.input_layernorm.weight`), c.rmsNormEps);
      const q = mv(get(`${p}.self_attn.q_proj.weight`), xn, H * d, opt(`${p}.self_attn.q_proj.bias`));
      const k = mv(get(`${p}.self_attn.k_proj.weight`), xn, G * d, opt(`${p}.self_attn.k_proj.bias`));
      const v = mv(get(`${p}.self_attn.v_proj.weight`), xn, G * d, opt(`${p}.self_attn.v_proj.bias`));
      // Qwen3: every head's projection is RMS-normalised over head_dim before RoPE.
      const qn = opt(`${p}.self_attn.q_norm.weight`), kn = opt(`${p}.self_attn.k_norm.weight`);
      if (qn) for (let h = 0; h < H; h++) q.set(rms(q.subarray(h * d, (h + 1) * d), qn, c.rmsNormEps), h * d);
      if (kn) for (let g = 0; g < G; g++) k.set(rms(k.subarray(g * d, (g + 1) * d), kn, c.rmsNormEps), g * d);
      const kept = (g: number) => (ropeKept ? (i: number) => ropeKept(l, g, i) : undefined);
      for (let h = 0; h < H; h++) ropeHalf(q, h * d, d, t, inv, kept(Math.floor(h / (H / G))));
      for (let g = 0; g < G; g++) ropeHalf(k, g * d, d, t, inv, kept(g));
      qs.push(q); ks.push(k); vs.push(v);
    }
    const next: Float64Array[] = [];
    for (let t = 0; t < xs.length; t++) {
      const o = new Float64Array(H * d);
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / G));
        const sc: number[] = [];
        for (let j = 0; j <= t; j++) {
          let s = 0;
          for (let i = 0; i < d; i++) s += qs[t]![h * d + i]! * ks[j]![g * d + i]!;
          sc.push(s / Math.sqrt(d));
        }
        const mx = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= t; j++) for (let i = 0; i < d; i++) o[h * d + i]! += (e[j]! / z) * vs[j]![g * d + i]!;
      }
      const a = mv(get(`${p}.self_attn.o_proj.weight`), o, D, opt(`${p}.self_attn.o_proj.bias`));
      const x1 = xs[t]!.map((v, i) => v + a[i]!);
      const xn = rms(x1, get(`${p}.post_attention_layernorm.weight`), c.rmsNormEps);
      const dn = mlp ? mlp(l, xn) : swiglu(get(`${p}.mlp.gate_proj.weight`), get(`${p}.mlp.up_proj.weight`), get(`${p}.mlp.down_proj.weight`), xn, I, D);
      next.push(x1.map((v, i) => v + dn[i]!));
    }
    xs = next;
  }
  const head = c.tieWordEmbeddings ? emb : get('lm_head.weight');
  return xs.map((x) => mv(head, rms(x, get('model.norm.weight'), c.rmsNormEps), V));
}

/** down(silu(gate·x) ∘ up·x) in float64 (gate, up [I×D], down [D×I]). */
export function swiglu(gate: Float64Array, up: Float64Array, down: Float64Array, x: Float64Array, I: number, D: number): Float64Array {
  const g = mv(gate, x, I), u = mv(up, x, I);
  return mv(down, g.map((a, i) => (a / (1 + Math.exp(-a))) * u[i]!), D);
}

/** y = W·x in float64 (W [out×in]). */
export function matVec(W: Float64Array, x: Float64Array, out: number): Float64Array {
  return mv(W, x, out);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** log-softmax in float64. */
export function logSoftmax(x: ArrayLike<number>): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < x.length; i++) mx = Math.max(mx, x[i]!);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i]! - mx);
  const l = Math.log(s) + mx;
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! - l;
  return out;
}
