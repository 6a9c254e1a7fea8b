// Multi-head Latent Attention (DeepSeek-V2/V3, docs/methods.md#mla-target) behind the AttentionLayer seam.
// Per token the cache holds one row [c (r) | k_pe (d_R)], k_pe stored after RoPE: that is
// r + d_R values per layer, whatever the number of heads.
//
// Two ways to attend, same result:
// - decompressed (prefill, perplexity): expand every cached c through kv_b_proj into per-head
//   k_nope and v, then ordinary multi-head attention on [k_nope | k_pe];
// - absorbed (decode): fold W_UK into the query, q̂_h = W_UK^hᵀ·q_nope^h, and attend with
//   [q̂_h | q_pe^h] against the latent rows themselves (MQA, one KV head of width r + d_R,
//   values = the first r elements of the same rows); then o_h = W_UV^h·ô_h.
//   The kernel then reads only the latent cache, so decoding is bound by r + d_R per token.
//   W_UK^h is held transposed from load (mla-decode.ts), so q̂_h is a GEMV over contiguous rows;
//   W_UV^h is kv_b's own row block. A half-precision latent cache is handed to the kernel as
//   stored; the decompressed form (prefill) widens it.
// RoPE on q_pe/k_pe uses the interleaved layout (pairs 2i, 2i+1), DeepSeek's convention,
// unless a config says rope_interleave: false.
import type { FloatDType, WeightDType } from '../kernels/types.js';
import { tensorBytes, type Tensor, type WeightSource } from '../tensor.js';
import { kernels } from '../kernels/index.js';
import { batchRows, causalAttentionFlops, type AttentionLayer, type BatchSequence, type AttentionSummary, type LatentControls, type MlaMode } from './attention.js';
import type { LayerCache } from './kv-cache.js';
import { commitRows, commitRowsAsStored, createCacheStore, latentStore, stageRows, type CachedRows, type KvQuant } from './latent-quant.js';
import { ukStoreType, ukTransposed, weightRows } from './mla-decode.js';
import { Linear, SharedInputLinears } from './linear.js';
import { rmsNorm } from './ops.js';
import { applyRope, type RopeLayout, type RopeTable } from './rope.js';
import { requireTensor, widen } from './weights.js';
import type { Workspace } from './workspace.js';

export type { MlaMode } from './attention.js';

export interface MlaShape {
  nHeads: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  kvLoraRank: number;
  qLoraRank: number | null;
}

export interface MlaParams extends MlaShape {
  /** q_proj, or q_a_proj + q_b_proj (with an optional q_a_layernorm) when qLoraRank is set. */
  q: Linear | null;
  qA: Linear | null;
  qANorm: Float32Array | null;
  qB: Linear | null;
  kvA: Linear;
  /** kv_a_layernorm over c (DeepSeek's stock layout); the exact TransMLA variant has none. */
  kvANorm: Float32Array | null;
  kvB: Linear;
  o: Linear;
  rope: RopeTable;
  /** Pairing of q_pe/k_pe elements: 'interleaved' (DeepSeek, rope_interleave=true) unless the config says otherwise. */
  ropeLayout?: RopeLayout;
  /** Softmax scale, (d_n + d_R)^−½ for DeepSeek checkpoints. */
  scale: number;
  normEps: number;
  /** 'auto': decompressed when several tokens arrive at once, absorbed for single-token decode. */
  mode?: MlaMode;
  /**
   * W_UK^h transposed for every head, [H·r, d_n] (mla-decode.ts): the absorbed query's weights in
   * decode layout. Absent: derived from kv_b when the layer is built.
   */
  ukT?: Tensor<WeightDType>;
}

/** inspect's description of an MLA layer of this shape. */
export function mlaSummary(s: MlaShape, kvLoraRanks?: readonly number[] | null, qkRopeHeadDims?: readonly number[] | null): AttentionSummary {
  return {
    label: 'MLA',
    mla: {
      kvLoraRank: s.kvLoraRank, qkRopeHeadDim: s.qkRopeHeadDim, qkNopeHeadDim: s.qkNopeHeadDim, vHeadDim: s.vHeadDim, qLoraRank: s.qLoraRank,
      ...(kvLoraRanks ? { kvLoraRanks: [...kvLoraRanks] } : {}), ...(qkRopeHeadDims ? { qkRopeHeadDims: [...qkRopeHeadDims] } : {}),
    },
  };
}

