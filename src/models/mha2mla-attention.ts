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
import type { WeightSource } from '../tensor.js';
import { batchRows, causalAttentionFlops, type AttentionLayer, type BatchSequence, type AttentionSummary, type LatentControls, type MlaMode } from './attention.js';
import type { LayerCache } from './kv-cache.js';
import { commitRows, createCacheStore, latentStore, stageRows, type KvQuant } from './latent-quant.js';
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

/** inspect's description of an MHA2MLA layer of this shape. */
export function mha2mlaSummary(s: Mha2mlaShape): AttentionSummary {
  return { label: 'MLA (MHA2MLA: per-KV-head RoPE)', mha2mla: { kvLoraRank: s.kvLoraRank, ropePairsPerHead: s.ropePairs, kvHeads: s.nKvHeads } };
}

/** Values one token caches per layer: G RoPE keys of 2r plus the shared latent. */
export function mha2mlaCacheWidth(s: Mha2mlaShape): number {
  return s.nKvHeads * 2 * s.ropePairs + s.kvLoraRank;
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
    this.cacheElementsPerToken = mha2mlaCacheWidth(p);
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
      upK: Linear.load(src, `${prefix}.kv_proj.up_k`, G * (d - 2 * r), R, 'optional'),
      upV: Linear.load(src, `${prefix}.kv_proj.up_v`, G * d, R, 'optional'),
      o: Linear.load(src, `${prefix}.o_proj`, D, H * d, 'optional'),
      ropes,
    });
  }

  createCache(): LayerCache {
    return { buffers: [createCacheStore(this.cacheElementsPerToken, this.kvQuant)] };
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
    return mha2mlaSummary(this.p);
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
    this.forwardBatch(x, [{ T, pos0, cache }], out, ws);
  }

  forwardBatch(x: Float32Array, seqs: readonly BatchSequence[], out: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, G = p.nKvHeads, d = p.headDim, r = p.ropePairs, R = p.kvLoraRank;
    const n = H / G, wr = G * 2 * r, w = wr + R;
    const N = batchRows(seqs);
    const q = ws.get('mha2mla.q', N * H * d);
    p.q.forward(x, N, q);
    const kr = r > 0 ? ws.get('mha2mla.kr', N * wr) : null;
    if (kr) p.kRope!.forward(x, N, kr);
    const c = ws.get('mha2mla.c', N * R);
    p.down.forward(x, N, c);
    let row = 0;
    for (const s of seqs) {
      // Each KV head's frequencies: its own table for its query heads.
      if (r > 0) {
        for (let t = 0; t < s.T; t++) {
          const o = (row + t) * H;
          for (let g = 0; g < G; g++) applyRope(q.subarray((o + g * n) * d, (o + (g + 1) * n) * d), 1, n, d, p.ropes[g]!, s.pos0 + t, 'interleaved');
        }
      }
      row += s.T;
    }
    // Absorbed sequences share the up_k / up_v products over all N rows (see MLA's forwardBatch).
    const absorbed = seqs.map((s) => this.absorbedFor(s.T));
    const anyAbsorbed = absorbed.includes(true);
    const qLat = anyAbsorbed ? this.absorbQueries(q, N, ws) : null;
    const oLat = anyAbsorbed ? ws.get('mha2mla.olat', N * H * R) : null;
    const mixed = ws.get('mha2mla.mixed', N * H * d);
    row = 0;
    seqs.forEach((s, i) => {
      const { T, pos0 } = s;
      const store = latentStore(s.cache);
      const rows = stageRows(store, pos0, T, ws);
      for (let t = 0; t < T; t++) {
        if (kr) {
          rows.set(kr.subarray((row + t) * wr, (row + t + 1) * wr), t * w);
          for (let g = 0; g < G; g++) applyRope(rows.subarray(t * w + g * 2 * r, t * w + (g + 1) * 2 * r), 1, 1, 2 * r, p.ropes[g]!, pos0 + t, 'interleaved');
        }
        rows.set(c.subarray((row + t) * R, (row + t + 1) * R), t * w + wr);
      }
      const latent = commitRows(store, pos0, T, ws);
      if (absorbed[i]) {
        kernels().attention({
          q: qLat!.subarray(row * H * w, (row + T) * H * w), tq: T, nHeads: H, nKvHeads: 1, headDimK: w, headDimV: R,
          k: latent, kTokenStride: w, v: latent.subarray(wr), vTokenStride: w,
          pos0, scale: 1 / Math.sqrt(d), out: oLat!.subarray(row * H * R, (row + T) * H * R),
        });
      } else {
        this.attendDecompressed(q.subarray(row * H * d, (row + T) * H * d), T, pos0, latent, mixed.subarray(row * H * d, (row + T) * H * d), ws);
      }
      row += T;
    });
    if (anyAbsorbed) {
      const all = absorbed.every((a) => a);
      const mixedAbs = all ? mixed : ws.get('mha2mla.mixed_abs', N * H * d);
      this.expandOutputs(oLat!, N, mixedAbs, ws);
      if (!all) {
        row = 0;
        seqs.forEach((s, i) => {
          if (absorbed[i]) mixed.set(mixedAbs.subarray(row * H * d, (row + s.T) * H * d), row * H * d);
          row += s.T;
        });
      }
    }
    p.o.forward(mixed, N, out);
  }

  /** Per head the cache-row-wide query [0 … q_rope^h in slot g … 0 | up_k^gᵀ·q_nope^h], [N, H, w]. */
  private absorbQueries(q: Float32Array, N: number, ws: Workspace): Float32Array {
    const p = this.p, H = p.nHeads, G = p.nKvHeads, d = p.headDim, r = p.ropePairs, R = p.kvLoraRank;
    const n = H / G, wr = G * 2 * r, w = wr + R, dn = d - 2 * r;
    const k = kernels();
    const Uk = p.upK.weight;
    const qLat = ws.get('mha2mla.qlat', N * H * w);
    qLat.fill(0);
    const a = ws.get('mha2mla.head_in', N * n * Math.max(dn, R));
    const b = ws.get('mha2mla.head_out', N * n * Math.max(R, d));
    for (let g = 0; g < G; g++) {
      // The n heads of group g share up_k^g: q̂ [N·n × R] = q_nope [N·n × dn] · up_k^g [dn × R].
      if (dn > 0) {
        for (let t = 0; t < N; t++) {
          for (let j = 0; j < n; j++) {
            const src = (t * H + g * n + j) * d;
            a.set(q.subarray(src + 2 * r, src + d), (t * n + j) * dn);
          }
        }
        k.matmul(a.subarray(0, N * n * dn), Uk.data.subarray(g * dn * R, (g + 1) * dn * R), Uk.dtype, b.subarray(0, N * n * R), N * n, R, dn, false);
      } else {
        b.fill(0, 0, N * n * R);
      }
      for (let t = 0; t < N; t++) {
        for (let j = 0; j < n; j++) {
          const h = g * n + j, o = (t * H + h) * w;
          qLat.set(q.subarray((t * H + h) * d, (t * H + h) * d + 2 * r), o + g * 2 * r);
          qLat.set(b.subarray((t * n + j) * R, (t * n + j + 1) * R), o + wr);
        }
      }
    }
    return qLat;
  }

  /** mixed [N, H, d]: o_h = up_v^g·ô_h + b for the latent-space attention outputs ô [N, H, R]. */
  private expandOutputs(oLat: Float32Array, N: number, mixed: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, G = p.nKvHeads, d = p.headDim, r = p.ropePairs, R = p.kvLoraRank;
    const n = H / G, dn = d - 2 * r;
    const k = kernels();
    const Uv = p.upV.weight;
    const a = ws.get('mha2mla.head_in', N * n * Math.max(dn, R));
    const b = ws.get('mha2mla.head_out', N * n * Math.max(R, d));
    const bias = p.upV.bias;
    for (let g = 0; g < G; g++) {
      // o_h [N·n × d] = ô_h [N·n × R] · up_v^gᵀ (up_v^g = rows g·d … g·d + d − 1, stored [d, R]).
      for (let t = 0; t < N; t++) a.set(oLat.subarray((t * H + g * n) * R, (t * H + (g + 1) * n) * R), t * n * R);
      k.matmul(a.subarray(0, N * n * R), Uv.data.subarray(g * d * R, (g + 1) * d * R), Uv.dtype, b.subarray(0, N * n * d), N * n, d, R, true);
      for (let t = 0; t < N; t++) {
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
