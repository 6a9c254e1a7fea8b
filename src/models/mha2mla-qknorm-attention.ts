// MHA2MLA (mha2mla-attention.ts) of a Qwen3 source, with the per-head q/k RMSNorm applied in
// Qwen3's order — norm, then RoPE (docs/methods.md#qk-norm). Every KV head g keeps 2r RoPE rows of
// its pre-norm key z_g and a shared latent c for the rest; the key is rebuilt from them:
//   ẑ_g(s)  = [z_rope^g(s) (cached as is, before RoPE) | up_k^g·c(s)]     (head row order of g)
//   key_g(s) = R_s^{S_g}( γ_k^g ⊙ ẑ_g(s)·κ_g(s) )
// with κ_g(s) either 1/rms(ẑ_g(s)) — the norm of the reconstructed key, as MHA2MLA's Qwen3 patch
// computes it ('reconstructed', no extra cache) — or 1/rms(z_g(s)) of the true pre-norm key,
// cached next to the row ('cached', G more values per token). The query is Qwen3's exactly:
// γ_q^g ⊙ q_h/rms(q_h), then RoPE on its first 2r rows. γ^g is γ in group g's row order.
//
// The norm is nonlinear in c, so the keys are rebuilt for every cached token at each step
// (decompressed attention, no absorbed form); the cache itself is the latent row
// [z_rope^0 … z_rope^{G−1} (G·2r) | c (R) | κ (G, 'cached' only)].
import { kernels } from '../kernels/index.js';
import { causalAttentionFlops, forwardEachSequence, type AttentionLayer, type AttentionSummary, type BatchSequence, type LatentControls, type MlaMode } from './attention.js';
import type { LayerCache } from './kv-cache.js';
import type { FloatDType } from '../kernels/types.js';
import { commitRows, createCacheStore, latentStore, stageRows, type KvQuant } from './latent-quant.js';
import type { Linear } from './linear.js';
import type { Mha2mlaParams } from './mha2mla-attention.js';
import { applyRope } from './rope.js';
import type { Workspace } from './workspace.js';

export type Mha2mlaKeyNorm = 'reconstructed' | 'cached';

export interface Mha2mlaQkNormParams extends Mha2mlaParams {
  /** γ_q and γ_k in each KV group's head row order, [G·d] each. */
  qNorm: Float32Array;
  kNorm: Float32Array;
  eps: number;
  keyNorm: Mha2mlaKeyNorm;
  /** 'cached': the source's k_proj [G·d, D], whose per-head rms gives κ. */
  kProj: Linear | null;
}

function rmsOf(x: Float32Array, o: number, n: number, eps: number): number {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[o + i]! * x[o + i]!;
  return Math.sqrt(ss / n + eps);
}

export class Mha2mlaQkNormAttention implements AttentionLayer, LatentControls {
  readonly p: Readonly<Mha2mlaQkNormParams>;
  readonly cacheElementsPerToken: number;
  /** Kept for the LatentControls seam; attention is always decompressed (see above). */
  mode: MlaMode;
  kvQuant: KvQuant | null = null;
  readonly latent: LatentControls = this;

  constructor(p: Mha2mlaQkNormParams) {
    const { nHeads: H, nKvHeads: G, headDim: d, ropePairs: r, kvLoraRank: R } = p;
    const fail = (m: string): never => { throw new Error(`MHA2MLA attention (per-head q/k norm): ${m}`); };
    if (!(G > 0 && H % G === 0)) fail(`${H} query heads cannot be grouped over ${G} KV heads`);
    if (p.q.outFeatures !== H * d || p.upK.outFeatures !== G * (d - 2 * r) || p.upV.outFeatures !== G * d || p.down.outFeatures !== R) fail('projection shapes do not match the heads');
    if (r > 0 ? p.kRope?.outFeatures !== G * 2 * r : p.kRope !== null) fail(`k_r_proj must have G·2r = ${G * 2 * r} outputs`);
    if (p.qNorm.length !== G * d || p.kNorm.length !== G * d) fail(`q/k norm weights must be [G·d] = ${G * d}`);
    if ((p.keyNorm === 'cached') !== (p.kProj !== null) || (p.kProj && p.kProj.outFeatures !== G * d)) fail('the cached key normaliser needs the [G·d, D] pre-norm key projection (and only it)');
    if (p.upK.bias || p.upV.bias) fail('biases are not supported');
    this.p = p;
    this.mode = p.mode ?? 'auto';
    this.cacheElementsPerToken = G * 2 * r + R + (p.keyNorm === 'cached' ? G : 0);
  }

  createCache(dtype: FloatDType = 'f32'): LayerCache {
    return { buffers: [createCacheStore(this.cacheElementsPerToken, this.kvQuant, dtype)] };
  }

  private linears(): Linear[] {
    const p = this.p;
    return [p.q, p.down, p.upK, p.upV, p.o, ...(p.kRope ? [p.kRope] : []), ...(p.kProj ? [p.kProj] : [])];
  }