export class MlaAttention implements AttentionLayer, LatentControls {
  readonly p: Readonly<MlaParams>;
  readonly cacheElementsPerToken: number;
  mode: MlaMode;
  /** Quantized latent cache (latent-quant.ts) for caches created from now on; null keeps f32. */
  kvQuant: KvQuant | null = null;
  readonly latent: LatentControls = this;
  /** W_UK^h transposed, [H·r, d_n], laid out once (mla-decode.ts). */
  readonly ukT: Tensor<WeightDType>;
  /** q (or q_a) and kv_a: both read the layer input. */
  private readonly inProj: SharedInputLinears;
  private readonly inOut: Float32Array[] = [];

  constructor(p: MlaParams) {
    const H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank;
    const qOut = H * (dn + dR);
    const fail = (m: string): never => { throw new Error(`MLA attention: ${m}`); };
    if (p.qLoraRank === null) {
      if (!p.q || p.q.outFeatures !== qOut) fail(`q_proj must have ${qOut} outputs (H·(d_n+d_R))`);
    } else {
      if (!p.qA || !p.qB || p.qA.outFeatures !== p.qLoraRank || p.qB.inFeatures !== p.qLoraRank || p.qB.outFeatures !== qOut) {
        fail(`q_a_proj/q_b_proj must be [${p.qLoraRank}, D] and [${qOut}, ${p.qLoraRank}]`);
      }
    }
    if (p.kvA.outFeatures !== r + dR) fail(`kv_a_proj_with_mqa must have r + d_R = ${r + dR} outputs, has ${p.kvA.outFeatures}`);
    if (p.kvB.outFeatures !== H * (dn + dv) || p.kvB.inFeatures !== r) fail(`kv_b_proj must be [${H * (dn + dv)}, ${r}]`);
    if (p.o.inFeatures !== H * dv) fail(`o_proj must take H·d_v = ${H * dv} inputs`);
    if (p.rope.dim !== dR) fail(`RoPE table of dim ${p.rope.dim} for qk_rope_head_dim ${dR}`);
    if (p.kvANorm && p.kvANorm.length !== r) fail(`kv_a_layernorm must have ${r} weights`);
    const uk = p.ukT ?? ukTransposed(p.kvB.weight, H, dn, dv, r, ukStoreType(p.kvB.weight.dtype, null, dn));
    if (uk.shape[0] !== H * r || uk.shape[1] !== dn) fail(`W_UK in decode layout must be [${H * r}, ${dn}], got [${uk.shape.join(', ')}]`);
    this.ukT = uk;
    this.p = p;
    this.inProj = new SharedInputLinears([p.q ?? p.qA!, p.kvA]);
    this.mode = p.mode ?? 'auto';
    this.cacheElementsPerToken = r + dR;
  }

