// The GGUF writer: builds the header in memory, then streams tensor data one tensor at a time
// into a temporary file that is renamed over the target when complete.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { WeightDType } from '../kernels/types.js';
import { QUANT_BLOCK, dataLength, isQuantDType, isWeightDType, numel, tensorBytes, type WeightTensor } from '../tensor.js';
import {
  BIG_READ_CHUNK, FIXED_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAX_ARRAY_DEPTH, GGUF_MAX_ARRAY_LENGTH, GGUF_MAX_DIMS,
  GGUF_MAX_TENSOR_NAME_BYTES, GgufError, INT_RANGES, TYPE_CODES, WEIGHT_GGML_TYPE, alignUp, assertLittleEndianHost,
  type GgufArray, type GgufMetadataEntry, type GgufScalarType, type GgufValueType,
} from './gguf-types.js';

/** A tensor given up front, or described by dtype/shape and loaded only when its bytes are written.
 *  Float tensors are written as F32/F16/BF16; q8_0/q4_0 blocks as Q8_0/Q4_0 (their last dimension,
 *  ggml's ne[0], must be a multiple of 32). */
export type GgufTensorInput =
  | { name: string; tensor: WeightTensor }
  | { name: string; dtype: WeightDType; shape: readonly number[]; load: () => WeightTensor };

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
  dtype: WeightDType;
  shape: number[];
  byteSize: number;
  rel: number;
  get: () => WeightTensor;
}

function planTensor(where: string, input: GgufTensorInput): Omit<PlannedTensor, 'rel'> {
  const { name } = input;
  const dtype = 'tensor' in input ? input.tensor.dtype : input.dtype;
  const shape = [...('tensor' in input ? input.tensor.shape : input.shape)];
  if (typeof name !== 'string' || name.length === 0) throw new GgufError(`${where}: tensor names must be non-empty strings`);
  if (new TextEncoder().encode(name).length > GGUF_MAX_TENSOR_NAME_BYTES) throw new GgufError(`${where}: tensor name "${name}" is longer than ${GGUF_MAX_TENSOR_NAME_BYTES} bytes (ggml's limit)`);
  if (!isWeightDType(dtype)) throw new GgufError(`${where}: tensor "${name}" has unsupported dtype ${String(dtype)}`);
  if (shape.length < 1 || shape.length > GGUF_MAX_DIMS) throw new GgufError(`${where}: tensor "${name}" has ${shape.length} dimensions (GGUF allows 1..${GGUF_MAX_DIMS})`);
  for (const d of shape) if (!Number.isSafeInteger(d) || d < 0) throw new GgufError(`${where}: tensor "${name}" has invalid shape ${JSON.stringify(shape)}`);
  if (isQuantDType(dtype) && shape[shape.length - 1]! % QUANT_BLOCK[dtype].elements !== 0) {
    throw new GgufError(`${where}: tensor "${name}" is ${dtype} with rows of ${shape[shape.length - 1]} elements, not a multiple of the block size ${QUANT_BLOCK[dtype].elements}`);
  }
  const byteSize = tensorBytes(dtype, numel(shape));
  const get = 'tensor' in input ? () => input.tensor : input.load;
  if ('tensor' in input) checkTensorData(where, name, input.tensor, dtype, shape);
  return { name, dtype, shape, byteSize, get };
}

function checkTensorData(where: string, name: string, t: WeightTensor, dtype: WeightDType, shape: readonly number[]): void {
  if (t.dtype !== dtype || t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new GgufError(`${where}: tensor "${name}" was declared ${dtype} [${shape.join(', ')}] but loaded as ${t.dtype} [${t.shape.join(', ')}]`);
  }
  const want = dtype === 'f32' ? Float32Array : isQuantDType(dtype) ? Uint8Array : Uint16Array;
  if (!(t.data instanceof want)) throw new GgufError(`${where}: tensor "${name}" is ${dtype} but its data is a ${t.data.constructor.name}`);
  const need = dataLength(dtype, numel(shape));
  if (t.data.length !== need) {
    const unit = isQuantDType(dtype) ? 'bytes' : 'elements';
    throw new GgufError(`${where}: tensor "${name}" has ${t.data.length} ${unit} but shape [${shape.join(', ')}] needs ${need}${isQuantDType(dtype) ? ` (${dtype} blocks)` : ''}`);
  }
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
    w.u32(WEIGHT_GGML_TYPE[p.dtype]);
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
