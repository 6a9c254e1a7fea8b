// GGUF reader and writer (our own implementation of the format documented in ggml's
// docs/gguf.md and ggml/include/gguf.h). Layout, all little-endian:
//   "GGUF" · u32 version · u64 tensor_count · u64 kv_count
//   kv_count × (string key · u32 value_type · value)
//   tensor_count × (string name · u32 n_dims · u64 ne[n_dims] · u32 ggml_type · u64 offset)
//   padding to `general.alignment` (default 32) · data section
// A string is u64 byte length + UTF-8 bytes; an array is u32 item type · u64 count · items.
// Tensor offsets are relative to the data section and must be multiples of the alignment.
//
// The reader validates the whole header before returning and never allocates from a length
// it has not checked against the bytes left in the file; tensor data is read lazily.
// The writer builds the header in memory, then streams tensor data one tensor at a time into a
// temporary file that is renamed over the target when complete.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { FloatData, FloatDType } from '../kernels/types.js';
import { numel, type Tensor, type WeightSource } from '../tensor.js';
import { preview } from './preview.js';

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
const TYPE_CODES: Record<GgufValueType, number> = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12,
};
const TYPE_BY_CODE: GgufValueType[] = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'];
const FIXED_SIZES: Record<Exclude<GgufValueType, 'string' | 'array'>, number> = {
  u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, u64: 8, i64: 8, f64: 8,
};
const INT_RANGES: Record<Exclude<GgufNumberType, 'f32' | 'f64'>, [number, number]> = {
  u8: [0, 0xff], i8: [-0x80, 0x7f], u16: [0, 0xffff], i16: [-0x8000, 0x7fff], u32: [0, 0xffffffff], i32: [-0x80000000, 0x7fffffff],
};

/** Smallest encoded size of one array item of a type: bounds counts before anything is allocated. */
function minItemSize(t: GgufValueType): number {
  if (t === 'string') return 8; // u64 length
  if (t === 'array') return 12; // u32 item type + u64 count
  return FIXED_SIZES[t];
}

/** ggml tensor types: [name, elements per block, bytes per block] (ggml.h enum ggml_type, gguf-py GGML_QUANT_SIZES). */
const GGML_TYPES: Record<number, readonly [string, number, number]> = {
  0: ['F32', 1, 4], 1: ['F16', 1, 2], 2: ['Q4_0', 32, 18], 3: ['Q4_1', 32, 20], 6: ['Q5_0', 32, 22], 7: ['Q5_1', 32, 24],
  8: ['Q8_0', 32, 34], 9: ['Q8_1', 32, 36], 10: ['Q2_K', 256, 84], 11: ['Q3_K', 256, 110], 12: ['Q4_K', 256, 144],
  13: ['Q5_K', 256, 176], 14: ['Q6_K', 256, 210], 15: ['Q8_K', 256, 292], 16: ['IQ2_XXS', 256, 66], 17: ['IQ2_XS', 256, 74],
  18: ['IQ3_XXS', 256, 98], 19: ['IQ1_S', 256, 50], 20: ['IQ4_NL', 32, 18], 21: ['IQ3_S', 256, 110], 22: ['IQ2_S', 256, 82],
  23: ['IQ4_XS', 256, 136], 24: ['I8', 1, 1], 25: ['I16', 1, 2], 26: ['I32', 1, 4], 27: ['I64', 1, 8], 28: ['F64', 1, 8],
  29: ['IQ1_M', 256, 56], 30: ['BF16', 1, 2], 34: ['TQ1_0', 256, 54], 35: ['TQ2_0', 256, 66], 39: ['MXFP4', 32, 17],
  40: ['NVFP4', 64, 36], 41: ['Q1_0', 128, 18], 42: ['Q2_0', 64, 18],
};
const FLOAT_GGML_TYPE: Record<FloatDType, number> = { f32: 0, f16: 1, bf16: 30 };
const GGML_TYPE_TO_FLOAT: Record<number, FloatDType> = { 0: 'f32', 1: 'f16', 30: 'bf16' };

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

// ---------------------------------------------------------------------------------------------
// Reader

