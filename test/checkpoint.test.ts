import assert from 'node:assert/strict';
import fs, { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, mock, test } from 'node:test';
import { AtomicDirError, withAtomicDir } from '../src/io/atomic-dir.js';
import { Checkpoint, CheckpointError, INDEX_FILE, openCheckpoint, SINGLE_FILE, writeCheckpoint } from '../src/io/checkpoint.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { openSafetensors, writeSafetensors, type NamedTensor } from '../src/io/safetensors.js';
import type { Tensor } from '../src/tensor.js';
import { hfModelAssets, mustAsset, skipUnlessAsset } from './helpers/assets.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-ckpt-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let dirNo = 0;
const freshDir = (create = true): string => {
  const d = join(tmp, `d${dirNo++}`);
  if (create) mkdirSync(d);
  return d;
};

function bytes(t: Tensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function tensor(n: number, fill: number): Tensor {
  return { dtype: 'f32', shape: [n], data: new Float32Array(n).fill(fill) };
}

/** Asserts two checkpoints list the same tensors with bit-identical data. */
function assertSameTensors(a: Checkpoint, b: Checkpoint): void {
  assert.deepEqual([...b.names()].sort(), [...a.names()].sort());
  for (const name of a.names()) {
    assert.deepEqual(b.info(name).shape, a.info(name).shape, name);
    assert.equal(b.info(name).dtype, a.info(name).dtype, name);
    assert.ok(Buffer.from(b.getBytes(name)).equals(Buffer.from(a.getBytes(name))), `${name} differs`);
  }
}

async function* streamOf(ckpt: Checkpoint): AsyncGenerator<NamedTensor> {
  for (const name of ckpt.names()) yield { name, tensor: ckpt.get(name) };
}

describe('checkpoint round trips on the shared models', () => {
  const models = hfModelAssets();
  test('asset models are present', { skip: skipUnlessAsset('models') }, () => {
    assert.ok(models.length >= 4, models.join(', '));
  });
  for (const m of models) {
    test(`${m}: unsharded and sharded write → read is bit-identical`, async () => {
      const src = openCheckpoint(mustAsset(`models/${m}`));
      try {
        const one = freshDir();
        const r1 = await writeCheckpoint(one, streamOf(src));
        assert.deepEqual(r1.files, [SINGLE_FILE]);
        assert.deepEqual(readdirSync(one), [SINGLE_FILE], 'no temp files left');
        assert.equal(r1.totalSize, src.totalBytes());
        const back1 = openCheckpoint(one);
        assertSameTensors(src, back1);
        back1.close();

        // ~4 shards: greedy fill in arrival order.
        const max = Math.ceil(src.totalBytes() / 4);
        const sharded = freshDir();
        const r2 = await writeCheckpoint(sharded, src.names().map((name) => ({ name, tensor: src.get(name) })), { maxShardBytes: max });
        const n = r2.files.length - 1;
        assert.ok(n >= 3, `expected several shards, got ${r2.files.join(', ')}`);
        assert.equal(r2.files.at(-1), INDEX_FILE);
        r2.files.slice(0, -1).forEach((f, i) => assert.equal(f, `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`));
        assert.deepEqual(readdirSync(sharded).sort(), [...r2.files].sort());
        const index = JSON.parse(readFileSync(join(sharded, INDEX_FILE), 'utf8'));
        assert.equal(index.metadata.total_size, src.totalBytes());
        assert.deepEqual(Object.keys(index.weight_map), [...src.names()].sort());
        for (const f of r2.files.slice(0, -1)) {
          const sf = openSafetensors(join(sharded, f));
          assert.ok(sf.dataBytes() <= max || sf.names().length === 1, `${f} holds ${sf.dataBytes()} > ${max} bytes`);
          assert.equal(sf.metadata.format, 'pt');
          sf.close();
        }
        const back2 = openCheckpoint(sharded);
        assertSameTensors(src, back2);
        back2.close();
      } finally {
        src.close();
      }
    });
  }

  test('tied weights: each TinyStories file lists the name it stores', { skip: skipUnlessAsset('models/TinyStories-656K-bf16') || skipUnlessAsset('models/TinyStories-656K') }, () => {
    const f32 = openCheckpoint(mustAsset('models/TinyStories-656K'));
    const bf16 = openCheckpoint(mustAsset('models/TinyStories-656K-bf16'));
    try {
      assert.ok(f32.has('lm_head.weight') && !f32.has('model.embed_tokens.weight'));
      assert.ok(bf16.has('model.embed_tokens.weight') && !bf16.has('lm_head.weight'));
      // transformers records the dropped alias in the metadata; exposed for the engine.
      assert.equal(f32.metadata['model.embed_tokens.weight'], 'lm_head.weight');
      assert.deepEqual(f32.info('lm_head.weight'), { dtype: 'F32', shape: [2048, 128], file: SINGLE_FILE });
      assert.equal(bf16.get('model.embed_tokens.weight').dtype, 'bf16');
      assert.throws(() => bf16.get('lm_head.weight'), /no tensor named "lm_head.weight"/);
    } finally {
      f32.close();
      bf16.close();
    }
  });

  test('read speed of the largest asset checkpoint', { skip: skipUnlessAsset('models') }, (t) => {
    let largest = '';
    let size = 0;
    for (const m of models) {
      const s = statSync(join(mustAsset(`models/${m}`), SINGLE_FILE)).size;
      if (s > size) [largest, size] = [m, s];
    }
    const ck = openCheckpoint(mustAsset(`models/${largest}`));
    try {
      for (const n of ck.names()) ck.get(n); // warm the page cache
      const runs = 5;
      const t0 = performance.now();
      for (let r = 0; r < runs; r++) for (const n of ck.names()) ck.get(n);
      const sec = (performance.now() - t0) / 1000;
      const mbs = (ck.totalBytes() * runs) / 1e6 / sec;
      t.diagnostic(`${largest}: ${(ck.totalBytes() / 1e6).toFixed(1)} MB in ${ck.names().length} tensors, ${mbs.toFixed(0)} MB/s (page cache, ${runs} passes)`);
      assert.ok(mbs > 50, `read speed ${mbs.toFixed(0)} MB/s is implausibly low`);
    } finally {
      ck.close();
    }
  });
});

describe('checkpoint writer', () => {
  test('writes each tensor as it arrives (spilled to disk before the shard ends)', async () => {
    const dir = freshDir();
    const sizesSeen: number[] = [];
    async function* gen(): AsyncGenerator<NamedTensor> {
      for (let i = 0; i < 4; i++) {
        // Everything yielded so far must already be on disk in the temp data file.
        sizesSeen.push(readdirSync(dir).filter((f) => f.endsWith('.data')).reduce((a, f) => a + statSync(join(dir, f)).size, 0));
        yield { name: `t${i}`, tensor: tensor(256, i) };
        await new Promise((r) => setImmediate(r));
      }
    }
    const r = await writeCheckpoint(dir, gen());
    assert.deepEqual(sizesSeen, [0, 1024, 2048, 3072]);
    assert.deepEqual(r.files, [SINGLE_FILE]);
    const back = openCheckpoint(dir);
    assert.deepEqual(back.names(), ['t0', 't1', 't2', 't3']);
    assert.equal((back.get('t3').data as Float32Array)[255], 3);
    back.close();
  });

  test('a tensor larger than maxShardBytes gets its own shard', async () => {
    const dir = freshDir();
    const r = await writeCheckpoint(dir, [
      { name: 'a', tensor: tensor(10, 1) },
      { name: 'big', tensor: tensor(100, 2) },
      { name: 'b', tensor: tensor(10, 3) },
      { name: 'c', tensor: tensor(10, 4) },
    ], { maxShardBytes: 100 });
    assert.equal(r.files.length, 4);
    const index = JSON.parse(readFileSync(join(dir, INDEX_FILE), 'utf8'));
    assert.deepEqual(index.weight_map, {
      a: 'model-00001-of-00003.safetensors',
      b: 'model-00003-of-00003.safetensors',
      big: 'model-00002-of-00003.safetensors',
      c: 'model-00003-of-00003.safetensors',
    });
    assert.equal(index.metadata.total_size, 520);
  });

  test('failure in the producer removes the temp files', async () => {
    const dir = freshDir();
    async function* gen(): AsyncGenerator<NamedTensor> {
      yield { name: 'a', tensor: tensor(64, 1) };
      yield { name: 'b', tensor: tensor(64, 1) };
      throw new Error('converter exploded');
    }
    await assert.rejects(writeCheckpoint(dir, gen(), { maxShardBytes: 256 }), /converter exploded/);
    assert.deepEqual(readdirSync(dir), []);
  });

  test('refuses duplicates, an empty stream and a folder that already has weights', async () => {
    await assert.rejects(writeCheckpoint(freshDir(), [{ name: 'a', tensor: tensor(1, 0) }, { name: 'a', tensor: tensor(1, 0) }]), /tensor "a" was given twice/);
    await assert.rejects(writeCheckpoint(freshDir(), []), /no tensors to write/);
    const dir = freshDir();
    writeFileSync(join(dir, SINGLE_FILE), '');
    await assert.rejects(writeCheckpoint(dir, [{ name: 'a', tensor: tensor(1, 0) }]), /already holds checkpoint files \(model.safetensors\)/);
    await assert.rejects(writeCheckpoint(join(tmp, 'missing'), [{ name: 'a', tensor: tensor(1, 0) }]), /does not exist/);
  });
});

describe('checkpoint reader', () => {
  /** A 5-shard checkpoint with 2 tensors per shard. */
  async function fiveShards(): Promise<string> {
    const dir = freshDir();
    const list = Array.from({ length: 10 }, (_, i) => ({ name: `w${i}`, tensor: tensor(1000, i) }));
    const r = await writeCheckpoint(dir, list, { maxShardBytes: 8000 });
    assert.equal(r.files.length, 6);
    return dir;
  }

  test('opening a 5-shard model reads only the headers', async () => {
    const dir = await fiveShards();
    let read = 0;
    const original = fs.readSync;
    // Count every byte read through fs.readSync (named ESM imports follow after syncBuiltinESMExports).
    const spy = mock.method(fs, 'readSync', (...args: Parameters<typeof fs.readSync>) => {
      const n = original(...args);
      read += n;
      return n;
    });
    syncBuiltinESMExports();
    try {
      const ck = openCheckpoint(dir);
      const afterOpen = read;
      const headerBytes = ck.shardPaths().reduce((a, p) => {
        const f = openSafetensors(p);
        const h = 8 + f.headerLength;
        f.close();
        return a + h;
      }, 0);
      assert.equal(afterOpen, headerBytes, `open read ${afterOpen} bytes; the 5 headers (with length prefixes) are ${headerBytes}`);
      assert.equal(ck.shardPaths().length, 5);
      const before = read;
      assert.equal((ck.get('w7').data as Float32Array)[999], 7);
      assert.equal(read - before, 4000, 'get() reads exactly one tensor');
      ck.close();
      assert.throws(() => ck.get('w7'), /checkpoint is closed/);
    } finally {
      spy.mock.restore();
      syncBuiltinESMExports();
    }
  });

  function withIndex(weightMap: unknown, extra: Record<string, unknown> = {}): string {
    const dir = freshDir();
    writeSafetensors(join(dir, 'model-00001-of-00001.safetensors'), [{ name: 'a', tensor: tensor(2, 1) }]);
    writeFileSync(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: 8 }, weight_map: weightMap, ...extra }));
    return dir;
  }

  test('index naming ../ or an absolute path is refused', () => {
    assert.throws(() => openCheckpoint(withIndex({ a: '../evil.safetensors' })), (e: unknown) => e instanceof CheckpointError && /"\.\.\/evil\.safetensors" contains "\.\."/.test(e.message) && e.message.includes(INDEX_FILE));
    assert.throws(() => openCheckpoint(withIndex({ a: 'sub/../../evil.safetensors' })), /contains "\.\."/);
    assert.throws(() => openCheckpoint(withIndex({ a: '/etc/passwd' })), /"\/etc\/passwd" must be a relative path inside the folder/);
    assert.throws(() => openCheckpoint(withIndex({ a: '' })), /must be a relative path/);
  });

  test('index problems are named', () => {
    assert.throws(() => openCheckpoint(withIndex({ a: 'model-00002-of-00002.safetensors' })), /lists shard model-00002-of-00002\.safetensors, which is missing from/);
    assert.throws(() => openCheckpoint(withIndex({ a: 'model-00001-of-00001.safetensors', b: 'model-00001-of-00001.safetensors' })), /maps tensor "b" to model-00001-of-00001\.safetensors, but that shard does not contain it/);
    assert.throws(() => openCheckpoint(withIndex([1, 2])), /"weight_map" must be an object/);
    assert.throws(() => openCheckpoint(withIndex({ a: 3 })), /weight_map\["a"\] must be a file name string/);
    assert.throws(() => openCheckpoint(withIndex({})), /weight_map is empty/);
    const bad = freshDir();
    writeFileSync(join(bad, INDEX_FILE), '{"weight_map": ');
    assert.throws(() => openCheckpoint(bad), /model\.safetensors\.index\.json: not valid JSON/);
  });

  test('a valid hand-written index reads, with metadata exposed', () => {
    const ck = openCheckpoint(withIndex({ a: 'model-00001-of-00001.safetensors' }));
    assert.deepEqual(ck.names(), ['a']);
    assert.equal(ck.metadata.total_size, '8');
    assert.equal(ck.metadata.format, 'pt');
    ck.close();
  });

  test('folder without weights is refused, naming what it has', () => {
    const dir = freshDir();
    writeFileSync(join(dir, 'pytorch_model.bin'), '');
    assert.throws(() => openCheckpoint(dir), /has neither model\.safetensors nor model\.safetensors\.index\.json \(found pytorch_model\.bin: PyTorch pickles are not supported/);
    assert.throws(() => openCheckpoint(join(tmp, 'absent')), /does not exist/);
  });

  test('a single .safetensors file can be opened directly', () => {
    const dir = freshDir();
    writeSafetensors(join(dir, 'x.safetensors'), [{ name: 'a', tensor: tensor(3, 2) }]);
    const ck = openCheckpoint(join(dir, 'x.safetensors'));
    assert.equal(ck.info('a').file, 'x.safetensors');
    ck.close();
  });
});

