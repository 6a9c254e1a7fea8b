// GGUF: reader on llama.cpp's own vocabulary file, writer→reader round trips, malformed files,
// and HF → GGUF export checked by loading the result in llama.cpp (node-llama-cpp's prebuilt CPU
// binary) and comparing its tokenizer with @huggingface/tokenizers.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Tokenizer } from '@huggingface/tokenizers';
import type { Llama, LlamaModel as CppModel, Token } from 'node-llama-cpp';
import { openCheckpoint } from '../src/io/checkpoint.js';
import {
  GgufError, ggmlTypeName, readGguf, writeGguf,
  type GgufMetadataEntry, type GgufTensorInput, type GgufValue,
} from '../src/io/gguf.js';
import { exportLlamaGguf } from '../src/export/gguf-llama.js';
import { openGgufModel } from '../src/arch/gguf.js';
import { permuteRopeRows } from '../src/io/rope-rows.js';
import { TokenType } from '../src/io/gguf-tokenizer.js';
import { readConfig } from '../src/arch/registry.js';
import type { ModelArgs } from '../src/arch/args.js';
import { ropeInvFreq } from '../src/models/rope.js';
import type { Tensor, WeightSource, WeightTensor } from '../src/tensor.js';
import { assetPath, mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { randomLlama, type RandomSpec } from './helpers/random-llama.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-gguf-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = (ext = 'gguf') => join(tmp, `f${fileNo++}.${ext}`);

const VOCAB_GGUF = 'tokenizers/ggml-vocab-llama-spm.gguf';

function randomTensor(dtype: Tensor['dtype'], shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const bytes = new Uint8Array(n * (dtype === 'f32' ? 4 : 2));
  let s = seed >>> 0 || 1;
  for (let i = 0; i < bytes.length; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    bytes[i] = s & 0xff;
  }
  return { dtype, shape, data: dtype === 'f32' ? new Float32Array(bytes.buffer) : new Uint16Array(bytes.buffer) };
}

function randomBytes(n: number, seed: number): Uint8Array {
  const t = randomTensor('f32', [Math.ceil(n / 4)], seed);
  return new Uint8Array(t.data.buffer, 0, n);
}

const bytesOf = (d: WeightTensor['data']): Buffer => Buffer.from(d.buffer, d.byteOffset, d.byteLength);

// ---------------------------------------------------------------------------------------------

describe('GGUF reader on llama.cpp\'s ggml-vocab-llama-spm.gguf', { skip: skipUnlessAsset(VOCAB_GGUF) }, () => {
  test('metadata keys, types and the 32000-token vocabulary', () => {
    const f = readGguf(mustAsset(VOCAB_GGUF));
    assert.equal(f.version, 3);
    assert.equal(f.tensors.length, 0);
    assert.equal(f.alignment, 32);
    assert.equal(f.getString('general.architecture'), 'llama');
    assert.equal(f.getString('tokenizer.ggml.model'), 'llama');
    assert.deepEqual(f.value('llama.context_length'), { type: 'u32', value: 4096 });
    assert.equal(f.value('llama.attention.layer_norm_rms_epsilon')?.type, 'f32');
    assert.equal(f.getNumber('llama.attention.layer_norm_rms_epsilon'), Math.fround(1e-5));
    const tokens = f.value('tokenizer.ggml.tokens');
    assert.ok(tokens?.type === 'array' && tokens.itemType === 'string');
    assert.equal(tokens.value.length, 32000);
    assert.deepEqual(tokens.value.slice(0, 4), ['<unk>', '<s>', '</s>', '<0x00>']);
    // U+FEFF is a real token; a decoder that strips BOMs would turn it into "".
    assert.equal(tokens.value[30143], '\ufeff');
    const scores = f.value('tokenizer.ggml.scores');
    assert.ok(scores?.type === 'array' && scores.itemType === 'f32' && scores.value.length === 32000);
    const types = f.value('tokenizer.ggml.token_type');
    assert.ok(types?.type === 'array' && types.itemType === 'i32');
    assert.deepEqual(types.value.slice(0, 4), [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.BYTE]);
    assert.deepEqual(f.value('tokenizer.ggml.bos_token_id'), { type: 'u32', value: 1 });
    assert.deepEqual(f.value('tokenizer.ggml.add_bos_token'), { type: 'bool', value: true });
    assert.throws(() => f.getString('llama.context_length'), (e: unknown) => e instanceof GgufError && /llama\.context_length" is u32, expected string/.test(e.message));
  });
});

// ---------------------------------------------------------------------------------------------

describe('GGUF writer → reader round trip', () => {
  const metadata: GgufMetadataEntry[] = [
    { key: 'general.architecture', type: 'string', value: 'llama' },
    { key: 't.u8', type: 'u8', value: 255 },
    { key: 't.i8', type: 'i8', value: -128 },
    { key: 't.u16', type: 'u16', value: 65535 },
    { key: 't.i16', type: 'i16', value: -32768 },
    { key: 't.u32', type: 'u32', value: 4294967295 },
    { key: 't.i32', type: 'i32', value: -2147483648 },
    { key: 't.f32', type: 'f32', value: Math.fround(0.1) },
    { key: 't.f32.nan', type: 'f32', value: NaN },
    { key: 't.f32.negzero', type: 'f32', value: -0 },
    { key: 't.f64', type: 'f64', value: 1e-300 },
    { key: 't.bool', type: 'bool', value: true },
    { key: 't.u64', type: 'u64', value: 0xffffffffffffffffn },
    { key: 't.i64', type: 'i64', value: -(1n << 63n) },
    { key: 't.string', type: 'string', value: 'héllo ▁ \ufeff 🦙' },
    { key: 't.string.empty', type: 'string', value: '' },
    { key: 't.arr.u8', type: 'array', itemType: 'u8', value: [0, 1, 255] },
    { key: 't.arr.i8', type: 'array', itemType: 'i8', value: [-1, 127] },
    { key: 't.arr.u16', type: 'array', itemType: 'u16', value: [7] },
    { key: 't.arr.i16', type: 'array', itemType: 'i16', value: [-7] },
    { key: 't.arr.u32', type: 'array', itemType: 'u32', value: [1, 2, 3] },
    { key: 't.arr.i32', type: 'array', itemType: 'i32', value: [-1, 0, 1] },
    { key: 't.arr.f32', type: 'array', itemType: 'f32', value: [Math.fround(1.5), -Infinity] },
    { key: 't.arr.f64', type: 'array', itemType: 'f64', value: [Math.PI] },
    { key: 't.arr.bool', type: 'array', itemType: 'bool', value: [true, false] },
    { key: 't.arr.u64', type: 'array', itemType: 'u64', value: [0n, 1n << 60n] },
    { key: 't.arr.i64', type: 'array', itemType: 'i64', value: [-5n] },
    { key: 't.arr.string', type: 'array', itemType: 'string', value: ['a', '', '▁the'] },
    { key: 't.arr.empty', type: 'array', itemType: 'f32', value: [] },
    {
      key: 't.arr.nested', type: 'array', itemType: 'array', value: [
        { type: 'array', itemType: 'string', value: ['x', 'y'] },
        { type: 'array', itemType: 'array', value: [{ type: 'array', itemType: 'i64', value: [3n] }] },
      ],
    },
  ];
  const tensors: GgufTensorInput[] = [
    { name: 'a.f32', tensor: randomTensor('f32', [3, 5], 1) },
    { name: 'b.f16', tensor: randomTensor('f16', [7], 2) },
    { name: 'c.bf16', tensor: randomTensor('bf16', [2, 3, 4, 5], 3) },
    { name: 'd.empty', tensor: { dtype: 'f32', shape: [0, 4], data: new Float32Array(0) } },
    // Lazy: described up front, loaded only when its bytes are written.
    { name: 'e.lazy', dtype: 'bf16', shape: [4, 3], load: () => randomTensor('bf16', [4, 3], 4) },
    // Quantized blocks are raw bytes: 3 rows × 2 blocks of Q8_0 (34 bytes each), 2 × 1 of Q4_0 (18).
    { name: 'f.q8_0', tensor: { dtype: 'q8_0', shape: [3, 64], data: randomBytes(3 * 2 * 34, 5) } },
    { name: 'g.q4_0', dtype: 'q4_0', shape: [2, 32], load: () => ({ dtype: 'q4_0', shape: [2, 32], data: randomBytes(2 * 18, 6) }) },
  ];

  test('every metadata type and f32/f16/bf16/q8_0/q4_0 tensors come back bit-identical', () => {
    const p = tmpFile();
    writeGguf(p, { metadata, tensors });
    const f = readGguf(p);
    assert.equal(f.version, 3);
    assert.deepEqual([...f.metadata.keys()], metadata.map((e) => e.key));
    for (const e of metadata) {
      const { key, ...want } = e;
      const got = f.value(key)!;
      if (want.type === 'f32' || want.type === 'f64') {
        assert.ok(Object.is(got.value, want.value), `${key}: ${String(got.value)} vs ${String(want.value)}`);
      } else {
        assert.deepEqual(got, want as GgufValue, key);
      }
    }
    for (const t of tensors) {
      const want = 'tensor' in t ? t.tensor : t.load();
      const got = f.readWeight(t.name);
      assert.equal(got.dtype, want.dtype);
      assert.deepEqual(got.shape, want.shape);
      assert.ok(bytesOf(got.data).equals(bytesOf(want.data)), `${t.name} bytes differ`);
      const info = f.tensorInfo(t.name);
      assert.deepEqual(info.ne, [...want.shape].reverse(), 'ne is the row-major shape reversed');
      assert.equal((info.offset - f.dataOffset) % 32, 0);
      assert.equal(info.typeName, { f32: 'F32', f16: 'F16', bf16: 'BF16', q8_0: 'Q8_0', q4_0: 'Q4_0' }[want.dtype]);
      assert.equal(info.byteSize, bytesOf(want.data).length);
    }
    assert.equal(f.dataOffset % 32, 0);
    // The reader doubles as a WeightSource under the GGUF names.
    assert.deepEqual(f.names(), tensors.map((t) => t.name));
    assert.ok(f.has('a.f32') && !f.has('zzz'));
  });

  test('a custom general.alignment is honoured', () => {
    const p = tmpFile();
    writeGguf(p, {
      metadata: [{ key: 'general.alignment', type: 'u32', value: 64 }],
      tensors: [{ name: 'x', tensor: randomTensor('f32', [3], 5) }, { name: 'y', tensor: randomTensor('f16', [5], 6) }],
    });
    const f = readGguf(p);
    assert.equal(f.alignment, 64);
    assert.equal(f.dataOffset % 64, 0);
    for (const t of f.tensors) assert.equal((t.offset - f.dataOffset) % 64, 0);
    assert.ok(bytesOf(f.readTensor('y').data).equals(bytesOf(randomTensor('f16', [5], 6).data)));
  });

  test('the writer rejects bad input with a GgufError and leaves no file behind', () => {
    const bad: [string, () => void, RegExp][] = [
      ['u8 out of range', () => writeGguf(p, { metadata: [{ key: 'k', type: 'u8', value: 300 }], tensors: [] }), /integer in \[0, 255\]/],
      ['i32 not integer', () => writeGguf(p, { metadata: [{ key: 'k', type: 'i32', value: 1.5 }], tensors: [] }), /integer in/],
      ['u64 as number', () => writeGguf(p, { metadata: [{ key: 'k', type: 'u64', value: 5 as unknown as bigint }], tensors: [] }), /bigint/],
      ['array item type', () => writeGguf(p, { metadata: [{ key: 'k', type: 'array', itemType: 'u32', value: [1, -1] }], tensors: [] }), /"k"\[1\]/],
      ['duplicate key', () => writeGguf(p, { metadata: [{ key: 'k', type: 'u8', value: 1 }, { key: 'k', type: 'u8', value: 2 }], tensors: [] }), /duplicate metadata key "k"/],
      ['bad alignment', () => writeGguf(p, { metadata: [{ key: 'general.alignment', type: 'u32', value: 48 }], tensors: [] }), /power of two/],
      ['long tensor name', () => writeGguf(p, { metadata: [], tensors: [{ name: 'n'.repeat(64), tensor: randomTensor('f32', [1], 1) }] }), /longer than 63 bytes/],
      ['5-d tensor', () => writeGguf(p, { metadata: [], tensors: [{ name: 'x', tensor: randomTensor('f32', [1, 1, 1, 1, 1], 1) }] }), /5 dimensions/],
      ['data/shape mismatch', () => writeGguf(p, { metadata: [], tensors: [{ name: 'x', tensor: { dtype: 'f32', shape: [3], data: new Float32Array(2) } }] }), /2 elements but shape \[3\]/],
      ['q8_0 rows not whole blocks', () => writeGguf(p, { metadata: [], tensors: [{ name: 'x', tensor: { dtype: 'q8_0', shape: [2, 48], data: new Uint8Array(102) } }] }), /rows of 48 elements, not a multiple of the block size 32/],
      ['q4_0 byte count', () => writeGguf(p, { metadata: [], tensors: [{ name: 'x', tensor: { dtype: 'q4_0', shape: [2, 32], data: new Uint8Array(35) } }] }), /has 35 bytes but shape \[2, 32\] needs 36 \(q4_0 blocks\)/],
      ['q8_0 as Uint16Array', () => writeGguf(p, { metadata: [], tensors: [{ name: 'x', tensor: { dtype: 'q8_0', shape: [32], data: new Uint16Array(17) as unknown as Uint8Array } }] }), /is q8_0 but its data is a Uint16Array/],
      ['lazy tensor loads another shape', () => writeGguf(p, { metadata: [], tensors: [{ name: 'x', dtype: 'f32', shape: [2, 2], load: () => randomTensor('f32', [4], 1) }] }), /declared f32 \[2, 2\] but loaded as f32 \[4\]/],
    ];
    const p = tmpFile();
    for (const [what, fn, re] of bad) {
      assert.throws(fn, (e: unknown) => e instanceof GgufError && re.test(e.message), what);
      assert.ok(!existsSync(p), `${what}: target file exists`);
    }
    assert.deepEqual(readdirSync(tmp).filter((n) => n.includes('.tmp-')), [], 'temporary files were cleaned up');
  });
});

// ---------------------------------------------------------------------------------------------
// Hand-built (malformed) files

class Raw {
  private parts: Buffer[] = [];
  u32(v: number): this { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); this.parts.push(b); return this; }
  u64(v: number | bigint): this { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.parts.push(b); return this; }
  str(s: string, lenOverride?: bigint): this { const b = Buffer.from(s, 'utf8'); this.u64(lenOverride ?? b.length); this.parts.push(b); return this; }
  bytes(b: Uint8Array): this { this.parts.push(Buffer.from(b)); return this; }
  get length(): number { return this.parts.reduce((a, b) => a + b.length, 0); }
  pad(align: number): this { const n = (align - (this.length % align)) % align; this.parts.push(Buffer.alloc(n)); return this; }
  build(): Buffer { return Buffer.concat(this.parts); }
}

interface RawTensor { name: string; ne: (number | bigint)[]; type: number; offset: number | bigint; nDims?: number }

/** A GGUF assembled field by field (+64 trailing bytes); `kv` writes the metadata records (their count is given separately). */
function rawGguf(o: { magic?: string; version?: number; kvCount?: number | bigint; kv?: (r: Raw) => void; tensorCount?: number | bigint; tensors?: RawTensor[]; data?: Buffer; cut?: number }): string {
  const r = new Raw().bytes(Buffer.from(o.magic ?? 'GGUF', 'latin1')).u32(o.version ?? 3);
  const tensors = o.tensors ?? [];
  r.u64(o.tensorCount ?? tensors.length).u64(o.kvCount ?? 0);
  o.kv?.(r);
  for (const t of tensors) {
    r.str(t.name).u32(t.nDims ?? t.ne.length);
    for (const d of t.ne) r.u64(d);
    r.u32(t.type).u64(t.offset);
  }
  if (o.data) r.pad(32).bytes(o.data);
  // Slack so the up-front record-count bound passes and the specific check under test fires.
  r.bytes(Buffer.alloc(64));
  let buf = r.build();
  if (o.cut !== undefined) buf = buf.subarray(0, o.cut);
  const p = tmpFile();
  writeFileSync(p, buf);
  return p;
}

function expectGgufError(path: string, re: RegExp): void {
  const before = process.memoryUsage();
  assert.throws(() => readGguf(path), (e: unknown) => {
    assert.ok(e instanceof GgufError, `expected GgufError, got ${String(e)}`);
    assert.match(e.message, re);
    assert.ok(e.message.startsWith(path), 'the message names the file');
    return true;
  });
  const grown = process.memoryUsage().arrayBuffers - before.arrayBuffers;
  assert.ok(grown < 64 * 1024 * 1024, `reader allocated ${grown} bytes on a malformed file`);
}

describe('GGUF reader on malformed files', () => {
  const twoTensors = (offsets: [number, number], sizes: [number, number] = [4, 4]): string => rawGguf({
    tensors: [
      { name: 'a', ne: [sizes[0]], type: 0, offset: offsets[0] },
      { name: 'b', ne: [sizes[1]], type: 0, offset: offsets[1] },
    ],
    data: Buffer.alloc(256),
  });

  test('structural errors are specific GgufErrors', () => {
    const cases: [string, string, RegExp][] = [
      ['bad magic', rawGguf({ magic: 'GGML' }), /bad magic "GGML"/],
      ['empty file', (() => { const p = tmpFile(); writeFileSync(p, ''); return p; })(), /too short/],
      ['version 1', rawGguf({ version: 1 }), /version 1/],
      ['version 4', rawGguf({ version: 4 }), /unsupported GGUF version 4/],
      ['byte-swapped', rawGguf({ version: 0x03000000 }), /big-endian/],
      ['huge kv count', rawGguf({ kvCount: 1n << 40n }), /metadata count \d+ cannot fit/],
      ['huge tensor count', rawGguf({ tensorCount: 1n << 40n }), /tensor count \d+ cannot fit/],
      ['count beyond 2^53', rawGguf({ kvCount: 1n << 60n }), /metadata count is \d+, too large/],
      ['huge key length', rawGguf({ kvCount: 1, kv: (r) => r.str('k', 1n << 50n) }), /metadata key #0 has length \d+ but only \d+ bytes remain/],
      ['huge string value', rawGguf({ kvCount: 1, kv: (r) => r.str('k').u32(8).u64(1n << 40n) }), /metadata "k" has length \d+ but only/],
      ['huge array count', rawGguf({ kvCount: 1, kv: (r) => r.str('k').u32(9).u32(4).u64(1n << 24n) }), /metadata "k" has 16777216 u32 items \(at least 67108864 bytes\) but only \d+ bytes remain/],
      ['huge array of strings', rawGguf({ kvCount: 1, kv: (r) => r.str('k').u32(9).u32(8).u64(1000) }), /1000 string items/],
      ['array over the item cap', rawGguf({ kvCount: 1, kv: (r) => r.str('k').u32(9).u32(0).u64(1n << 40n) }), /more than the limit/],
      ['unknown value type', rawGguf({ kvCount: 1, kv: (r) => r.str('k').u32(13).u32(0) }), /metadata "k" type|unknown value type 13/],
      ['unknown array item type', rawGguf({ kvCount: 1, kv: (r) => r.str('k').u32(9).u32(99).u64(0) }), /unknown value type 99/],
      ['nesting too deep', rawGguf({ kvCount: 1, kv: (r) => { r.str('k').u32(9); for (let i = 0; i < 9; i++) r.u32(9).u64(1); r.u32(0).u64(0); } }), /nested deeper than 8/],
      ['bool byte 2', rawGguf({ kvCount: 1, kv: (r) => r.str('k').u32(7).bytes(new Uint8Array([2])) }), /bool with byte value 2/],
      ['duplicate key', rawGguf({ kvCount: 2, kv: (r) => r.str('k').u32(0).bytes(new Uint8Array([1])).str('k').u32(0).bytes(new Uint8Array([1])) }), /duplicate metadata key "k"/],
      ['empty key', rawGguf({ kvCount: 1, kv: (r) => r.str('').u32(0).bytes(new Uint8Array([1])) }), /key #0 is empty/],
      ['alignment not u32', rawGguf({ kvCount: 1, kv: (r) => r.str('general.alignment').u32(5).u32(32) }), /general\.alignment must be u32/],
      ['alignment not power of two', rawGguf({ kvCount: 1, kv: (r) => r.str('general.alignment').u32(4).u32(24) }), /not a power of two/],
      ['n_dims 5', rawGguf({ tensors: [{ name: 't', ne: [1, 1, 1, 1, 1], type: 0, offset: 0 }], data: Buffer.alloc(32) }), /tensor "t" has 5 dimensions \(at most 4\)/],
      ['unknown ggml type 4', rawGguf({ tensors: [{ name: 't', ne: [4], type: 4, offset: 0 }], data: Buffer.alloc(32) }), /tensor "t" has unknown ggml type 4/],
      ['unknown ggml type 99', rawGguf({ tensors: [{ name: 't', ne: [4], type: 99, offset: 0 }], data: Buffer.alloc(32) }), /unknown ggml type 99/],
      ['row not a block multiple', rawGguf({ tensors: [{ name: 'q', ne: [33], type: 8, offset: 0 }], data: Buffer.alloc(64) }), /33 elements per row, not a multiple of the block size 32/],
      ['element count overflow', rawGguf({ tensors: [{ name: 't', ne: [1n << 40n, 1n << 40n], type: 0, offset: 0 }], data: Buffer.alloc(32) }), /too many elements/],
      ['tensor bigger than the file', rawGguf({ tensors: [{ name: 't', ne: [1n << 40n], type: 0, offset: 0 }], data: Buffer.alloc(32) }), /needs \d+ bytes, more than the whole file/],
      ['duplicate tensor', rawGguf({ tensors: [{ name: 't', ne: [1], type: 0, offset: 0 }, { name: 't', ne: [1], type: 0, offset: 32 }], data: Buffer.alloc(64) }), /duplicate tensor name "t"/],
      ['misaligned offset', twoTensors([0, 36]), /tensor "b" offset 36 is not a multiple of the alignment 32/],
      ['overlapping tensors', twoTensors([0, 32], [16, 4]), /tensor "b" \(data at \d+\) overlaps tensor "a"/],
      ['offset out of range', twoTensors([0, 4096]), /tensor "b" occupies bytes \d+\.\.\d+ but the file has \d+ bytes/],
      ['invalid UTF-8 key', rawGguf({ kvCount: 1, kv: (r) => r.u64(2).bytes(new Uint8Array([0xc3, 0x28])).u32(0).bytes(new Uint8Array([1])) }), /not valid UTF-8/],
    ];
    for (const [what, path, re] of cases) {
      try {
        expectGgufError(path, re);
      } catch (e) {
        throw new Error(`${what}: ${(e as Error).message}`);
      }
    }
  });

  test('every truncation of a valid file is a GgufError until the tensor data is complete', () => {
    const p = tmpFile();
    writeGguf(p, {
      metadata: [
        { key: 'general.architecture', type: 'string', value: 'llama' },
        { key: 'a', type: 'array', itemType: 'string', value: ['x', 'yz'] },
        { key: 'n', type: 'array', itemType: 'array', value: [{ type: 'array', itemType: 'u16', value: [1, 2] }] },
      ],
      tensors: [{ name: 'w', tensor: randomTensor('f16', [2, 3], 9) }, { name: 'v', tensor: randomTensor('f32', [5], 8) }],
    });
    const full = readFileSync(p);
    const f = readGguf(p);
    const needed = Math.max(...f.tensors.map((t) => t.offset + t.byteSize));
    for (let cut = 0; cut < full.length; cut++) {
      const q = join(tmp, 'cut.gguf');
      writeFileSync(q, full.subarray(0, cut));
      if (cut >= needed) {
        assert.doesNotThrow(() => readGguf(q), `cut at ${cut} (only padding removed)`);
      } else {
        assert.throws(() => readGguf(q), (e: unknown) => e instanceof GgufError, `cut at ${cut}`);
      }
    }
  });

  test('quantized tensors are listed by type name but not read as floats', () => {
    // One Q8_0 block: 32 elements in 34 bytes.
    const p = rawGguf({ tensors: [{ name: 'blk.0.attn_q.weight', ne: [32], type: 8, offset: 0 }], data: Buffer.alloc(64, 7) });
    const f = readGguf(p);
    const t = f.tensorInfo('blk.0.attn_q.weight');
    assert.equal(t.typeName, 'Q8_0');
    assert.equal(t.byteSize, 34);
    assert.equal(ggmlTypeName(12), 'Q4_K');
    assert.equal(f.readRaw('blk.0.attn_q.weight').length, 34);
    assert.throws(() => f.readTensor('blk.0.attn_q.weight'), (e: unknown) => e instanceof GgufError && /tensor "blk\.0\.attn_q\.weight" has type Q8_0; only F32, F16 and BF16/.test(e.message));
    assert.equal(f.floatDType('blk.0.attn_q.weight'), null);
    // As a weight it comes back as its raw block, not widened.
    assert.equal(f.weightDType('blk.0.attn_q.weight'), 'q8_0');
    const w = f.readWeight('blk.0.attn_q.weight');
    assert.equal(w.dtype, 'q8_0');
    assert.deepEqual(w.shape, [32]);
    assert.ok(w.data instanceof Uint8Array && w.data.length === 34 && w.data.every((b) => b === 7));
    // Other ggml types are refused as weights too, by name.
    const k = readGguf(rawGguf({ tensors: [{ name: 'k4', ne: [256], type: 12, offset: 0 }], data: Buffer.alloc(160, 1) }));
    assert.equal(k.weightDType('k4'), null);
    assert.throws(() => k.readWeight('k4'), (e: unknown) => e instanceof GgufError && /tensor "k4" has type Q4_K; only F32, F16, BF16, Q8_0 and Q4_0/.test(e.message));
    assert.throws(() => f.readTensor('nope'), (e: unknown) => e instanceof GgufError && /no tensor named "nope"/.test(e.message));
  });

  test('GGUF version 2 is read too', () => {
    const p = rawGguf({ version: 2, kvCount: 1, kv: (r) => r.str('general.name').u32(8).str('v2') });
    assert.equal(readGguf(p).getString('general.name'), 'v2');
  });
});

// ---------------------------------------------------------------------------------------------
// Llama export: synthetic tokenizers and random models

/** A SentencePiece-style BPE tokenizer.json (byte fallback, "▁" normalisation) as the Llama 2 conversion writes it. */
function writeSpmTokenizer(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  for (const c of ['▁', 'a', 'b', 'c', 'e', 'h', 't']) vocab[c] = Object.keys(vocab).length;
  const merges: [string, string][] = [['▁', 't'], ['h', 'e'], ['▁t', 'he'], ['▁t', 'h'], ['▁th', 'e'], ['a', 'b'], ['▁', 'c']];
  for (const [a, b] of merges) if (vocab[a + b] === undefined) vocab[a + b] = Object.keys(vocab).length;
  const special = (id: number, content: string) => ({ id, content, special: true, normalized: false, lstrip: false, rstrip: false, single_word: false });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges },
  }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', pad_token: null }));
}

/** GPT-2's reversible byte → printable character map (the "byte-level" alphabet). */
function byteLevelAlphabet(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const map: string[] = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(bs.includes(b) ? b : 256 + n++);
  return map;
}

/** A byte-level BPE tokenizer.json with the given pre-tokenizer. */
function writeByteLevelTokenizer(dir: string, preTokenizer: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true });
  const vocab: Record<string, number> = {};
  for (const c of byteLevelAlphabet()) vocab[c] = Object.keys(vocab).length;
  const merges: [string, string][] = [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he'], ['Ġ', 'a'], ['i', 'n'], ['Ġa', 'n'], ['1', '2'], ['Ġ', 'c'], ['a', 't']];
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
  const eot = Object.keys(vocab).length;
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: [{ id: eot, content: '<|endoftext|>', special: true, normalized: false, lstrip: false, rstrip: false, single_word: false }],
    normalizer: null, pre_tokenizer: preTokenizer, post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: false, bos_token: '<|endoftext|>', eos_token: '<|endoftext|>' }));
}

