// The MHA2MLA variant of Multi-head Latent Attention (docs/methods.md#mha2mla) behind the AttentionLayer
// seam: every KV head g keeps a small RoPE key of 2r dims (r frequency pairs of its own choosing,
// at their original frequencies), and one latent c (kv_lora_rank values) shared by all heads of
// the layer carries the NoPE keys and the values:
//   q_h      = q_proj^h·x               head layout [rope 2r (interleaved pairs) | nope d − 2r]
//   k_rope^g = k_r_proj^g·x             rotated per pair at θ_{S_g[i]}
//   c        = kv_proj.down_kv·x
//   k_nope^g = up_k^g·c + b,  v^g = up_v^g·c + b
//   score    = (q_rope^h·k_rope^g + q_nope^h·k_nope^g)/√d,  g = KV head of query head h
// Cache per token: one row [k_rope^0 … k_rope^{G−1} (G·2r) | c (kv_lora_rank)].
//
// Two ways to attend, same result:
// - decompressed (prefill, perplexity): expand every cached c into per-KV-head NoPE keys and
//   values, then grouped attention on [k_rope^g | k_nope^g];
// - absorbed (decode): q̂_h = up_k^gᵀ·q_nope^h, and each head's query becomes the cache-row-wide
//   vector [0 … q_rope^h in slot g … 0 | q̂_h]. The zeros drop the other heads' RoPE keys, so one
//   MQA call over the cache rows themselves gives every score (values: the c part of the same
//   rows), and o_h = up_v^g·ô_h + b. The price is (G−1)·2r wasted multiply-adds per score, much
//   less than expanding keys or storing c once per KV head. The NoPE key bias adds q_nope·b to all
//   of a query's scores alike, which softmax ignores, so the absorbed form drops it.
import { kernels } from '../kernels/index.js';
import type { FloatDType } from '../kernels/types.js';
import type { WeightSource } from '../tensor.js';
import { causalAttentionFlops, type AttentionLayer, type AttentionSummary, type LatentControls, type MlaMode } from './attention.js';
import type { LayerCache } from './kv-cache.js';
import { commitRows, commitRowsAsStored, createCacheStore, latentStore, stageRows, type CachedRows, type KvQuant } from './latent-quant.js';
import { floatOnly } from './weights.js';
import { Linear } from './linear.js';
import { applyRope, RopeTable } from './rope.js';
import type { Workspace } from './workspace.js';

export interface Mha2mlaShape {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** r: RoPE pairs kept per KV head. */
  ropePairs: number;
  /** Width of the shared latent c. */
  kvLoraRank: number;
}

export interface Mha2mlaParams extends Mha2mlaShape {
  /** [H·d, D], rows per head [rope 2r | nope d − 2r]. */
  q: Linear;
  /** [G·2r, D]; null when r = 0. */
  kRope: Linear | null;
  /** [kv_lora_rank, D]. */
  down: Linear;
  /** [G·(d − 2r), kv_lora_rank] (+ bias). */
  upK: Linear;
  /** [G·d, kv_lora_rank] (+ bias). */
  upV: Linear;
  o: Linear;
  /** Per KV head: a table of its r kept frequencies. */
  ropes: RopeTable[];
  mode?: MlaMode;
}

export class Mha2mlaAttention implements AttentionLayer, LatentControls {
  readonly p: Readonly<Mha2mlaParams>;
  readonly cacheElementsPerToken: number;
  mode: MlaMode;
  /** Quantized latent cache (latent-quant.ts) for caches created from now on; null keeps f32. */
  kvQuant: KvQuant | null = null;
  readonly latent: LatentControls = this;

  constructor(p: Mha2mlaParams) {
    const { nHeads: H, nKvHeads: G, headDim: d, ropePairs: r, kvLoraRank: R } = p;
    const fail = (m: string): never => { throw new Error(`MHA2MLA attention: ${m}`); };
    if (!(G > 0 && H % G === 0)) fail(`${H} query heads cannot be grouped over ${G} KV heads`);
    if (!(r >= 0 && 2 * r <= d)) fail(`${r} RoPE pairs do not fit heads of dim ${d}`);
    if (p.q.outFeatures !== H * d) fail(`q_proj must have H·d = ${H * d} outputs`);
    if (r > 0 ? p.kRope?.outFeatures !== G * 2 * r : p.kRope !== null) fail(`k_r_proj must have G·2r = ${G * 2 * r} outputs`);
    if (p.down.outFeatures !== R) fail(`down_kv must have kv_lora_rank = ${R} outputs`);
    if (p.upK.outFeatures !== G * (d - 2 * r) || p.upK.inFeatures !== R) fail(`up_k must be [${G * (d - 2 * r)}, ${R}]`);
    if (p.upV.outFeatures !== G * d || p.upV.inFeatures !== R) fail(`up_v must be [${G * d}, ${R}]`);
    if (p.o.inFeatures !== H * d) fail(`o_proj must take H·d = ${H * d} inputs`);
    if (p.ropes.length !== G || p.ropes.some((t) => t.half !== r)) fail(`expected ${G} RoPE tables of ${r} pairs`);
    this.p = p;
    this.mode = p.mode ?? 'auto';
    this.cacheElementsPerToken = G * 2 * r + R;
  }

