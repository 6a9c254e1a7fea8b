// The decode cache. Each layer owns one or more growable stores of `width` values per token
// (GQA: keys and values, G·d each; MLA: one latent row of r + d_R), kept as f32 (CacheBuffer),
// f16/bf16 (HalfCacheBuffer) or quantized (latent-quant.ts). The cache reports
// both what it holds and what a token costs at a storage dtype, which is the number the
// GQA → MLA conversion is about.
import { kernels } from '../kernels/index.js';
import type { FloatDType, HalfDType } from '../kernels/types.js';
import { bytesPerElement } from '../tensor.js';

/**
 * What a layer cache is made of: rows of `width` values per token, stored as f32 (CacheBuffer) or
 * quantized (latent-quant.ts). A store reports its own bytes, so quantized caches count truly.
 */
export interface CacheStore {
  readonly width: number;
  readonly capacity: number;
  /** Makes room for n tokens, keeping the rows already written. */
  ensure(n: number): void;
  /** Bytes one token takes; unquantized stores are counted at `dtype` (the reporting dtype). */
  bytesPerToken(dtype: FloatDType): number;
  /** Bytes allocated now (including growth headroom). */
  allocatedBytes(): number;
}

/** A growable [tokens × width] f32 buffer. `data` is replaced when it grows: re-read it after ensure(). */
export class CacheBuffer implements CacheStore {
  readonly width: number;
  data: Float32Array;

  constructor(width: number, initialTokens = 0) {
    this.width = width;
    this.data = new Float32Array(width * initialTokens);
  }

  get capacity(): number {
    return this.data.length / this.width;
  }

  /** Makes room for n tokens, keeping the rows already written. */
  ensure(n: number): void {
    if (n <= this.capacity) return;
    // Doubling keeps decode's amortised copy cost O(1) per token.
    const cap = Math.max(n, 2 * this.capacity, 64);
    const data = new Float32Array(cap * this.width);
    data.set(this.data);
    this.data = data;
  }

  bytesPerToken(dtype: FloatDType): number {
    return this.width * bytesPerElement(dtype);
  }

  allocatedBytes(): number {
    return this.data.byteLength;
  }

  /** Rows [t0, t0+n) as a view (valid until the next ensure). */
  rows(t0: number, n: number): Float32Array {
    return this.data.subarray(t0 * this.width, (t0 + n) * this.width);
  }
}

/**
 * A growable [tokens × width] store of f16 or bf16 rows (raw bits), written from f32 rows with
 * round-to-nearest-even; the attention kernel reads it as it is (AttentionArgs.kvDType), so a
 * decode step reads half the bytes of an f32 cache. `data` is replaced when it grows: re-read it
 * after ensure().
 */
export class HalfCacheBuffer implements CacheStore {
  readonly width: number;
  readonly dtype: HalfDType;
  data: Uint16Array;

  constructor(width: number, dtype: HalfDType, initialTokens = 0) {
    if (dtype !== 'f16' && dtype !== 'bf16') throw new Error(`a half-precision cache is f16 or bf16, got ${String(dtype)}`);
    this.width = width;
    this.dtype = dtype;
    this.data = new Uint16Array(width * initialTokens);
  }

  get capacity(): number {
    return this.data.length / this.width;
  }

  ensure(n: number): void {
    if (n <= this.capacity) return;
    const cap = Math.max(n, 2 * this.capacity, 64);
    const data = new Uint16Array(cap * this.width);
    data.set(this.data);
    this.data = data;
  }

  /** Its own 2 bytes per element, whatever the reporting dtype (like quantized stores). */
  bytesPerToken(_dtype: FloatDType): number {
    return this.width * 2;
  }

  allocatedBytes(): number {
    return this.data.byteLength;
  }

  /** Rows [t0, t0+n) as a view of the raw bits (valid until the next ensure). */
  rows(t0: number, n: number): Uint16Array {
    return this.data.subarray(t0 * this.width, (t0 + n) * this.width);
  }

  /** Narrows x [n × width] (f32) into rows [t0, t0+n). Call ensure(t0 + n) first. */
  write(t0: number, x: Float32Array, n: number): void {
    if (t0 + n > this.capacity) throw new Error(`half cache holds ${this.capacity} rows, writing up to ${t0 + n}`);
    if (x.length < n * this.width) throw new Error(`half cache write: ${n} rows of ${this.width} need ${n * this.width} values, got ${x.length}`);
    kernels().fromF32(x.subarray(0, n * this.width), this.dtype, this.rows(t0, n));
  }

  /** Widens rows [t0, t0+n) into out [n × width]. */
  read(t0: number, n: number, out: Float32Array): void {
    kernels().toF32(this.rows(t0, n), this.dtype, out.subarray(0, n * this.width));
  }
}

/** One layer's share of the cache; its shape belongs to the attention layer that made it. */
export interface LayerCache {
  readonly buffers: readonly CacheStore[];
}

export class KvCache {
  readonly layers: LayerCache[];
  /** Tokens held (positions 0..length−1), the same in every layer. */
  length = 0;

  constructor(layers: LayerCache[]) {
    this.layers = layers;
  }

  /** f32 elements per token summed over layers and buffers. */
  get elementsPerToken(): number {
    let n = 0;
    for (const l of this.layers) for (const b of l.buffers) n += b.width;
    return n;
  }

  /**
   * Bytes one token costs when unquantized stores are kept at `dtype` (the reporting figure: use
   * the model's dtype); quantized stores count their codes and scales.
   */
  bytesPerToken(dtype: FloatDType = 'f32'): number {
    let n = 0;
    for (const l of this.layers) for (const b of l.buffers) n += b.bytesPerToken(dtype);
    return n;
  }

  /** Bytes actually allocated now (including growth headroom). */
  allocatedBytes(): number {
    let n = 0;
    for (const l of this.layers) for (const b of l.buffers) n += b.allocatedBytes();
    return n;
  }

  /** Reserves room for n tokens up front (avoids the growth copies when the length is known). */
  reserve(n: number): void {
    for (const l of this.layers) for (const b of l.buffers) b.ensure(n);
  }

  /** Forgets tokens from position n on (rewind for a new prompt sharing a prefix, or reset with 0). */
  truncate(n = 0): void {
    if (n < 0 || n > this.length) throw new Error(`cannot truncate a ${this.length}-token cache to ${n}`);
    this.length = n;
  }
}