const LLAMA3_PRE = {
  type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
  ],
};

function hfTokenizer(dir: string): Tokenizer {
  const cfg = existsSync(join(dir, 'tokenizer_config.json')) ? JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) : {};
  return new Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), cfg);
}

const spmDir = join(tmp, 'tok-spm');
const gpt2Dir = join(tmp, 'tok-gpt2');
const llama3Dir = join(tmp, 'tok-llama3');
writeSpmTokenizer(spmDir);
writeByteLevelTokenizer(gpt2Dir, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true });
writeByteLevelTokenizer(llama3Dir, LLAMA3_PRE);

const RANDOM: [string, RandomSpec, string][] = [
  ['GQA, untied, f32', { hidden: 64, heads: 4, kvHeads: 2, inter: 96, vocab: 320, layers: 2 }, spmDir],
  ['MHA with q/k/v/o biases, bf16', { hidden: 64, heads: 4, kvHeads: 4, inter: 96, vocab: 320, layers: 2, attentionBias: true, dtype: 'bf16', seed: 2 }, spmDir],
  ['qwen2 (arch qwen2, no permutation)', { hidden: 64, heads: 4, kvHeads: 2, inter: 96, vocab: 320, layers: 2, modelType: 'qwen2', seed: 3 }, gpt2Dir],
  ['head_dim ≠ hidden/heads, tied as lm_head', { hidden: 48, heads: 4, kvHeads: 2, headDim: 16, inter: 96, vocab: 320, layers: 2, tied: true, tiedAsLmHead: true, seed: 4 }, llama3Dir],
  ['llama3 RoPE scaling', {
    hidden: 64, heads: 2, kvHeads: 1, inter: 96, vocab: 320, layers: 1, seed: 5, ropeTheta: 500000,
    ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
  }, spmDir],
  ['linear RoPE scaling', { hidden: 64, heads: 2, kvHeads: 1, inter: 96, vocab: 320, layers: 1, seed: 6, ropeScaling: { rope_type: 'linear', factor: 2 } }, spmDir],
];