  /**
   * Loads `${prefix}.{q_proj | q_a_proj,q_a_layernorm?,q_b_proj}`, `kv_a_proj_with_mqa`,
   * `kv_a_layernorm?`, `kv_b_proj`, `o_proj` (biases wherever the checkpoint has them).
   */
  static load(src: WeightSource, prefix: string, s: MlaShape & { hidden: number; normEps: number; ropeLayout?: RopeLayout; scale?: number }, rope: RopeTable): MlaAttention {
    const D = s.hidden, H = s.nHeads, dn = s.qkNopeHeadDim, dR = s.qkRopeHeadDim, dv = s.vHeadDim, r = s.kvLoraRank;
    const opt = (name: string, n: number): Float32Array | null => (src.has(name) ? widen(requireTensor(src, name, [n])) : null);
    const qOut = H * (dn + dR);
    let q: Linear | null = null, qA: Linear | null = null, qB: Linear | null = null, qANorm: Float32Array | null = null;
    if (s.qLoraRank === null) {
      q = Linear.load(src, `${prefix}.q_proj`, qOut, D, 'optional');
    } else {
      qA = Linear.load(src, `${prefix}.q_a_proj`, s.qLoraRank, D, 'optional');
      qANorm = opt(`${prefix}.q_a_layernorm.weight`, s.qLoraRank);
      qB = Linear.load(src, `${prefix}.q_b_proj`, qOut, s.qLoraRank, 'optional');
    }
    // W_UK's transposes come from kv_b's stored values (not from a quantized kv_b), quantized like
    // every other matrix when the source quantizes weights.
    const kvB = Linear.load(src, `${prefix}.kv_b_proj`, H * (dn + dv), r, 'optional');
    const kvBStored = requireTensor(src, `${prefix}.kv_b_proj.weight`, [H * (dn + dv), r]);
    const ukT = ukTransposed(kvBStored, H, dn, dv, r, ukStoreType(kvBStored.dtype, src.weightQuant, dn));
    return new MlaAttention({
      ...s, q, qA, qANorm, qB, ukT,
      kvA: Linear.load(src, `${prefix}.kv_a_proj_with_mqa`, r + dR, D, 'optional'),
      kvANorm: opt(`${prefix}.kv_a_layernorm.weight`, r),
      kvB,
      o: Linear.load(src, `${prefix}.o_proj`, D, H * dv, 'optional'),
      rope,
      scale: s.scale ?? 1 / Math.sqrt(dn + dR),
    });
  }

  createCache(dtype: FloatDType = 'f32'): LayerCache {
    return { buffers: [createCacheStore(this.cacheElementsPerToken, this.kvQuant, dtype)] };
  }

  paramCount(): number {
    const p = this.p;
    let n = p.kvA.paramCount() + p.kvB.paramCount() + p.o.paramCount() + (p.kvANorm?.length ?? 0);
    for (const l of [p.q, p.qA, p.qB]) if (l) n += l.paramCount();
    return n + (p.qANorm?.length ?? 0);
  }

  /**
   * One decode step's weights: the projections, and in the absorbed form W_UK's transposes plus
   * the W_UV rows of kv_b (its W_UK rows are not read); decompressed, all of kv_b.
   */
  decodeWeightBytes(): number {
    const p = this.p;
    let n = (p.kvANorm?.byteLength ?? 0) + (p.qANorm?.byteLength ?? 0);
    for (const l of [p.q, p.qA, p.qB, p.kvA, p.o]) if (l) n += l.weightBytes();
    if (!this.absorbedFor(1)) return n + p.kvB.weightBytes();
    const B = p.kvB.weight;
    return n + this.ukT.data.byteLength + p.nHeads * tensorBytes(B.dtype, p.vHeadDim * p.kvLoraRank) + (p.kvB.bias?.byteLength ?? 0);
  }

  summary(): AttentionSummary {
    return mlaSummary(this.p);
  }

  private absorbedFor(T: number): boolean {
    return this.mode === 'absorbed' || (this.mode === 'auto' && T === 1);
  }

  flops(T: number, pos0: number): number {
    const p = this.p, H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank;
    let f = p.kvA.flops(T) + p.o.flops(T);
    f += p.q ? p.q.flops(T) : p.qA!.flops(T) + p.qB!.flops(T);
    if (this.absorbedFor(T)) {
      // W_UK and W_UV per head, then MQA over the latent rows.
      f += 2 * T * H * r * (dn + dv) + causalAttentionFlops(T, pos0, H, r + dR, r);
    } else {
      f += p.kvB.flops(pos0 + T) + causalAttentionFlops(T, pos0, H, dn + dR, dv);
    }
    return f;
  }

  forward(x: Float32Array, T: number, pos0: number, cache: LayerCache, out: Float32Array, ws: Workspace): void {
    this.forwardBatch(x, [{ T, pos0, cache }], out, ws);
  }