const READ_CHUNK = 1 << 20;
const BIG_READ_CHUNK = 512 * 1024 * 1024;
// ignoreBOM: a token may legitimately be U+FEFF, which TextDecoder would otherwise strip.
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Lenient = new TextDecoder('utf-8', { ignoreBOM: true });

/** Sequential reader over a file descriptor with bounds checks against the file size. */
class HeaderReader {
  pos = 0;
  private buf = new Uint8Array(0);
  private bufStart = 0;

  constructor(private readonly fd: number, readonly fileSize: number, private readonly path: string) {}

  remaining(): number {
    return this.fileSize - this.pos;
  }

  fail(msg: string): never {
    throw new GgufError(`${this.path}: ${msg}`);
  }

  /** Returns a view of the next n bytes and advances. The view is only valid until the next call. */
  take(n: number, what: string): Uint8Array {
    if (n > this.remaining()) this.fail(`unexpected end of file at byte ${this.pos} while reading ${what} (${n} bytes needed, ${this.remaining()} left)`);
    const off = this.pos - this.bufStart;
    if (off >= 0 && off + n <= this.buf.length) {
      this.pos += n;
      return this.buf.subarray(off, off + n);
    }
    const size = Math.min(Math.max(n, READ_CHUNK), this.fileSize - this.pos);
    const fresh = new Uint8Array(size);
    readFully(this.fd, fresh, this.pos, this.path);
    this.buf = fresh;
    this.bufStart = this.pos;
    this.pos += n;
    return fresh.subarray(0, n);
  }

  u32(what: string): number {
    const b = this.take(4, what);
    return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
  }