function assertSameTensor(a: Tensor, b: Tensor, what: string): void {
  assert.equal(a.dtype, b.dtype, `${what} dtype`);
  assert.deepEqual(a.shape, b.shape, `${what} shape`);
  assert.ok(bytesOf(a.data).equals(bytesOf(b.data)), `${what} data differs`);
}

function widenToF32(t: Tensor): Float32Array {
  if (t.dtype === 'f32') return t.data as Float32Array;
  const out = new Float32Array(t.data.length);
  const u32 = new Uint32Array(out.buffer);
  const d = t.data as Uint16Array;
  assert.equal(t.dtype, 'bf16', 'test helper widens bf16 only');
  for (let i = 0; i < d.length; i++) u32[i] = d[i]! << 16;
  return out;
}

/** The config fields a GGUF carries must survive the round trip. */
function assertSameConfig(got: ModelArgs, want: ModelArgs): void {
  const keys: (keyof ModelArgs)[] = ['hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'vocabSize',
    'rmsNormEps', 'ropeTheta', 'ropeScaling', 'maxPositionEmbeddings', 'tieWordEmbeddings', 'attentionBias', 'oBias', 'mlpBias', 'bosTokenId', 'eosTokenId', 'torchDtype'];
  for (const k of keys) assert.deepEqual(got[k], want[k], `config.${k}`);
}

