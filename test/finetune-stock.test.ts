// Fine-tuning a strict DeepSeek-V3 export keeps it stock: the same tensor set (the tied head the
// export writes as lm_head.weight is saved again, from the trained embedding), the same dtypes
// and config.json, the same validator verdicts, no extra *.safetensors where vLLM and SGLang would
// load it as weights, and its model card (with a fine-tuning section) and report.html. A resumed
// run keeps all of that too.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertToTarget } from '../src/export/targets.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { finetune } from '../src/train/finetune.js';
import { FINETUNE_HEADING } from '../src/train/card.js';
import { validatePath } from '../src/validate/validate.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-finetune-stock-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function tensors(dir: string): Map<string, { dtype: string; shape: number[] }> {
  const ck = openCheckpoint(dir);
  try {
    return new Map(ck.names().map((n) => [n, { dtype: ck.info(n).dtype, shape: ck.info(n).shape }]));
  } finally {
    ck.close();
  }
}

function bytesOf(dir: string, name: string): Buffer {
  const ck = openCheckpoint(dir);
  try {
    return Buffer.from(ck.getBytes(name));
  } finally {
    ck.close();
  }
}

describe('finetune of a strict DeepSeek-V3 export', { skip: skipUnlessAsset('models/TinyStories-656K') }, () => {
  let stock: string, text: string;
  before(async () => {
    const calib = mustAsset('text/tinystories/tinystories_train_lowercased_sample.txt');
    text = join(tmp, 'train.txt');
    writeFileSync(text, readFileSync(mustAsset('text/tinystories/tinystories_val_sample.txt'), 'utf8').split('\n\n').slice(0, 40).join('\n\n'));
    stock = join(tmp, 'ds3');
    await convertToTarget(
      { model: mustAsset('models/TinyStories-656K'), out: stock, kvLoraRank: 8, ropeDim: 4, freqFold: 4, calib, calibSamples: 4, calibSeqLen: 32, evalTexts: [{ path: text, mode: 'file' }], evalCtx: 32, evalChunks: 1 },
      { target: 'deepseek-v3' },
    );
  });

  const opts = { text: '', steps: 2, batch: 1, seqLen: 32, evalCtx: 32, evalChunks: 1, lr: 1e-3, train: 'all' as const, progress: false };

  it('keeps the tensor set, dtypes, config.json, validator verdicts, model card and report', async () => {
    const out = join(tmp, 'ft');
    await finetune({ ...opts, text, model: stock, out });
    const before = tensors(stock), after = tensors(out);
    assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
    for (const [n, t] of before) assert.deepEqual(after.get(n), t, n);
    assert.ok(before.has('lm_head.weight') && before.has('model.embed_tokens.weight'));
    // The tied head is the trained embedding, written again (and training did change it).
    assert.ok(bytesOf(out, 'lm_head.weight').equals(bytesOf(out, 'model.embed_tokens.weight')));
    assert.ok(!bytesOf(out, 'lm_head.weight').equals(bytesOf(stock, 'lm_head.weight')));
    assert.equal(readFileSync(join(out, 'config.json'), 'utf8'), readFileSync(join(stock, 'config.json'), 'utf8'));
    // The validator says of the fine-tuned folder what it says of the export.
    const vs = validatePath(stock), vf = validatePath(out);
    assert.equal(vf.ok, vs.ok);
    assert.deepEqual(vf.engines.map((e) => [e.engine, e.loads, e.correct]), vs.engines.map((e) => [e.engine, e.loads, e.correct]));
    assert.deepEqual(vf.findings.map((f) => f.rule), vs.findings.map((f) => f.rule));
    // Only the model's weights are *.safetensors at the top (stock loaders glob them).
    assert.deepEqual(readdirSync(out).filter((f) => f.endsWith('.safetensors')), ['model.safetensors']);
    assert.ok(existsSync(join(out, 'trainer', 'optimizer.safetensors')));
    // The card: the export's, plus one fine-tuning section; the report is drawn again.
    const card = readFileSync(join(out, 'README.md'), 'utf8');
    assert.ok(card.startsWith(readFileSync(join(stock, 'README.md'), 'utf8').trimEnd()));
    assert.equal(card.split(FINETUNE_HEADING).length, 2);
    assert.match(card, /\| 2 \| \d+\.\d{4} \|/);
    assert.match(readFileSync(join(out, 'report.html'), 'utf8'), /Strict DeepSeek-V3 export/);
  });

  it('a resumed run keeps them too (one fine-tuning section in the card)', async () => {
    const out = join(tmp, 'ft-resume');
    await finetune({ ...opts, text, model: stock, out, stopAt: 1 });
    await finetune({ resume: out, progress: false });
    assert.deepEqual([...tensors(out).keys()].sort(), [...tensors(stock).keys()].sort());
    assert.ok(bytesOf(out, 'lm_head.weight').equals(bytesOf(out, 'model.embed_tokens.weight')));
    const card = readFileSync(join(out, 'README.md'), 'utf8');
    assert.equal(card.split(FINETUNE_HEADING).length, 2);
    assert.match(card, /fine-tuned for 2 steps/);
    // Resuming equals the uninterrupted run.
    assert.ok(bytesOf(out, 'model.embed_tokens.weight').equals(bytesOf(join(tmp, 'ft'), 'model.embed_tokens.weight')));
  });
});