  /** A u64 that must fit a JS number (every size and count we accept does). */
  u64(what: string): number {
    const b = this.take(8, what);
    const v = new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} is ${v}, too large`);
    return Number(v);
  }

  string(what: string, strict: boolean): string {
    const len = this.u64(`${what} length`);
    if (len > this.remaining()) this.fail(`${what} has length ${len} but only ${this.remaining()} bytes remain in the file`);
    const bytes = this.take(len, what);
    if (!strict) return utf8Lenient.decode(bytes);
    try {
      return utf8Strict.decode(bytes);
    } catch {
      this.fail(`${what} is not valid UTF-8`);
    }
  }
}

function readFully(fd: number, buf: Uint8Array, position: number, path: string): void {
  let done = 0;
  while (done < buf.length) {
    const want = Math.min(BIG_READ_CHUNK, buf.length - done);
    const got = readSync(fd, buf, done, want, position + done);
    if (got === 0) throw new GgufError(`${path}: unexpected end of file at byte ${position + done}`);
    done += got;
  }
}

function readScalar(r: HeaderReader, t: Exclude<GgufValueType, 'array'>, what: string): number | bigint | boolean | string {
  if (t === 'string') return r.string(what, false); // token texts of some vocabularies are not valid UTF-8
  const b = r.take(FIXED_SIZES[t], what);
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  switch (t) {
    case 'u8': return dv.getUint8(0);
    case 'i8': return dv.getInt8(0);
    case 'u16': return dv.getUint16(0, true);
    case 'i16': return dv.getInt16(0, true);
    case 'u32': return dv.getUint32(0, true);
    case 'i32': return dv.getInt32(0, true);
    case 'f32': return dv.getFloat32(0, true);
    case 'f64': return dv.getFloat64(0, true);
    case 'u64': return dv.getBigUint64(0, true);
    case 'i64': return dv.getBigInt64(0, true);
    case 'bool': {
      const v = dv.getUint8(0);
      if (v > 1) r.fail(`${what} is a bool with byte value ${v} (must be 0 or 1)`);
      return v === 1;
    }
  }
}

function readValueType(r: HeaderReader, what: string): GgufValueType {
  const code = r.u32(`${what} type`);
  const t = TYPE_BY_CODE[code];
  if (t === undefined) r.fail(`${what} has unknown value type ${code}`);
  return t;
}

function readArray(r: HeaderReader, what: string, depth: number): GgufArray {
  if (depth > GGUF_MAX_ARRAY_DEPTH) r.fail(`${what}: arrays nested deeper than ${GGUF_MAX_ARRAY_DEPTH} levels`);
  const itemType = readValueType(r, `${what} item`);
  const count = r.u64(`${what} count`);
  if (count > GGUF_MAX_ARRAY_LENGTH) r.fail(`${what} has ${count} items, more than the limit of ${GGUF_MAX_ARRAY_LENGTH}`);
  const minBytes = count * minItemSize(itemType);
  if (minBytes > r.remaining()) r.fail(`${what} has ${count} ${itemType} items (at least ${minBytes} bytes) but only ${r.remaining()} bytes remain in the file`);
  if (itemType === 'array') {
    const value: GgufArray[] = [];
    for (let i = 0; i < count; i++) value.push(readArray(r, `${what}[${i}]`, depth + 1));
    return { type: 'array', itemType, value };
  }
  if (itemType !== 'string') {
    // Fixed-size items: one bounded read, then decode.
    const size = FIXED_SIZES[itemType];
    const b = r.take(count * size, what);
    const dv = new DataView(b.buffer, b.byteOffset, b.length);
    switch (itemType) {
      case 'u64': case 'i64': {
        const value: bigint[] = new Array<bigint>(count);
        for (let i = 0; i < count; i++) value[i] = itemType === 'u64' ? dv.getBigUint64(i * 8, true) : dv.getBigInt64(i * 8, true);
        return { type: 'array', itemType, value };
      }
      case 'bool': {
        const value: boolean[] = new Array<boolean>(count);
        for (let i = 0; i < count; i++) {
          const v = dv.getUint8(i);
          if (v > 1) r.fail(`${what}[${i}] is a bool with byte value ${v} (must be 0 or 1)`);
          value[i] = v === 1;
        }
        return { type: 'array', itemType, value };
      }
      default: {
        const value: number[] = new Array<number>(count);
        const get = numberGetter(dv, itemType);
        for (let i = 0; i < count; i++) value[i] = get(i * size);
        return { type: 'array', itemType, value };
      }
    }
  }
  const value: string[] = new Array<string>(count);
  for (let i = 0; i < count; i++) value[i] = r.string(`${what}[${i}]`, false);
  return { type: 'array', itemType, value };
}

function numberGetter(dv: DataView, t: GgufNumberType): (off: number) => number {
  switch (t) {
    case 'u8': return (o) => dv.getUint8(o);
    case 'i8': return (o) => dv.getInt8(o);
    case 'u16': return (o) => dv.getUint16(o, true);
    case 'i16': return (o) => dv.getInt16(o, true);
    case 'u32': return (o) => dv.getUint32(o, true);
    case 'i32': return (o) => dv.getInt32(o, true);
    case 'f32': return (o) => dv.getFloat32(o, true);
    case 'f64': return (o) => dv.getFloat64(o, true);
  }
}

function readValue(r: HeaderReader, t: GgufValueType, what: string): GgufValue {
  if (t === 'array') return readArray(r, what, 1);
  return { type: t, value: readScalar(r, t, what) } as GgufValue;
}

function describeType(v: GgufValue): string {
  return v.type === 'array' ? `array of ${v.itemType}` : v.type;
}

function isNumberType(t: GgufValueType): t is GgufNumberType {
  return t !== 'array' && t !== 'string' && t !== 'bool' && t !== 'u64' && t !== 'i64';
}

/** A parsed GGUF file: metadata and tensor directory in memory, tensor data read on demand. */
export class GgufFile implements WeightSource {
  readonly path: string;
  readonly version: number;
  readonly fileSize: number;
  readonly alignment: number;
  /** Absolute file position of the data section. */
  readonly dataOffset: number;
  /** Metadata in file order. */
  readonly metadata: ReadonlyMap<string, GgufValue>;
  /** Tensor directory in file order. */
  readonly tensors: readonly GgufTensorInfo[];
  private readonly byName: Map<string, GgufTensorInfo>;

  /** Use readGguf(). */
  constructor(path: string, version: number, fileSize: number, alignment: number, dataOffset: number, metadata: Map<string, GgufValue>, tensors: GgufTensorInfo[]) {
    this.path = path;
    this.version = version;
    this.fileSize = fileSize;
    this.alignment = alignment;
    this.dataOffset = dataOffset;
    this.metadata = metadata;
    this.tensors = tensors;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  private fail(msg: string): never {
    throw new GgufError(`${this.path}: ${msg}`);
  }

  get(name: string): Tensor {
    return this.readTensor(name);
  }

  names(): string[] {
    return this.tensors.map((t) => t.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  tensorInfo(name: string): GgufTensorInfo {
    const t = this.byName.get(name);
    if (!t) this.fail(`no tensor named "${name}"`);
    return t;
  }

  /** Raw bytes of any tensor (quantized ones included), in a fresh aligned buffer. */
  readRaw(name: string): Uint8Array {
    const t = this.tensorInfo(name);
    const out = new Uint8Array(new ArrayBuffer(t.byteSize));
    const fd = openSync(this.path, 'r');
    try {
      readFully(fd, out, t.offset, this.path);
    } finally {
      closeSync(fd);
    }
    return out;
  }

  /** Reads an F32/F16/BF16 tensor with its row-major shape. Quantized types are refused by name. */
  readTensor(name: string): Tensor {
    const t = this.tensorInfo(name);
    const dtype = this.requireFloat(t);
    const bytes = this.readRaw(name);
    const data: FloatData = dtype === 'f32' ? new Float32Array(bytes.buffer) : new Uint16Array(bytes.buffer);
    return { dtype, shape: [...t.shape], data };
  }

  /**
   * Entry `index` along the leading (row-major) dimension of an F32/F16/BF16 tensor, reading only
   * its bytes: one expert of llama.cpp's stacked expert tensors [n_expert, …].
   */
  readTensorSlab(name: string, index: number): Tensor {
    const t = this.tensorInfo(name);
    const dtype = this.requireFloat(t);
    const n = t.shape[0]!;
    if (t.shape.length < 2 || !Number.isSafeInteger(index) || index < 0 || index >= n) this.fail(`tensor ${preview(name)} [${t.shape.join(', ')}] has no entry ${index} along its first dimension`);
    const slab = t.byteSize / n;
    const out = new Uint8Array(new ArrayBuffer(slab));
    const fd = openSync(this.path, 'r');
    try {
      readFully(fd, out, t.offset + index * slab, this.path);
    } finally {
      closeSync(fd);
    }
    const data: FloatData = dtype === 'f32' ? new Float32Array(out.buffer) : new Uint16Array(out.buffer);
    return { dtype, shape: t.shape.slice(1), data };
  }

  private requireFloat(t: GgufTensorInfo): FloatDType {
    const dtype = GGML_TYPE_TO_FLOAT[t.ggmlType];
    if (!dtype) this.fail(`tensor ${preview(t.name)} has type ${t.typeName}; only F32, F16 and BF16 tensors can be read as floats`);
    return dtype;
  }

  /** Float dtype of a tensor, or null when it is quantized/integer. */
  floatDType(name: string): FloatDType | null {
    return GGML_TYPE_TO_FLOAT[this.tensorInfo(name).ggmlType] ?? null;
  }

  // Typed metadata access: absent → undefined; present with another type → GgufError naming both.

  value(key: string): GgufValue | undefined {
    return this.metadata.get(key);
  }

  private wrongType(key: string, v: GgufValue, want: string): never {
    this.fail(`metadata "${key}" is ${describeType(v)}, expected ${want}`);
  }

  getString(key: string): string | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'string') this.wrongType(key, v, 'string');
    return v.value;
  }

  getBool(key: string): boolean | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'bool') this.wrongType(key, v, 'bool');
    return v.value;
  }

  /** Any numeric scalar; 64-bit integers must be exactly representable. */
  getNumber(key: string): number | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type === 'u64' || v.type === 'i64') {
      const n = Number(v.value);
      if (!Number.isSafeInteger(n)) this.fail(`metadata "${key}" = ${v.value} does not fit a JS number`);
      return n;
    }
    if (!isNumberType(v.type)) this.wrongType(key, v, 'a number');
    return v.value as number;
  }

  getStringArray(key: string): string[] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'array' || v.itemType !== 'string') this.wrongType(key, v, 'array of string');
    return v.value as string[];
  }

  getNumberArray(key: string): number[] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'array' || !isNumberType(v.itemType)) this.wrongType(key, v, 'array of numbers');
    return v.value as number[];
  }

  requireString(key: string): string {
    return this.getString(key) ?? this.fail(`missing metadata "${key}"`);
  }

  requireNumber(key: string): number {
    return this.getNumber(key) ?? this.fail(`missing metadata "${key}"`);
  }
}

function assertLittleEndianHost(): void {
  // GGUF (v3 as written by llama.cpp) is little-endian and we view bytes as typed arrays directly.
  if (endianness() !== 'LE') throw new GgufError('GGUF I/O requires a little-endian host');
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Parses and validates a GGUF file's header and tensor directory. Tensor data is not read. */
export function readGguf(path: string): GgufFile {
  assertLittleEndianHost();
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new GgufError(`${path}: cannot open: ${(err as Error).message}`);
  }
  try {
    return parse(fd, path);
  } finally {
    closeSync(fd);
  }
}

function parse(fd: number, path: string): GgufFile {
  const st = fstatSync(fd);
  if (!st.isFile()) throw new GgufError(`${path}: not a regular file`);
  const fileSize = st.size;
  const r: HeaderReader = new HeaderReader(fd, fileSize, path);
  if (fileSize < 4) r.fail(`file is ${fileSize} bytes, too short for the GGUF magic`);
  const magic = r.take(4, 'magic');
  if (magic[0] !== 0x47 || magic[1] !== 0x47 || magic[2] !== 0x55 || magic[3] !== 0x46) {
    const shown = [...magic].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '?')).join('');
    r.fail(`bad magic "${shown}" (not a GGUF file)`);
  }
  const version = r.u32('version');
  if ((version & 0xffff) === 0 && version !== 0) r.fail(`version field ${version} looks byte-swapped: big-endian GGUF files are not supported`);
  if (version === 1) r.fail('GGUF version 1 (32-bit counts) is not supported; re-export the file as version 3');
  if (version !== 2 && version !== 3) r.fail(`unsupported GGUF version ${version} (supported: 2, 3)`);

  const tensorCount = r.u64('tensor count');
  const kvCount = r.u64('metadata count');
  // Smallest possible records: kv = key length + type + 1 byte; tensor info = name length + n_dims + type + offset.
  if (kvCount * 13 > r.remaining()) r.fail(`metadata count ${kvCount} cannot fit in the ${r.remaining()} bytes left in the file`);
  if (tensorCount * 24 > r.remaining()) r.fail(`tensor count ${tensorCount} cannot fit in the ${r.remaining()} bytes left in the file`);

  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = r.string(`metadata key #${i}`, true);
    if (key.length === 0) r.fail(`metadata key #${i} is empty`);
    // Keys and names are shown through preview(): a hostile file can make them megabytes long.
    const shown = preview(key);
    if (metadata.has(key)) r.fail(`duplicate metadata key ${shown}`);
    const t = readValueType(r, `metadata ${shown}`);
    metadata.set(key, readValue(r, t, `metadata ${shown}`));
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al !== undefined) {
    if (al.type !== 'u32') r.fail(`general.alignment must be u32, got ${describeType(al)}`);
    if (al.value === 0 || (al.value & (al.value - 1)) !== 0) r.fail(`general.alignment ${al.value} is not a power of two`);
    alignment = al.value;
  }

  interface Pending { name: string; ggmlType: number; typeName: string; ne: number[]; rel: number; byteSize: number }
  const pending: Pending[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = r.string(`tensor #${i} name`, true);
    const tn = preview(name);
    if (seen.has(name)) r.fail(`duplicate tensor name ${tn}`);
    seen.add(name);
    const nDims = r.u32(`tensor ${tn} n_dims`);
    if (nDims > GGUF_MAX_DIMS) r.fail(`tensor ${tn} has ${nDims} dimensions (at most ${GGUF_MAX_DIMS})`);
    const ne: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const n = r.u64(`tensor ${tn} ne[${d}]`);
      ne.push(n);
      elements *= n;
      if (!Number.isSafeInteger(elements)) r.fail(`tensor ${tn} has too many elements (ne = [${ne.join(', ')}, …])`);
    }
    const ggmlType = r.u32(`tensor ${tn} type`);
    const info = GGML_TYPES[ggmlType];
    if (!info) r.fail(`tensor ${tn} has unknown ggml type ${ggmlType}`);
    const [typeName, blockSize, blockBytes] = info;
    const rowLen = nDims > 0 ? ne[0]! : 1;
    if (rowLen % blockSize !== 0) r.fail(`tensor ${tn} of type ${typeName} has ${rowLen} elements per row, not a multiple of the block size ${blockSize}`);
    const byteSize = (elements / blockSize) * blockBytes;
    if (byteSize > fileSize) r.fail(`tensor ${tn} needs ${byteSize} bytes, more than the whole file (${fileSize})`);
    const rel = r.u64(`tensor ${tn} offset`);
    if (rel % alignment !== 0) r.fail(`tensor ${tn} offset ${rel} is not a multiple of the alignment ${alignment}`);
    pending.push({ name, ggmlType, typeName, ne, rel, byteSize });
  }

  const dataOffset = alignUp(r.pos, alignment);
  if (tensorCount > 0 && dataOffset > fileSize) r.fail(`data section would start at byte ${dataOffset}, past the end of the file (${fileSize})`);
  const tensors: GgufTensorInfo[] = pending.map((p) => {
    const offset = dataOffset + p.rel;
    if (offset + p.byteSize > fileSize) {
      r.fail(`tensor ${preview(p.name)} occupies bytes ${offset}..${offset + p.byteSize} but the file has ${fileSize} bytes (truncated?)`);
    }
    return { name: p.name, ggmlType: p.ggmlType, typeName: p.typeName, ne: p.ne, shape: [...p.ne].reverse(), offset, byteSize: p.byteSize };
  });
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!, cur = sorted[i]!;
    if (cur.offset < prev.offset + prev.byteSize) {
      r.fail(`tensor ${preview(cur.name)} (data at ${cur.offset}) overlaps tensor ${preview(prev.name)} (data ${prev.offset}..${prev.offset + prev.byteSize})`);
    }
  }
  return new GgufFile(path, version, fileSize, alignment, dataOffset, metadata, tensors);
}

