// Stage 1 — the exact rewrite of GQA/MHA attention into MLA form (docs/methods.md#exact-rewrite).
// The key latent is the G·d key outputs, the value latent the G·d value outputs; every
// query head reads its group's block through identity-selector up-projections. All key
// dims stay under RoPE ("big RoPE": each head's frequencies repeated per block), so the
// rewritten layer reproduces every score exactly; the cache is still 2·G·d per token.
//
// Key latent order: frequency-major, then KV head, each pair stored interleaved:
//   pair (j·G + g) = [head g, element re(j) ; head g, element im(j)]  with frequency invFreq[j].
// Grouping one frequency's G pairs together is the layout RoRoPE's per-frequency PCA works on.
import type { RopeLayout } from '../models/rope.js';
import { assembleMla, type LatentLayer, type MlaLayerWeights } from './latent-layer.js';

export interface GqaLayerSource {
  hidden: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** [H·d, D], [G·d, D], [G·d, D] (any float array; read as float64). */
  wq: ArrayLike<number>;
  wk: ArrayLike<number>;
  wv: ArrayLike<number>;
  bq?: ArrayLike<number> | null;
  bk?: ArrayLike<number> | null;
  bv?: ArrayLike<number> | null;
  /** How the source pairs RoPE elements within a head. */
  ropeLayout: RopeLayout;
  /** [d/2] source frequencies (with rope scaling applied). */
  ropeInvFreq: Float64Array;
  /** Softmax scale of the source; 1/√d when omitted. */
  scale?: number;
}

/** Element indices of pair j within a head of width d, in the given layout. */
export function ropePairElements(layout: RopeLayout, d: number, j: number): [number, number] {
  return layout === 'half' ? [j, j + d / 2] : [2 * j, 2 * j + 1];
}

export function withBias(w: ArrayLike<number>, b: ArrayLike<number> | null | undefined, rows: number, D: number, what: string): Float64Array {
  if (w.length !== rows * D) throw new Error(`${what} weight has ${w.length} values, expected ${rows}×${D}`);
  if (b && b.length !== rows) throw new Error(`${what} bias has ${b.length} values, expected ${rows}`);
  const out = new Float64Array(rows * (D + 1));
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < D; j++) out[i * (D + 1) + j] = w[i * D + j]!;
    out[i * (D + 1) + D] = b ? b[i]! : 0;
  }
  return out;
}

/** The source layer as a LatentLayer with identity up-projections (no approximation). */
export function latentFromGqa(s: GqaLayerSource): LatentLayer {
  const { hidden: D, nHeads: H, nKvHeads: G, headDim: d } = s;
  if (H % G !== 0) throw new Error(`${H} query heads cannot be grouped over ${G} KV heads`);
  if (d % 2 !== 0) throw new Error(`head_dim ${d} is odd; RoPE needs pairs`);
  if (s.ropeInvFreq.length !== d / 2) throw new Error(`${s.ropeInvFreq.length} RoPE frequencies for head_dim ${d}`);
  const n = H / G, Dp = D + 1, Gd = G * d;
  const wq = withBias(s.wq, s.bq, H * d, D, 'q_proj');
  const wkSrc = withBias(s.wk, s.bk, Gd, D, 'k_proj');
  const wv = withBias(s.wv, s.bv, Gd, D, 'v_proj');

  // latentRow[g·d + e] = where element e of KV head g lands in the key latent.
  const latentRow = new Int32Array(Gd);
  const ropeInvFreq = new Float64Array(Gd / 2);
  for (let j = 0; j < d / 2; j++) {
    const [re, im] = ropePairElements(s.ropeLayout, d, j);
    for (let g = 0; g < G; g++) {
      const pair = j * G + g;
      latentRow[g * d + re] = 2 * pair;
      latentRow[g * d + im] = 2 * pair + 1;
      ropeInvFreq[pair] = s.ropeInvFreq[j]!;
    }
  }
  const wk = new Float64Array(Gd * Dp);
  for (let src = 0; src < Gd; src++) wk.set(wkSrc.subarray(src * Dp, (src + 1) * Dp), latentRow[src]! * Dp);

  const kUp = new Float64Array(H * d * Gd);
  const vUp = new Float64Array(H * d * Gd);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / n);
    for (let e = 0; e < d; e++) {
      kUp[(h * d + e) * Gd + latentRow[g * d + e]!] = 1;
      vUp[(h * d + e) * Gd + g * d + e] = 1;
    }
  }
  return {
    hidden: D, nHeads: H, headDim: d,
    wq, nK: Gd, wk, nV: Gd, wv, kUp, vUp,
    ropeDim: Gd, ropeInvFreq,
    scale: s.scale ?? 1 / Math.sqrt(d),
  };
}

/**
 * The exact MLA form: d_R = G·d shared RoPE key (the whole key latent), d_n = 0, latent c = V
 * (r = G·d) with kv_b the value selectors, and the key selectors folded into q_proj.
 * Its RoPE frequencies are `latent.ropeInvFreq`, not DeepSeek's θ^(−2i/d_R): it runs in the
 * engine but is not a savable DeepSeek checkpoint; it exists to prove the rewrite lossless.
 */
export function exactMla(latent: LatentLayer): MlaLayerWeights {
  return assembleMla(latent);
}
