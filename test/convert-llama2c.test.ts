// `convert` takes a llama2.c .bin as its <model> (issue 19, item 11): the checkpoint is imported
// into a temporary Hugging Face folder (removed afterwards) and converted from there, so the
// result is byte for byte the conversion of `import-llama2c`'s folder, while transmla.json
// records the .bin as the source. Without a tokenizer beside it, one line says what to pass.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runCli } from '../src/cli/run.js';
import { loadModel } from '../src/arch/load.js';
import { capture } from './helpers/capture.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-convert-llama2c-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function cli(argv: string[]): Promise<{ code: number; err: string }> {
  const r = await capture(() => runCli(argv));
  return { code: r.value, err: r.err };
}

describe('convert of a llama2.c checkpoint', { skip: skipUnlessAsset('models/stories260K/stories260K.bin') || skipUnlessAsset('text/tinystories/tinystories_val_sample.txt') }, () => {
  let bin: string, evalText: string, calib: string;
  const shape = ['--kv-fraction', '0.5', '--rope-dim', '4', '--freqfold', '2', '--calib-samples', '8', '--calib-seqlen', '64', '--eval-ctx', '64', '--eval-chunks', '3'];
  before(() => {
    bin = mustAsset('models/stories260K/stories260K.bin');
    calib = mustAsset('text/tinystories/tinystories_train_lowercased_sample.txt');
    evalText = join(tmp, 'eval.txt');
    writeFileSync(evalText, readFileSync(mustAsset('text/tinystories/tinystories_val_sample.txt'), 'utf8').slice(0, 20_000));
  });

  it('converts it in memory, as the imported folder converts, and records the .bin', async () => {
    const leftovers = (): string[] => readdirSync(tmpdir()).filter((n) => n.startsWith('transmla-llama2c-'));
    const before = new Set(leftovers());
    const out = join(tmp, 'from-bin');
    const r = await cli(['convert', bin, '--out', out, '--calib', calib, '--eval-text', evalText, ...shape]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(leftovers().filter((n) => !before.has(n)), [], 'the temporary HF folder is removed');
    const report = JSON.parse(readFileSync(join(out, 'transmla.json'), 'utf8')) as { source: { path: string }; evaluations: { stock: { ppl: number } }[] };
    assert.equal(report.source.path, resolve(bin));
    // The same conversion of the folder import-llama2c writes.
    const hf = join(tmp, 'imported');
    assert.equal((await cli(['import-llama2c', bin, '--tokenizer', mustAsset('models/stories260K/tok512.bin'), '--out', hf])).code, 0);
    const out2 = join(tmp, 'from-folder');
    assert.equal((await cli(['convert', hf, '--out', out2, '--calib', calib, '--eval-text', evalText, ...shape])).code, 0);
    assert.ok(readFileSync(join(out, 'model.safetensors')).equals(readFileSync(join(out2, 'model.safetensors'))));
    const report2 = JSON.parse(readFileSync(join(out2, 'transmla.json'), 'utf8')) as typeof report;
    assert.equal(report.evaluations[0]!.stock.ppl, report2.evaluations[0]!.stock.ppl);
    // The default output: the stock DeepSeek-V3 folder.
    assert.equal(loadModel(out).mla?.semantics, 'stock');
  });

  it('--method mha2mla takes it too', async () => {
    const out = join(tmp, 'm2');
    const r = await cli(['convert', bin, '--method', 'mha2mla', '--out', out, '--calib', calib, '--kv-fraction', '0.5', '--calib-samples', '8', '--calib-seqlen', '64', '--eval-text', evalText, '--eval-ctx', '64', '--eval-chunks', '2']);
    assert.equal(r.code, 0, r.err);
    assert.equal((JSON.parse(readFileSync(join(out, 'transmla.json'), 'utf8')) as { source: { path: string } }).source.path, resolve(bin));
  });

  it('without a tokenizer beside it, one line says what to pass', async () => {
    const dir = join(tmp, 'lonely');
    mkdirSync(dir);
    copyFileSync(bin, join(dir, 'model.bin'));
    const r = await cli(['convert', join(dir, 'model.bin'), '--out', join(tmp, 'never'), '--calib', calib, ...shape]);
    assert.equal(r.code, 1);
    assert.match(r.err, /needs its tokenizer to be converted: put tokenizer\.bin beside it or pass --tokenizer FILE/);
    assert.equal(r.err.trim().split('\n').length, 1);
  });
});