// ---------------------------------------------------------------------------------------------
// Writer

/** A tensor given up front, or described by dtype/shape and loaded only when its bytes are written. */
export type GgufTensorInput =
  | { name: string; tensor: Tensor }
  | { name: string; dtype: FloatDType; shape: readonly number[]; load: () => Tensor };

export interface GgufWriteInput {
  metadata: readonly GgufMetadataEntry[];
  tensors: readonly GgufTensorInput[];
}

/** Growable little-endian byte buffer for the header. */
class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private dv = new DataView(this.buf.buffer);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.dv = new DataView(next.buffer);
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  u32(v: number): void {
    this.reserve(4);
    this.dv.setUint32(this.length, v, true);
    this.length += 4;
  }

  u64(v: number | bigint): void {
    this.reserve(8);
    this.dv.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }

  scalar(t: Exclude<GgufValueType, 'string' | 'array'>, v: number | bigint | boolean): void {
    const size = FIXED_SIZES[t];
    this.reserve(size);
    const o = this.length;
    const dv = this.dv;
    switch (t) {
      case 'u8': dv.setUint8(o, v as number); break;
      case 'i8': dv.setInt8(o, v as number); break;
      case 'u16': dv.setUint16(o, v as number, true); break;
      case 'i16': dv.setInt16(o, v as number, true); break;
      case 'u32': dv.setUint32(o, v as number, true); break;
      case 'i32': dv.setInt32(o, v as number, true); break;
      case 'f32': dv.setFloat32(o, v as number, true); break;
      case 'f64': dv.setFloat64(o, v as number, true); break;
      case 'u64': dv.setBigUint64(o, v as bigint, true); break;
      case 'i64': dv.setBigInt64(o, v as bigint, true); break;
      case 'bool': dv.setUint8(o, v ? 1 : 0); break;
    }
    this.length += size;
  }

  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }

  result(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

function checkScalar(where: string, t: GgufScalarType, v: unknown): void {
  const bad = (want: string): never => {
    throw new GgufError(`${where}: ${want} expected for type ${t}, got ${typeof v === 'bigint' ? `${v}n` : JSON.stringify(v)}`);
  };
  switch (t) {
    case 'string': if (typeof v !== 'string') bad('a string'); return;
    case 'bool': if (typeof v !== 'boolean') bad('a boolean'); return;
    case 'f32': case 'f64': if (typeof v !== 'number') bad('a number'); return;
    case 'u64': if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) bad('a bigint in [0, 2^64)'); return;
    case 'i64': if (typeof v !== 'bigint' || v < -(1n << 63n) || v >= 1n << 63n) bad('a bigint in [-2^63, 2^63)'); return;
    default: {
      const [lo, hi] = INT_RANGES[t];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) bad(`an integer in [${lo}, ${hi}]`);
    }
  }
}