/** Checks a GGUF against its source: permuted q/k rows, 1-D tensors in f32, openGgufModel gives the source back. */
function checkExport(path: string, config: ModelArgs, src: WeightSource, specialIds?: { bos: number; eos: number }): void {
  const f = readGguf(path);
  const d = config.headDim;
  const arch = f.requireString('general.architecture');
  const q = src.get('model.layers.0.self_attn.q_proj.weight');
  const gq = f.readTensor('blk.0.attn_q.weight');
  // Independent statement of convert_hf_to_gguf's permute: GGUF row h·d+2i = HF row h·d+i, row h·d+2i+1 = HF row h·d+i+d/2.
  const cols = config.hiddenSize, el = q.dtype === 'f32' ? 4 : 2;
  const row = (t: Tensor, r: number) => bytesOf(t.data).subarray(r * cols * el, (r + 1) * cols * el);
  for (let h = 0; h < config.numHeads; h++) {
    for (let i = 0; i < d / 2; i++) {
      const hfLo = row(q, h * d + i), hfHi = row(q, h * d + i + d / 2);
      if (arch === 'llama') {
        assert.ok(row(gq, h * d + 2 * i).equals(hfLo) && row(gq, h * d + 2 * i + 1).equals(hfHi), `head ${h} pair ${i} not interleaved`);
      } else {
        assert.ok(row(gq, h * d + i).equals(hfLo) && row(gq, h * d + i + d / 2).equals(hfHi), `qwen2 head ${h} row ${i} was permuted`);
      }
    }
  }
  assert.equal(f.tensorInfo('blk.0.attn_norm.weight').typeName, 'F32', '1-D tensors are stored as F32');
  assert.equal(f.has('output.weight'), !config.tieWordEmbeddings);

  const back = openGgufModel(path);
  // The tokenizer's own bos/eos win over config.json's (the byte-level test tokenizers use <|endoftext|>).
  assertSameConfig(back.config, specialIds ? { ...config, bosTokenId: specialIds.bos, eosTokenId: specialIds.eos } : config);
  for (const name of back.weights.names()) {
    const want = src.has(name) ? src.get(name) : src.get('lm_head.weight'); // a tied asset stores the embedding as lm_head
    const got = back.weights.get(name);
    if (got.dtype === want.dtype) assertSameTensor(got, want, name);
    else assert.deepEqual(widenToF32(got), widenToF32(want), `${name} values`);
  }
  const expectedNames = src.names().filter((n) => !(config.tieWordEmbeddings && n === 'lm_head.weight'));
  if (!src.has('model.embed_tokens.weight')) expectedNames.push('model.embed_tokens.weight');
  assert.deepEqual(back.weights.names().sort(), expectedNames.sort());
}

