// The attention seam. A decoder layer only knows AttentionLayer: it hands over the normed
// hidden states of T new tokens at positions pos0.. and gets the attention output back.
// What the layer caches per token, and how it computes scores, is its own business:
// GqaAttention (here) caches rotated keys and values per KV head; the MLA layers of the
// converter cache one latent row per token and implement the same interface.
// Qwen3's per-head query/key RMSNorm (docs/methods.md#qk-norm) is an option of GqaAttention: it
// acts on each head's projection before RoPE, as transformers' Qwen3Attention applies q_norm and
// k_norm to q_proj/k_proj outputs viewed as [heads, head_dim].
import { kernels } from '../kernels/index.js';
import type { WeightSource } from '../tensor.js';
import type { FloatDType } from '../kernels/types.js';
import { CacheBuffer, HalfCacheBuffer, type LayerCache } from './kv-cache.js';
import type { KvQuant } from './latent-quant.js';
import { Linear, SharedInputLinears } from './linear.js';
import { rmsNorm } from './ops.js';
import { applyRope, type RopeLayout, type RopeTable } from './rope.js';
import { requireTensor, widen } from './weights.js';
import type { Workspace } from './workspace.js';

/** How an MLA layer attends: decompressed (per-head keys/values), absorbed (on the latent), or by token count. */
export type MlaMode = 'auto' | 'absorbed' | 'decompressed';

/** The knobs of layers that cache a latent (MLA, MHA2MLA). */
export interface LatentControls {
  /** 'auto': decompressed when several tokens arrive at once, absorbed for single-token decode. */
  mode: MlaMode;
  /** Quantized latent cache (latent-quant.ts) for caches created from now on; null keeps f32. */
  kvQuant: KvQuant | null;
}

/** What `inspect` reports of a layer's attention. */
export interface AttentionSummary {
  /** 'MHA' | 'GQA' | 'MQA' | 'MLA' | 'MLA (MHA2MLA: per-KV-head RoPE)'. */
  label: string;
  /** kvLoraRanks: per-layer latent widths when they differ (kvLoraRank is then the largest). */
  mla?: { kvLoraRank: number; qkRopeHeadDim: number; qkNopeHeadDim: number; vHeadDim: number; qLoraRank: number | null; kvLoraRanks?: number[]; qkRopeHeadDims?: number[] };
  mha2mla?: { kvLoraRank: number; ropePairsPerHead: number; kvHeads: number };
  /** GQA layers with Qwen3's per-head q/k RMSNorm. */
  qkNorm?: boolean;
}

/**
 * One sequence's share of a batched step: its T ≥ 1 new tokens at positions pos0..pos0+T−1,
 * attended against its own cache (which holds positions 0..pos0−1 on entry).
 */
export interface BatchSequence {
  T: number;
  pos0: number;
  cache: LayerCache;
}

/**
 * forwardBatch for a layer without a batched path (the engine-only Qwen3 conversion forms): each
 * sequence's rows go through its forward() in turn, so results equal one-sequence runs exactly.
 */
export function forwardEachSequence(layer: Pick<AttentionLayer, 'forward'>, D: number, x: Float32Array, seqs: readonly BatchSequence[], out: Float32Array, ws: Workspace): void {
  batchRows(seqs);
  let row = 0;
  for (const s of seqs) {
    layer.forward(x.subarray(row * D, (row + s.T) * D), s.T, s.pos0, s.cache, out.subarray(row * D, (row + s.T) * D), ws);
    row += s.T;
  }
}

/** Rows of a batch (ΣT), refusing an empty batch, a sequence without tokens and a cache used twice. */
export function batchRows(seqs: readonly BatchSequence[]): number {
  if (seqs.length === 0) throw new Error('a batch needs at least one sequence');
  let n = 0;
  const seen = new Set<LayerCache>();
  for (const s of seqs) {
    if (!(Number.isSafeInteger(s.T) && s.T >= 1)) throw new Error(`every sequence of a batch needs at least one new token, got ${s.T}`);
    if (seen.has(s.cache)) throw new Error('a cache appears twice in one batch');
    seen.add(s.cache);
    n += s.T;
  }
  return n;
}

export interface AttentionLayer {
  /** Cached f32 elements per token for this layer (the sum of its cache buffers' widths). */
  readonly cacheElementsPerToken: number;
  /**
   * A fresh, empty cache for this layer, its rows stored at `dtype` (default f32; f16/bf16 halve
   * the bytes a decode step reads; a latent layer's quantized cache, LatentControls.kvQuant, wins).
   */
  createCache(dtype?: FloatDType): LayerCache;
  /**
   * x: normed hidden states [T×D] of tokens at positions pos0..pos0+T−1. The cache holds
   * positions 0..pos0−1 on entry and 0..pos0+T−1 on return. Writes out [T×D].
   */
  forward(x: Float32Array, T: number, pos0: number, cache: LayerCache, out: Float32Array, ws: Workspace): void;
  /**
   * Several sequences in one step: x holds the normed hidden states of every sequence's new
   * tokens, sequence after sequence [ΣT×D]; out gets the attention outputs in the same order.
   * The projections run over all ΣT rows at once (one GEMM per weight); attention runs per
   * sequence against its own cache. The result equals separate forward() calls.
   */
  forwardBatch(x: Float32Array, seqs: readonly BatchSequence[], out: Float32Array, ws: Workspace): void;
  /** Floating-point operations for T tokens after pos0 cached ones (projections + scores + mixing). */
  flops(T: number, pos0: number): number;
  /** Parameters this layer holds (weights and biases). */
  paramCount(): number;
  /** Bytes of weights one token's forward reads (the decode roofline). */
  decodeWeightBytes(): number;
  summary(): AttentionSummary;
  /** Present on layers that cache a latent. */
  readonly latent?: LatentControls;
}

