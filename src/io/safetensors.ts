// safetensors reader and writer (our own implementation of the published format):
//   [u64 LE header length n][n bytes UTF-8 JSON header][data section]
// The header maps tensor name → {dtype, shape, data_offsets:[start,end]} (offsets relative to
// the data section) plus an optional "__metadata__" string→string map.
// The reader validates the whole header up front and then reads tensors lazily, one at a time,
// into fresh ArrayBuffers (so typed-array views are always aligned).
import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';
import type { FloatData, FloatDType } from '../kernels/types.js';
import { numel, type Tensor } from '../tensor.js';
import { preview } from './preview.js';

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

/** Element size in bytes of every byte-addressable safetensors dtype. */
const DTYPE_SIZES = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8, C64: 8,
} as const;
export type SafetensorsDType = keyof typeof DTYPE_SIZES;

// Packed sub-byte dtypes of the format: named in the error so users know why their file is refused.
const SUB_BYTE_DTYPES = new Set(['F4', 'F6_E2M3', 'F6_E3M2']);

export function safetensorsDTypeSize(dtype: SafetensorsDType): number {
  return DTYPE_SIZES[dtype];
}

function isKnownDType(s: string): s is SafetensorsDType {
  return Object.prototype.hasOwnProperty.call(DTYPE_SIZES, s);
}

const TO_FLOAT: Partial<Record<SafetensorsDType, FloatDType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };
const FROM_FLOAT: Record<FloatDType, SafetensorsDType> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

/** Same bound as the reference implementation: larger headers are refused as malformed. */
export const MAX_HEADER_BYTES = 100_000_000;
/** Reads are split into chunks below 1 GiB (readSync caps a single call near 2 GiB). */
const READ_CHUNK = 512 * 1024 * 1024;

export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute position of the tensor's first byte in the file. */
  fileOffset: number;
  byteLength: number;
}

function assertLittleEndianHost(): void {
  // The format is little-endian and we view bytes directly as typed arrays.
  if (endianness() !== 'LE') throw new SafetensorsError('safetensors I/O requires a little-endian host');
}