function writeArray(w: ByteWriter, where: string, a: GgufArray, depth: number): void {
  if (depth > GGUF_MAX_ARRAY_DEPTH) throw new GgufError(`${where}: arrays nested deeper than ${GGUF_MAX_ARRAY_DEPTH} levels`);
  if (!(a.itemType in TYPE_CODES)) throw new GgufError(`${where}: unknown array item type ${String(a.itemType)}`);
  if (!Array.isArray(a.value)) throw new GgufError(`${where}: array value must be a JS array`);
  if (a.value.length > GGUF_MAX_ARRAY_LENGTH) throw new GgufError(`${where}: ${a.value.length} items exceed the limit of ${GGUF_MAX_ARRAY_LENGTH}`);
  w.u32(TYPE_CODES[a.itemType]);
  w.u64(a.value.length);
  if (a.itemType === 'array') {
    (a.value as GgufArray[]).forEach((x, i) => {
      if (x === null || typeof x !== 'object' || x.type !== 'array') throw new GgufError(`${where}[${i}]: expected a nested array value`);
      writeArray(w, `${where}[${i}]`, x, depth + 1);
    });
    return;
  }
  const t = a.itemType;
  for (let i = 0; i < a.value.length; i++) {
    const v = a.value[i];
    checkScalar(`${where}[${i}]`, t, v);
    if (t === 'string') w.string(v as string);
    else w.scalar(t, v as number | bigint | boolean);
  }
}

