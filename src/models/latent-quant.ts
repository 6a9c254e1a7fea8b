// Quantized latent cache for the MLA layers (both variants): (docs/methods.md#kv-quant) every cached row is stored as
// int8 or int4 codes with one symmetric scale per group of `group` consecutive elements of the
// row (group 0: one scale per token row), scales kept as f16. A row x of a group becomes
//   s = f16(max|x| / qmax),  code = clamp(round(x / s), −qmax, qmax),  x̂ = code·s
// with qmax = 127 (int8) or 7 (int4, two codes per byte). The scale is rounded to f16 before the
// codes are chosen, so x̂ is exactly what dequantizing the stored bytes gives.
//
// Reading: the attention kernels take f32 rows, so a layer dequantizes the rows it attends over
// into a workspace buffer shared by all layers (one layer's f32 rows live at a time; the cache
// itself holds only codes and scales). New rows are quantized before the layer attends, so the
// current tokens see the same values a later decode step will: prefill and decode agree.
import { kernels } from '../kernels/index.js';
import type { FloatData, FloatDType } from '../kernels/types.js';
import { CacheBuffer, HalfCacheBuffer, type CacheStore, type LayerCache } from './kv-cache.js';
import type { Workspace } from './workspace.js';
import { OptionError } from '../option-error.js';

export interface KvQuant {
  bits: 8 | 4;
  /** Elements per scale; 0 = one scale per token row. */
  group: number;
}

export const DEFAULT_KV_QUANT_GROUP = 32;

/**
 * 'none' | 'int8' | 'int4', optionally with ':gN' (N elements per scale) or ':token' (one scale per
 * row): e.g. 'int4:g64', 'int8:token'. The default grouping is g32. Returns null for 'none'.
 */
export function parseKvQuant(spec: string): KvQuant | null {
  const m = /^(none|int8|int4)(?::(token|g(\d+)))?$/.exec(spec.trim());
  if (!m) throw new OptionError(`--kv-quant must be none, int8 or int4, optionally with :gN (elements per scale) or :token, got "${spec}"`);
  if (m[1] === 'none') {
    if (m[2]) throw new OptionError('--kv-quant none takes no grouping');
    return null;
  }
  const group = m[2] === undefined ? DEFAULT_KV_QUANT_GROUP : m[2] === 'token' ? 0 : Number(m[3]);
  if (m[3] !== undefined && !(group >= 1 && Number.isSafeInteger(group))) throw new OptionError(`--kv-quant group size must be a positive integer, got ${m[3]}`);
  return { bits: m[1] === 'int8' ? 8 : 4, group };
}

export function kvQuantName(q: KvQuant | null): string {
  if (!q) return 'none';
  return `int${q.bits}:${q.group === 0 ? 'token' : `g${q.group}`}`;
}

/** Scales per row and stored bytes per row for a row of `width` elements. */
export function quantRowLayout(q: KvQuant, width: number): { groups: number; codeBytes: number; bytes: number } {
  const groups = q.group === 0 || q.group >= width ? 1 : Math.ceil(width / q.group);
  const codeBytes = q.bits === 8 ? width : Math.ceil(width / 2);
  return { groups, codeBytes, bytes: codeBytes + 2 * groups };
}

const F16_MAX_BITS = 0x7bff; // 65504, the largest finite f16

/** A growable [tokens × width] store of quantized rows. */
export class QuantizedCacheBuffer implements CacheStore {
  readonly width: number;
  readonly q: KvQuant;
  private readonly groups: number;
  private readonly groupWidth: number;
  private readonly codeBytes: number;
  private readonly qmax: number;
  codes: Uint8Array;
  /** f16 bits, `groups` per row. */
  scales: Uint16Array;
  private sF32 = new Float32Array(0);

  constructor(width: number, q: KvQuant) {
    if (q.bits !== 8 && q.bits !== 4) throw new Error(`cache quantization must be 8 or 4 bits, got ${String(q.bits)}`);
    this.width = width;
    this.q = q;
    const l = quantRowLayout(q, width);
    this.groups = l.groups;
    this.groupWidth = l.groups === 1 ? width : q.group;
    this.codeBytes = l.codeBytes;
    this.qmax = q.bits === 8 ? 127 : 7;
    this.codes = new Uint8Array(0);
    this.scales = new Uint16Array(0);
  }

  get capacity(): number {
    return this.scales.length / this.groups;
  }

  ensure(n: number): void {
    if (n <= this.capacity) return;
    const cap = Math.max(n, 2 * this.capacity, 64);
    const codes = new Uint8Array(cap * this.codeBytes);
    codes.set(this.codes);
    const scales = new Uint16Array(cap * this.groups);
    scales.set(this.scales);
    this.codes = codes;
    this.scales = scales;
  }

  bytesPerToken(_dtype: FloatDType): number {
    return this.codeBytes + 2 * this.groups;
  }

  allocatedBytes(): number {
    return this.codes.byteLength + this.scales.byteLength;
  }