  forwardBatch(x: Float32Array, seqs: readonly BatchSequence[], out: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank;
    const qh = dn + dR, w = r + dR;
    const N = batchRows(seqs);
    // Queries [N, H, d_n + d_R] and the new latent rows [c | k_pe] of every sequence. q (or q_a)
    // and kv_a read the same x: one fused pass for a single token.
    const q = ws.get('mla.q', N * H * qh);
    const kvNew = ws.get('mla.kvnew', N * w);
    const outs = this.inOut;
    if (p.q) {
      outs[0] = q; outs[1] = kvNew;
      this.inProj.forward(x, N, outs);
    } else {
      const qa = ws.get('mla.qa', N * p.qLoraRank!);
      outs[0] = qa; outs[1] = kvNew;
      this.inProj.forward(x, N, outs);
      if (p.qANorm) rmsNorm(qa, N, p.qLoraRank!, p.qANorm, p.normEps, qa);
      p.qB!.forward(qa, N, q);
    }
    const layout = p.ropeLayout ?? 'interleaved';
    let row = 0;
    for (const s of seqs) {
      applyRope(q.subarray(row * H * qh, (row + s.T) * H * qh), s.T, H, qh, p.rope, s.pos0, layout, dn);
      row += s.T;
    }
    // Absorbed sequences share the per-head W_UK / W_UV products, computed over all N rows at
    // once; a decompressed sequence (several new tokens in 'auto' mode) ignores its rows of them.
    const absorbed = seqs.map((s) => this.absorbedFor(s.T));
    const anyAbsorbed = absorbed.includes(true);
    const qLat = anyAbsorbed ? this.absorbQueries(q, N, ws) : null;
    const oLat = anyAbsorbed ? ws.get('mla.olat', N * H * r) : null;
    const mixed = ws.get('mla.mixed', N * H * dv);
    row = 0;
    seqs.forEach((s, i) => {
      const { T, pos0 } = s;
      const store = latentStore(s.cache);
      // New rows go into an f32 cache (a quantized one stages and quantizes them, then attention
      // reads the dequantized rows: commit before the next sequence reuses the staging buffer).
      const rows = stageRows(store, pos0, T, ws);
      rows.set(kvNew.subarray(row * w, (row + T) * w));
      if (p.kvANorm) for (let t = 0; t < T; t++) { const c = rows.subarray(t * w, t * w + r); rmsNorm(c, 1, r, p.kvANorm, p.normEps, c); }
      applyRope(rows, T, 1, w, p.rope, pos0, layout, r);
      // The absorbed form reads the cache as stored (half rows stay half); the decompressed one expands f32 rows.
      if (absorbed[i]) {
        const latent = commitRowsAsStored(store, pos0, T, ws);
        // MQA over the latent rows as stored: k and v are the same rows, values their first r elements.
        kernels().attention({
          q: qLat!.subarray(row * H * w, (row + T) * H * w), tq: T, nHeads: H, nKvHeads: 1, headDimK: w, headDimV: r,
          k: latent.data, kTokenStride: w, v: latent.data, vTokenStride: w, kvDType: latent.dtype,
          pos0, scale: p.scale, out: oLat!.subarray(row * H * r, (row + T) * H * r),
        });
      } else {
        this.attendDecompressed(q.subarray(row * H * qh, (row + T) * H * qh), T, pos0, commitRows(store, pos0, T, ws), mixed.subarray(row * H * dv, (row + T) * H * dv), ws);
      }
      row += T;
    });
    if (anyAbsorbed) {
      const all = absorbed.every((a) => a);
      const mixedAbs = all ? mixed : ws.get('mla.mixed_abs', N * H * dv);
      this.expandOutputs(oLat!, N, mixedAbs, ws);
      if (!all) {
        row = 0;
        seqs.forEach((s, i) => {
          if (absorbed[i]) mixed.set(mixedAbs.subarray(row * H * dv, (row + s.T) * H * dv), row * H * dv);
          row += s.T;
        });
      }
    }
    p.o.forward(mixed, N, out);
  }

