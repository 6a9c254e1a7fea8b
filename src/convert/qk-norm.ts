// Qwen3's per-head q/k RMSNorm in the TransMLA conversion (docs/methods.md#qk-norm).
//
// With z_g = W_k,g x (the pre-norm key of KV head g), ρ_g = √(mean(z_g²) + ε) and κ_g = 1/ρ_g,
// Qwen3's key is R_s·(γ_k ⊙ z_g)·κ_g(s). The linear part γ_k ⊙ z_g is what RoRoPE and BKV-PCA
// compress (γ_k folded into the key rows); κ_g(s) multiplies every score with key s of group g,
// so an approximation error e of the linear key costs κ_g(s)·e in the real one. The statistics
// are therefore weighted: keys by w(s) = mean_g κ_g(s)² (the normalised-key energy), values by 1,
// the key/value cross term by √w(s) (i.e. the covariance of X = [√w·K ; V] per token), w scaled
// to mean 1 over the calibration tokens.
//
// The exact-structure form keeps the query norm (q_a_proj = raw q_proj, per-head q_a_layernorm =
// γ_q) and caches κ (models/mla-qknorm-attention.ts). The stock DeepSeek-V3 form cannot: its
// only norms are kv_a_layernorm over the whole latent c (not k_pe, and mixing values) and
// q_a_layernorm over the whole query latent. `linearizeQkNorm` replaces each factor by the
// calibrated constant c minimising E[(c·ρ − 1)²], i.e. c = E[ρ]/E[ρ²] (per query head and per KV
// group, folded into that head's query rows), which the stock fit (stock-layer.ts) then takes.
import { kernels } from '../kernels/index.js';
import { gemmF64 } from '../linalg/dense.js';
import { GqaAttention, type QkNorm } from '../models/attention.js';
import type { DecoderLayer } from '../models/decoder.js';
import { widen } from '../models/weights.js';
import type { HiddenStates } from '../eval/hidden-states.js';
import type { FloatDType } from '../kernels/types.js';
import type { RopeTable } from '../models/rope.js';
import type { MlaLayerWeights, QkNormWeights, QueryBasis } from './latent-layer.js';
import { mlaDecoderLayer, type LayerView } from './mla-build.js';

/** The layer's Qwen3 q/k norm, or null for a plain GQA layer. */
export function qkNormOf(layer: DecoderLayer): QkNorm | null {
  return layer.attn instanceof GqaAttention ? layer.attn.qkNorm : null;
}

/** Per-token RMS of each group of `d` values of z [T × groups·d]. */
function groupRms(z: Float32Array, T: number, groups: number, d: number, eps: number, out: Float64Array): void {
  for (let t = 0; t < T; t++) {
    for (let g = 0; g < groups; g++) {
      let ss = 0;
      const o = (t * groups + g) * d;
      for (let e = 0; e < d; e++) ss += z[o + e]! * z[o + e]!;
      out[t * groups + g] = Math.sqrt(ss / d + eps);
    }
  }
}

export interface QkNormGrams {
  /** Σ x̄x̄ᵀ, Σ √w·x̄x̄ᵀ, Σ w·x̄x̄ᵀ with w(s) ∝ mean_g κ_g(s)² (mean 1), each [(D+1)²]. */
  plain: Float64Array;
  half: Float64Array;
  full: Float64Array;
}

/** The three Grams of the layer input the weighted statistics need (unweighted: the plain Gram thrice). */
export function qkNormGrams(states: HiddenStates, layer: DecoderLayer, weighted = true): QkNormGrams {
  if (!weighted) {
    const plain = states.gram(layer.inputNorm);
    return { plain, half: plain, full: plain };
  }
  const a = layer.attn as GqaAttention, n = a.qkNorm!;
  const G = a.nKvHeads, d = a.headDim, D = states.hidden, Dp = D + 1, T = states.seqLen;
  const grams = { plain: new Float64Array(Dp * Dp), half: new Float64Array(Dp * Dp), full: new Float64Array(Dp * Dp) };
  const z = new Float32Array(T * G * d), rho = new Float64Array(T * G);
  const x1 = new Float32Array(T * Dp), xs = new Float32Array(T * Dp);
  let wSum = 0, count = 0;
  states.visitNormed(layer.inputNorm, (xn, t0) => {
    a.k.forward(xn, t0, z);
    groupRms(z, t0, G, d, n.eps, rho);
    for (let t = 0; t < t0; t++) for (let g = 0; g < G; g++) wSum += 1 / (rho[t * G + g]! * rho[t * G + g]! * G);
    count += t0;
    for (let t = 0; t < t0; t++) {
      x1.set(xn.subarray(t * D, (t + 1) * D), t * Dp);
      x1[t * Dp + D] = 1;
    }
    kernels().gramAccumulate(x1, t0, Dp, grams.plain);
    for (const [pow, acc] of [[0.25, grams.half], [0.5, grams.full]] as const) {
      for (let t = 0; t < t0; t++) {
        let w = 0;
        for (let g = 0; g < G; g++) w += 1 / (rho[t * G + g]! * rho[t * G + g]!);
        const s = Math.pow(w / G, pow);
        for (let j = 0; j < Dp; j++) xs[t * Dp + j] = x1[t * Dp + j]! * s;
      }
      kernels().gramAccumulate(xs, t0, Dp, acc);
    }
  });
  // Weights of mean 1: the key statistics keep the scale of the linear keys the latent holds, so
  // BKV-PCA's key/value balance α (and the K/V mixing of its basis) means what it does without
  // the norm, and the result does not depend on the (arbitrary) scale of W_k.
  const m = wSum / count;
  for (let i = 0; i < Dp * Dp; i++) { grams.full[i]! /= m; grams.half[i]! /= Math.sqrt(m); }
  return grams;
}

