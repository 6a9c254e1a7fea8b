// Hostile and unlucky inputs for the writing commands and the converter:
// - --out safety: every writing command refuses a non-empty output without overwrite, an
//   output that is a file, and an output that is (or contains) one of its inputs; the input
//   survives byte for byte;
// - numerics: NaN/Inf weights are refused at load with the tensor and file, non-finite
//   calibration statistics with the layer and statistic, non-finite eigh input with an error;
// - determinism: the same inputs and seed give byte-identical folders (timings aside).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { convertModel } from '../src/convert/transmla.js';
import { convertMha2mla } from '../src/convert/mha2mla.js';
import { convertStreaming } from '../src/convert/transmla.js';
import { runSweep } from '../src/convert/sweep.js';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { NonFiniteError } from '../src/io/finite.js';
import { exportLlama2c, importLlama2c } from '../src/export/llama2c.js';
import { kernels } from '../src/kernels/index.js';
import { loadModel } from '../src/arch/load.js';
import type { Tensor } from '../src/tensor.js';
import { finetune } from '../src/train/finetune.js';
import { mustAsset, REPO_ROOT, skipUnlessAsset } from './helpers/assets.js';
import { randomLlama, toBf16Bits } from './helpers/random-llama.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-reliability-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const skip = skipUnlessAsset('models/TinyStories-656K') || skipUnlessAsset('models/stories260K') || skipUnlessAsset('text/tinystories/tinystories_val_sample.txt');

let n = 0;
const fresh = (name: string): string => {
  const d = join(tmp, `${name}-${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
};

/** Every file under dir → its bytes (base64), sorted by path. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`);
      else out[`${rel}${e.name}`] = readFileSync(join(d, e.name)).toString('base64');
    }
  };
  walk(dir, '');
  return out;
}

/** A writable copy of TinyStories-656K at parent/model, plus a small calibration text beside it. */
function modelCopy(): { parent: string; model: string; calib: string } {
  const parent = fresh('parent');
  const model = join(parent, 'model');
  mkdirSync(model);
  const src = mustAsset('models/TinyStories-656K');
  for (const f of readdirSync(src)) copyFileSync(join(src, f), join(model, f));
  const calib = join(parent, 'calib.txt');
  writeFileSync(calib, readFileSync(mustAsset('text/tinystories/tinystories_val_sample.txt'), 'utf8').slice(0, 40_000));
  return { parent, model, calib };
}

const small = { calibSamples: 2, calibSeqLen: 16, evalCtx: 16, evalChunks: 1, seed: 3 };