  /** q̂ [N, H, r + d_R]: per head [W_UK^hᵀ·q_nope^h | q_pe^h], the query of MQA over the latent rows. */
  private absorbQueries(q: Float32Array, N: number, ws: Workspace): Float32Array {
    const p = this.p, H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, r = p.kvLoraRank;
    const qh = dn + dR, w = r + dR;
    const k = kernels();
    const U = this.ukT;
    const qLat = ws.get('mla.qlat', N * H * w);
    const a = ws.get('mla.head_in', N * Math.max(dn, r));
    const c = ws.get('mla.head_out', N * Math.max(r, p.vHeadDim));
    for (let h = 0; h < H; h++) {
      // q̂_h [N×r] = q_nope^h [N×d_n] · W_UK^h [d_n×r], a GEMV over the transposed rows h·r … h·r+r−1.
      if (dn > 0) {
        for (let t = 0; t < N; t++) a.set(q.subarray((t * H + h) * qh, (t * H + h) * qh + dn), t * dn);
        const W = weightRows(U, h * r, r);
        if (N === 1) k.gemv(W, U.dtype, a.subarray(0, dn), c.subarray(0, r), r, dn);
        else k.matmul(a.subarray(0, N * dn), W, U.dtype, c.subarray(0, N * r), N, r, dn, true);
      } else {
        c.fill(0, 0, N * r);
      }
      for (let t = 0; t < N; t++) {
        const o = (t * H + h) * w;
        qLat.set(c.subarray(t * r, (t + 1) * r), o);
        qLat.set(q.subarray((t * H + h) * qh + dn, (t * H + h + 1) * qh), o + r);
      }
    }
    return qLat;
  }

  /** mixed [N, H, d_v]: o_h = W_UV^h·ô_h for the latent-space attention outputs ô [N, H, r]. */
  private expandOutputs(oLat: Float32Array, N: number, mixed: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, dn = p.qkNopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank, hw = dn + dv;
    const k = kernels();
    const B = p.kvB.weight;
    const a = ws.get('mla.head_in', N * Math.max(dn, r));
    const c = ws.get('mla.head_out', N * Math.max(r, dv));
    const bias = p.kvB.bias;
    for (let h = 0; h < H; h++) {
      // o_h [N×d_v] = W_UV^h · ô_h (W_UV^h = kv_b rows h·hw+d_n … +d_v, [d_v, r], read in place).
      const W = weightRows(B, h * hw + dn, dv);
      if (N === 1) {
        k.gemv(W, B.dtype, oLat.subarray(h * r, (h + 1) * r), c.subarray(0, dv), dv, r);
      } else {
        for (let t = 0; t < N; t++) a.set(oLat.subarray((t * H + h) * r, (t * H + h + 1) * r), t * r);
        k.matmul(a.subarray(0, N * r), W, B.dtype, c.subarray(0, N * dv), N, dv, r, true);
      }
      for (let t = 0; t < N; t++) {
        const o = (t * H + h) * dv;
        mixed.set(c.subarray(t * dv, (t + 1) * dv), o);
        // kv_b's bias on the value rows is a constant added to each head's output (softmax weights sum to 1).
        if (bias) for (let e = 0; e < dv; e++) mixed[o + e]! += bias[h * hw + dn + e]!;
      }
    }
  }

  private attendDecompressed(q: Float32Array, T: number, pos0: number, latent: Float32Array, mixed: Float32Array, ws: Workspace): void {
    const p = this.p, H = p.nHeads, dn = p.qkNopeHeadDim, dR = p.qkRopeHeadDim, dv = p.vHeadDim, r = p.kvLoraRank;
    const qh = dn + dR, w = r + dR, hw = dn + dv;
    const N = pos0 + T;
    // Every cached c through kv_b: [N, H·(d_n+d_v)].
    const cs = ws.get('mla.c', N * r);
    for (let t = 0; t < N; t++) cs.set(latent.subarray(t * w, t * w + r), t * r);
    const kv = ws.get('mla.kv', N * H * hw);
    p.kvB.forward(cs, N, kv);
    const keys = ws.get('mla.k', N * H * qh);
    const vals = ws.get('mla.v', N * H * dv);
    for (let t = 0; t < N; t++) {
      const kpe = latent.subarray(t * w + r, (t + 1) * w);
      for (let h = 0; h < H; h++) {
        const src = (t * H + h) * hw, ko = (t * H + h) * qh;
        keys.set(kv.subarray(src, src + dn), ko);
        keys.set(kpe, ko + dn);
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