/** Cov of [K ; V] with keys under the `full` Gram, values under `plain`, the cross term under `half`. */
export function weightedKvCov(wk: Float64Array, nK: number, wv: Float64Array, nV: number, g: QkNormGrams, Dp: number): Float64Array {
  const N = nK + nV, out = new Float64Array(N * N);
  const kk = gemmF64(gemmF64(wk, g.full, nK, Dp, Dp), wk, nK, nK, Dp, true);
  const kv = gemmF64(gemmF64(wk, g.half, nK, Dp, Dp), wv, nK, nV, Dp, true);
  const vv = gemmF64(gemmF64(wv, g.plain, nV, Dp, Dp), wv, nV, nV, Dp, true);
  for (let i = 0; i < nK; i++) {
    for (let j = 0; j < nK; j++) out[i * N + j] = kk[i * nK + j]!;
    for (let j = 0; j < nV; j++) { out[i * N + nK + j] = kv[i * nV + j]!; out[(nK + j) * N + i] = kv[i * nV + j]!; }
  }
  for (let i = 0; i < nV; i++) for (let j = 0; j < nV; j++) out[(nK + i) * N + nK + j] = vv[i * nV + j]!;
  return out;
}

/** k_proj's rows scaled by γ_k per element of each head (the linear part of Qwen3's key), as f32. */
export function foldKeyGamma(wk: ArrayLike<number>, bk: ArrayLike<number> | null | undefined, gk: Float32Array, G: number, D: number): { wk: Float32Array; bk: Float32Array | null } {
  const d = gk.length, w = new Float32Array(G * d * D), b = bk ? new Float32Array(G * d) : null;
  for (let g = 0; g < G; g++) {
    for (let e = 0; e < d; e++) {
      const row = g * d + e, s = gk[e]!;
      for (let j = 0; j < D; j++) w[row * D + j] = wk[row * D + j]! * s;
      if (b) b[row] = bk![row]! * s;
    }
  }
  return { wk: w, bk: b };
}

/** The identity basis of the H·d query outputs: q_a_proj = the raw q_proj, so its per-head norm is Qwen3's. */
export function identityQueryBasis(n: number): QueryBasis {
  const R = new Float64Array(n * n);
  for (let i = 0; i < n; i++) R[i * n + i] = 1;
  return { R, rank: n };
}

/** What the exact-structure form adds to the MLA tensors of layer `a`. */
export function qkNormWeights(a: GqaAttention): QkNormWeights {
  const n = a.qkNorm!, H = a.nHeads, d = a.headDim, G = a.nKvHeads;
  const qNorm = new Float64Array(H * d);
  for (let h = 0; h < H; h++) for (let e = 0; e < d; e++) qNorm[h * d + e] = n.q[e]!;
  const bias = a.k.bias;
  return { qNorm, qGroups: H, kProj: { w: Float64Array.from(widen(a.k.weight)), b: bias ? Float64Array.from(bias) : null }, kGroups: G, eps: n.eps };
}

export interface QkNormConstants {
  /** Per query head and per KV group: c = E[ρ]/E[ρ²] over the calibration tokens. */
  q: Float64Array;
  k: Float64Array;
  /** The spread of ρ: std/mean per query head and KV group. */
  qCv: Float64Array;
  kCv: Float64Array;
  /** E[ρ_k,g]: what the naive form multiplies group g's scores by, on average. */
  kMean: Float64Array;
}

