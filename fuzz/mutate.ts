// Mutators: generic byte-level edits plus structure-aware edits for every file format the
// project parses. Each mutator takes a valid seed image and returns a new image and a short
// description of what it changed (kept in reports and reproducers).
//
// A FileImage is `bytes` followed by `tail` zero bytes. The tail lets multi-megabyte real
// checkpoints be used as seeds without copying their data per case: the runner creates it as
// a sparse extension of the file.
import { Rng } from './rng.js';

export { Rng, mixSeed } from './rng.js';

export interface FileImage {
  bytes: Uint8Array;
  /** Zero bytes that follow `bytes` in the file (written sparsely). */
  tail: number;
}

export interface Mutated {
  img: FileImage;
  ops: string[];
}

export function imageSize(img: FileImage): number {
  return img.bytes.length + img.tail;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function u64le(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
  return b;
}

function u32le(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Byte level

const SPECIAL_BYTES = [0x00, 0xff, 0x7f, 0x80] as const;
const INTERESTING_U32 = [0, 1, 2, 3, 4, 7, 8, 16, 32, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING_U64 = [0n, 1n, 8n, 0xffffffffn, 0x100000000n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n, 100_000_000n, 100_000_001n];

/** A position biased towards the first `focus` bytes (the header, where parsing decisions are made). */
function position(rng: Rng, len: number, focus: number): number {
  if (len <= 0) return 0;
  if (focus > 0 && rng.chance(0.6)) return rng.int(Math.min(len, focus));
  return rng.int(len);
}

function rangeLen(rng: Rng, max: number): number {
  if (max <= 0) return 0;
  const r = rng.weighted<() => number>([
    [() => rng.between(1, 8), 5],
    [() => rng.between(1, 64), 3],
    [() => rng.between(1, 4096), 1],
  ])();
  return Math.min(r, max);
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = rng.chance(0.3) ? rng.pick(SPECIAL_BYTES) : rng.int(256);
  return b;
}

/**
 * One generic byte-level mutation: bit flips, special bytes, interesting integers written in
 * place, insert/delete/duplicate ranges, truncation, extension, or a splice with a donor.
 * `focus` is the length of the region that should receive most edits.
 */
export function mutateBytes(rng: Rng, img: FileImage, focus: number, donor?: FileImage): Mutated {
  let b = img.bytes;
  let tail = img.tail;
  const ops: string[] = [];
  const op = rng.weighted<string>([
    ['bitflip', 4],
    ['setbyte', 3],
    ['setint', 3],
    ['insert', 2],
    ['delete', 2],
    ['duplicate', 1],
    ['truncate', 2],
    ['extend', 1],
    ['splice', donor ? 1 : 0],
  ]);
  switch (op) {
    case 'bitflip': {
      b = b.slice();
      const k = rng.count(8);
      for (let i = 0; i < k && b.length > 0; i++) {
        const p = position(rng, b.length, focus);
        const bit = rng.int(8);
        b[p]! ^= 1 << bit;
        ops.push(`bitflip@${p}.${bit}`);
      }
      break;
    }
    case 'setbyte': {
      if (b.length === 0) break;
      b = b.slice();
      const p = position(rng, b.length, focus);
      const v = rng.pick(SPECIAL_BYTES);
      b[p] = v;
      ops.push(`setbyte@${p}=0x${v.toString(16)}`);
      break;
    }
    case 'setint': {
      const wide = rng.chance(0.5);
      const w = wide ? 8 : 4;
      if (b.length < w) break;
      b = b.slice();
      let p = position(rng, b.length - w + 1, focus);
      if (rng.chance(0.7)) p -= p % 4;
      if (wide) {
        const v = rng.pick(INTERESTING_U64);
        b.set(u64le(v), p);
        ops.push(`setu64@${p}=${v}`);
      } else {
        const v = rng.pick(INTERESTING_U32);
        b.set(u32le(v), p);
        ops.push(`setu32@${p}=${v}`);
      }
      break;
    }
    case 'insert': {
      const p = position(rng, b.length + 1, focus);
      const ins = randomBytes(rng, rangeLen(rng, 4096));
      b = concat([b.subarray(0, p), ins, b.subarray(p)]);
      ops.push(`insert@${p}+${ins.length}`);
      break;
    }
    case 'delete': {
      if (b.length === 0) break;
      const p = position(rng, b.length, focus);
      const n = rangeLen(rng, b.length - p);
      b = concat([b.subarray(0, p), b.subarray(p + n)]);
      ops.push(`delete@${p}-${n}`);
      break;
    }
    case 'duplicate': {
      if (b.length === 0) break;
      const src = position(rng, b.length, focus);
      const n = rangeLen(rng, b.length - src);
      const dst = position(rng, b.length + 1, focus);
      b = concat([b.subarray(0, dst), b.slice(src, src + n), b.subarray(dst)]);
      ops.push(`duplicate@${src}-${n}->${dst}`);
      break;
    }
    case 'truncate': {
      const total = b.length + tail;
      const at = rng.chance(0.6) ? position(rng, Math.min(total, focus + 16), focus) : rng.int(total + 1);
      if (at <= b.length) {
        b = b.slice(0, at);
        tail = 0;
      } else {
        tail = at - b.length;
      }
      ops.push(`truncate@${at}`);
      break;
    }
    case 'extend': {
      const n = rangeLen(rng, 1 << 16);
      if (rng.chance(0.5)) {
        b = concat([b, randomBytes(rng, n)]);
        ops.push(`append+${n}`);
      } else {
        tail += n;
        ops.push(`appendzeros+${n}`);
      }
      break;
    }
    case 'splice': {
      const d = donor!;
      const p = position(rng, b.length + 1, focus);
      const q = rng.int(d.bytes.length + 1);
      b = concat([b.subarray(0, p), d.bytes.subarray(q)]);
      tail = d.tail;
      ops.push(`splice@${p}<-donor@${q}`);
      break;
    }
  }
  return { img: { bytes: b, tail }, ops };
}

// ---------------------------------------------------------------------------------------------
// JSON helpers: raw fragments (deep nesting, numbers JSON.stringify cannot produce)

/**
 * Builds JSON text from a value tree in which `raw(text)` marks fragments to insert verbatim.
 * Placeholders are strings that JSON.stringify keeps intact, replaced after stringifying.
 */
class RawJson {
  private readonly frags: string[] = [];
  raw(text: string): string {
    this.frags.push(text);
    return `\u0001RAW${this.frags.length - 1}\u0001`;
  }
  stringify(v: unknown): string {
    const s = JSON.stringify(v);
    if (s === undefined) return 'null';
    // JSON.stringify escapes U+0001 as \u0001.
    return s.replace(/"\\u0001RAW(\d+)\\u0001"/g, (_m, i: string) => this.frags[Number(i)]!);
  }
}

function deepArray(depth: number): string {
  return '['.repeat(depth) + ']'.repeat(depth);
}

function deepObject(depth: number): string {
  return '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

/** A generic hostile JSON value: wrong types, extreme numbers, deep or huge structures. */
function hostileValue(rng: Rng, rj: RawJson): unknown {
  const depth = () => rng.pick([64, 1000, 10_000, 100_000]);
  return rng.weighted<() => unknown>([
    [() => rng.pick([0, -1, 1, 2, 3, 1.5, 0.5, -(2 ** 31), 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 - 1, 2 ** 63, 1e308, -1e308, 5e-324]), 6],
    [() => rj.raw(rng.pick(['-0', '9007199254740993', '18446744073709551616', '1e400', '-1e400', '1e-400', '1e2', '1.0', '0.1e1', '1' + '0'.repeat(400)])), 4],
    [() => rng.pick(['', 'x', '3', '1e3', 'true', 'null', '\u0000', '\ud800', '\uffff', 'F32', 'llama']), 3],
    [() => rng.pick([true, false, null]), 3],
    [() => rng.pick<unknown>([[], {}, [1, 2], { a: 1 }, [null], { toString: 1 }, { valueOf: {} }, ['x'], [[1]]]), 3],
    [() => rj.raw(deepArray(depth())), 2],
    [() => rj.raw(deepObject(depth())), 1],
    [() => 'A'.repeat(rng.pick([1000, 100_000, 1_000_000])), 1],
    [() => Array.from({ length: rng.pick([1000, 100_000]) }, (_, i) => i), 1],
  ])();
}

/** Inserts invalid UTF-8 in place of the first byte of `needle` inside `text`. */
function corruptUtf8(rng: Rng, bytes: Uint8Array, needle: Uint8Array): Uint8Array | null {
  outer: for (let i = 0; i + needle.length <= bytes.length; i++) {
    for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
    const bad = rng.pick([[0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0x80], [0xf4, 0x90, 0x80, 0x80], [0xfe, 0xfe]]);
    return concat([bytes.subarray(0, i), Uint8Array.from(bad), bytes.subarray(i + 1)]);
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// safetensors

const ST_DTYPES = ['F32', 'F16', 'BF16', 'I8', 'U8', 'BOOL', 'I16', 'U16', 'I32', 'U32', 'I64', 'U64', 'F64', 'C64', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0'];
const ST_BAD_DTYPES: unknown[] = ['F4', 'F6_E2M3', 'F6_E3M2', 'f32', 'FP32', '', 'X', 7, null, ['F32'], { F32: 1 }, '__proto__', 'constructor', 'toString', 'hasOwnProperty'];

interface StParts {
  header: Record<string, unknown>;
  data: FileImage;
}

/** Splits a valid safetensors image into its header object and data section. */
export function splitSafetensors(img: FileImage): StParts {
  const n = Number(new DataView(img.bytes.buffer, img.bytes.byteOffset, 8).getBigUint64(0, true));
  const header = JSON.parse(dec.decode(img.bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  return { header, data: { bytes: img.bytes.subarray(8 + n), tail: img.tail } };
}

/** Structure-aware safetensors mutation: header JSON edits, then a header length choice. */
export function mutateSafetensors(rng: Rng, img: FileImage): Mutated {
  const { header, data } = splitSafetensors(img);
  const rj = new RawJson();
  const ops: string[] = [];
  const dataLen = imageSize(data);
  const names = () => Object.keys(header).filter((k) => k !== '__metadata__');
  const entryOf = (name: string) => header[name] as Record<string, unknown>;
  const k = rng.count(3);
  let rawEdit: 'utf8' | 'dupkey' | null = null;
  let topLevel: string | null = null;
  for (let i = 0; i < k; i++) {
    const ns = names();
    const name = ns.length > 0 ? rng.pick(ns) : null;
    const e = name !== null && typeof header[name] === 'object' && header[name] !== null ? entryOf(name) : null;
    const op = rng.weighted<string>([
      ['dtype', 3],
      ['shape', 4],
      ['offsets', 5],
      ['delkey', 1],
      ['entry', 1],
      ['metadata', 2],
      ['rename', 1],
      ['many', 1],
      ['utf8', 2],
      ['dupkey', 1],
      ['top', 1],
    ]);
    if (e === null && (op === 'dtype' || op === 'shape' || op === 'offsets' || op === 'delkey')) continue;
    switch (op) {
      case 'dtype': {
        const v = rng.chance(0.6) ? rng.pick(ST_DTYPES) : rng.pick(ST_BAD_DTYPES);
        e!.dtype = v;
        ops.push(`st.dtype[${name}]=${JSON.stringify(v)}`);
        break;
      }
      case 'shape': {
        const shape = Array.isArray(e!.shape) ? [...(e!.shape as unknown[])] : [];
        const choice = rng.int(4);
        if (choice === 0 && shape.length > 0) {
          const d = rng.int(shape.length);
          const v = rng.chance(0.5) ? rng.pick<unknown>([0, 1, 2 ** 53, 2 ** 53 - 1, -1, 1.5, '3', 1e308, null, true, 2 ** 32, 65536, 2 ** 31]) : hostileValue(rng, rj);
          shape[d] = v;
          e!.shape = shape;
          ops.push(`st.shape[${name}][${d}]`);
        } else if (choice === 1) {
          e!.shape = rng.pick<unknown[]>([[], [2 ** 20, 2 ** 20, 2 ** 20, 2 ** 20], [2 ** 26, 2 ** 26, 2 ** 26], [0, 2 ** 53 - 1], [2 ** 53 - 1, 2 ** 53 - 1], [2 ** 31, 2 ** 31], Array(10_000).fill(1), [1, 0], [...shape, 1], shape.slice(1), [...shape].reverse()]);
          ops.push(`st.shape[${name}]=pattern`);
        } else if (choice === 2) {
          // Same byte count, other shape: stays consistent and should load.
          const count = shape.reduce<number>((a, d) => a * (typeof d === 'number' ? d : 1), 1);
          e!.shape = rng.pick([[count], [1, count], [count, 1, 1]]);
          ops.push(`st.shape[${name}]=flat`);
        } else {
          e!.shape = hostileValue(rng, rj);
          ops.push(`st.shape[${name}]=hostile`);
        }
        break;
      }
      case 'offsets': {
        const offs = Array.isArray(e!.data_offsets) ? (e!.data_offsets as unknown[]) : [0, 0];
        const [s, t] = [Number(offs[0]), Number(offs[1])];
        const others = ns.filter((x) => x !== name && Array.isArray((header[x] as Record<string, unknown> | null)?.data_offsets));
        const other = others.length > 0 ? (entryOf(rng.pick(others)).data_offsets as number[]) : [0, 0];
        const v = rng.pick<() => unknown>([
          () => [t, s],
          () => [s, s],
          () => [s - 1, t - 1],
          () => [s + 1, t + 1],
          () => [s, t + 1],
          () => [0, t - s],
          () => [...other],
          () => [other[0]! + 1, other[0]! + 1 + (t - s)],
          () => [dataLen - (t - s) + 1, dataLen + 1],
          () => [dataLen, dataLen + (t - s)],
          () => [2 ** 53, 2 ** 53 + (t - s)],
          () => [2 ** 53 - 1 - (t - s), 2 ** 53 - 1],
          () => [rj.raw('1e400'), rj.raw('1e400')],
          () => [rj.raw('18446744073709551616'), rj.raw('18446744073709551620')],
          () => [-8, t - s - 8],
          () => [s + 0.5, t + 0.5],
          () => [s],
          () => [s, t, 0],
          () => [String(s), String(t)],
          () => hostileValue(rng, rj),
        ])();
        e!.data_offsets = v;
        ops.push(`st.offsets[${name}]`);
        break;
      }
      case 'delkey': {
        const key = rng.pick(['dtype', 'shape', 'data_offsets']);
        delete e![key];
        ops.push(`st.del[${name}].${key}`);
        break;
      }
      case 'entry': {
        if (name === null) break;
        if (rng.chance(0.3)) {
          delete header[name];
          ops.push(`st.delentry[${name}]`);
        } else {
          header[name] = hostileValue(rng, rj);
          ops.push(`st.entry[${name}]=hostile`);
        }
        break;
      }
      case 'metadata': {
        const v = rng.pick<() => unknown>([
          () => hostileValue(rng, rj),
          () => ({ format: hostileValue(rng, rj) }),
          () => ({ format: 'pt', deep: { a: { b: 'c' } } }),
          () => Object.fromEntries(Array.from({ length: rng.pick([1000, 100_000]) }, (_, i) => [`k${i}`, 'v'])),
          () => ({ __proto__x: 'a', ['__proto__']: 'b', constructor: 'c' }),
        ])();
        header.__metadata__ = v;
        ops.push('st.metadata');
        break;
      }
      case 'rename': {
        if (name === null) break;
        const to = rng.pick(['', '__metadata__', 'x'.repeat(rng.pick([300, 100_000])), '\u0000', '\ud83d\ude00', '__proto__', 'constructor', '../../etc/passwd', ns[0]!]);
        const v = header[name];
        delete header[name];
        header[to] = v;
        ops.push(`st.rename[${name}]`);
        break;
      }
      case 'many': {
        const n = rng.pick([1000, 20_000]);
        const zero = rng.chance(0.5);
        for (let j = 0; j < n; j++) header[`extra.${j}`] = zero ? { dtype: 'F32', shape: [0], data_offsets: [0, 0] } : { dtype: 'U8', shape: [1], data_offsets: [j, j + 1] };
        ops.push(`st.many=${n}${zero ? 'zero' : 'bytes'}`);
        break;
      }
      case 'utf8':
      case 'dupkey':
        rawEdit = op;
        break;
      case 'top':
        topLevel = rng.pick(['[]', '"x"', '5', 'null', '', ' ', deepArray(100_000), deepObject(100_000), '{}', '{"a":1} x', '\ufeff{}']);
        ops.push('st.top');
        break;
    }
  }
  let text = topLevel ?? rj.stringify(header);
  if (rawEdit === 'dupkey' && topLevel === null) {
    const ns = names();
    if (ns.length > 0) {
      const n = rng.pick(ns);
      text = text.slice(0, -1) + `,${JSON.stringify(n)}:${JSON.stringify({ dtype: 'F32', shape: [1], data_offsets: [0, 4] })}}`;
      ops.push(`st.dupkey[${n}]`);
    }
  }
  let hb: Uint8Array = enc.encode(text);
  if (rawEdit === 'utf8') {
    const ns = names();
    const target = ns.length > 0 && rng.chance(0.8) ? JSON.stringify(rng.pick(ns)).slice(1) : rng.pick(['dtype', 'shape', 'F32', 'format']);
    const out = corruptUtf8(rng, hb, enc.encode(target));
    if (out) {
      hb = out;
      ops.push('st.utf8');
    }
  }
  // Padding as the writer does (spaces to 8 bytes), sometimes with other bytes or none.
  const padKind = rng.weighted<string>([['space', 6], ['none', 2], ['nul', 1], ['garbage', 1]]);
  const padTo = Math.ceil(hb.length / 8) * 8;
  if (padKind !== 'none' && padTo > hb.length) {
    const pad = new Uint8Array(padTo - hb.length).fill(padKind === 'space' ? 0x20 : padKind === 'nul' ? 0 : 0x7a);
    hb = concat([hb, pad]);
    if (padKind !== 'space') ops.push(`st.pad=${padKind}`);
  }
  const exact = BigInt(hb.length);
  const fileLen = BigInt(8 + hb.length + dataLen);
  const len = rng.chance(0.75)
    ? exact
    : rng.pick([0n, 1n, 2n, exact - 1n, exact + 1n, exact + 7n, 100_000_000n, 100_000_001n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, fileLen - 8n, fileLen - 7n]);
  if (len !== exact) ops.push(`st.len=${len}`);
  return { img: { bytes: concat([u64le(len), hb, data.bytes]), tail: data.tail }, ops };
}

// ---------------------------------------------------------------------------------------------
// model.safetensors.index.json

export interface IndexContext {
  /** Shard file names present in the folder. */
  shards: string[];
  /** Tensor names per shard. */
  tensors: Record<string, string[]>;
}

/** Values for a weight_map file entry: traversal, absolute paths, odd names, wrong types. */
function shardPathValue(rng: Rng, shard: string): unknown {
  return rng.pick<unknown>([
    `../${shard}`,
    '../../../../../../etc/passwd',
    '/etc/passwd',
    `/${shard}`,
    `sub/../${shard}`,
    `./${shard}`,
    `${shard}/`,
    `${shard}\u0000`,
    '',
    '.',
    '..',
    `C:\\${shard}`,
    `\\\\host\\share\\${shard}`,
    'sub',
    'missing.safetensors',
    'model.safetensors.index.json',
    ` ${shard}`,
    'x'.repeat(300),
    'a/'.repeat(3000) + shard,
    `${shard}?`,
    shard.toUpperCase(),
    5,
    null,
    true,
    [],
    {},
    [shard],
  ]);
}

export function mutateIndexJson(rng: Rng, text: string, ctx: IndexContext): { text: Uint8Array; ops: string[]; needsSubdir: boolean } {
  const json = JSON.parse(text) as { metadata?: unknown; weight_map: Record<string, unknown> };
  const rj = new RawJson();
  const ops: string[] = [];
  let needsSubdir = false;
  let top: string | null = null;
  const k = rng.count(3);
  for (let i = 0; i < k; i++) {
    const wm = typeof json.weight_map === 'object' && json.weight_map !== null && !Array.isArray(json.weight_map) ? json.weight_map : null;
    const names = wm ? Object.keys(wm) : [];
    const name = names.length > 0 ? rng.pick(names) : null;
    const op = rng.weighted<string>([
      ['path', 6],
      ['remap', 2],
      ['delete', 1],
      ['ghost', 2],
      ['huge', 1],
      ['wmtype', 1],
      ['metadata', 2],
      ['key', 1],
      ['top', 1],
    ]);
    switch (op) {
      case 'path':
        if (wm && name !== null) {
          const v = shardPathValue(rng, rng.pick(ctx.shards));
          if (v === 'sub') needsSubdir = true;
          wm[name] = v;
          ops.push(`ix.path[${name}]=${JSON.stringify(v)?.slice(0, 40)}`);
        }
        break;
      case 'remap':
        if (wm && name !== null) {
          wm[name] = rng.pick(ctx.shards);
          ops.push(`ix.remap[${name}]`);
        }
        break;
      case 'delete':
        if (wm && name !== null) {
          delete wm[name];
          ops.push(`ix.delete[${name}]`);
        }
        break;
      case 'ghost':
        if (wm) {
          wm[rng.pick(['ghost.weight', '', '__proto__', '__metadata__', 'constructor'])] = rng.pick(ctx.shards);
          ops.push('ix.ghost');
        }
        break;
      case 'huge':
        if (wm) {
          const n = rng.pick([10_000, 100_000]);
          const file = rng.chance(0.5) ? rng.pick(ctx.shards) : `shard-${rng.int(1000)}.safetensors`;
          for (let j = 0; j < n; j++) wm[`huge.${j}.weight`] = file;
          ops.push(`ix.huge=${n}`);
        }
        break;
      case 'wmtype':
        json.weight_map = hostileValue(rng, rj) as Record<string, unknown>;
        ops.push('ix.wmtype');
        break;
      case 'metadata':
        json.metadata = rng.pick<() => unknown>([
          () => hostileValue(rng, rj),
          () => ({ total_size: hostileValue(rng, rj) }),
          () => ({ total_size: -1 }),
          () => ({ nested: { toString: 1 } }),
        ])();
        ops.push('ix.metadata');
        break;
      case 'key':
        if (wm && name !== null) {
          const v = wm[name];
          delete wm[name];
          wm[rng.pick(['', '__proto__', 'x'.repeat(100_000), '\ud800', name + '\u0000'])] = v;
          ops.push(`ix.key[${name}]`);
        }
        break;
      case 'top':
        top = rng.pick(['[]', 'null', '"x"', '', deepArray(100_000), deepObject(100_000), '{"weight_map":{}}', '{"weight_map":' + deepObject(100_000) + '}']);
        ops.push('ix.top');
        break;
    }
  }
  let bytes: Uint8Array = enc.encode(top ?? rj.stringify(json));
  if (rng.chance(0.15)) {
    const m = mutateBytes(rng, { bytes, tail: 0 }, bytes.length);
    bytes = m.img.bytes;
    ops.push(...m.ops);
  }
  return { text: bytes, ops, needsSubdir };
}

// ---------------------------------------------------------------------------------------------
// config.json

const CONFIG_KEYS = [
  'architectures', 'model_type', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
  'num_key_value_heads', 'head_dim', 'vocab_size', 'rms_norm_eps', 'max_position_embeddings', 'rope_theta',
  'rope_scaling', 'rope_parameters', 'tie_word_embeddings', 'attention_bias', 'mlp_bias', 'bos_token_id',
  'eos_token_id', 'torch_dtype', 'dtype', 'hidden_act', 'quantization_config',
];

function configValue(rng: Rng, key: string, rj: RawJson): unknown {
  if (rng.chance(0.4)) return hostileValue(rng, rj);
  switch (key) {
    case 'architectures':
      return rng.pick<unknown>([[], ['LlamaForCausalLM'], ['Qwen2ForCausalLM'], ['MistralForCausalLM'], ['GPT2LMHeadModel'], ['toString'], ['__proto__'], ['constructor'], ['hasOwnProperty'], 'LlamaForCausalLM', [1], ['LlamaForCausalLM', 'Qwen2ForCausalLM']]);
    case 'model_type':
      return rng.pick(['llama', 'qwen2', 'mistral', 'gpt2', '__proto__', 'toString', 'constructor', 'LLAMA', '']);
    case 'rope_scaling':
    case 'rope_parameters':
      return rng.pick<unknown>([
        null,
        { type: 'linear', factor: rng.pick<unknown>([2, 0, -1, 'x', 1e308, null]) },
        { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: rng.pick<unknown>([8192, 0, 1.5, -1, 2 ** 53]) },
        { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 8192 },
        { rope_type: 'yarn', factor: 4 },
        { rope_type: { toString: 1 } },
        { type: 'default' },
        { rope_theta: rng.pick<unknown>([0, -1, 'x', 1e308, 10000]) },
        { rope_type: 'x'.repeat(100_000) },
      ]);
    case 'quantization_config':
      return rng.pick<unknown>([{ quant_method: 'gptq' }, { quant_method: { toString: 1 } }, { quant_method: { valueOf: 1, toString: {} } }, { quant_method: rj.raw(deepArray(100_000)) }, 'x', null]);
    case 'eos_token_id':
      return rng.pick<unknown>([[1, 2], [-1], [1.5], [], [rj.raw(deepArray(100_000))], 2, 2 ** 53]);
    case 'hidden_act':
      return rng.pick<unknown>(['silu', 'gelu', { toString: 1 }, rj.raw(deepObject(100_000))]);
    case 'torch_dtype':
    case 'dtype':
      return rng.pick<unknown>(['float32', 'float16', 'bfloat16', 'int8', 'float64', { toString: 1 }]);
    default:
      return rng.pick<unknown>([0, -64, 1, 3, 63, 64, 96, 1e9, 2 ** 31, 2 ** 53, 2 ** 53 + 2, 1e-9, true, '64']);
  }
}

export function mutateConfigJson(rng: Rng, text: string): { text: Uint8Array; ops: string[] } {
  const json = JSON.parse(text) as Record<string, unknown>;
  const rj = new RawJson();
  const ops: string[] = [];
  let top: string | null = null;
  const k = rng.count(4);
  for (let i = 0; i < k; i++) {
    const op = rng.weighted<string>([['set', 8], ['delete', 3], ['bulk', 1], ['top', 1]]);
    switch (op) {
      case 'set': {
        const key = rng.chance(0.85) ? rng.pick(CONFIG_KEYS) : rng.pick(Object.keys(json).length > 0 ? Object.keys(json) : CONFIG_KEYS);
        json[key] = configValue(rng, key, rj);
        ops.push(`cfg.set[${key}]`);
        break;
      }
      case 'delete': {
        const key = rng.pick(CONFIG_KEYS);
        delete json[key];
        ops.push(`cfg.delete[${key}]`);
        break;
      }
      case 'bulk': {
        const n = rng.pick([10_000, 100_000]);
        for (let j = 0; j < n; j++) json[`extra_${j}`] = j;
        ops.push(`cfg.bulk=${n}`);
        break;
      }
      case 'top':
        top = rng.pick(['[]', 'null', '"x"', '', '5', deepArray(100_000), deepObject(100_000), '\ufeff{}', '{"model_type":"llama"', '{"__proto__":{"hidden_size":64}}']);
        ops.push('cfg.top');
        break;
    }
  }
  let bytes: Uint8Array = enc.encode(top ?? rj.stringify(json));
  if (rng.chance(0.15)) {
    const m = mutateBytes(rng, { bytes, tail: 0 }, bytes.length);
    bytes = m.img.bytes;
    ops.push(...m.ops);
  }
  return { text: bytes, ops };
}

// ---------------------------------------------------------------------------------------------
// GGUF

type GgufFieldKind = 'version' | 'tensorCount' | 'kvCount' | 'strLen' | 'valueType' | 'itemType' | 'arrCount' | 'bool' | 'alignment' | 'nDims' | 'ne' | 'ggmlType' | 'offset';

interface GgufField {
  kind: GgufFieldKind;
  pos: number;
  width: 1 | 4 | 8;
  value: bigint;
}

interface GgufLayout {
  fields: GgufField[];
  /** [start, length] of the key and tensor-name string payloads. */
  strings: { pos: number; len: number; tensorName: boolean }[];
  headerEnd: number;
  alignment: number;
  dataStart: number;
}

const GGUF_FIXED: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

const layoutCache = new WeakMap<Uint8Array, GgufLayout>();

/** ggufLayout of a seed image, computed once per seed (a vocabulary GGUF has ~10^5 fields). */
export function seedGgufLayout(b: Uint8Array): GgufLayout {
  let L = layoutCache.get(b);
  if (L === undefined) {
    L = ggufLayout(b);
    layoutCache.set(b, L);
  }
  return L;
}

/** Walks a valid GGUF image recording where every length, type, count and offset field lives. */
export function ggufLayout(b: Uint8Array): GgufLayout {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fields: GgufField[] = [];
  const strings: GgufLayout['strings'] = [];
  let p = 4;
  const f32 = (kind: GgufFieldKind) => {
    const v = dv.getUint32(p, true);
    fields.push({ kind, pos: p, width: 4, value: BigInt(v) });
    p += 4;
    return v;
  };
  const f64 = (kind: GgufFieldKind) => {
    const v = dv.getBigUint64(p, true);
    fields.push({ kind, pos: p, width: 8, value: v });
    p += 8;
    return Number(v);
  };
  const str = (tensorName: boolean) => {
    const n = f64('strLen');
    strings.push({ pos: p, len: n, tensorName });
    const s = dec.decode(b.subarray(p, p + n));
    p += n;
    return s;
  };
  let alignment = 32;
  const value = (t: number, key: string | null): void => {
    if (t === 8) {
      str(false);
    } else if (t === 9) {
      const it = f32('itemType');
      const n = f64('arrCount');
      for (let i = 0; i < n; i++) value(it, null);
    } else if (t === 7) {
      fields.push({ kind: 'bool', pos: p, width: 1, value: BigInt(b[p]!) });
      p += 1;
    } else {
      if (key === 'general.alignment' && t === 4) {
        alignment = dv.getUint32(p, true);
        fields.push({ kind: 'alignment', pos: p, width: 4, value: BigInt(alignment) });
      }
      p += GGUF_FIXED[t]!;
    }
  };
  f32('version');
  const nt = f64('tensorCount');
  const nkv = f64('kvCount');
  for (let i = 0; i < nkv; i++) {
    const key = str(false);
    const t = f32('valueType');
    value(t, key);
  }
  for (let i = 0; i < nt; i++) {
    str(true);
    const nd = f32('nDims');
    for (let d = 0; d < nd; d++) f64('ne');
    f32('ggmlType');
    f64('offset');
  }
  return { fields, strings, headerEnd: p, alignment, dataStart: Math.ceil(p / alignment) * alignment };
}

function fieldValues(rng: Rng, f: GgufField, L: GgufLayout, fileSize: number): bigint {
  const old = f.value;
  const u64 = (): bigint => rng.pick([0n, 1n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 32n, 2n ** 31n, BigInt(fileSize), BigInt(Math.max(0, fileSize - f.pos)), old + 1n, old > 0n ? old - 1n : 0n, 2n ** 26n, 2n ** 26n + 1n, old * 2n]);
  switch (f.kind) {
    case 'version':
      return rng.pick([0n, 1n, 2n, 3n, 4n, 0x03000000n, 0xffffffffn]);
    case 'tensorCount':
    case 'kvCount':
    case 'strLen':
    case 'arrCount':
    case 'ne':
      return u64();
    case 'valueType':
    case 'itemType':
      return rng.pick([0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n, 10n, 11n, 12n, 13n, 255n, 0x80000000n, 0xffffffffn]);
    case 'bool':
      return rng.pick([2n, 0x80n, 0xffn]);
    case 'alignment':
      return rng.pick([0n, 1n, 2n, 3n, 7n, 8n, 12n, 16n, 64n, 1n << 20n, 0x80000000n, 0xffffffffn]);
    case 'nDims':
      return rng.pick([0n, 1n, 2n, 3n, 4n, 5n, 8n, 0x80000000n, 0xffffffffn]);
    case 'ggmlType':
      return BigInt(rng.pick([0, 1, 30, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 15, 16, 20, 23, 24, 26, 27, 28, 29, 31, 33, 34, 36, 38, 39, 40, 41, 42, 43, 1000, 0xffffffff]));
    case 'offset': {
      const others = L.fields.filter((x) => x.kind === 'offset' && x !== f);
      const other = others.length > 0 ? rng.pick(others).value : 0n;
      const a = BigInt(L.alignment);
      return rng.pick([0n, old + a, old + 1n, other, other + a, other + 1n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 53n, BigInt(fileSize), BigInt(fileSize - L.dataStart), old > a ? old - a : 0n]);
    }
  }
}

/** Structure-aware GGUF mutation: fields set to hostile values, names corrupted, cuts at fields. */
export function mutateGguf(rng: Rng, img: FileImage): Mutated {
  const L = seedGgufLayout(img.bytes);
  const fileSize = imageSize(img);
  let b: Uint8Array = img.bytes.slice();
  let tail = img.tail;
  const ops: string[] = [];
  const k = rng.count(3);
  for (let i = 0; i < k; i++) {
    const op = rng.weighted<string>([['field', 10], ['utf8', 1], ['dupname', 1], ['longstr', 1], ['cut', 1], ['shift', 1]]);
    if (op === 'field') {
      const kinds = [...new Set(L.fields.map((f) => f.kind))];
      const kind = rng.pick(kinds);
      const f = rng.pick(L.fields.filter((x) => x.kind === kind));
      const v = fieldValues(rng, f, L, fileSize);
      if (f.pos + f.width > b.length) continue;
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      if (f.width === 8) dv.setBigUint64(f.pos, BigInt.asUintN(64, v), true);
      else if (f.width === 4) dv.setUint32(f.pos, Number(BigInt.asUintN(32, v)), true);
      else dv.setUint8(f.pos, Number(v & 0xffn));
      ops.push(`gguf.${kind}@${f.pos}=${v}`);
    } else if (op === 'utf8' && L.strings.length > 0) {
      const s = rng.pick(L.strings.filter((x) => x.len > 0).concat(L.strings[0]!));
      const at = s.pos + rng.int(Math.max(1, s.len));
      if (s.len > 0 && at < b.length) {
        b[at] = rng.pick([0xff, 0xc0, 0x80, 0xed, 0xfe]);
        ops.push(`gguf.utf8@${s.pos}`);
      }
    } else if (op === 'dupname') {
      // Copy one string payload over another of the same length: duplicate keys or tensor names.
      const byLen = L.strings.filter((x) => x.len > 0);
      const a = byLen.length > 0 ? rng.pick(byLen) : null;
      const same = a ? byLen.filter((x) => x !== a && x.len === a.len && x.tensorName === a.tensorName) : [];
      const c = same.length > 0 ? rng.pick(same) : null;
      // Positions come from the seed; an earlier cut in this case may have removed them.
      if (a && c && c.pos + a.len <= b.length) {
        b.set(img.bytes.subarray(a.pos, a.pos + a.len), c.pos);
        ops.push(`gguf.dupname@${c.pos}`);
      }
    } else if (op === 'longstr' && i === 0) {
      // Replace a key or tensor name by a long valid string (its length field updated), so the
      // parser sees well-formed UTF-8 it has to put in messages. First op only: positions are fresh.
      const s = rng.pick(L.strings);
      const n = rng.pick([64, 1000, 100_000]);
      const fill = rng.pick([0x41, 0x00, 0x0a, 0x22]);
      const lenField = s.pos - 8;
      b = concat([b.subarray(0, lenField), u64le(BigInt(n)), new Uint8Array(n).fill(fill), b.subarray(s.pos + s.len)]);
      ops.push(`gguf.longstr@${s.pos}=${n}x0x${fill.toString(16)}`);
    } else if (op === 'cut') {
      const f = rng.pick(L.fields);
      const at = rng.pick([f.pos, f.pos + 1, L.headerEnd, L.dataStart, L.dataStart + 1, fileSize - 1]);
      if (at < b.length) {
        b = b.slice(0, at);
        tail = 0;
      } else tail = Math.max(0, at - b.length);
      ops.push(`gguf.cut@${at}`);
    } else if (op === 'shift') {
      // Insert or remove bytes between header and data: misaligns or moves every tensor.
      const n = rng.pick([1, 4, 8, 31, 32, 64]);
      const at = Math.min(L.headerEnd, b.length);
      b = rng.chance(0.5) ? concat([b.subarray(0, at), new Uint8Array(n), b.subarray(at)]) : concat([b.subarray(0, Math.max(0, at - n)), b.subarray(at)]);
      ops.push(`gguf.shift@${at}±${n}`);
    }
  }
  return { img: { bytes: b, tail }, ops };
}

// ---------------------------------------------------------------------------------------------
// llama2.c checkpoints

const L2C_MAGIC = 0x616b3432;
const L2C_FIELDS = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'];

interface L2cHeaderView {
  version: 0 | 1 | 2;
  ints: number[];
  base: number;
  shared: boolean;
  group: number;
}

function l2cHeader(b: Uint8Array): L2cHeaderView {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint32(0, true) === L2C_MAGIC) {
    const version = dv.getInt32(4, true) as 1 | 2;
    const ints = L2C_FIELDS.map((_, i) => dv.getInt32(8 + 4 * i, true));
    return { version, ints, base: 8, shared: b[36] === 1, group: version === 2 ? dv.getInt32(37, true) : 0 };
  }
  const ints = L2C_FIELDS.map((_, i) => dv.getInt32(4 * i, true));
  return { version: 0, ints, base: 0, shared: ints[5]! > 0, group: 0 };
}

/** File size a header implies (our own formula, used to keep some mutations size-consistent). */
function l2cExpectedBytes(h: L2cHeaderView): number {
  const [dim, hidden, layers, heads, kvHeads, vocabRaw, seq] = h.ints as [number, number, number, number, number, number, number];
  const vocab = Math.abs(vocabRaw);
  const hd = dim / heads;
  const kv = kvHeads * hd;
  const mats = vocab * dim * (h.shared ? 1 : 2) + layers * (2 * dim * dim + 2 * kv * dim + 3 * hidden * dim);
  const norms = (2 * layers + 1) * dim;
  if (h.version === 0) return 28 + 4 * (norms + mats + seq * hd);
  if (h.version === 1) return 256 + 4 * (norms + mats);
  return 256 + 4 * norms + mats + (4 * mats) / h.group;
}

export function mutateLlama2c(rng: Rng, img: FileImage): Mutated {
  let b: Uint8Array = img.bytes.slice();
  let tail = img.tail;
  const h = l2cHeader(b);
  const dv = () => new DataView(b.buffer, b.byteOffset, b.byteLength);
  const ops: string[] = [];
  const k = rng.count(3);
  let resize = rng.chance(0.4);
  for (let i = 0; i < k; i++) {
    const op = rng.weighted<string>([['int', 8], ['sign', 2], ['shared', 2], ['version', 1], ['group', 1], ['magic', 1]]);
    if (op === 'int') {
      const f = rng.int(7);
      const old = h.ints[f]!;
      const v = rng.pick([0, -1, 1, 2, 3, -(2 ** 31), 2 ** 31 - 1, 2 ** 16, 2 ** 16 + 1, 1024, 1025, 2 ** 22, 2 ** 22 + 1, old * 2, old + 1, old - 1, -old, Math.floor(old / 2)]) | 0;
      h.ints[f] = v;
      dv().setInt32(h.base + 4 * f, v, true);
      ops.push(`l2c.${L2C_FIELDS[f]}=${v}`);
    } else if (op === 'sign' && h.version === 0) {
      h.ints[5] = -h.ints[5]! | 0;
      h.shared = h.ints[5]! > 0;
      dv().setInt32(20, h.ints[5]!, true);
      ops.push('l2c.vocabsign');
    } else if (op === 'shared' && h.version !== 0) {
      const v = rng.pick([0, 1, 2, 255]);
      b[36] = v;
      h.shared = v === 1;
      ops.push(`l2c.shared=${v}`);
    } else if (op === 'version' && h.version !== 0) {
      const v = rng.pick([0, 1, 2, 3, -1, 0x7fffffff]);
      dv().setInt32(4, v, true);
      ops.push(`l2c.version=${v}`);
      resize = false;
    } else if (op === 'group' && h.version === 2) {
      const v = rng.pick([0, -1, 1, 3, 7, h.group * 2, 2 ** 31 - 1]);
      h.group = v;
      dv().setInt32(37, v, true);
      ops.push(`l2c.group=${v}`);
    } else if (op === 'magic') {
      if (h.version === 0) {
        dv().setUint32(0, L2C_MAGIC, true);
        ops.push('l2c.magic-on-v0');
      } else {
        dv().setUint32(0, rng.u32(), true);
        ops.push('l2c.magic-clobbered');
      }
      resize = false;
    }
  }
  if (resize) {
    // Make the file exactly as long as the edited header implies so later checks are reached.
    const want = l2cExpectedBytes(h);
    if (Number.isSafeInteger(want) && want >= 0 && want <= 64 * 1024 * 1024) {
      if (want <= b.length) {
        b = b.slice(0, want);
        tail = 0;
      } else tail = want - b.length;
      ops.push(`l2c.resize=${want}`);
    }
  }
  return { img: { bytes: b, tail }, ops };
}

// ---------------------------------------------------------------------------------------------
// llama2.c tokenizer

interface TokRecord {
  score: number;
  bytes: Uint8Array;
}

function parseTok(b: Uint8Array): { maxLen: number; tokens: TokRecord[] } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const maxLen = dv.getInt32(0, true);
  const tokens: TokRecord[] = [];
  let p = 4;
  while (p + 8 <= b.length) {
    const score = dv.getFloat32(p, true);
    const len = dv.getInt32(p + 4, true);
    tokens.push({ score, bytes: b.subarray(p + 8, p + 8 + len) });
    p += 8 + len;
  }
  return { maxLen, tokens };
}

export function mutateLlama2cTok(rng: Rng, img: FileImage): Mutated {
  const { maxLen, tokens } = parseTok(img.bytes);
  const toks = tokens.slice();
  const ops: string[] = [];
  const lens: (number | null)[] = toks.map(() => null);
  let max = maxLen;
  const k = rng.count(3);
  for (let i = 0; i < k; i++) {
    const t = rng.int(toks.length);
    const op = rng.weighted<string>([['maxlen', 2], ['len', 3], ['score', 2], ['text', 3], ['utf8', 2], ['delete', 1], ['dup', 1]]);
    switch (op) {
      case 'maxlen':
        max = rng.pick([0, -1, 1, 2, 2 ** 31 - 1, -(2 ** 31), 65536, 65537, maxLen - 1, maxLen + 1]);
        ops.push(`tok.maxlen=${max}`);
        break;
      case 'len':
        lens[t] = rng.pick([-1, -(2 ** 31), 2 ** 31 - 1, toks[t]!.bytes.length + 1, toks[t]!.bytes.length - 1, maxLen + 1, 0, 1 << 20]);
        ops.push(`tok.len[${t}]=${lens[t]}`);
        break;
      case 'score':
        toks[t] = { ...toks[t]!, score: rng.pick([NaN, Infinity, -Infinity, -0, 3.4e38, -3.4e38, 1e-45]) };
        ops.push(`tok.score[${t}]=${toks[t]!.score}`);
        break;
      case 'text': {
        const s = rng.pick(['<0x41>', '<0xZZ>', '<0x4>', '<0x100>', '\n<s>\n', '\n</s>\n', '<unk>', '', ' ', '\u2581', 'a'.repeat(300), '\u0000', '<s>', '<0xFF>', '\ufeff']);
        toks[t] = { ...toks[t]!, bytes: enc.encode(s) };
        ops.push(`tok.text[${t}]=${JSON.stringify(s).slice(0, 20)}`);
        break;
      }
      case 'utf8': {
        const bad = Uint8Array.from(rng.pick([[0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0x80]]));
        toks[t] = { ...toks[t]!, bytes: concat([toks[t]!.bytes, bad]) };
        ops.push(`tok.utf8[${t}]`);
        break;
      }
      case 'delete':
        if (toks.length > 1) {
          toks.splice(t, 1);
          lens.splice(t, 1);
          ops.push(`tok.delete[${t}]`);
        }
        break;
      case 'dup':
        toks.splice(t, 0, toks[t]!);
        lens.splice(t, 0, null);
        ops.push(`tok.dup[${t}]`);
        break;
    }
  }
  const out = new Uint8Array(4 + toks.reduce((s, x) => s + 8 + x.bytes.length, 0));
  const dv = new DataView(out.buffer);
  dv.setInt32(0, max | 0, true);
  let p = 4;
  toks.forEach((x, i) => {
    dv.setFloat32(p, x.score, true);
    dv.setInt32(p + 4, lens[i] ?? x.bytes.length, true);
    out.set(x.bytes, p + 8);
    p += 8 + x.bytes.length;
  });
  return { img: { bytes: out, tail: 0 }, ops };
}

// ---------------------------------------------------------------------------------------------
// Per-format header sizes (focus regions for byte-level edits)

export function safetensorsHeaderEnd(img: FileImage): number {
  if (img.bytes.length < 8) return img.bytes.length;
  const n = new DataView(img.bytes.buffer, img.bytes.byteOffset, 8).getBigUint64(0, true);
  return n < BigInt(img.bytes.length) ? 8 + Number(n) : img.bytes.length;
}
