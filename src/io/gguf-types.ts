// GGUF format constants and types shared by the reader (gguf-read.ts, gguf-parse.ts) and the
// writer (gguf-write.ts). Our own implementation of the format documented in ggml's
// docs/gguf.md and ggml/include/gguf.h; see gguf.ts for the file layout.
import { readSync } from 'node:fs';
import { endianness } from 'node:os';
import type { WeightDType } from '../kernels/types.js';

export class GgufError extends Error {
  override name = 'GgufError';
}


// ---------------------------------------------------------------------------------------------
// Types

export type GgufNumberType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64';
export type GgufBigIntType = 'u64' | 'i64';
export type GgufScalarType = GgufNumberType | GgufBigIntType | 'bool' | 'string';
export type GgufValueType = GgufScalarType | 'array';

/** An array value. Nested arrays carry their own item type per element. */
export type GgufArray =
  | { type: 'array'; itemType: GgufNumberType; value: number[] }
  | { type: 'array'; itemType: GgufBigIntType; value: bigint[] }
  | { type: 'array'; itemType: 'bool'; value: boolean[] }
  | { type: 'array'; itemType: 'string'; value: string[] }
  | { type: 'array'; itemType: 'array'; value: GgufArray[] };

/** A metadata value with its exact GGUF type (llama.cpp rejects e.g. an i32 where it expects a u32). */
export type GgufValue =
  | { type: GgufNumberType; value: number }
  | { type: GgufBigIntType; value: bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | GgufArray;

export type GgufMetadataEntry = { key: string } & GgufValue;

// Wire codes of the value types (gguf.h enum gguf_type).
export const TYPE_CODES: Record<GgufValueType, number> = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12,
};
export const TYPE_BY_CODE: GgufValueType[] = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'];
export const FIXED_SIZES: Record<Exclude<GgufValueType, 'string' | 'array'>, number> = {
  u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, u64: 8, i64: 8, f64: 8,
};
export const INT_RANGES: Record<Exclude<GgufNumberType, 'f32' | 'f64'>, [number, number]> = {
  u8: [0, 0xff], i8: [-0x80, 0x7f], u16: [0, 0xffff], i16: [-0x8000, 0x7fff], u32: [0, 0xffffffff], i32: [-0x80000000, 0x7fffffff],
};

/** Smallest encoded size of one array item of a type: bounds counts before anything is allocated. */
export function minItemSize(t: GgufValueType): number {
  if (t === 'string') return 8; // u64 length
  if (t === 'array') return 12; // u32 item type + u64 count
  return FIXED_SIZES[t];
}

/** ggml tensor types: [name, elements per block, bytes per block] (ggml.h enum ggml_type, gguf-py GGML_QUANT_SIZES). */
export const GGML_TYPES: Record<number, readonly [string, number, number]> = {
  0: ['F32', 1, 4], 1: ['F16', 1, 2], 2: ['Q4_0', 32, 18], 3: ['Q4_1', 32, 20], 6: ['Q5_0', 32, 22], 7: ['Q5_1', 32, 24],
  8: ['Q8_0', 32, 34], 9: ['Q8_1', 32, 36], 10: ['Q2_K', 256, 84], 11: ['Q3_K', 256, 110], 12: ['Q4_K', 256, 144],
  13: ['Q5_K', 256, 176], 14: ['Q6_K', 256, 210], 15: ['Q8_K', 256, 292], 16: ['IQ2_XXS', 256, 66], 17: ['IQ2_XS', 256, 74],
  18: ['IQ3_XXS', 256, 98], 19: ['IQ1_S', 256, 50], 20: ['IQ4_NL', 32, 18], 21: ['IQ3_S', 256, 110], 22: ['IQ2_S', 256, 82],
  23: ['IQ4_XS', 256, 136], 24: ['I8', 1, 1], 25: ['I16', 1, 2], 26: ['I32', 1, 4], 27: ['I64', 1, 8], 28: ['F64', 1, 8],
  29: ['IQ1_M', 256, 56], 30: ['BF16', 1, 2], 34: ['TQ1_0', 256, 54], 35: ['TQ2_0', 256, 66], 39: ['MXFP4', 32, 17],
  40: ['NVFP4', 64, 36], 41: ['Q1_0', 128, 18], 42: ['Q2_0', 64, 18],
};
/** The ggml type ids of the dtypes we read and write as tensors (float and q8_0/q4_0 blocks). */
export const WEIGHT_GGML_TYPE: Readonly<Record<WeightDType, number>> = Object.freeze({ f32: 0, f16: 1, bf16: 30, q8_0: 8, q4_0: 2 });
export const GGML_TYPE_TO_WEIGHT: Readonly<Record<number, WeightDType>> = Object.freeze({ 0: 'f32', 1: 'f16', 30: 'bf16', 8: 'q8_0', 2: 'q4_0' });


/** Name of a ggml type id ("Q4_K"), or undefined for ids no ggml release defines. */
export function ggmlTypeName(id: number): string | undefined {
  return GGML_TYPES[id]?.[0];
}

export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS. */
export const GGUF_MAX_DIMS = 4;
/** ggml's GGML_MAX_NAME is 64 including the terminating NUL. */
export const GGUF_MAX_TENSOR_NAME_BYTES = 63;
/** Arbitrary caps that keep hostile files from exhausting memory or the stack. */
export const GGUF_MAX_ARRAY_DEPTH = 8;
export const GGUF_MAX_ARRAY_LENGTH = 1 << 26;

export interface GgufTensorInfo {
  name: string;
  /** ggml type id (0 = F32, 1 = F16, 30 = BF16, …). */
  ggmlType: number;
  typeName: string;
  /** Dimensions as stored: ne[0] is the innermost (fastest-varying) one. */
  ne: number[];
  /**
   * Row-major shape used everywhere else in transmla: ne reversed. A GGUF matrix with
   * ne = [in, out] is the PyTorch/safetensors [out, in] weight with the same bytes.
   */
  shape: number[];
  /** Absolute file position of the first data byte. */
  offset: number;
  byteSize: number;
}


export const BIG_READ_CHUNK = 512 * 1024 * 1024;

export function readFully(fd: number, buf: Uint8Array, position: number, path: string): void {
  let done = 0;
  while (done < buf.length) {
    const want = Math.min(BIG_READ_CHUNK, buf.length - done);
    const got = readSync(fd, buf, done, want, position + done);
    if (got === 0) throw new GgufError(`${path}: unexpected end of file at byte ${position + done}`);
    done += got;
  }
}

export function describeType(v: GgufValue): string {
  return v.type === 'array' ? `array of ${v.itemType}` : v.type;
}

export function isNumberType(t: GgufValueType): t is GgufNumberType {
  return t !== 'array' && t !== 'string' && t !== 'bool' && t !== 'u64' && t !== 'i64';
}

export function assertLittleEndianHost(): void {
  // GGUF (v3 as written by llama.cpp) is little-endian and we view bytes as typed arrays directly.
  if (endianness() !== 'LE') throw new GgufError('GGUF I/O requires a little-endian host');
}

export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