function encodeValue(w: ByteWriter, e: GgufMetadataEntry): void {
  const where = `metadata "${e.key}"`;
  if (!(e.type in TYPE_CODES)) throw new GgufError(`${where}: unknown type ${String(e.type)}`);
  w.u32(TYPE_CODES[e.type]);
  if (e.type === 'array') {
    writeArray(w, where, e, 1);
    return;
  }
  checkScalar(where, e.type, e.value);
  if (e.type === 'string') w.string(e.value);
  else w.scalar(e.type, e.value);
}

interface PlannedTensor {
  name: string;
  dtype: FloatDType;
  shape: number[];
  byteSize: number;
  rel: number;
  get: () => Tensor;
}

function planTensor(where: string, input: GgufTensorInput): Omit<PlannedTensor, 'rel'> {
  const { name } = input;
  const dtype = 'tensor' in input ? input.tensor.dtype : input.dtype;
  const shape = [...('tensor' in input ? input.tensor.shape : input.shape)];
  if (typeof name !== 'string' || name.length === 0) throw new GgufError(`${where}: tensor names must be non-empty strings`);
  if (new TextEncoder().encode(name).length > GGUF_MAX_TENSOR_NAME_BYTES) throw new GgufError(`${where}: tensor name "${name}" is longer than ${GGUF_MAX_TENSOR_NAME_BYTES} bytes (ggml's limit)`);
  if (!(dtype in FLOAT_GGML_TYPE)) throw new GgufError(`${where}: tensor "${name}" has unsupported dtype ${String(dtype)}`);
  if (shape.length < 1 || shape.length > GGUF_MAX_DIMS) throw new GgufError(`${where}: tensor "${name}" has ${shape.length} dimensions (GGUF allows 1..${GGUF_MAX_DIMS})`);
  for (const d of shape) if (!Number.isSafeInteger(d) || d < 0) throw new GgufError(`${where}: tensor "${name}" has invalid shape ${JSON.stringify(shape)}`);
  const byteSize = numel(shape) * (dtype === 'f32' ? 4 : 2);
  const get = 'tensor' in input ? () => input.tensor : input.load;
  if ('tensor' in input) checkTensorData(where, name, input.tensor, dtype, shape);
  return { name, dtype, shape, byteSize, get };
}