  /**
   * Loads `${prefix}.{q_proj, k_r_proj, kv_proj.down_kv, kv_proj.up_k, kv_proj.up_v, o_proj}`
   * (biases wherever the checkpoint has them).
   */
  static load(src: WeightSource, prefix: string, s: Mha2mlaShape & { hidden: number }, ropes: RopeTable[]): Mha2mlaAttention {
    const { hidden: D, nHeads: H, nKvHeads: G, headDim: d, ropePairs: r, kvLoraRank: R } = s;
    return new Mha2mlaAttention({
      ...s,
      q: Linear.load(src, `${prefix}.q_proj`, H * d, D, 'optional'),
      kRope: r > 0 ? Linear.load(src, `${prefix}.k_r_proj`, G * 2 * r, D, 'optional') : null,
      down: Linear.load(src, `${prefix}.kv_proj.down_kv`, R, D, 'optional'),
      // up_k is read untransposed by the absorbed query (matmul with B [K×N]), which takes floats only.
      upK: Linear.load(floatOnly(src), `${prefix}.kv_proj.up_k`, G * (d - 2 * r), R, 'optional'),
      upV: Linear.load(src, `${prefix}.kv_proj.up_v`, G * d, R, 'optional'),
      o: Linear.load(src, `${prefix}.o_proj`, D, H * d, 'optional'),
      ropes,
    });
  }

  createCache(dtype: FloatDType = 'f32'): LayerCache {
    return { buffers: [createCacheStore(this.cacheElementsPerToken, this.kvQuant, dtype)] };
  }

  paramCount(): number {
    const p = this.p;
    return [p.q, p.kRope, p.down, p.upK, p.upV, p.o].reduce((n, l) => n + (l ? l.paramCount() : 0), 0);
  }

  decodeWeightBytes(): number {
    const p = this.p;
    return [p.q, p.kRope, p.down, p.upK, p.upV, p.o].reduce((n, l) => n + (l ? l.weightBytes() : 0), 0);
  }

  summary(): AttentionSummary {
    const p = this.p;
    return { label: 'MLA (MHA2MLA: per-KV-head RoPE)', mha2mla: { kvLoraRank: p.kvLoraRank, ropePairsPerHead: p.ropePairs, kvHeads: p.nKvHeads } };
  }

  private absorbedFor(T: number): boolean {
    return this.mode === 'absorbed' || (this.mode === 'auto' && T === 1);
  }

  flops(T: number, pos0: number): number {
    const p = this.p, H = p.nHeads, G = p.nKvHeads, d = p.headDim, r = p.ropePairs, R = p.kvLoraRank;
    let f = p.q.flops(T) + (p.kRope?.flops(T) ?? 0) + p.down.flops(T) + p.o.flops(T);
    if (this.absorbedFor(T)) {
      f += 2 * T * H * R * (d - 2 * r + d) + causalAttentionFlops(T, pos0, H, G * 2 * r + R, R);
    } else {
      f += p.upK.flops(pos0 + T) + p.upV.flops(pos0 + T) + causalAttentionFlops(T, pos0, H, d, d);
    }
    return f;
  }

  forward(x: Float32Array, T: number, pos0: number, cache: LayerCache, out: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, G = p.nKvHeads, d = p.headDim, r = p.ropePairs, R = p.kvLoraRank;
    const n = H / G, wr = G * 2 * r, w = wr + R;
    const store = latentStore(cache);

    const q = ws.get('mha2mla.q', T * H * d);
    p.q.forward(x, T, q);
    const rows = stageRows(store, pos0, T, ws);
    if (r > 0) {
      const kr = ws.get('mha2mla.kr', T * wr);
      p.kRope!.forward(x, T, kr);
      for (let t = 0; t < T; t++) {
        rows.set(kr.subarray(t * wr, (t + 1) * wr), t * w);
        // Each KV head's frequencies: its own table for its query heads and its key.
        for (let g = 0; g < G; g++) {
          applyRope(q.subarray((t * H + g * n) * d, (t * H + (g + 1) * n) * d), 1, n, d, p.ropes[g]!, pos0 + t, 'interleaved');
          applyRope(rows.subarray(t * w + g * 2 * r, t * w + (g + 1) * 2 * r), 1, 1, 2 * r, p.ropes[g]!, pos0 + t, 'interleaved');
        }
      }
    }
    const c = ws.get('mha2mla.c', T * R);
    p.down.forward(x, T, c);
    for (let t = 0; t < T; t++) rows.set(c.subarray(t * R, (t + 1) * R), t * w + wr);
    const mixed = ws.get('mha2mla.mixed', T * H * d);
    // The absorbed form reads the cache as stored (half rows stay half); the decompressed one expands f32 rows.
    if (this.absorbedFor(T)) this.attendAbsorbed(q, T, pos0, commitRowsAsStored(store, pos0, T, ws), mixed, ws);
    else this.attendDecompressed(q, T, pos0, commitRows(store, pos0, T, ws), mixed, ws);
    p.o.forward(mixed, T, out);
  }

