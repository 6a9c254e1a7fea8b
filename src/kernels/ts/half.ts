// f16/bf16 <-> f32 conversions in plain TypeScript.
// Bit-level work goes through Uint32Array views so NaN payloads survive (reading a NaN
// into a JS number may canonicalise it). NaN convention, chosen to match x86 hardware
// (F16C vcvtps2ph/vcvtph2ps and AVX512-BF16 vcvtneps2bf16): keep sign and the top payload
// bits, set the quiet bit. bf16 -> f32 is a plain shift (no quieting), like the hardware.

/** f16 bits -> f32 bits for every one of the 65536 patterns. */
export const F16_TO_F32_BITS: Uint32Array = buildF16Table();
/** The same table read as f32 values (for arithmetic, where NaN bits do not matter). */
export const F16_TO_F32: Float32Array = new Float32Array(F16_TO_F32_BITS.buffer);
/** bf16 bits -> f32 values; arithmetic only (toF32 shifts bits directly). */
export const BF16_TO_F32: Float32Array = buildBf16Table();

function buildF16Table(): Uint32Array {
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const man = h & 0x3ff;
    let bits: number;
    if (exp === 0x1f) {
      bits = man === 0 ? 0x7f800000 : 0x7fc00000 | (man << 13);
    } else if (exp !== 0) {
      bits = ((exp + 112) << 23) | (man << 13);
    } else if (man === 0) {
      bits = 0;
    } else {
      // Subnormal half: normalise the mantissa so the f32 result is a normal number.
      let e = 113; // biased f32 exponent of 2^-14
      let m = man;
      while ((m & 0x400) === 0) {
        m <<= 1;
        e--;
      }
      bits = (e << 23) | ((m & 0x3ff) << 13);
    }
    t[h] = (sign | bits) >>> 0;
  }
  return t;
}

function buildBf16Table(): Float32Array {
  const bits = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) bits[h] = (h << 16) >>> 0;
  return new Float32Array(bits.buffer);
}

/** f32 bits -> f16 bits, round to nearest even; overflow -> ±Inf. */
export function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const man = bits & 0x7fffff;
  if (exp === 0xff) return man === 0 ? sign | 0x7c00 : sign | 0x7e00 | (man >>> 13);
  if (exp >= 143) return sign | 0x7c00; // |x| >= 2^16: beyond every half, rounds to Inf
  if (exp >= 113) {
    // Normal half range. A carry out of the mantissa correctly bumps the exponent (maybe to Inf).
    let h = ((exp - 112) << 10) | (man >>> 13);
    const rem = man & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
    return sign | h;
  }
  // Half subnormal (units of 2^-24): value = (2^23 + man) * 2^(exp-150), shift = 126 - exp.
  const shift = 126 - exp;
  if (shift > 24) return sign; // below 2^-25 (f32 subnormals included): rounds to zero
  const full = man | 0x800000;
  let q = full >>> shift;
  const rem = full & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) !== 0)) q++;
  return sign | q;
}

/** f32 bits -> bf16 bits, round to nearest even; overflow -> ±Inf. */
export function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return ((bits >>> 16) | 0x40) & 0xffff;
  // Adding 0x7fff plus the lsb of the kept part rounds half to even; carries reach the exponent.
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

export function toF32(src: Uint16Array, type: 'f16' | 'bf16', dst: Float32Array): void {
  const n = src.length;
  if (dst.length < n) throw new Error(`toF32: dst holds ${dst.length} values, src has ${n}`);
  const out = u32View(dst);
  if (type === 'bf16') {
    for (let i = 0; i < n; i++) out[i] = src[i] << 16;
  } else if (type === 'f16') {
    const t = F16_TO_F32_BITS;
    for (let i = 0; i < n; i++) out[i] = t[src[i]];
  } else {
    throw new Error(`toF32: unsupported type ${String(type)}`);
  }
}

export function fromF32(src: Float32Array, type: 'f16' | 'bf16', dst: Uint16Array): void {
  const n = src.length;
  if (dst.length < n) throw new Error(`fromF32: dst holds ${dst.length} values, src has ${n}`);
  const bits = u32View(src);
  if (type === 'bf16') {
    for (let i = 0; i < n; i++) dst[i] = f32BitsToBf16(bits[i]);
  } else if (type === 'f16') {
    for (let i = 0; i < n; i++) dst[i] = f32BitsToF16(bits[i]);
  } else {
    throw new Error(`fromF32: unsupported type ${String(type)}`);
  }
}