describe('--out safety of every writing command', { skip }, () => {
  const m = modelCopy();
  // import-llama2c's inputs, beside the model so "the parent of an input" can be tried.
  copyFileSync(mustAsset('models/stories260K/stories260K.bin'), join(m.parent, 's.bin'));
  copyFileSync(mustAsset('models/stories260K/tok512.bin'), join(m.parent, 'tok512.bin'));
  const before = snapshot(m.parent);
  after(() => assert.deepEqual(snapshot(m.parent), before, 'the inputs are untouched'));

  const nonEmpty = (): string => {
    const d = fresh('nonempty');
    writeFileSync(join(d, 'keep.txt'), 'keep');
    return d;
  };
  const aFile = (): string => {
    const p = join(fresh('file'), 'out');
    writeFileSync(p, 'a file');
    return p;
  };
  const NOT_EMPTY = /exists and is not empty/;
  const NOT_FOLDER = /exists and is not a folder/;
  const IS_INPUT = /is or contains an input/;

  // Each writer as (out, overwrite) → promise; all refusals come before any output is written.
  const writers: Record<string, (out: string, overwrite: boolean) => Promise<unknown>> = {
    convert: (out, overwrite) => convertModel({ variant: 'exact', model: m.model, out, overwrite, kvFraction: 0.5, ropeDim: 8, freqFold: 2, calib: m.calib, ...small }),
    'convert --method mha2mla': (out, overwrite) => convertMha2mla({ model: m.model, out, overwrite, kvFraction: 0.5, calib: m.calib, ...small }),
    'import-llama2c': (out, overwrite) => importLlama2c(join(m.parent, 's.bin'), join(m.parent, 'tok512.bin'), out, { overwrite }),
    sweep: (out, overwrite) => runSweep({ model: m.model, fractions: [0.5], methods: ['transmla'], out, overwrite, convert: { calib: m.calib, freqFold: 2, ...small } }),
    finetune: (out, overwrite) => finetune({ model: m.model, text: m.calib, out, overwrite, steps: 1, batch: 1, seqLen: 16, evalChunks: 1, evalCtx: 16, progress: false }),
  };

  for (const [name, write] of Object.entries(writers)) {
    test(`${name}: refuses a non-empty --out without overwrite, a file, the model folder and its parent`, async () => {
      const ne = nonEmpty();
      await assert.rejects(write(ne, false), NOT_EMPTY);
      assert.deepEqual(readdirSync(ne), ['keep.txt']);
      await assert.rejects(write(aFile(), true), NOT_FOLDER);
      // import-llama2c reads files in the parent folder, not the HF model folder.
      if (name !== 'import-llama2c') await assert.rejects(write(m.model, true), IS_INPUT);
      await assert.rejects(write(m.parent, true), IS_INPUT);
    });
  }

  test('CLI: convert --out <the model folder> --overwrite exits 1 with one line naming the input, before loading', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts'), 'convert', m.model, '--out', m.model, '--overwrite',
      '--kv-fraction', '0.5', '--calib', m.calib], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    // (A stale native addon may add a warning line first.)
    assert.match(r.stderr, /(^|\n)transmla convert: output .* is or contains an input \(.*model\); choose another output folder\n$/);
  });

  test('convert also refuses an output that contains its calibration text', async () => {
    const d = fresh('calib-inside');
    const calib = join(d, 'calib.txt');
    copyFileSync(m.calib, calib);
    await assert.rejects(convertModel({ variant: 'exact', model: m.model, out: d, overwrite: true, kvFraction: 0.5, ropeDim: 8, freqFold: 2, calib, ...small }), IS_INPUT);
    assert.deepEqual(readdirSync(d), ['calib.txt']);
  });

  test('export-llama2c: refuses an existing file without overwrite, a folder, and writing over its own input files', () => {
    const d = fresh('export');
    const exists = join(d, 'model.bin');
    writeFileSync(exists, 'old');
    assert.throws(() => exportLlama2c(m.model, exists), /output file exists; pass --overwrite to replace it/);
    assert.equal(readFileSync(exists, 'utf8'), 'old');
    assert.throws(() => exportLlama2c(m.model, d, { overwrite: true }), /output path is a folder/);
    assert.throws(() => exportLlama2c(m.model, join(m.model, 'model.safetensors'), { overwrite: true }), /output is an input of the export/);
    assert.throws(() => exportLlama2c(m.model, join(m.model, 'config.json'), { overwrite: true }), /output is an input of the export/);
    // Beside the model is fine.
    exportLlama2c(m.model, join(d, 'fresh.bin'));
  });
});