describe('Llama GGUF export of random models (structure and round trip)', () => {
  for (const [name, spec, tokDir] of RANDOM) {
    test(name, () => {
      const m = randomLlama(spec);
      const p = tmpFile();
      const res = exportLlamaGguf(p, m.config, m.src, tokDir);
      assert.equal(res.arch, spec.modelType === 'qwen2' ? 'qwen2' : 'llama');
      checkExport(p, m.config, m.src, res.tokenizer.model === 'gpt2' ? { bos: 265, eos: 265 } : undefined);
      const f = readGguf(p);
      assert.equal(f.getNumber('general.file_type'), spec.dtype === 'bf16' ? 32 : 0);
      assert.equal(f.getStringArray('tokenizer.ggml.tokens')!.length, spec.vocab, 'token list padded to the embedding rows');
      assert.equal(f.getStringArray('tokenizer.ggml.tokens')![spec.vocab - 1], `[PAD${spec.vocab - 1}]`);
      if (m.config.ropeScaling?.type === 'llama3') {
        const rf = f.readTensor('rope_freqs.weight');
        const plain = ropeInvFreq(m.config.headDim, m.config.ropeTheta), scaled = ropeInvFreq(m.config.headDim, m.config.ropeTheta, m.config.ropeScaling);
        assert.deepEqual([...rf.data], [...plain].map((x, i) => Math.fround(x / scaled[i]!)));
        assert.equal(rf.data[0], 1, 'the highest frequency is not scaled');
        assert.equal(rf.data[rf.data.length - 1], 8, 'the lowest frequency is divided by the factor');
      }
      if (m.config.headDim * m.config.numHeads !== m.config.hiddenSize) {
        assert.equal(f.getNumber('llama.attention.key_length'), m.config.headDim);
      }
    });
  }

  test('permuteRopeRows inverts itself', () => {
    const t = randomTensor('f32', [3 * 8, 5], 11);
    const there = permuteRopeRows(t.data, { blocks: 3, dim: 8 }, 'interleaved');
    assert.ok(!bytesOf(there).equals(bytesOf(t.data)));
    assert.ok(bytesOf(permuteRopeRows(there, { blocks: 3, dim: 8 }, 'half')).equals(bytesOf(t.data)));
  });

  test('SentencePiece scores follow merge ranks; token types', () => {
    const m = randomLlama(RANDOM[0]![1]);
    const p = tmpFile();
    exportLlamaGguf(p, m.config, m.src, spmDir);
    const f = readGguf(p);
    const tokens = f.getStringArray('tokenizer.ggml.tokens')!;
    const scores = f.getNumberArray('tokenizer.ggml.scores')!;
    const types = f.getNumberArray('tokenizer.ggml.token_type')!;
    const score = (t: string) => scores[tokens.indexOf(t)];
    // "▁the" is produced by merge #2 ("▁t he") before its alternative split "▁th e" (#4).
    assert.deepEqual([score('▁t'), score('he'), score('▁the'), score('▁th'), score('ab')], [-1, -2, -3, -4, -6]);
    assert.deepEqual(types.slice(0, 4), [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.BYTE]);
    assert.equal(types[tokens.indexOf('▁the')], TokenType.NORMAL);
    assert.equal(types[319], TokenType.UNUSED);
    assert.equal(f.getString('tokenizer.ggml.model'), 'llama');
    assert.equal(f.getBool('tokenizer.ggml.add_space_prefix'), true);
    assert.equal(f.getBool('tokenizer.ggml.add_bos_token'), true);
    assert.equal(f.getNumber('tokenizer.ggml.bos_token_id'), 1);
    assert.equal(f.getNumber('tokenizer.ggml.eos_token_id'), 2);
    assert.equal(f.getNumber('tokenizer.ggml.unknown_token_id'), 0);
  });

  test('byte-level tokenizers: gpt2 model, merges and the llama.cpp pre-tokenizer name', () => {
    for (const [dir, pre] of [[gpt2Dir, 'gpt-2'], [llama3Dir, 'llama-bpe']] as const) {
      const m = randomLlama(RANDOM[0]![1]);
      const p = tmpFile();
      const res = exportLlamaGguf(p, m.config, m.src, dir);
      assert.equal(res.tokenizer.model, 'gpt2');
      const f = readGguf(p);
      assert.equal(f.getString('tokenizer.ggml.pre'), pre);
      assert.deepEqual(f.getStringArray('tokenizer.ggml.merges')!.slice(0, 3), ['Ġ t', 'h e', 'Ġt he']);
      assert.equal(f.getNumberArray('tokenizer.ggml.token_type')![265], TokenType.CONTROL, '<|endoftext|>');
      assert.equal(f.value('tokenizer.ggml.scores'), undefined);
    }
  });

  test('export errors name the problem', () => {
    const m = randomLlama(RANDOM[0]![1]);
    const missing: WeightSource = { names: () => m.src.names().filter((n) => !n.includes('layers.1.mlp.up')), has: (n) => !n.includes('layers.1.mlp.up') && m.src.has(n), get: (n) => m.src.get(n) };
    assert.throws(() => exportLlamaGguf(tmpFile(), m.config, missing, spmDir), /no tensor "model\.layers\.1\.mlp\.up_proj\.weight" \(needed for blk\.1\.ffn_up\.weight\)/);
    const wrongShape: WeightSource = { ...m.src, names: () => m.src.names(), has: (n) => m.src.has(n), get: (n) => n.endsWith('layers.0.mlp.up_proj.weight') ? randomTensor('f32', [3, 3], 1) : m.src.get(n) };
    const p = tmpFile();
    assert.throws(() => exportLlamaGguf(p, m.config, wrongShape, spmDir), /"model\.layers\.0\.mlp\.up_proj\.weight" has shape \[3, 3\], expected \[96, 64\]/);
    assert.ok(!existsSync(p));
    const small = { ...m.config, vocabSize: 200 };
    assert.throws(() => exportLlamaGguf(tmpFile(), small, m.src, spmDir), /has id \d+, beyond the model's 200 embedding rows/);
    const q = randomLlama({ ...RANDOM[3]![1], modelType: 'qwen2' });
    assert.throws(() => exportLlamaGguf(tmpFile(), q.config, q.src, spmDir), /qwen2 architecture needs heads × head_dim \(64\) = hidden size \(48\)/);
    const uni = join(tmp, 'tok-unigram');
    mkdirSync(uni);
    writeFileSync(join(uni, 'tokenizer.json'), JSON.stringify({ model: { type: 'Unigram', vocab: [] } }));
    assert.throws(() => exportLlamaGguf(tmpFile(), m.config, m.src, uni), /tokenizer model type "Unigram" is not supported/);
  });

  test('openGgufModel refuses what it cannot run', () => {
    const m = randomLlama(RANDOM[0]![1]);
    const good = tmpFile();
    exportLlamaGguf(good, m.config, m.src, spmDir);
    const f = readGguf(good);
    const rewrite = (edit: (md: GgufMetadataEntry[], ts: GgufTensorInput[]) => void): string => {
      const md: GgufMetadataEntry[] = [...f.metadata].map(([key, v]) => ({ key, ...v }) as GgufMetadataEntry);
      const ts: GgufTensorInput[] = f.tensors.map((t) => ({ name: t.name, tensor: f.readTensor(t.name) }));
      edit(md, ts);
      const p = tmpFile();
      writeGguf(p, { metadata: md, tensors: ts });
      return p;
    };
    const arch = rewrite((md) => { (md[0] as { value: string }).value = 'gemma'; });
    assert.throws(() => openGgufModel(arch), /architecture "gemma" is not supported/);
    const extra = rewrite((_, ts) => ts.push({ name: 'blk.0.mystery.weight', tensor: randomTensor('f32', [2], 1) }));
    assert.throws(() => openGgufModel(extra), /tensor blk\.0\.mystery\.weight has no place in a llama model/);
    const gone = rewrite((_, ts) => ts.splice(ts.findIndex((t) => t.name === 'blk.1.ffn_up.weight'), 1));
    assert.throws(() => openGgufModel(gone), /missing tensor blk\.1\.ffn_up\.weight/);
    // A rope_freqs tensor as llama.cpp's converter writes it, without the parameters we record.
    const freqs = rewrite((_, ts) => ts.push({ name: 'rope_freqs.weight', tensor: { dtype: 'f32', shape: [8], data: new Float32Array(8).fill(1) } }));
    assert.throws(() => openGgufModel(freqs), /rope_freqs\.weight tensor without the llama3 RoPE parameters/);
  });
});

// ---------------------------------------------------------------------------------------------
// llama.cpp acceptance and tokenizer agreement

let llama: Llama | null = null;
let unavailable: string | false = false;
const llamaLog: string[] = [];

before(async () => {
  try {
    const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
    llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.warn, logger: (level, msg) => { llamaLog.push(`[${level}] ${msg.trim()}`); } });
  } catch (e) {
    if (process.env.CI === 'true') throw e;
    unavailable = `node-llama-cpp could not start: ${(e as Error).message}`;
  }
});
after(async () => {
  await llama?.dispose();
});