  /** Quantizes rows [t0, t0+n) from x [n × width] (f32). Call ensure(t0 + n) first. */
  write(t0: number, x: Float32Array, n: number): void {
    const w = this.width, G = this.groups, gw = this.groupWidth, qmax = this.qmax;
    if (t0 + n > this.capacity) throw new Error(`quantized cache holds ${this.capacity} rows, writing up to ${t0 + n}`);
    if (this.sF32.length < n * G) this.sF32 = new Float32Array(n * G);
    const s = this.sF32.subarray(0, n * G);
    for (let t = 0; t < n; t++) {
      for (let g = 0; g < G; g++) {
        const a = t * w + g * gw, b = Math.min(a + gw, (t + 1) * w);
        let amax = 0;
        for (let i = a; i < b; i++) { const v = Math.abs(x[i]!); if (v > amax) amax = v; }
        s[t * G + g] = amax / qmax;
      }
    }
    const bits = this.scales.subarray(t0 * G, (t0 + n) * G);
    const k = kernels();
    k.fromF32(s, 'f16', bits);
    // Scales too large for f16 saturate (the codes then clamp); never store an infinite scale.
    for (let i = 0; i < bits.length; i++) if ((bits[i]! & 0x7fff) >= 0x7c00) bits[i] = F16_MAX_BITS;
    k.toF32(bits, 'f16', s);
    for (let t = 0; t < n; t++) {
      const row = (t0 + t) * this.codeBytes;
      if (this.q.bits === 4) this.codes.fill(0, row, row + this.codeBytes);
      for (let g = 0; g < G; g++) {
        const sc = s[t * G + g]!;
        const inv = sc > 0 ? 1 / sc : 0;
        const e0 = g * gw, e1 = Math.min(e0 + gw, w);
        for (let e = e0; e < e1; e++) {
          let c = Math.round(x[t * w + e]! * inv);
          if (c > qmax) c = qmax; else if (c < -qmax) c = -qmax;
          if (this.q.bits === 8) this.codes[row + e] = c & 0xff;
          else this.codes[row + (e >> 1)]! |= (c + 8) << ((e & 1) << 2);
        }
      }
    }
  }

  /** Dequantizes rows [t0, t0+n) into out [n × width]. */
  read(t0: number, n: number, out: Float32Array): void {
    const w = this.width, G = this.groups, gw = this.groupWidth;
    if (this.sF32.length < n * G) this.sF32 = new Float32Array(n * G);
    const s = this.sF32.subarray(0, n * G);
    kernels().toF32(this.scales.subarray(t0 * G, (t0 + n) * G), 'f16', s);
    const codes = this.codes;
    for (let t = 0; t < n; t++) {
      const row = (t0 + t) * this.codeBytes, o = t * w;
      for (let g = 0; g < G; g++) {
        const sc = s[t * G + g]!;
        const e0 = g * gw, e1 = Math.min(e0 + gw, w);
        if (this.q.bits === 8) {
          for (let e = e0; e < e1; e++) out[o + e] = ((codes[row + e]! << 24) >> 24) * sc;
        } else {
          for (let e = e0; e < e1; e++) out[o + e] = (((codes[row + (e >> 1)]! >> ((e & 1) << 2)) & 15) - 8) * sc;
        }
      }
    }
  }
}

/** A cache store of `width` floats per token: quantized rows when q is given, else rows at `dtype`. */
export function createCacheStore(width: number, q: KvQuant | null, dtype: FloatDType = 'f32'): CacheStore {
  if (q) return new QuantizedCacheBuffer(width, q);
  return dtype === 'f32' ? new CacheBuffer(width) : new HalfCacheBuffer(width, dtype);
}

/** Cached rows as the attention kernel reads them: f32, or f16/bf16 bits (AttentionArgs.kvDType). */
export interface CachedRows {
  data: FloatData;
  dtype: FloatDType;
}

/**
 * Where a layer puts the projections of its T new tokens (rows pos0..pos0+T−1, [T × width] f32):
 * straight into an f32 cache, or a workspace buffer that commitRows quantizes.
 */
export function stageRows(store: CacheStore, pos0: number, T: number, ws: Workspace): Float32Array {
  store.ensure(pos0 + T);
  if (store instanceof CacheBuffer) return store.rows(pos0, T);
  return ws.get('kvq.stage', T * store.width);
}

/**
 * Stores the staged rows (quantizing them for a quantized store) and returns all rows
 * 0..pos0+T−1 as f32 [≥ (pos0+T) × width]: the cache itself, or its dequantization.
 */
export function commitRows(store: CacheStore, pos0: number, T: number, ws: Workspace): Float32Array {
  if (store instanceof CacheBuffer) return store.data;
  if (store instanceof HalfCacheBuffer) {
    store.write(pos0, ws.get('kvq.stage', T * store.width), T);
    const all = ws.get('kvq.rows', (pos0 + T) * store.width);
    store.read(0, pos0 + T, all);
    return all;
  }
  if (!(store instanceof QuantizedCacheBuffer)) throw new Error(`unknown cache store ${store.constructor.name}`);
  store.write(pos0, ws.get('kvq.stage', T * store.width), T);
  const all = ws.get('kvq.rows', (pos0 + T) * store.width);
  store.read(0, pos0 + T, all);
  return all;
}

/**
 * commitRows for a reader that takes half-precision rows as they are stored (the absorbed decode's
 * attention kernel): an f16/bf16 store's own bits, so a step reads 2 bytes per cached value and
 * nothing is widened into memory; other stores as commitRows gives them.
 */
export function commitRowsAsStored(store: CacheStore, pos0: number, T: number, ws: Workspace): CachedRows {
  if (store instanceof HalfCacheBuffer) {
    store.write(pos0, ws.get('kvq.stage', T * store.width), T);
    return { data: store.data, dtype: store.dtype };
  }
  return { data: commitRows(store, pos0, T, ws), dtype: 'f32' };
}

/** The one store of a single-buffer (latent) layer cache. */
export function latentStore(cache: LayerCache): CacheStore {
  const s = cache.buffers[0];
  if (!s || cache.buffers.length !== 1) throw new Error('expected a latent cache with one buffer');
  return s;
}