describe('withAtomicDir', () => {
  test('success moves the folder into place, with no temp siblings left', async () => {
    const parent = freshDir();
    const out = join(parent, 'out');
    const r = await withAtomicDir(out, {}, async (t) => {
      assert.ok(t.startsWith(join(parent, '.out.tmp-')));
      writeFileSync(join(t, 'a.txt'), 'hello');
      return 42;
    });
    assert.equal(r, 42);
    assert.equal(readFileSync(join(out, 'a.txt'), 'utf8'), 'hello');
    assert.deepEqual(readdirSync(parent), ['out']);
  });

  test('failure in the body leaves no folder', async () => {
    const parent = freshDir();
    const out = join(parent, 'out');
    await assert.rejects(withAtomicDir(out, {}, async (t) => {
      writeFileSync(join(t, 'partial'), 'x');
      throw new Error('boom');
    }), /boom/);
    assert.deepEqual(readdirSync(parent), []);
  });

  test('failure with overwrite keeps the old folder intact', async () => {
    const parent = freshDir();
    const out = join(parent, 'out');
    mkdirSync(out);
    writeFileSync(join(out, 'old.txt'), 'old');
    await assert.rejects(withAtomicDir(out, { overwrite: true }, async (t) => {
      writeFileSync(join(t, 'new.txt'), 'new');
      throw new Error('boom');
    }), /boom/);
    assert.deepEqual(readdirSync(parent), ['out']);
    assert.deepEqual(readdirSync(out), ['old.txt']);
  });

  test('non-empty output is refused without overwrite, replaced with it', async () => {
    const parent = freshDir();
    const out = join(parent, 'out');
    mkdirSync(out);
    writeFileSync(join(out, 'old.txt'), 'old');
    let ran = false;
    await assert.rejects(withAtomicDir(out, {}, async () => { ran = true; }), (e: unknown) => e instanceof AtomicDirError && /exists and is not empty; pass --overwrite to replace it/.test(e.message));
    assert.equal(ran, false, 'refused before doing any work');
    await withAtomicDir(out, { overwrite: true }, async (t) => writeFileSync(join(t, 'new.txt'), 'new'));
    assert.deepEqual(readdirSync(out), ['new.txt']);
    assert.deepEqual(readdirSync(parent), ['out']);
  });

  test('an existing empty folder is filled without overwrite; missing parents are created', async () => {
    const parent = freshDir();
    mkdirSync(join(parent, 'empty'));
    await withAtomicDir(join(parent, 'empty'), {}, async (t) => writeFileSync(join(t, 'f'), ''));
    assert.deepEqual(readdirSync(join(parent, 'empty')), ['f']);
    await withAtomicDir(join(parent, 'a', 'b'), {}, async (t) => writeFileSync(join(t, 'f'), ''));
    assert.ok(existsSync(join(parent, 'a', 'b', 'f')));
  });

  test('refuses a file, and an output that is or contains the source', async () => {
    const parent = freshDir();
    writeFileSync(join(parent, 'file'), '');
    await assert.rejects(withAtomicDir(join(parent, 'file'), { overwrite: true }, async () => {}), /exists and is not a folder/);
    const src = join(parent, 'model');
    mkdirSync(src);
    await assert.rejects(withAtomicDir(src, { overwrite: true, source: src }, async () => {}), /is or contains an input/);
    await assert.rejects(withAtomicDir(parent, { overwrite: true, source: src }, async () => {}), /is or contains an input/);
    await assert.rejects(withAtomicDir(join(src, '.'), { overwrite: true, source: join(parent, 'model', '') }, async () => {}), /is or contains an input/);
    // Writing next to (or inside) the source is fine.
    await withAtomicDir(join(src, 'mla'), { source: src }, async (t) => writeFileSync(join(t, 'f'), ''));
    assert.ok(existsSync(join(src, 'mla', 'f')));
  });

  test('composes with writeCheckpoint and writeHfFolderExtras', { skip: skipUnlessAsset('models/kjv-gqa') }, async () => {
    const srcDir = mustAsset('models/kjv-gqa');
    const out = join(freshDir(), 'converted');
    const src = openCheckpoint(srcDir);
    try {
      await withAtomicDir(out, { source: srcDir }, async (t) => {
        await writeCheckpoint(t, streamOf(src), { maxShardBytes: 20e6 });
        const copied = writeHfFolderExtras(srcDir, t);
        assert.deepEqual(copied, ['generation_config.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
      });
    } finally {
      src.close();
    }
    for (const f of ['tokenizer.json', 'generation_config.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
      assert.ok(readFileSync(join(out, f)).equals(readFileSync(join(srcDir, f))), `${f} copied verbatim`);
    }
    assert.ok(!existsSync(join(out, 'training.json')) && !existsSync(join(out, 'config.json')));
    const back = openCheckpoint(out);
    assert.ok(back.shardPaths().length >= 2);
    back.close();
  });
});