describe('non-finite numbers', () => {
  async function writeModel(dir: string, dtype: 'f32' | 'bf16', poison: (name: string, t: Tensor) => void): Promise<void> {
    const r = randomLlama({ hidden: 16, heads: 2, kvHeads: 1, inter: 24, vocab: 32, layers: 2, dtype, seed: 5 });
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify(r.json));
    const tensors = r.src.names().map((name) => {
      const t = r.src.get(name);
      poison(name, t);
      return { name, tensor: t };
    });
    await writeCheckpoint(dir, tensors, { maxShardBytes: 4096 });
  }

  test('a NaN weight (f32) is refused at load, naming the tensor and its shard file', async () => {
    const dir = fresh('nan-f32');
    await writeModel(dir, 'f32', (name, t) => {
      if (name === 'model.layers.1.mlp.up_proj.weight') (t.data as Float32Array)[7] = NaN;
    });
    assert.throws(() => loadModel(dir), (e: unknown) => {
      assert.ok(e instanceof NonFiniteError, String(e));
      assert.match(e.message, /model-\d{5}-of-\d{5}\.safetensors: tensor "model\.layers\.1\.mlp\.up_proj\.weight" holds NaN \(element 7 of/);
      return true;
    });
  });

  test('an Inf weight (bf16) is refused at load', async () => {
    const dir = fresh('inf-bf16');
    await writeModel(dir, 'bf16', (name, t) => {
      if (name === 'model.layers.0.self_attn.k_proj.weight') (t.data as Uint16Array)[3] = toBf16Bits(-Infinity);
    });
    assert.throws(() => loadModel(dir), /tensor "model\.layers\.0\.self_attn\.k_proj\.weight" holds -Infinity \(element 3 of/);
  });

  test('overflowing activations: the conversion stops naming the layer and the statistic', { skip }, async () => {
    // Finite weights, but layer 1's MLP output overflows f32, so layer 2's input statistics are not finite.
    const m = modelCopy();
    const dir = fresh('overflow');
    const ck = openCheckpoint(m.model);
    const tensors = ck.names().map((name) => {
      const t = ck.get(name);
      if (name === 'model.layers.0.mlp.down_proj.weight') {
        const f = Float32Array.from(t.data as Float32Array, (x) => x * 1e37);
        return { name, tensor: { ...t, data: f } };
      }
      return { name, tensor: t };
    });
    await writeCheckpoint(dir, tensors);
    ck.close();
    for (const f of readdirSync(m.model)) if (!f.endsWith('.safetensors')) copyFileSync(join(m.model, f), join(dir, f));
    await assert.rejects(
      convertModel({ variant: 'exact', model: dir, out: null, kvFraction: 0.5, ropeDim: 8, freqFold: 2, calib: m.calib, ...small }),
      (e: unknown) => {
        assert.ok(e instanceof NonFiniteError, String(e));
        assert.match(e.message, /^calibration pass 1 \(original model\), layer 2\/2: the second moment .* of the attention input holds (NaN|Infinity|-Infinity)/);
        return true;
      },
    );
  });

  test('eigh refuses a non-finite matrix', () => {
    assert.throws(() => kernels().eigh(new Float64Array([1, NaN, NaN, 1]), 2), /finite/);
  });
});

describe('determinism', { skip }, () => {
  test('convert twice with the same inputs and seed: byte-identical folders except timings', async () => {
    const m = modelCopy();
    const run = async (out: string): Promise<void> => {
      await convertModel({ variant: 'exact', model: m.model, out, kvFraction: 0.5, freqFold: 'auto', calib: m.calib, searchChunks: 1, ...small });
    };
    const a = join(fresh('det'), 'a'), b = join(fresh('det'), 'b');
    await run(a);
    await run(b);
    const sa = snapshot(a), sb = snapshot(b);
    assert.deepEqual(Object.keys(sa), Object.keys(sb));
    for (const f of Object.keys(sa)) {
      if (f === 'transmla.json' || f === 'report.html') continue;
      assert.equal(sa[f], sb[f], `${f} differs`);
    }
    // transmla.json: everything but wall-clock fields and the output path.
    const strip = (dir: string): unknown => {
      const j = JSON.parse(readFileSync(join(dir, 'transmla.json'), 'utf8')) as Record<string, unknown>;
      for (const k of ['created', 'seconds', 'peakRssBytes', 'output']) delete j[k];
      return j;
    };
    assert.deepEqual(strip(a), strip(b));
  });

  for (const variant of [{ calibOrder: 'faithful' as const }, { calibOrder: 'sequential' as const, qLoraRank: 24 }]) {
    test(`streaming conversion (--no-eval, ${variant.calibOrder}${variant.qLoraRank ? ', q-lora' : ''}) writes the same bytes as the in-memory one`, async () => {
      const m = modelCopy();
      const opts = { model: m.model, kvFraction: 0.5, ropeDim: 8, freqFold: 2, calib: m.calib, ...small, ...variant };
      const a = join(fresh('stream'), 'a'), b = join(fresh('stream'), 'b');
      const ra = await convertModel({ variant: 'exact', ...opts, out: a });
      const rb = await convertStreaming({ variant: 'exact', ...opts, out: b });
      const sa = snapshot(a), sb = snapshot(b);
      assert.deepEqual(Object.keys(sb).filter((f) => f !== 'report.html'), Object.keys(sa).filter((f) => f !== 'report.html'));
      for (const f of Object.keys(sa)) if (f !== 'transmla.json' && f !== 'report.html') assert.equal(sb[f], sa[f], `${f} differs`);
      assert.deepEqual(rb.layers, ra.layers);
      assert.deepEqual({ ...rb.parameters, freqFoldRequested: 0, ropeDimRequested: 0 }, { ...ra.parameters, freqFoldRequested: 0, ropeDimRequested: 0 });
      assert.deepEqual(rb.evaluations, []);
    });
  }
});