/** The calibrated constants of the layer's query and key normalisers on `states`. */
export function qkNormConstants(states: HiddenStates, layer: DecoderLayer): QkNormConstants {
  const a = layer.attn as GqaAttention, n = a.qkNorm!;
  const H = a.nHeads, G = a.nKvHeads, d = a.headDim, T = states.seqLen;
  const zq = new Float32Array(T * H * d), zk = new Float32Array(T * G * d);
  const rq = new Float64Array(T * H), rk = new Float64Array(T * G);
  const m1q = new Float64Array(H), m2q = new Float64Array(H), m1k = new Float64Array(G), m2k = new Float64Array(G);
  let count = 0;
  states.visitNormed(layer.inputNorm, (xn, t0) => {
    a.q.forward(xn, t0, zq);
    a.k.forward(xn, t0, zk);
    groupRms(zq, t0, H, d, n.eps, rq);
    groupRms(zk, t0, G, d, n.eps, rk);
    for (let t = 0; t < t0; t++) {
      for (let h = 0; h < H; h++) { const v = rq[t * H + h]!; m1q[h]! += v; m2q[h]! += v * v; }
      for (let g = 0; g < G; g++) { const v = rk[t * G + g]!; m1k[g]! += v; m2k[g]! += v * v; }
    }
    count += t0;
  });
  const c = (m1: Float64Array, m2: Float64Array) => m1.map((s, i) => s / m2[i]!);
  const cv = (m1: Float64Array, m2: Float64Array) => m1.map((s, i) => { const m = s / count; return Math.sqrt(Math.max(0, m2[i]! / count - m * m)) / m; });
  return { q: c(m1q, m2q), k: c(m1k, m2k), qCv: cv(m1q, m2q), kCv: cv(m1k, m2k), kMean: m1k.map((s) => s / count) };
}

/**
 * The exact-structure layer with both normalisers replaced by constants: a plain linear MLA layer
 * (q_proj = diag(c_q,h·c_k,g(h))·q_b·diag(γ_q)·q_a, no norms), what stock DeepSeek-V3 can hold.
 */
export function linearizeQkNorm(w: MlaLayerWeights, c: { q: ArrayLike<number>; k: ArrayLike<number> }): MlaLayerWeights {
  const n = w.qkNorm, qA = w.qA, qB = w.qB;
  if (!n || !qA || !qB || qA.b || qB.b) throw new Error('linearizeQkNorm: expects the exact-structure form (q_a_proj, per-head q norm, q_b_proj, no query bias)');
  const { hidden: D, nHeads: H, qkNopeHeadDim: dn, qkRopeHeadDim: dR } = w.dims, rq = w.dims.qLoraRank!, qh = dn + dR;
  const G = n.kGroups, heads = H / G;
  // diag(γ_q)·q_a, then q_b times it, each head's rows scaled by its two constants.
  const gA = new Float64Array(rq * D);
  for (let i = 0; i < rq; i++) for (let j = 0; j < D; j++) gA[i * D + j] = qA.w[i * D + j]! * n.qNorm[i]!;
  const q = gemmF64(qB.w, gA, H * qh, D, rq);
  for (let h = 0; h < H; h++) {
    const s = c.q[h]! * c.k[Math.floor(h / heads)]!;
    for (let i = h * qh * D; i < (h + 1) * qh * D; i++) q[i]! *= s;
  }
  return { dims: { ...w.dims, qLoraRank: null }, q: { w: q, b: null }, qA: null, qB: null, kvA: w.kvA, kvB: w.kvB };
}

/** The naive form: the exact structure without the per-token key normaliser (κ ≡ 1). */
export function naiveQkNorm(w: MlaLayerWeights): MlaLayerWeights {
  if (!w.qkNorm) throw new Error('naiveQkNorm: not an exact-structure layer');
  return { ...w, qkNorm: { ...w.qkNorm, kProj: null } };
}

/**
 * The layer the strict stock fit starts from (stock-layer.ts): the MLA layer itself, or for the
 * exact-structure form of a Qwen3 layer its linearised form, the constants calibrated on `states`
 * (the stock prefix's inputs of this layer) through the source layer `source`.
 */
export function stockStart(view: LayerView, l: number, w: MlaLayerWeights, mla: DecoderLayer, source: DecoderLayer, states: HiddenStates, rope: RopeTable, dtype: FloatDType): { layer: DecoderLayer; note: string | null } {
  if (!w.qkNorm) return { layer: mla, note: null };
  const c = qkNormConstants(states, source);
  const pct = (a: Float64Array) => Array.from(a, (x) => (100 * x).toFixed(1)).join('/');
  return {
    layer: mlaDecoderLayer(view, l, linearizeQkNorm(w, c), rope, { dtype }),
    note: `q/k norm → constants: spread of ρ (std/mean) over the calibration tokens ${pct(c.qCv)} % (query heads), ${pct(c.kCv)} % (KV heads); the naive form scales group scores by E[ρ_k] = ${Array.from(c.kMean, (x) => x.toFixed(2)).join('/')}`,
  };
}

/** The exact-structure form runs in the engine but has no saved folder form yet: refuse --variant exact early. */
export function checkExactVariant(layer0: DecoderLayer): void {
  if (qkNormOf(layer0)) {
    throw new Error('--variant exact: the exact-structure MLA of a Qwen3 source (per-head query norm, 1/rms per KV head in the cache) has no saved folder form yet; convert writes the stock DeepSeek-V3 folder (the default) and reports the exact form\'s perplexity');
  }
}
