// The GGUF header parser: validates the whole header and tensor directory before returning and
// never allocates from a length it has not checked against the bytes left in the file.
import { fstatSync } from 'node:fs';
import { preview } from './preview.js';
import {
  FIXED_SIZES, GGML_TYPES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAX_ARRAY_DEPTH, GGUF_MAX_ARRAY_LENGTH, GGUF_MAX_DIMS, GgufError,
  TYPE_BY_CODE, alignUp, describeType, minItemSize, readFully,
  type GgufArray, type GgufNumberType, type GgufTensorInfo, type GgufValue, type GgufValueType,
} from './gguf-types.js';

const READ_CHUNK = 1 << 20;
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

/** What parseGguf returns: everything a GgufFile holds. */
export interface ParsedGguf {
  version: number;
  fileSize: number;
  alignment: number;
  dataOffset: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
}


/** Parses the header of the open file fd (named path in errors). */
export function parseGguf(fd: number, path: string): ParsedGguf {
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
  return { version, fileSize, alignment, dataOffset, metadata, tensors };
}