  paramCount(): number {
    return this.linears().reduce((n, l) => n + l.paramCount(), 0) + this.p.qNorm.length + this.p.kNorm.length;
  }

  decodeWeightBytes(): number {
    return this.linears().reduce((n, l) => n + l.weightBytes(), 0) + this.p.qNorm.byteLength + this.p.kNorm.byteLength;
  }

  summary(): AttentionSummary {
    const p = this.p;
    return { label: 'MLA (MHA2MLA: per-KV-head RoPE)', qkNorm: true, mha2mla: { kvLoraRank: p.kvLoraRank, ropePairsPerHead: p.ropePairs, kvHeads: p.nKvHeads } };
  }

  flops(T: number, pos0: number): number {
    const p = this.p, H = p.nHeads, d = p.headDim;
    const f = this.linears().filter((l) => l !== p.upK && l !== p.upV).reduce((n, l) => n + l.flops(T), 0);
    return f + p.upK.flops(pos0 + T) + p.upV.flops(pos0 + T) + causalAttentionFlops(T, pos0, H, d, d);
  }

  forwardBatch(x: Float32Array, seqs: readonly BatchSequence[], out: Float32Array, ws: Workspace): void {
    forwardEachSequence(this, this.p.o.outFeatures, x, seqs, out, ws);
  }

  forward(x: Float32Array, T: number, pos0: number, cache: LayerCache, out: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, G = p.nKvHeads, d = p.headDim, r = p.ropePairs, R = p.kvLoraRank;
    const n = H / G, wr = G * 2 * r, W = this.cacheElementsPerToken, dn = d - 2 * r;
    const store = latentStore(cache);
    const q = ws.get('m2mqk.q', T * H * d);
    p.q.forward(x, T, q);
    // The query: per-head RMSNorm (the rms does not depend on the row order), then RoPE.
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const o = (t * H + h) * d, g = Math.floor(h / n), s = 1 / rmsOf(q, o, d, p.eps);
        for (let e = 0; e < d; e++) q[o + e] = q[o + e]! * s * p.qNorm[g * d + e]!;
      }
      if (r > 0) for (let g = 0; g < G; g++) applyRope(q.subarray((t * H + g * n) * d, (t * H + (g + 1) * n) * d), 1, n, d, p.ropes[g]!, pos0 + t, 'interleaved');
    }
    const rows = stageRows(store, pos0, T, ws);
    if (r > 0) {
      const kr = ws.get('m2mqk.kr', T * wr);
      p.kRope!.forward(x, T, kr);
      for (let t = 0; t < T; t++) rows.set(kr.subarray(t * wr, (t + 1) * wr), t * W);
    }
    const c = ws.get('m2mqk.c', T * R);
    p.down.forward(x, T, c);
    for (let t = 0; t < T; t++) rows.set(c.subarray(t * R, (t + 1) * R), t * W + wr);
    if (p.kProj) {
      const z = ws.get('m2mqk.z', T * G * d);
      p.kProj.forward(x, T, z);
      for (let t = 0; t < T; t++) for (let g = 0; g < G; g++) rows[t * W + wr + R + g] = 1 / rmsOf(z, (t * G + g) * d, d, p.eps);
    }
    const latent = commitRows(store, pos0, T, ws);

    // Every cached token's keys and values, rebuilt: [z_rope | up_k·c] → norm → γ → RoPE.
    const N = pos0 + T;
    const cs = ws.get('m2mqk.cs', N * R);
    for (let t = 0; t < N; t++) cs.set(latent.subarray(t * W + wr, t * W + wr + R), t * R);
    const kn = ws.get('m2mqk.kn', N * G * dn), vals = ws.get('m2mqk.v', N * G * d), keys = ws.get('m2mqk.k', N * G * d);
    p.upK.forward(cs, N, kn);
    p.upV.forward(cs, N, vals);
    for (let t = 0; t < N; t++) {
      for (let g = 0; g < G; g++) {
        const o = (t * G + g) * d;
        keys.set(latent.subarray(t * W + g * 2 * r, t * W + (g + 1) * 2 * r), o);
        keys.set(kn.subarray((t * G + g) * dn, (t * G + g + 1) * dn), o + 2 * r);
        const s = p.kProj ? latent[t * W + wr + R + g]! : 1 / rmsOf(keys, o, d, p.eps);
        for (let e = 0; e < d; e++) keys[o + e] = keys[o + e]! * s * p.kNorm[g * d + e]!;
        if (r > 0) applyRope(keys.subarray(o, o + d), 1, 1, d, p.ropes[g]!, t, 'interleaved');
      }
    }
    const mixed = ws.get('m2mqk.mixed', T * H * d);
    kernels().attention({
      q, tq: T, nHeads: H, nKvHeads: G, headDimK: d, headDimV: d,
      k: keys, kTokenStride: G * d, v: vals, vTokenStride: G * d,
      pos0, scale: 1 / Math.sqrt(d), out: mixed,
    });
    p.o.forward(mixed, T, out);
  }
}