async function loadInLlamaCpp(path: string, vocabOnly = false): Promise<CppModel> {
  const mark = llamaLog.length;
  try {
    return await llama!.loadModel({ modelPath: path, gpuLayers: 0, vocabOnly });
  } catch (e) {
    throw new Error(`llama.cpp refused ${path}: ${(e as Error).message}\n${llamaLog.slice(mark).join('\n')}`);
  }
}

function sameIds(cpp: CppModel, hf: Tokenizer, text: string, what: string): void {
  const a = [...cpp.tokenize(text)];
  const b = hf.encode(text, { add_special_tokens: false }).ids;
  assert.deepEqual(a, b, `${what}: ${JSON.stringify(text.slice(0, 80))}`);
}

/**
 * Whether llama.cpp can tokenize a text: with no <0xXX> byte tokens in the vocabulary it aborts
 * the process on a character outside the vocabulary (export warns about it), so such texts are skipped.
 */
function tokenizable(text: string, hf: Tokenizer, hasByteTokens: boolean): boolean {
  return hasByteTokens || [...text].every((c) => c === ' ' || hf.token_to_id(c) !== undefined);
}

function paragraphs(rel: string, n: number): string[] {
  const p = assetPath(rel);
  if (p === null) return [];
  return readFileSync(p, 'utf8').split(/\n\n+/).filter((s) => s.length > 0).slice(0, n);
}

