// ggml's Q8_0 and Q4_0 block formats in plain TypeScript: quantizers bit-identical to ggml's
// reference rounding, dequantizers, and the 16-bit rounding of activations that every product
// with a quantized weight applies to x (see Kernels.gemv).
//
// Formats, from ggml-org/llama.cpp ggml/src/ggml-common.h (block_q8_0, block_q4_0) and the
// reference code in ggml/src/ggml-quants.c (quantize_row_q8_0_ref, quantize_row_q4_0_ref,
// dequantize_row_q8_0, dequantize_row_q4_0), read at commit 01243c587feceaa5d6a6c2305535ef2f549c48b8
// (the same functions as in the llama.cpp node-llama-cpp ships, de3ff815ea7d559ee917f063901b8986f038abc6):
//   q8_0: 34 bytes = f16 d (little-endian) · 32 × int8 q;  value j = d·q[j]
//   q4_0: 18 bytes = f16 d · 16 bytes qs;  value j = d·(nib − 8) with nib = qs[j] & 15 for
//         j < 16 and qs[j − 16] >> 4 for j ≥ 16 (low nibbles are elements 0..15).
// The reference computes in f32: q8_0 d = amax/127, id = 1/d (from the f32 d, not the stored
// f16 one), q = roundf(x·id) (half away from zero); q4_0 takes the signed value of largest
// magnitude (the first one on ties), d = max/−8, id = 1/d, nib = min(15, (int8)(x·id + 8.5))
// with each operation rounded to f32 (no fused multiply-add). d is stored with ggml's
// fp32→fp16 (round to nearest even), the same as f32BitsToF16.
import { F16_TO_F32, f32BitsToF16 } from './half.js';

export const QK = 32;
export const Q8_0_BYTES = 34;
export const Q4_0_BYTES = 18;

const fround = Math.fround;
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function f16Bits(x: number): number {
  f32[0] = x;
  return f32BitsToF16(u32[0]!);
}

/** roundf: to nearest, halves away from zero (exact for every f32 input below 2^52). */
function roundAway(v: number): number {
  return v < 0 ? -Math.floor(0.5 - v) : Math.floor(v + 0.5);
}

function checkBlocks(fn: string, n: number, bytes: number, blockBytes: number): number {
  if (n % QK !== 0) throw new Error(`${fn}: ${n} values are not a whole number of blocks of ${QK}`);
  const blocks = n / QK;
  if (bytes !== blocks * blockBytes) throw new Error(`${fn}: ${blocks} blocks need ${blocks * blockBytes} bytes, got ${bytes}`);
  return blocks;
}

function checkFinite(fn: string, x: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) throw new Error(`${fn}: element ${i} is ${x[i]}; only finite values can be quantized`);
  }
}

/** src (a multiple of 32 values) → q8_0 blocks in dst (34 bytes per block). */
export function quantizeQ8_0(src: Float32Array, dst: Uint8Array): void {
  const blocks = checkBlocks('quantize q8_0', src.length, dst.length, Q8_0_BYTES);
  checkFinite('quantize q8_0', src);
  for (let b = 0; b < blocks; b++) {
    const x0 = b * QK, o = b * Q8_0_BYTES;
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      const v = Math.abs(src[x0 + j]!);
      if (v > amax) amax = v;
    }
    const d = fround(amax / 127);
    const id = d !== 0 ? fround(1 / d) : 0;
    const h = f16Bits(d);
    dst[o] = h & 0xff;
    dst[o + 1] = h >>> 8;
    for (let j = 0; j < QK; j++) dst[o + 2 + j] = roundAway(fround(src[x0 + j]! * id)) & 0xff;
  }
}