/** inspect's name for grouped-query attention with H query heads over G KV heads. */
export function gqaSummary(H: number, G: number): AttentionSummary {
  return { label: G === H ? 'MHA' : G === 1 ? 'MQA' : 'GQA' };
}

/** FLOPs of causal attention (QKᵀ and PV) for T queries after pos0 cached keys. */
export function causalAttentionFlops(T: number, pos0: number, nHeads: number, dK: number, dV: number): number {
  // Query i sees pos0 + i + 1 keys.
  const pairs = T * pos0 + (T * (T + 1)) / 2;
  return 2 * pairs * nHeads * (dK + dV);
}

/** The config fields a GQA layer is loaded with (ModelArgs has them). */
export interface GqaShape {
  hiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  attentionBias: boolean;
  oBias: boolean;
  /** Qwen3: `q_norm`/`k_norm` RMSNorm weights [head_dim] per layer, with this ε. */
  qkNorm?: { eps: number } | null;
}

/** Per-head RMSNorm of queries and keys (Qwen3): weights over head_dim, shared by all heads. */
export interface QkNorm {
  q: Float32Array;
  k: Float32Array;
  eps: number;
}

export interface GqaParams {
  q: Linear;
  k: Linear;
  v: Linear;
  o: Linear;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  rope: RopeTable;
  ropeLayout: RopeLayout;
  /** Per-head q/k RMSNorm applied after the projections, before RoPE (absent: none). */
  qkNorm?: QkNorm | null;
}

/** Multi-head / grouped-query attention with RoPE (covers MHA: nKvHeads = nHeads, and MQA). */
export class GqaAttention implements AttentionLayer {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly o: Linear;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly rope: RopeTable;
  readonly ropeLayout: RopeLayout;
  readonly qkNorm: QkNorm | null;
  readonly cacheElementsPerToken: number;
  private readonly qkv: SharedInputLinears;
  private readonly qkvOut: Float32Array[] = [];

  constructor(p: GqaParams) {
    const { nHeads: H, nKvHeads: G, headDim: d } = p;
    if (H % G !== 0) throw new Error(`${H} query heads cannot be grouped over ${G} KV heads`);
    if (p.q.outFeatures !== H * d || p.k.outFeatures !== G * d || p.v.outFeatures !== G * d || p.o.inFeatures !== H * d) {
      throw new Error(`attention projections do not match ${H} heads / ${G} KV heads of dim ${d}`);
    }
    if (p.rope.dim !== d) throw new Error(`RoPE table of dim ${p.rope.dim} for heads of dim ${d}`);
    const n = p.qkNorm ?? null;
    if (n && (n.q.length !== d || n.k.length !== d)) throw new Error(`q_norm/k_norm have ${n.q.length}/${n.k.length} weights for heads of dim ${d}`);
    this.qkNorm = n;
    this.q = p.q; this.k = p.k; this.v = p.v; this.o = p.o;
    this.nHeads = H; this.nKvHeads = G; this.headDim = d;
    this.rope = p.rope; this.ropeLayout = p.ropeLayout;
    this.cacheElementsPerToken = 2 * G * d;
    this.qkv = new SharedInputLinears([p.q, p.k, p.v]);
  }

  /**
   * Loads `${prefix}.{q,k,v,o}_proj` (biases as the checkpoint has them; required where the config
   * says so) and, with `c.qkNorm`, `${prefix}.{q,k}_norm.weight` [head_dim].
   */
  static load(src: WeightSource, prefix: string, c: GqaShape, rope: RopeTable, ropeLayout: RopeLayout): GqaAttention {
    const D = c.hiddenSize, H = c.numHeads, G = c.numKvHeads, d = c.headDim;
    const qkvBias = c.attentionBias ? 'required' : 'optional';
    const qkNorm = c.qkNorm
      ? { q: widen(requireTensor(src, `${prefix}.q_norm.weight`, [d])), k: widen(requireTensor(src, `${prefix}.k_norm.weight`, [d])), eps: c.qkNorm.eps }
      : null;
    return new GqaAttention({
      qkNorm,
      q: Linear.load(src, `${prefix}.q_proj`, H * d, D, qkvBias),
      k: Linear.load(src, `${prefix}.k_proj`, G * d, D, qkvBias),
      v: Linear.load(src, `${prefix}.v_proj`, G * d, D, qkvBias),
      o: Linear.load(src, `${prefix}.o_proj`, D, H * d, c.oBias ? 'required' : 'optional'),
      nHeads: H, nKvHeads: G, headDim: d, rope, ropeLayout,
    });
  }