  private attendAbsorbed(q: Float32Array, T: number, pos0: number, latent: CachedRows, mixed: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, G = p.nKvHeads, d = p.headDim, r = p.ropePairs, R = p.kvLoraRank;
    const n = H / G, wr = G * 2 * r, w = wr + R, dn = d - 2 * r;
    const k = kernels();
    const Uk = p.upK.weight, Uv = p.upV.weight;
    const qLat = ws.get('mha2mla.qlat', T * H * w);
    qLat.fill(0);
    const a = ws.get('mha2mla.head_in', T * n * Math.max(dn, R));
    const b = ws.get('mha2mla.head_out', T * n * Math.max(R, d));
    for (let g = 0; g < G; g++) {
      // The n heads of group g share up_k^g: q̂ [T·n × R] = q_nope [T·n × dn] · up_k^g [dn × R].
      if (dn > 0) {
        for (let t = 0; t < T; t++) {
          for (let j = 0; j < n; j++) {
            const src = (t * H + g * n + j) * d;
            a.set(q.subarray(src + 2 * r, src + d), (t * n + j) * dn);
          }
        }
        k.matmul(a.subarray(0, T * n * dn), Uk.data.subarray(g * dn * R, (g + 1) * dn * R), Uk.dtype, b.subarray(0, T * n * R), T * n, R, dn, false);
      } else {
        b.fill(0, 0, T * n * R);
      }
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < n; j++) {
          const h = g * n + j, o = (t * H + h) * w;
          qLat.set(q.subarray((t * H + h) * d, (t * H + h) * d + 2 * r), o + g * 2 * r);
          qLat.set(b.subarray((t * n + j) * R, (t * n + j + 1) * R), o + wr);
        }
      }
    }
    const oLat = ws.get('mha2mla.olat', T * H * R);
    k.attention({
      q: qLat, tq: T, nHeads: H, nKvHeads: 1, headDimK: w, headDimV: R,
      k: latent.data, kTokenStride: w, v: latent.data.subarray(wr), vTokenStride: w, kvDType: latent.dtype,
      pos0, scale: 1 / Math.sqrt(d), out: oLat,
    });
    const bias = p.upV.bias;
    for (let g = 0; g < G; g++) {
      // o_h [T·n × d] = ô_h [T·n × R] · up_v^gᵀ (up_v^g = rows g·d … g·d + d − 1, stored [d, R]).
      for (let t = 0; t < T; t++) a.set(oLat.subarray((t * H + g * n) * R, (t * H + (g + 1) * n) * R), t * n * R);
      k.matmul(a.subarray(0, T * n * R), Uv.data.subarray(g * d * R, (g + 1) * d * R), Uv.dtype, b.subarray(0, T * n * d), T * n, d, R, true);
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < n; j++) {
          const o = (t * H + g * n + j) * d, s = (t * n + j) * d;
          for (let e = 0; e < d; e++) mixed[o + e] = b[s + e]! + (bias ? bias[g * d + e]! : 0);
        }
      }
    }
  }

  private attendDecompressed(q: Float32Array, T: number, pos0: number, latent: Float32Array, mixed: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, G = p.nKvHeads, d = p.headDim, r = p.ropePairs, R = p.kvLoraRank;
    const wr = G * 2 * r, w = wr + R, dn = d - 2 * r;
    const N = pos0 + T;
    const cs = ws.get('mha2mla.cs', N * R);
    for (let t = 0; t < N; t++) cs.set(latent.subarray(t * w + wr, (t + 1) * w), t * R);
    const kn = ws.get('mha2mla.kn', N * G * dn);
    const vals = ws.get('mha2mla.v', N * G * d);
    p.upK.forward(cs, N, kn);
    p.upV.forward(cs, N, vals);
    const keys = ws.get('mha2mla.k', N * G * d);
    for (let t = 0; t < N; t++) {
      for (let g = 0; g < G; g++) {
        const o = (t * G + g) * d;
        keys.set(latent.subarray(t * w + g * 2 * r, t * w + (g + 1) * 2 * r), o);
        keys.set(kn.subarray((t * G + g) * dn, (t * G + g + 1) * dn), o + 2 * r);
      }
    }
    kernels().attention({
      q, tq: T, nHeads: H, nKvHeads: G, headDimK: d, headDimV: d,
      k: keys, kTokenStride: G * d, v: vals, vTokenStride: G * d,
      pos0, scale: 1 / Math.sqrt(d), out: mixed,
    });
  }
}

/** The RoPE table of each KV head: source frequencies `invFreq` [d/2] picked at its pairs. */
export function perHeadRopeTables(invFreq: Float64Array, pairs: readonly (readonly number[])[]): RopeTable[] {
  return pairs.map((ks) => new RopeTable(Float64Array.from(ks, (k) => {
    if (!(k >= 0 && k < invFreq.length)) throw new Error(`RoPE pair index ${k} outside 0..${invFreq.length - 1}`);
    return invFreq[k]!;
  })));
}