/** src (a multiple of 32 values) → q4_0 blocks in dst (18 bytes per block). */
export function quantizeQ4_0(src: Float32Array, dst: Uint8Array): void {
  const blocks = checkBlocks('quantize q4_0', src.length, dst.length, Q4_0_BYTES);
  checkFinite('quantize q4_0', src);
  for (let b = 0; b < blocks; b++) {
    const x0 = b * QK, o = b * Q4_0_BYTES;
    let amax = 0, max = 0;
    for (let j = 0; j < QK; j++) {
      const v = src[x0 + j]!;
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fround(max / -8); // -0 for an all-zero block, stored as f16 0x8000 like ggml
    const id = d !== 0 ? fround(1 / d) : 0;
    const h = f16Bits(d);
    dst[o] = h & 0xff;
    dst[o + 1] = h >>> 8;
    for (let j = 0; j < QK / 2; j++) {
      const a = Math.min(15, Math.trunc(fround(fround(src[x0 + j]! * id) + 8.5)));
      const c = Math.min(15, Math.trunc(fround(fround(src[x0 + 16 + j]! * id) + 8.5)));
      dst[o + 2 + j] = a | (c << 4);
    }
  }
}

/** q8_0 blocks → f32 (dst.length = 32 per block). */
export function dequantizeQ8_0(src: Uint8Array, dst: Float32Array): void {
  const blocks = checkBlocks('dequantize q8_0', dst.length, src.length, Q8_0_BYTES);
  for (let b = 0; b < blocks; b++) {
    const o = b * Q8_0_BYTES, y0 = b * QK;
    const d = F16_TO_F32[src[o]! | (src[o + 1]! << 8)]!;
    for (let j = 0; j < QK; j++) dst[y0 + j] = ((src[o + 2 + j]! << 24) >> 24) * d;
  }
}

/** q4_0 blocks → f32 (dst.length = 32 per block). */
export function dequantizeQ4_0(src: Uint8Array, dst: Float32Array): void {
  const blocks = checkBlocks('dequantize q4_0', dst.length, src.length, Q4_0_BYTES);
  for (let b = 0; b < blocks; b++) {
    const o = b * Q4_0_BYTES, y0 = b * QK;
    const d = F16_TO_F32[src[o]! | (src[o + 1]! << 8)]!;
    for (let j = 0; j < QK / 2; j++) {
      const q = src[o + 2 + j]!;
      dst[y0 + j] = ((q & 15) - 8) * d;
      dst[y0 + 16 + j] = ((q >> 4) - 8) * d;
    }
  }
}

/**
 * Activation rows rounded for a quantized product: per block of 32, d = fround(amax/32767),
 * q = roundf(fround(x·(1/d))) as int16, x̂ = d·q. A block holding a non-finite value gets
 * d = NaN (its products are NaN, as they would be in floats). Same rounding as q8_0 with 32767
 * levels instead of 127; the native kernels implement it identically.
 */
export interface RoundedRows {
  q: Int16Array;
  /** One scale per block, as an f32 value. */
  d: Float32Array;
}

export function roundActivations(x: Float32Array, rows: number, K: number, stride = K): RoundedRows {
  if (K % QK !== 0) throw new Error(`quantized product: K = ${K} is not a multiple of ${QK}`);
  const nb = K / QK;
  const q = new Int16Array(rows * K);
  const d = new Float32Array(rows * nb);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const x0 = r * stride + b * QK, o = r * K + b * QK;
      let amax = 0;
      for (let j = 0; j < QK; j++) {
        const v = Math.abs(x[x0 + j]!);
        if (!(v <= amax)) amax = v; // NaN propagates into amax
      }
      if (!Number.isFinite(amax)) {
        d[r * nb + b] = NaN;
        continue; // q stays 0
      }
      const s = fround(amax / 32767);
      const id = s !== 0 ? fround(1 / s) : 0;
      d[r * nb + b] = s;
      for (let j = 0; j < QK; j++) q[o + j] = roundAway(fround(x[x0 + j]! * id));
    }
  }
  return { q, d };
}

/** Block scale of a quantized row: the f16 at the start of block b. */
export function blockScale(W: Uint8Array, rowByte: number, b: number, blockBytes: number): number {
  const o = rowByte + b * blockBytes;
  return F16_TO_F32[W[o]! | (W[o + 1]! << 8)]!;
}

/**
 * Σ_b d_w,b · d_x,b · Σ_j q_w,j · q_x,j for one weight row (starting at byte rowByte) against one
 * rounded activation row (starting at element xo of q, block xb of d). The integer dots are
 * exact; the sum is in float64.
 */
export function quantRowDot(W: Uint8Array, type: 'q8_0' | 'q4_0', rowByte: number, xr: RoundedRows, xo: number, xb: number, nb: number): number {
  const q = xr.q, dx = xr.d;
  let s = 0;
  if (type === 'q8_0') {
    for (let b = 0; b < nb; b++) {
      const o = rowByte + b * Q8_0_BYTES, x0 = xo + b * QK;
      let dot = 0;
      for (let j = 0; j < QK; j++) dot += ((W[o + 2 + j]! << 24) >> 24) * q[x0 + j]!;
      s += F16_TO_F32[W[o]! | (W[o + 1]! << 8)]! * dx[xb + b]! * dot;
    }
  } else {
    for (let b = 0; b < nb; b++) {
      const o = rowByte + b * Q4_0_BYTES, x0 = xo + b * QK;
      let dot = 0;
      for (let j = 0; j < QK / 2; j++) {
        const v = W[o + 2 + j]!;
        dot += ((v & 15) - 8) * q[x0 + j]! + ((v >> 4) - 8) * q[x0 + 16 + j]!;
      }
      s += F16_TO_F32[W[o]! | (W[o + 1]! << 8)]! * dx[xb + b]! * dot;
    }
  }
  return s;
}

/** Widens one quantized row of K elements (starting at byte rowByte) into out[o .. o+K) as exact values. */
export function dequantizeRow(W: Uint8Array, type: 'q8_0' | 'q4_0', rowByte: number, K: number, out: Float64Array | Float32Array, o: number): void {
  const nb = K / QK;
  if (type === 'q8_0') {
    for (let b = 0; b < nb; b++) {
      const p = rowByte + b * Q8_0_BYTES, d = F16_TO_F32[W[p]! | (W[p + 1]! << 8)]!;
      for (let j = 0; j < QK; j++) out[o + b * QK + j] = ((W[p + 2 + j]! << 24) >> 24) * d;
    }
  } else {
    for (let b = 0; b < nb; b++) {
      const p = rowByte + b * Q4_0_BYTES, d = F16_TO_F32[W[p]! | (W[p + 1]! << 8)]!;
      for (let j = 0; j < QK / 2; j++) {
        const v = W[p + 2 + j]!;
        out[o + b * QK + j] = ((v & 15) - 8) * d;
        out[o + b * QK + 16 + j] = ((v >> 4) - 8) * d;
      }
    }
  }
}
