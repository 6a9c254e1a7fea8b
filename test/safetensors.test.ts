import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { MAX_HEADER_BYTES, openSafetensors, SafetensorsError, writeSafetensors, type NamedTensor } from '../src/io/safetensors.js';
import type { Tensor } from '../src/tensor.js';
import { hfModelAssets, mustAsset, skipUnlessAsset } from './helpers/assets.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-st-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = () => join(tmp, `f${fileNo++}.safetensors`);

/** Deterministic pseudo-random bits, so every bit pattern (NaN payloads, subnormals) is exercised. */
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

function bytesOf(t: Tensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** Builds a raw file: u64 header length + header text (+ data). */
function rawFile(header: string | Uint8Array, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): string {
  const h = typeof header === 'string' ? Buffer.from(header, 'utf8') : Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(h.length));
  const p = tmpFile();
  writeFileSync(p, Buffer.concat([len, h, data]));
  return p;
}

function expectError(p: string, re: RegExp): void {
  assert.throws(() => openSafetensors(p).close(), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${String(e)}`);
    assert.match(e.message, re);
    assert.ok(e.message.includes(p), `error should name the file: ${e.message}`);
    return true;
  });
}

describe('safetensors writer/reader round trip', () => {
  test('f32/f16/bf16, scalar and empty tensors come back bit-identical', () => {
    const tensors: NamedTensor[] = [
      { name: 'b', tensor: randomTensor('bf16', [7, 3], 1) },
      { name: 'a.weight', tensor: randomTensor('f32', [5, 4, 3], 2) },
      { name: 'half', tensor: randomTensor('f16', [9], 3) },
      { name: 'scalar', tensor: randomTensor('f32', [], 4) },
      { name: 'empty', tensor: randomTensor('bf16', [0, 4], 5) },
      { name: 'odd', tensor: randomTensor('f16', [3], 6) },
    ];
    const p = tmpFile();
    writeSafetensors(p, tensors, { note: 'x' });
    const f = openSafetensors(p);
    try {
      assert.deepEqual(f.names(), tensors.map((t) => t.name));
      assert.deepEqual(f.metadata, { format: 'pt', note: 'x' });
      assert.equal((8 + f.headerLength) % 8, 0, 'data section must start 8-byte aligned');
      for (const { name, tensor } of tensors) {
        const back = f.getTensor(name);
        assert.equal(back.dtype, tensor.dtype);
        assert.deepEqual(back.shape, tensor.shape);
        assert.ok(bytesOf(back).equals(bytesOf(tensor)), name);
        assert.equal(back.data.byteOffset, 0, 'fresh buffer');
      }
      const expectedSize = 8 + f.headerLength + tensors.reduce((a, t) => a + t.tensor.data.byteLength, 0);
      assert.equal(statSync(p).size, expectedSize);
    } finally {
      f.close();
    }
  });

  test('accepts a Map, keeps its order, and pads the header with spaces', () => {
    const m = new Map<string, Tensor>([['z', randomTensor('f32', [2], 7)], ['y', randomTensor('bf16', [3], 8)]]);
    const p = tmpFile();
    writeSafetensors(p, m);
    const raw = readFileSync(p);
    const n = Number(raw.readBigUInt64LE(0));
    const header = raw.subarray(8, 8 + n).toString('utf8');
    assert.match(header, /^\{.*\} *$/);
    const f = openSafetensors(p);
    assert.deepEqual(f.names(), ['z', 'y']);
    f.close();
  });

  test('a subarray view is written from its own bytes only', () => {
    const big = randomTensor('f32', [10], 9);
    const view: Tensor = { dtype: 'f32', shape: [4], data: (big.data as Float32Array).subarray(3, 7) };
    const p = tmpFile();
    writeSafetensors(p, [{ name: 'v', tensor: view }]);
    const f = openSafetensors(p);
    assert.ok(bytesOf(f.getTensor('v')).equals(bytesOf(view)));
    f.close();
  });

  test('writer refuses inconsistent tensors', () => {
    const bad: Tensor = { dtype: 'f32', shape: [3], data: new Float32Array(4) };
    assert.throws(() => writeSafetensors(tmpFile(), [{ name: 'w', tensor: bad }]), /tensor "w" has 4 elements but shape \[3\] needs 3/);
    const wrongType: Tensor = { dtype: 'bf16', shape: [2], data: new Float32Array(2) };
    assert.throws(() => writeSafetensors(tmpFile(), [{ name: 'w', tensor: wrongType }]), /is bf16 but its data is a Float32Array/);
    const t = randomTensor('f32', [1], 1);
    assert.throws(() => writeSafetensors(tmpFile(), [{ name: 'w', tensor: t }, { name: 'w', tensor: t }]), /duplicate tensor name "w"/);
  });

  test('closed file and unknown tensor give named errors', () => {
    const p = tmpFile();
    writeSafetensors(p, [{ name: 't', tensor: randomTensor('f32', [2], 1) }]);
    const f = openSafetensors(p);
    assert.throws(() => f.getTensor('nope'), /no tensor named "nope"/);
    f.close();
    assert.throws(() => f.getTensor('t'), /cannot read tensor "t": file is closed/);
  });
});

describe('safetensors reader validation', () => {
  const entry = (dtype: string, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });
  const h = (o: unknown) => JSON.stringify(o);

  test('file shorter than 8 bytes', () => {
    const p = tmpFile();
    writeFileSync(p, Buffer.from([1, 2, 3, 4, 5]));
    expectError(p, /file is 5 bytes, too short/);
  });
  test('header length beyond the file', () => {
    expectError(rawFile('{}', new Uint8Array(0), 1000n), /header length 1000 runs past the end of the file/);
  });
  test('header length beyond the 100 MB limit', () => {
    expectError(rawFile('{}', new Uint8Array(0), BigInt(MAX_HEADER_BYTES) + 1n), /exceeds the 100000000-byte limit/);
    expectError(rawFile('{}', new Uint8Array(0), 0xffffffffffffffffn), /exceeds the 100000000-byte limit/);
  });
  test('invalid UTF-8', () => {
    expectError(rawFile(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/);
  });
  test('bad JSON', () => {
    expectError(rawFile('{"a": '), /not valid JSON/);
  });
  test('JSON that is not an object', () => {
    expectError(rawFile('[1, 2, 3]'), /header is not a JSON object/);
  });
  test('entry that is not an object', () => {
    expectError(rawFile(h({ t: 5 })), /tensor "t": header entry is not an object/);
    expectError(rawFile(h({ t: [1] })), /tensor "t": header entry is not an object/);
  });
  test('unknown and sub-byte dtypes', () => {
    expectError(rawFile(h({ t: entry('Q4_K', [1], [0, 1]) }), new Uint8Array(1)), /tensor "t": unknown dtype "Q4_K"/);
    expectError(rawFile(h({ t: entry('F4', [2], [0, 1]) }), new Uint8Array(1)), /packed sub-byte dtypes are not supported "F4"/);
  });
  test('bad shapes', () => {
    expectError(rawFile(h({ t: entry('F32', [-1], [0, 4]) }), new Uint8Array(4)), /not a non-negative integer/);
    expectError(rawFile(h({ t: entry('F32', [1.5], [0, 4]) }), new Uint8Array(4)), /not a non-negative integer/);
    expectError(rawFile(h({ t: entry('F32', 'x', [0, 4]) }), new Uint8Array(4)), /shape must be an array/);
    expectError(rawFile(h({ t: entry('F32', [2 ** 40, 2 ** 40], [0, 4]) }), new Uint8Array(4)), /is too large/);
  });
  test('shape/offset size mismatch', () => {
    expectError(rawFile(h({ t: entry('F32', [2, 2], [0, 12]) }), new Uint8Array(16)), /span 12 bytes but F32 \[2,2\] needs 16/);
  });
  test('malformed offsets', () => {
    expectError(rawFile(h({ t: entry('F32', [1], [4]) }), new Uint8Array(8)), /data_offsets must be \[start, end\]/);
    expectError(rawFile(h({ t: entry('F32', [1], [8, 4]) }), new Uint8Array(8)), /start <= end/);
    expectError(rawFile(h({ t: entry('F32', [1], [-4, 0]) }), new Uint8Array(8)), /non-negative integers/);
  });
  test('offsets beyond the data section (truncated file)', () => {
    expectError(rawFile(h({ t: entry('F32', [4], [0, 16]) }), new Uint8Array(12)), /run past the end of the data section \(12 bytes/);
  });
  test('overlapping tensors', () => {
    const header = h({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) });
    expectError(rawFile(header, new Uint8Array(12)), /tensors "a" \[0, 8\) and "b" \[4, 12\) overlap/);
  });
  test('empty tensors may share an offset', () => {
    const p = rawFile(h({ a: entry('F32', [0], [0, 0]), b: entry('F32', [1], [0, 4]) }), new Uint8Array(4));
    const f = openSafetensors(p);
    assert.deepEqual(f.getTensor('a').shape, [0]);
    f.close();
  });
  test('__metadata__ must map strings to strings', () => {
    expectError(rawFile(h({ __metadata__: { n: 3 } })), /__metadata__\["n"\] must be a string/);
    expectError(rawFile(h({ __metadata__: 'pt' })), /__metadata__ must be an object/);
  });
  test('unpadded headers (as MLX writes them) are accepted', () => {
    const header = h({ t: entry('F32', [1], [0, 4]) });
    assert.notEqual(header.length % 8, 0);
    const p = rawFile(header, new Uint8Array(new Float32Array([2.5]).buffer));
    const f = openSafetensors(p);
    assert.equal((f.getTensor('t').data as Float32Array)[0], 2.5);
    f.close();
  });
  test('non-float dtypes list fine but refuse to read as float', () => {
    const p = rawFile(h({ ids: entry('I64', [2], [0, 16]), mask: entry('BOOL', [3], [16, 19]) }), new Uint8Array(19).fill(1));
    const f = openSafetensors(p);
    assert.deepEqual(f.names(), ['ids', 'mask']);
    assert.equal(f.entry('ids').dtype, 'I64');
    assert.equal(f.readBytes('mask').length, 3);
    assert.throws(() => f.getTensor('ids'), (e: unknown) => e instanceof SafetensorsError && /tensor "ids" has dtype I64; only F32, F16 and BF16/.test(e.message) && e.message.includes(p));
    f.close();
  });
  test('missing file', () => {
    assert.throws(() => openSafetensors(join(tmp, 'nope.safetensors')), /nope\.safetensors: cannot open/);
  });
});

describe('safetensors on the shared checkpoints', () => {
  const models = hfModelAssets();
  test('asset models are present', { skip: skipUnlessAsset('models') }, () => {
    assert.ok(models.length >= 4, `expected the 4 HF checkpoints, found ${models.join(', ')}`);
  });
  for (const m of models) {
    test(`${m}: re-serialising gives identical tensor bytes`, () => {
      const src = openSafetensors(join(mustAsset(`models/${m}`), 'model.safetensors'));
      const out = tmpFile();
      try {
        const names = src.names();
        assert.ok(names.length > 0);
        const list = names.map((name) => ({ name, tensor: src.getTensor(name) }));
        const { format: _f, ...extra } = src.metadata;
        writeSafetensors(out, list, extra);
        const back = openSafetensors(out);
        try {
          assert.deepEqual(back.names(), names);
          assert.deepEqual(back.metadata, src.metadata);
          for (const name of names) {
            assert.deepEqual(back.entry(name).shape, src.entry(name).shape);
            assert.equal(back.entry(name).dtype, src.entry(name).dtype);
            assert.ok(Buffer.from(back.readBytes(name)).equals(Buffer.from(src.readBytes(name))), name);
          }
          assert.equal(back.dataBytes(), src.dataBytes());
        } finally {
          back.close();
        }
      } finally {
        src.close();
      }
    });
  }
});