  createCache(dtype: FloatDType = 'f32'): LayerCache {
    const w = this.nKvHeads * this.headDim;
    if (dtype === 'f32') return { buffers: [new CacheBuffer(w), new CacheBuffer(w)] };
    return { buffers: [new HalfCacheBuffer(w, dtype), new HalfCacheBuffer(w, dtype)] };
  }

  flops(T: number, pos0: number): number {
    const d = this.headDim;
    return this.q.flops(T) + this.k.flops(T) + this.v.flops(T) + this.o.flops(T) + causalAttentionFlops(T, pos0, this.nHeads, d, d);
  }

  paramCount(): number {
    return [this.q, this.k, this.v, this.o].reduce((n, l) => n + l.paramCount(), 0) + (this.qkNorm ? 2 * this.headDim : 0);
  }

  decodeWeightBytes(): number {
    const norms = this.qkNorm ? this.qkNorm.q.byteLength + this.qkNorm.k.byteLength : 0;
    return [this.q, this.k, this.v, this.o].reduce((n, l) => n + l.weightBytes(), 0) + norms;
  }

  summary(): AttentionSummary {
    return { ...gqaSummary(this.nHeads, this.nKvHeads), ...(this.qkNorm && { qkNorm: true }) };
  }

  forward(x: Float32Array, T: number, pos0: number, cache: LayerCache, out: Float32Array, ws: Workspace): void {
    this.forwardBatch(x, [{ T, pos0, cache }], out, ws);
  }

  forwardBatch(x: Float32Array, seqs: readonly BatchSequence[], out: Float32Array, ws: Workspace): void {
    const H = this.nHeads, G = this.nKvHeads, d = this.headDim;
    const N = batchRows(seqs);
    type Buf = CacheBuffer | HalfCacheBuffer;
    const one = seqs.length === 1 && seqs[0]!.cache.buffers[0] instanceof CacheBuffer ? seqs[0]! : null;
    const q = ws.get('attn.q', N * H * d);
    // One sequence with an f32 cache: new keys and values are projected straight into its rows (no
    // copy). Otherwise into scratch rows, copied into each f32 cache or narrowed into a half one
    // after RoPE below, so the new tokens attend to the same rounded rows later steps read.
    let kNew: Float32Array, vNew: Float32Array;
    if (one) {
      const [kBuf, vBuf] = one.cache.buffers as [CacheBuffer, CacheBuffer];
      kBuf.ensure(one.pos0 + N);
      vBuf.ensure(one.pos0 + N);
      kNew = kBuf.rows(one.pos0, N); vNew = vBuf.rows(one.pos0, N);
    } else {
      kNew = ws.get('attn.k', N * G * d); vNew = ws.get('attn.v', N * G * d);
    }
    const ys = this.qkvOut;
    ys[0] = q; ys[1] = kNew; ys[2] = vNew;
    this.qkv.forward(x, N, ys);
    const n = this.qkNorm;
    if (n) {
      // Each head's d values are one RMSNorm row (in place, before RoPE and before the copy into the caches).
      rmsNorm(q, N * H, d, n.q, n.eps, q);
      rmsNorm(kNew, N * G, d, n.k, n.eps, kNew);
    }
    const mixed = ws.get('attn.out', N * H * d);
    let r = 0;
    for (const s of seqs) {
      const { T, pos0 } = s;
      const [kBuf, vBuf] = s.cache.buffers as [Buf, Buf];
      const qs = q.subarray(r * H * d, (r + T) * H * d);
      const ks = kNew.subarray(r * G * d, (r + T) * G * d), vs = vNew.subarray(r * G * d, (r + T) * G * d);
      applyRope(qs, T, H, d, this.rope, pos0, this.ropeLayout);
      applyRope(ks, T, G, d, this.rope, pos0, this.ropeLayout);
      if (!one) {
        kBuf.ensure(pos0 + T);
        vBuf.ensure(pos0 + T);
        if (kBuf instanceof HalfCacheBuffer) kBuf.write(pos0, ks, T); else kBuf.rows(pos0, T).set(ks);
        if (vBuf instanceof HalfCacheBuffer) vBuf.write(pos0, vs, T); else vBuf.rows(pos0, T).set(vs);
      }
      kernels().attention({
        q: qs, tq: T, nHeads: H, nKvHeads: G, headDimK: d, headDimV: d,
        k: kBuf.data, kTokenStride: G * d, v: vBuf.data, vTokenStride: G * d,
        kvDType: kBuf instanceof HalfCacheBuffer ? kBuf.dtype : 'f32',
        pos0, scale: 1 / Math.sqrt(d), out: mixed.subarray(r * H * d, (r + T) * H * d),
      });
      r += T;
    }
    this.o.forward(mixed, N, out);
  }
}
