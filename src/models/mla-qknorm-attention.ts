// The engine-native exact-structure MLA of a Qwen3 source (docs/methods.md#qk-norm): DeepSeek MLA
// (mla-attention.ts) plus what Qwen3's per-head q/k RMSNorm needs and stock DeepSeek-V3 has not.
//
// - Query: q_a_proj is the source's raw q_proj, q_a_layernorm acts per head (groups of head_dim
//   values, weight γ_q tiled), q_b_proj maps each normalised head to its [q_nope | q_pe] — the
//   Qwen3 query exactly, then TransMLA's per-head linear query map.
// - Key: every key of group g is γ_k ⊙ W_k,g x_s / ρ_g(s). The latent holds the linear part
//   (γ_k folded into the weights); the 1/ρ_g(s) factors are one scalar per KV head and token,
//   κ_g(s) = 1/√(mean(z_g²) + ε) of the pre-norm key z_g = W_k,g x_s (k_norm_proj below), cached
//   after [c | k_pe]. Head h of group g multiplies its whole score with key s (NoPE and RoPE
//   parts) by κ_g(s): score_h(t,s) = s_m·κ_g(s)·(⟨q_nope^h, k_nope^h(s)⟩ + ⟨q_pe^h, k_pe(s)⟩).
//   The cache holds r + d_R + G values per token.
// - keyScale null is the "naive" form (κ ≡ 1: γ_k folded, the per-token rms ignored).
//
// Absorbed decode attends per group over the latent rows scaled by κ_g (values unscaled); this
// builds a [tokens × G × (r + d_R)] key copy per step: exact, not tuned for speed.
import { kernels } from '../kernels/index.js';
import { causalAttentionFlops, forwardEachSequence, type AttentionLayer, type AttentionSummary, type BatchSequence, type LatentControls, type MlaMode } from './attention.js';
import type { LayerCache } from './kv-cache.js';
import type { FloatDType } from '../kernels/types.js';
import { commitRows, createCacheStore, latentStore, stageRows, type KvQuant } from './latent-quant.js';
import { Linear, SharedInputLinears } from './linear.js';
import type { MlaParams } from './mla-attention.js';
import { rmsNorm } from './ops.js';
import { applyRope } from './rope.js';
import type { Workspace } from './workspace.js';

export interface KeyScale {
  /** The pre-norm keys z = W_k·x [G·d_k, D] (the source's k_proj). */
  proj: Linear;
  groups: number;
  eps: number;
}

export interface QkNormMlaParams extends MlaParams {
  /** q_a_layernorm is applied to qLoraRank/qNormGroups values at a time (Qwen3: one group per head). */
  qNormGroups: number;
  /** null: the naive form, no per-token key normaliser. */
  keyScale: KeyScale | null;
}

export class QkNormMlaAttention implements AttentionLayer, LatentControls {
  readonly p: Readonly<QkNormMlaParams>;
  readonly cacheElementsPerToken: number;
  mode: MlaMode;
  kvQuant: KvQuant | null = null;
  readonly latent: LatentControls = this;
  private readonly inProj: SharedInputLinears;
  private readonly inOut: Float32Array[] = [];

  constructor(p: QkNormMlaParams) {
    const H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank, rq = p.qLoraRank;
    const fail = (m: string): never => { throw new Error(`MLA attention (per-head q/k norm): ${m}`); };
    if (rq === null || !p.qA || !p.qB || !p.qANorm) fail('needs q_a_proj, a per-head q_a_layernorm and q_b_proj');
    if (rq! % p.qNormGroups !== 0 || p.qANorm!.length !== rq) fail(`q_a_layernorm of ${p.qANorm!.length} weights in ${p.qNormGroups} groups for q_lora_rank ${rq}`);
    if (p.qA!.outFeatures !== rq || p.qB!.inFeatures !== rq || p.qB!.outFeatures !== H * (dn + dR)) fail(`q_a_proj/q_b_proj must be [${rq}, D] and [${H * (dn + dR)}, ${rq}]`);
    if (p.kvA.outFeatures !== r + dR) fail(`kv_a_proj_with_mqa must have r + d_R = ${r + dR} outputs`);
    if (p.kvB.outFeatures !== H * (dn + dv) || p.kvB.inFeatures !== r) fail(`kv_b_proj must be [${H * (dn + dv)}, ${r}]`);
    if (p.o.inFeatures !== H * dv) fail(`o_proj must take H·d_v = ${H * dv} inputs`);
    if (p.rope.dim !== dR) fail(`RoPE table of dim ${p.rope.dim} for qk_rope_head_dim ${dR}`);
    if (p.kvANorm) fail('kv_a_layernorm is not part of this form');
    const ks = p.keyScale;
    if (ks && (H % ks.groups !== 0 || ks.proj.outFeatures % ks.groups !== 0)) fail(`${H} heads and ${ks.proj.outFeatures} pre-norm key rows cannot form ${ks.groups} groups`);
    this.p = p;
    this.inProj = new SharedInputLinears(ks ? [p.qA!, p.kvA, ks.proj] : [p.qA!, p.kvA]);
    this.mode = p.mode ?? 'auto';
    this.cacheElementsPerToken = r + dR + (ks ? ks.groups : 0);
  }