function checkTensorData(where: string, name: string, t: Tensor, dtype: FloatDType, shape: readonly number[]): void {
  if (t.dtype !== dtype || t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new GgufError(`${where}: tensor "${name}" was declared ${dtype} [${shape.join(', ')}] but loaded as ${t.dtype} [${t.shape.join(', ')}]`);
  }
  const want = dtype === 'f32' ? Float32Array : Uint16Array;
  if (!(t.data instanceof want)) throw new GgufError(`${where}: tensor "${name}" is ${dtype} but its data is a ${t.data.constructor.name}`);
  if (t.data.length !== numel(shape)) throw new GgufError(`${where}: tensor "${name}" has ${t.data.length} elements but shape [${shape.join(', ')}] needs ${numel(shape)}`);
}

function writeAllSync(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, Math.min(BIG_READ_CHUNK, buf.length - done));
}

/**
 * Writes a GGUF v3 file. Metadata is written in the given order with the given types;
 * `general.alignment` (u32, power of two) may be among it, otherwise 32 is used and not written.
 * Tensors are laid out in the given order, each padded to the alignment. The file appears at
 * `path` only once complete (temporary file in the same folder, fsync, rename).
 */
export function writeGguf(path: string, input: GgufWriteInput): void {
  assertLittleEndianHost();
  const keys = new Set<string>();
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  for (const e of input.metadata) {
    if (typeof e.key !== 'string' || e.key.length === 0) throw new GgufError(`${path}: metadata keys must be non-empty strings`);
    if (keys.has(e.key)) throw new GgufError(`${path}: duplicate metadata key "${e.key}"`);
    keys.add(e.key);
    if (e.key === 'general.alignment') {
      const v = e.type === 'u32' ? e.value : 0;
      if (v <= 0 || (v & (v - 1)) !== 0) throw new GgufError(`${path}: general.alignment must be a u32 power of two`);
      alignment = v;
    }
  }
  const names = new Set<string>();
  const planned: PlannedTensor[] = [];
  let rel = 0;
  for (const t of input.tensors) {
    const p = planTensor(path, t);
    if (names.has(p.name)) throw new GgufError(`${path}: duplicate tensor name "${p.name}"`);
    names.add(p.name);
    planned.push({ ...p, rel });
    rel = alignUp(rel + p.byteSize, alignment);
  }

  const w = new ByteWriter();
  w.bytes(new Uint8Array([0x47, 0x47, 0x55, 0x46]));
  w.u32(3);
  w.u64(planned.length);
  w.u64(input.metadata.length);
  for (const e of input.metadata) {
    w.string(e.key);
    encodeValue(w, e);
  }
  for (const p of planned) {
    w.string(p.name);
    w.u32(p.shape.length);
    for (let d = p.shape.length - 1; d >= 0; d--) w.u64(p.shape[d]!); // ne[0] = innermost = last row-major dim
    w.u32(FLOAT_GGML_TYPE[p.dtype]);
    w.u64(p.rel);
  }
  const header = w.result();
  const dataStart = alignUp(header.length, alignment);

  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  let fd: number;
  try {
    fd = openSync(tmp, 'wx');
  } catch (err) {
    throw new GgufError(`${path}: cannot create temporary file ${tmp}: ${(err as Error).message}`);
  }
  let ok = false;
  try {
    writeAllSync(fd, header);
    const zeros = new Uint8Array(alignment);
    writeAllSync(fd, zeros.subarray(0, dataStart - header.length));
    let written = 0;
    for (const p of planned) {
      const t = p.get();
      checkTensorData(path, p.name, t, p.dtype, p.shape);
      writeAllSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      written += p.byteSize;
      const padded = alignUp(written, alignment);
      writeAllSync(fd, zeros.subarray(0, padded - written));
      written = padded;
    }
    fsyncSync(fd);
    ok = true;
  } finally {
    closeSync(fd);
    if (!ok) {
      try { unlinkSync(tmp); } catch { /* the original error matters more */ }
    }
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    try { unlinkSync(tmp); } catch { /* ignore */ }
    throw new GgufError(`${path}: cannot move the finished file into place: ${(err as Error).message}`);
  }
}
