// Small random Mixtral checkpoints (Llama attention + a mixture-of-experts MLP) and an
// independent float64 mixture-of-experts block for the reference forward of random-llama.ts:
// softmax over all experts, the k most probable (ties: lower index), weights divided by their sum.
import type { MixtralArgs } from '../../src/arch/mixtral.js';
import { parseConfig } from '../../src/arch/registry.js';
import type { FloatDType } from '../../src/kernels/types.js';
import type { Tensor } from '../../src/tensor.js';
import { bf16BitsToNumber, MapSource, matVec, mulberry32, randomLlama, swiglu, toBf16Bits, type RandomModel, type ReferenceMlp } from './random-llama.js';

export interface RandomMixtralSpec {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim?: number;
  /** Width of each expert. */
  inter: number;
  vocab: number;
  layers: number;
  experts: number;
  topK: number;
  tied?: boolean;
  dtype?: 'f32' | 'bf16';
  ropeTheta?: number;
  seed?: number;
  /** Router weight scale relative to 1/√hidden (larger: more decisive routing). Default 3. */
  routerScale?: number;
}

export interface RandomMixtral extends RandomModel {
  config: MixtralArgs;
}

export function randomMixtral(s: RandomMixtralSpec): RandomMixtral {
  const dtype: FloatDType = s.dtype ?? 'f32';
  const base = randomLlama({ hidden: s.hidden, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, inter: s.inter, vocab: s.vocab, layers: s.layers, tied: s.tied ?? false, dtype, ropeTheta: s.ropeTheta, seed: s.seed ?? 1 });
  const { attention_bias: _a, ...rest } = base.json;
  const json: Record<string, unknown> = {
    ...rest, architectures: ['MixtralForCausalLM'], model_type: 'mixtral',
    num_local_experts: s.experts, num_experts_per_tok: s.topK, router_jitter_noise: 0, sliding_window: null,
  };
  const config = parseConfig(json, 'random-mixtral/config.json') as MixtralArgs;
  const map = new Map<string, Tensor>(), f64 = new Map<string, Float64Array>();
  for (const name of base.src.names()) {
    if (name.includes('.mlp.')) continue;
    map.set(name, base.src.get(name));
    f64.set(name, base.f64.get(name)!);
  }
  const rnd = mulberry32((s.seed ?? 1) + 7777);
  const add = (name: string, shape: number[], a: number): void => {
    const n = shape[0]! * shape[1]!, vals = new Float64Array(n);
    if (dtype === 'f32') {
      const data = new Float32Array(n);
      for (let i = 0; i < n; i++) { data[i] = (2 * rnd() - 1) * a; vals[i] = data[i]!; }
      map.set(name, { dtype, shape, data });
    } else {
      const data = new Uint16Array(n);
      for (let i = 0; i < n; i++) { data[i] = toBf16Bits((2 * rnd() - 1) * a); vals[i] = bf16BitsToNumber(data[i]!); }
      map.set(name, { dtype, shape, data });
    }
    f64.set(name, vals);
  };
  const D = s.hidden, I = s.inter;
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.block_sparse_moe`;
    add(`${p}.gate.weight`, [s.experts, D], (s.routerScale ?? 3) * Math.sqrt(3 / D));
    for (let e = 0; e < s.experts; e++) {
      add(`${p}.experts.${e}.w1.weight`, [I, D], Math.sqrt(3 / D));
      add(`${p}.experts.${e}.w3.weight`, [I, D], Math.sqrt(3 / D));
      add(`${p}.experts.${e}.w2.weight`, [D, I], Math.sqrt(3 / I));
    }
  }
  return { json, config, src: new MapSource(map), f64 };
}

/** The float64 mixture-of-experts block of a Mixtral model (for referenceLogits). */
export function referenceMoe(m: RandomModel, E: number, k: number): ReferenceMlp {
  const c = m.config, D = c.hiddenSize, I = c.intermediateSize;
  const W = (n: string): Float64Array => { const t = m.f64.get(n); if (!t) throw new Error(`ref: no ${n}`); return t; };
  return (l, xn) => {
    const p = `model.layers.${l}.block_sparse_moe`;
    const logits = matVec(W(`${p}.gate.weight`), xn, E);
    const mx = Math.max(...logits);
    const ex = logits.map((v) => Math.exp(v - mx));
    const z = ex.reduce((a, b) => a + b, 0);
    const probs = ex.map((v) => v / z);
    const chosen = [...probs.keys()].sort((a, b) => probs[b]! - probs[a]! || a - b).slice(0, k);
    const sum = chosen.reduce((a, e) => a + probs[e]!, 0);
    const out = new Float64Array(D);
    for (const e of chosen) {
      const y = swiglu(W(`${p}.experts.${e}.w1.weight`), W(`${p}.experts.${e}.w3.weight`), W(`${p}.experts.${e}.w2.weight`), xn, I, D);
      for (let i = 0; i < D; i++) out[i]! += (probs[e]! / sum) * y[i]!;
    }
    return out;
  };
}