  createCache(dtype: FloatDType = 'f32'): LayerCache {
    return { buffers: [createCacheStore(this.cacheElementsPerToken, this.kvQuant, dtype)] };
  }

  paramCount(): number {
    const p = this.p;
    return [p.qA!, p.qB!, p.kvA, p.kvB, p.o, ...(p.keyScale ? [p.keyScale.proj] : [])].reduce((n, l) => n + l.paramCount(), 0) + p.qANorm!.length;
  }

  decodeWeightBytes(): number {
    const p = this.p;
    return [p.qA!, p.qB!, p.kvA, p.kvB, p.o, ...(p.keyScale ? [p.keyScale.proj] : [])].reduce((n, l) => n + l.weightBytes(), 0) + p.qANorm!.byteLength;
  }

  summary(): AttentionSummary {
    const p = this.p;
    return { label: 'MLA', qkNorm: true, mla: { kvLoraRank: p.kvLoraRank, qkRopeHeadDim: p.qkRopeHeadDim, qkNopeHeadDim: p.qkNopeHeadDim, vHeadDim: p.vHeadDim, qLoraRank: p.qLoraRank } };
  }

  private absorbedFor(T: number): boolean {
    return this.mode === 'absorbed' || (this.mode === 'auto' && T === 1);
  }

  flops(T: number, pos0: number): number {
    const p = this.p, H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank;
    let f = p.kvA.flops(T) + p.o.flops(T) + p.qA!.flops(T) + p.qB!.flops(T) + (p.keyScale?.proj.flops(T) ?? 0);
    if (this.absorbedFor(T)) f += 2 * T * H * r * (dn + dv) + causalAttentionFlops(T, pos0, H, r + dR, r);
    else f += p.kvB.flops(pos0 + T) + causalAttentionFlops(T, pos0, H, dn + dR, dv);
    return f;
  }

  forwardBatch(x: Float32Array, seqs: readonly BatchSequence[], out: Float32Array, ws: Workspace): void {
    forwardEachSequence(this, this.p.o.outFeatures, x, seqs, out, ws);
  }

  forward(x: Float32Array, T: number, pos0: number, cache: LayerCache, out: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank, rq = p.qLoraRank!;
    const qh = dn + dR, w = r + dR, W = this.cacheElementsPerToken, ks = p.keyScale;
    const store = latentStore(cache);
    const rows = stageRows(store, pos0, T, ws);
    const qa = ws.get('mlaqk.qa', T * rq);
    const kv = ws.get('mlaqk.kv', T * w);
    const outs = this.inOut;
    outs[0] = qa; outs[1] = kv;
    if (ks) outs[2] = ws.get('mlaqk.z', T * ks.proj.outFeatures);
    this.inProj.forward(x, T, outs);
    // Per-head q_norm: each group of rq/qNormGroups values is one RMSNorm row with its own weights.
    const dq = rq / p.qNormGroups;
    for (let t = 0; t < T; t++) {
      for (let g = 0; g < p.qNormGroups; g++) {
        const seg = qa.subarray(t * rq + g * dq, t * rq + (g + 1) * dq);
        rmsNorm(seg, 1, dq, p.qANorm!.subarray(g * dq, (g + 1) * dq), p.normEps, seg);
      }
    }
    const q = ws.get('mlaqk.q', T * H * qh);
    p.qB!.forward(qa, T, q);
    for (let t = 0; t < T; t++) rows.set(kv.subarray(t * w, (t + 1) * w), t * W);
    if (ks) {
      const z = outs[2]!, dk = ks.proj.outFeatures / ks.groups;
      for (let t = 0; t < T; t++) {
        for (let g = 0; g < ks.groups; g++) {
          let ss = 0;
          for (let e = 0; e < dk; e++) { const v = z[(t * ks.groups + g) * dk + e]!; ss += v * v; }
          rows[t * W + w + g] = 1 / Math.sqrt(ss / dk + ks.eps);
        }
      }
    }
    const layout = p.ropeLayout ?? 'interleaved';
    applyRope(q, T, H, qh, p.rope, pos0, layout, dn);
    applyRope(rows, T, 1, W, p.rope, pos0, layout, r);
    const mixed = ws.get('mlaqk.mixed', T * H * dv);
    const latent = commitRows(store, pos0, T, ws);
    if (this.absorbedFor(T)) this.attendAbsorbed(q, T, pos0, latent, mixed, ws);
    else this.attendDecompressed(q, T, pos0, latent, mixed, ws);
    p.o.forward(mixed, T, out);
  }