const SAMPLES = [
  'Once upon a time, there was a little girl named Lily.',
  'In the beginning God created the heaven and the earth.',
  '  two leading spaces, trailing space ',
  'line one\nline two\n\nthree',
  'Lily said: "Hi!" and 42 - 7 = 35.',
];

describe('llama.cpp loads our GGUF exports', () => {
  test('random models: load, evaluate, tokenize like Hugging Face', async (t) => {
    if (unavailable) return t.skip(unavailable);
    for (const [name, spec, tokDir] of RANDOM) {
      const m = randomLlama(spec);
      const p = tmpFile();
      exportLlamaGguf(p, m.config, m.src, tokDir);
      const cpp = await loadInLlamaCpp(p);
      try {
        const ctx = await cpp.createContext({ contextSize: 64, threads: 2 });
        const [t1, t2, t3] = [1, 5, 7] as Token[];
        const res = await ctx.getSequence().controlledEvaluate([[t1!, {}], [t2!, {}], [t3!, { generateNext: { logits: true } }]]);
        assert.equal(res[2]?.next.logits?.size, spec.vocab, `${name}: llama.cpp returned logits`);
        await ctx.dispose();
        const hf = hfTokenizer(tokDir);
        for (const s of ['the cab at the', ' the the thethe ab', 'in an 12 123 cat', 'héllo wörld!']) sameIds(cpp, hf, s, name);
      } finally {
        await cpp.dispose();
      }
    }
  });

  const ASSETS = ['kjv-gqa', 'kjv-mha', 'TinyStories-656K', 'TinyStories-656K-bf16'];
  for (const name of ASSETS) {
    test(`${name}: export, load, tokenize like Hugging Face`, { skip: skipUnlessAsset(`models/${name}`) }, async (t) => {
      if (unavailable) return t.skip(unavailable);
      const dir = mustAsset(`models/${name}`);
      const config = readConfig(dir);
      const ckpt = openCheckpoint(dir);
      const p = join(tmp, `${name}.gguf`);
      const res = exportLlamaGguf(p, config, ckpt, dir);
      assert.equal(res.outType, config.torchDtype === 'bfloat16' ? 'bf16' : 'f32');
      checkExport(p, config, ckpt);
      const hf = hfTokenizer(dir);
      const cpp = await loadInLlamaCpp(p);
      try {
        const hasBytes = res.tokenizer.warnings.length === 0;
        const text = name.startsWith('kjv') ? 'text/kjv-new-testament-eval.txt' : 'text/tinystories/tinystories_val_sample.txt';
        const texts = [...SAMPLES, ...paragraphs(text, name.startsWith('kjv') ? 30 : 300)];
        const usable = texts.filter((s) => tokenizable(s, hf, hasBytes));
        for (const s of usable) sameIds(cpp, hf, s, name);
        t.diagnostic(`${usable.length} of ${texts.length} texts tokenized identically (${texts.length - usable.length} skipped: characters outside a vocabulary without byte tokens)`);
        if (name.startsWith('TinyStories')) {
          // No <0xXX> tokens: llama.cpp aborts on characters outside this vocabulary (we filter them above).
          assert.equal(res.tokenizer.warnings.length, 1);
          assert.match(res.tokenizer.warnings[0]!, /aborts/);
        } else {
          assert.deepEqual(res.tokenizer.warnings, []);
        }
        if (name === 'kjv-gqa') {
          // llama.cpp's own tokenizer vectors for the Llama SentencePiece vocabulary, on our export.
          const vectors = tokenizerVectors();
          for (const [text, ids] of vectors ?? []) assert.deepEqual([...cpp.tokenize(text)], ids, `vector ${JSON.stringify(text)}`);
        }
      } finally {
        await cpp.dispose();
      }
    });
  }
});