function fail(path: string, msg: string): never {
  throw new SafetensorsError(`${path}: ${msg}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses and validates a header; the data section spans [dataStart, dataStart + dataLength) of the file. */
function parseHeader(path: string, json: unknown, dataStart: number, dataLength: number): { entries: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  if (!isPlainObject(json)) fail(path, 'header is not a JSON object');
  const entries = new Map<string, SafetensorsEntry>();
  const metadata: Record<string, string> = {};
  const ranges: { name: string; start: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(raw)) fail(path, '__metadata__ must be an object of string values');
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== 'string') fail(path, `__metadata__[${preview(k)}] must be a string, got ${preview(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor ${preview(name)}`;
    if (!isPlainObject(raw)) fail(path, `${where}: header entry is not an object`);
    const { dtype, shape, data_offsets: offs } = raw;
    if (typeof dtype !== 'string') fail(path, `${where}: missing or non-string dtype`);
    if (!isKnownDType(dtype)) {
      const why = SUB_BYTE_DTYPES.has(dtype) ? 'packed sub-byte dtypes are not supported' : 'unknown dtype';
      fail(path, `${where}: ${why} ${preview(dtype)}`);
    }
    if (!Array.isArray(shape)) fail(path, `${where}: shape must be an array`);
    let count = 1n;
    for (const d of shape) {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) fail(path, `${where}: shape ${preview(shape)} has a dimension that is not a non-negative integer`);
      count *= BigInt(d);
    }
    const bytes = count * BigInt(DTYPE_SIZES[dtype]);
    if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) fail(path, `${where}: shape ${preview(shape)} is too large`);
    if (!Array.isArray(offs) || offs.length !== 2) fail(path, `${where}: data_offsets must be [start, end]`);
    const [start, end] = offs as unknown[];
    if (typeof start !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      fail(path, `${where}: data_offsets ${preview(offs)} must be non-negative integers with start <= end`);
    }
    if (end - start !== Number(bytes)) {
      fail(path, `${where}: data_offsets ${preview(offs)} span ${end - start} bytes but ${dtype} ${preview(shape)} needs ${bytes}`);
    }
    if (end > dataLength) fail(path, `${where}: data_offsets ${preview(offs)} run past the end of the data section (${dataLength} bytes; file truncated?)`);
    entries.set(name, { name, dtype, shape: shape as number[], fileOffset: dataStart + start, byteLength: end - start });
    if (end > start) ranges.push({ name, start, end });
  }
  ranges.sort((a, b) => a.start - b.start);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    if (cur.start < prev.end) fail(path, `tensors ${preview(prev.name)} [${prev.start}, ${prev.end}) and ${preview(cur.name)} [${cur.start}, ${cur.end}) overlap`);
  }
  return { entries, metadata };
}

/** An open safetensors file. Holds a file descriptor until close(). */
export class SafetensorsFile {
  readonly path: string;
  /** Byte length of the JSON header (without the 8-byte length prefix). */
  readonly headerLength: number;
  readonly metadata: Readonly<Record<string, string>>;
  private fd: number | null;
  private readonly entries: Map<string, SafetensorsEntry>;

  /** Use openSafetensors(). */
  constructor(path: string, fd: number, headerLength: number, entries: Map<string, SafetensorsEntry>, metadata: Record<string, string>) {
    this.path = path;
    this.fd = fd;
    this.headerLength = headerLength;
    this.entries = entries;
    this.metadata = metadata;
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Header information of a tensor (no data read). */
  entry(name: string): SafetensorsEntry {
    const e = this.entries.get(name);
    if (!e) fail(this.path, `no tensor named "${name}"`);
    return e;
  }

  /** Sum of all tensors' data sizes. */
  dataBytes(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.byteLength;
    return n;
  }

  /** The raw little-endian bytes of one tensor, in a fresh (hence aligned) ArrayBuffer. */
  readBytes(name: string): Uint8Array {
    const e = this.entry(name);
    if (this.fd === null) fail(this.path, `cannot read tensor "${name}": file is closed`);
    const out = new Uint8Array(new ArrayBuffer(e.byteLength));
    let done = 0;
    while (done < e.byteLength) {
      const want = Math.min(READ_CHUNK, e.byteLength - done);
      const got = readSync(this.fd, out, done, want, e.fileOffset + done);
      if (got === 0) fail(this.path, `tensor ${preview(name)}: unexpected end of file at byte ${e.fileOffset + done} (file truncated while open?)`);
      done += got;
    }
    return out;
  }

  /** Reads a float tensor (F32/F16/BF16). Other dtypes can be listed but not read as floats. */
  getTensor(name: string): Tensor {
    const e = this.entry(name);
    const dtype = TO_FLOAT[e.dtype];
    if (!dtype) fail(this.path, `tensor "${name}" has dtype ${e.dtype}; only F32, F16 and BF16 can be read as float tensors`);
    const bytes = this.readBytes(name);
    const data: FloatData = dtype === 'f32' ? new Float32Array(bytes.buffer) : new Uint16Array(bytes.buffer);
    return { dtype, shape: [...e.shape], data };
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** Opens a safetensors file and validates its header completely; tensor data is not read. */
export function openSafetensors(path: string): SafetensorsFile {
  assertLittleEndianHost();
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new SafetensorsError(`${path}: cannot open: ${(err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    // A folder opens fine on Linux but fails on read with a bare EISDIR.
    if (!st.isFile()) fail(path, 'not a regular file');
    const size = st.size;
    if (size < 8) fail(path, `file is ${size} bytes, too short for the 8-byte header length`);
    const lenBuf = new Uint8Array(8);
    readFully(fd, lenBuf, 0, path);
    const n64 = new DataView(lenBuf.buffer).getBigUint64(0, true);
    if (n64 > BigInt(MAX_HEADER_BYTES)) fail(path, `header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    const n = Number(n64);
    if (n > size - 8) fail(path, `header length ${n} runs past the end of the file (${size} bytes)`);
    if (n < 2) fail(path, `header length ${n} is too short for a JSON object`);
    const headerBytes = new Uint8Array(n);
    readFully(fd, headerBytes, 8, path);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    } catch {
      fail(path, 'header is not valid UTF-8');
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      fail(path, `header is not valid JSON: ${(err as Error).message}`);
    }
    const { entries, metadata } = parseHeader(path, json, 8 + n, size - 8 - n);
    return new SafetensorsFile(path, fd, n, entries, metadata);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

function readFully(fd: number, buf: Uint8Array, position: number, path: string): void {
  let done = 0;
  while (done < buf.length) {
    const got = readSync(fd, buf, done, buf.length - done, position + done);
    if (got === 0) fail(path, `unexpected end of file at byte ${position + done}`);
    done += got;
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface NamedTensor {
  name: string;
  tensor: Tensor;
}

/** Checks that a tensor's data matches its dtype and shape; `where` prefixes the error. */
export function validateTensor(where: string, name: string, t: Tensor): void {
  if (!(t.dtype in FROM_FLOAT)) throw new SafetensorsError(`${where}: tensor "${name}" has unsupported dtype ${String(t.dtype)}`);
  for (const d of t.shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new SafetensorsError(`${where}: tensor "${name}" has invalid shape ${JSON.stringify(t.shape)}`);
  }
  const want = t.dtype === 'f32' ? Float32Array : Uint16Array;
  if (!(t.data instanceof want)) throw new SafetensorsError(`${where}: tensor "${name}" is ${t.dtype} but its data is a ${t.data.constructor.name}`);
  if (t.data.length !== numel(t.shape)) {
    throw new SafetensorsError(`${where}: tensor "${name}" has ${t.data.length} elements but shape ${JSON.stringify(t.shape)} needs ${numel(t.shape)}`);
  }
}

/** The bytes of a tensor's data view (no copy). */
export function tensorBytes(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/**
 * Builds the header bytes (length prefix included) for entries laid out back to back in the
 * given order. The JSON is padded with spaces so the data section starts 8-byte aligned.
 */
export function encodeHeader(
  items: readonly { name: string; dtype: SafetensorsDType; shape: readonly number[]; byteLength: number }[],
  metadata: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const it of items) {
    if (it.name === '__metadata__') throw new SafetensorsError('a tensor cannot be named "__metadata__"');
    if (Object.prototype.hasOwnProperty.call(header, it.name)) throw new SafetensorsError(`duplicate tensor name "${it.name}"`);
    header[it.name] = { dtype: it.dtype, shape: it.shape, data_offsets: [off, off + it.byteLength] };
    off += it.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

export function floatToSafetensorsDType(d: FloatDType): SafetensorsDType {
  return FROM_FLOAT[d];
}

/** Writes every byte of buf at the fd's current position (writeSync may write partially). */
export function writeAll(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.length) {
    done += writeSync(fd, buf, done, Math.min(READ_CHUNK, buf.length - done));
  }
}

function checkMetadata(path: string, metadata: Record<string, string>): void {
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new SafetensorsError(`${path}: metadata "${k}" must be a string`);
  }
}

/**
 * Writes tensors to a safetensors file in the given order, tensor by tensor (no whole-file
 * buffer). __metadata__ gets {format: "pt"} plus the given entries. The file is fsynced.
 */
export function writeSafetensors(path: string, tensors: Iterable<NamedTensor> | Map<string, Tensor>, metadata: Record<string, string> = {}): void {
  assertLittleEndianHost();
  const list: NamedTensor[] = tensors instanceof Map ? [...tensors].map(([name, tensor]) => ({ name, tensor })) : [...tensors];
  checkMetadata(path, metadata);
  for (const { name, tensor } of list) validateTensor(path, name, tensor);
  const header = encodeHeader(
    list.map(({ name, tensor }) => ({ name, dtype: FROM_FLOAT[tensor.dtype], shape: tensor.shape, byteLength: tensor.data.byteLength })),
    { format: 'pt', ...metadata },
  );
  const fd = openSync(path, 'w');
  try {
    writeAll(fd, header);
    for (const { tensor } of list) writeAll(fd, tensorBytes(tensor));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