  /** κ_g(s) of cached token s (1 in the naive form). */
  private kappa(latent: Float32Array, s: number, g: number): number {
    return this.p.keyScale ? latent[s * this.cacheElementsPerToken + this.p.kvLoraRank + this.p.qkRopeHeadDim + g]! : 1;
  }

  private groups(): number {
    return this.p.keyScale?.groups ?? 1;
  }

  private attendAbsorbed(q: Float32Array, T: number, pos0: number, latent: Float32Array, mixed: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank;
    const qh = dn + dR, w = r + dR, hw = dn + dv, W = this.cacheElementsPerToken, G = this.groups(), N = pos0 + T;
    const k = kernels(), B = p.kvB.weight;
    const qLat = ws.get('mlaqk.qlat', T * H * w);
    const a = ws.get('mlaqk.head_in', T * Math.max(dn, r));
    const c = ws.get('mlaqk.head_out', T * Math.max(r, dv));
    for (let h = 0; h < H; h++) {
      if (dn > 0) {
        for (let t = 0; t < T; t++) a.set(q.subarray((t * H + h) * qh, (t * H + h) * qh + dn), t * dn);
        k.matmul(a.subarray(0, T * dn), B.data.subarray(h * hw * r, (h * hw + dn) * r), B.dtype, c.subarray(0, T * r), T, r, dn, false);
      } else {
        c.fill(0, 0, T * r);
      }
      for (let t = 0; t < T; t++) {
        qLat.set(c.subarray(t * r, (t + 1) * r), (t * H + h) * w);
        qLat.set(q.subarray((t * H + h) * qh + dn, (t * H + h + 1) * qh), (t * H + h) * w + r);
      }
    }
    // Keys of group g: the latent rows times κ_g(s); values: the unscaled latents, one copy per group.
    const keys = ws.get('mlaqk.akeys', N * G * w), vals = ws.get('mlaqk.avals', N * G * r);
    for (let s = 0; s < N; s++) {
      for (let g = 0; g < G; g++) {
        const kap = this.kappa(latent, s, g), o = (s * G + g) * w;
        for (let i = 0; i < w; i++) keys[o + i] = kap * latent[s * W + i]!;
        vals.set(latent.subarray(s * W, s * W + r), (s * G + g) * r);
      }
    }
    const oLat = ws.get('mlaqk.olat', T * H * r);
    k.attention({
      q: qLat, tq: T, nHeads: H, nKvHeads: G, headDimK: w, headDimV: r,
      k: keys, kTokenStride: G * w, v: vals, vTokenStride: G * r,
      pos0, scale: p.scale, out: oLat,
    });
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) a.set(oLat.subarray((t * H + h) * r, (t * H + h + 1) * r), t * r);
      k.matmul(a.subarray(0, T * r), B.data.subarray((h * hw + dn) * r, (h * hw + hw) * r), B.dtype, c.subarray(0, T * dv), T, dv, r, true);
      for (let t = 0; t < T; t++) mixed.set(c.subarray(t * dv, (t + 1) * dv), (t * H + h) * dv);
    }
  }

  private attendDecompressed(q: Float32Array, T: number, pos0: number, latent: Float32Array, mixed: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank;
    const qh = dn + dR, hw = dn + dv, W = this.cacheElementsPerToken, G = this.groups(), n = H / G, N = pos0 + T;
    const cs = ws.get('mlaqk.c', N * r);
    for (let t = 0; t < N; t++) cs.set(latent.subarray(t * W, t * W + r), t * r);
    const kv = ws.get('mlaqk.kvall', N * H * hw);
    p.kvB.forward(cs, N, kv);
    const keys = ws.get('mlaqk.k', N * H * qh), vals = ws.get('mlaqk.v', N * H * dv);
    for (let t = 0; t < N; t++) {
      const kpe = latent.subarray(t * W + r, t * W + r + dR);
      for (let h = 0; h < H; h++) {
        const kap = this.kappa(latent, t, Math.floor(h / n));
        const src = (t * H + h) * hw, ko = (t * H + h) * qh;
        for (let e = 0; e < dn; e++) keys[ko + e] = kap * kv[src + e]!;
        for (let e = 0; e < dR; e++) keys[ko + dn + e] = kap * kpe[e]!;
        vals.set(kv.subarray(src + dn, src + hw), (t * H + h) * dv);
      }
    }
    kernels().attention({
      q, tq: T, nHeads: H, nKvHeads: H, headDimK: qh, headDimV: dv,
      k: keys, kTokenStride: H * qh, v: vals, vTokenStride: H * dv,
      pos0, scale: p.scale, out: mixed,
    });
  }
}