/** llama.cpp's test vectors: inputs separated by "\n__ggml_vocab_test__\n", one line of ids per input. */
function tokenizerVectors(): [string, number[]][] | null {
  const inp = assetPath(`${VOCAB_GGUF}.inp`), out = assetPath(`${VOCAB_GGUF}.out`);
  if (inp === null || out === null) return null;
  const raw = readFileSync(inp, 'utf8');
  const sep = '\n__ggml_vocab_test__\n';
  const inputs: string[] = [];
  let pos = 0;
  while (pos < raw.length) {
    const next = raw.indexOf(sep, pos);
    if (next < 0) { inputs.push(raw.slice(pos)); break; }
    inputs.push(raw.slice(pos, next));
    pos = next + sep.length;
  }
  const lines = readFileSync(out, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  assert.equal(inputs.length, lines.length, 'as many inputs as output lines');
  return inputs.map((s, i) => [s, lines[i]!.trim() === '' ? [] : lines[i]!.trim().split(' ').map(Number)]);
}

describe('llama.cpp tokenizer vectors (ggml-vocab-llama-spm.gguf.inp/.out)', { skip: skipUnlessAsset(`${VOCAB_GGUF}.out`) }, () => {
  test('llama.cpp on its vocab-only GGUF reproduces them', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const vectors = tokenizerVectors()!;
    assert.ok(vectors.length >= 40);
    const cpp = await loadInLlamaCpp(mustAsset(VOCAB_GGUF), true);
    try {
      for (const [text, ids] of vectors) assert.deepEqual([...cpp.tokenize(text)], ids, JSON.stringify(text));
    } finally {
      await cpp.dispose();
    }
  });

  test('@huggingface/tokenizers on kjv-gqa/tokenizer.json gives the expected ids', { skip: skipUnlessAsset('models/kjv-gqa/tokenizer.json') }, () => {
    const hf = hfTokenizer(mustAsset('models/kjv-gqa'));
    for (const [text, ids] of tokenizerVectors()!) assert.deepEqual(hf.encode(text, { add_special_tokens: false }).ids, ids, JSON.stringify(text));
  });
});
