// Every command that writes checks its output before computing (issue 19, item 5). Each case
// gives an unusable output (a non-empty folder, an existing file, a folder where a file goes)
// together with inputs that fail only once the work reads them — weights holding a NaN, a token
// file or tokenizer that does not parse, a model llama2.c cannot express — so the command must
// answer with the output's problem: had it started computing, another error would come first.
// A Hub model is not even fetched when the output is unusable (the fake Hub logs no request).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../src/cli/run.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import type { Tensor } from '../src/tensor.js';
import { capture } from './helpers/capture.js';
import { startFakeHub, type FakeHub } from './helpers/fake-hub.js';
import { randomLlama } from './helpers/random-llama.js';
import { randomMla } from './helpers/random-train.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-output-first-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function cli(argv: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number; err: string }> {
  const old = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(env)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  try {
    const r = await capture(() => runCli(argv));
    return { code: r.value, err: r.err };
  } finally {
    for (const [k, v] of Object.entries(old)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  }
}

/** A folder with the tensors of `src`, one of them poisoned with a NaN, and TinyStories' tokenizer. */
async function poisoned(name: string, json: Record<string, unknown>, map: Map<string, Tensor>, victim: string): Promise<string> {
  const dir = join(tmp, name);
  mkdirSync(dir);
  const t = map.get(victim)!;
  const data = (t.data as Float32Array).slice();
  data[0] = Number.NaN;
  await writeCheckpoint(dir, [...map].map(([n, tensor]) => ({ name: n, tensor: n === victim ? { ...t, data } : tensor })));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(json));
  writeHfFolderExtras(mustAsset('models/TinyStories-656K'), dir);
  return dir;
}

describe('writing commands refuse an unusable output before computing', { skip: skipUnlessAsset('models/TinyStories-656K') }, () => {
  let llama: string, exact: string, qwen: string, full: string, file: string, emptyDir: string, calib: string, tokens: string, badBin: string, badTok: string;
  before(async () => {
    const l = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, inter: 48, vocab: 2048, layers: 2, seed: 1 });
    llama = await poisoned('llama', l.json, l.src.map, 'model.layers.1.mlp.down_proj.weight');
    const m = randomMla({ hidden: 32, heads: 4, inter: 48, vocab: 2048, layers: 2, nope: 8, rope: 8, v: 8, rank: 16, seed: 2 });
    exact = await poisoned('exact', m.json, m.src.map, 'model.layers.1.mlp.down_proj.weight');
    writeFileSync(join(exact, 'transmla.json'), JSON.stringify({ tool: 'transmla', variant: 'exact', calibration: {} }));
    const q = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, inter: 48, vocab: 2048, layers: 1, modelType: 'qwen2', seed: 3 });
    qwen = await poisoned('qwen', q.json, q.src.map, 'model.norm.weight');
    full = join(tmp, 'full');
    mkdirSync(full);
    writeFileSync(join(full, 'keep.txt'), 'not empty');
    file = join(tmp, 'existing.bin');
    writeFileSync(file, 'x');
    emptyDir = join(tmp, 'a-folder');
    mkdirSync(emptyDir);
    calib = join(tmp, 'calib.txt');
    writeFileSync(calib, Array.from({ length: 20 }, (_, i) => `Once upon a time there was a dog number ${i}. It liked to run in the park.`).join('\n\n'));
    tokens = join(tmp, 'tokens.bin');
    writeFileSync(tokens, Buffer.from([1, 2, 3]));
    badBin = join(tmp, 'model.bin');
    writeFileSync(badBin, Buffer.alloc(12));
    badTok = join(tmp, 'tok.bin');
    writeFileSync(badTok, Buffer.alloc(3));
  });

  const notEmpty = /exists and is not empty; pass --overwrite to replace it/;
  const cases: [string, () => string[], RegExp][] = [
    ['convert', () => ['convert', llama, '--out', full, '--kv-fraction', '0.5', '--calib', calib], notEmpty],
    ['convert --method mha2mla', () => ['convert', llama, '--method', 'mha2mla', '--out', full, '--kv-fraction', '0.5', '--calib', calib], notEmpty],
    ['convert --target deepseek-v3', () => ['convert', llama, '--out', full, '--kv-fraction', '0.5', '--calib', calib, '--target', 'deepseek-v3'], notEmpty],
    ['convert --target gguf (a folder where the file goes)', () => ['convert', llama, '--out', emptyDir, '--kv-fraction', '0.5', '--calib', calib, '--target', 'gguf', '--overwrite'], /output path is a folder; give a file path/],
    ['export --target deepseek-v3', () => ['export', exact, '--target', 'deepseek-v3', '--out', full, '--calib', calib], notEmpty],
    ['export --target gguf (a folder where the file goes, even with --overwrite)', () => ['export', exact, '--target', 'gguf', '--out', emptyDir, '--calib', calib, '--overwrite'], /output path is a folder; give a file path/],
    ['export --target gguf (an existing file)', () => ['export', exact, '--target', 'gguf', '--out', file, '--calib', calib], /output file exists; pass --overwrite/],
    ['finetune', () => ['finetune', llama, '--tokens', tokens, '--out', full, '--steps', '1'], notEmpty],
    ['import-llama2c', () => ['import-llama2c', badBin, '--tokenizer', badTok, '--out', full], notEmpty],
    ['export-llama2c', () => ['export-llama2c', qwen, '--out', file], /output file exists; pass --overwrite/],
    ['sweep', () => ['sweep', llama, '--kv-fractions', '0.5', '--calib', calib, '--out', full], notEmpty],
    ['bench --out (a folder where the file goes)', () => ['bench', llama, '--out', emptyDir, '--no-llamacpp', '--no-compare', '--contexts', '8', '--decode-tokens', '1', '--reps', '1'], /output path is a folder; give a file path/],
  ];
  for (const [name, argv, want] of cases) {
    it(name, async () => {
      const r = await cli(argv());
      assert.equal(r.code, 1, r.err);
      assert.match(r.err, want);
      assert.equal(r.err.trim().split('\n').length, 1, `one line: ${r.err}`);
    });
  }

  describe('a Hub model is not fetched when the output is unusable', () => {
    let hub: FakeHub;
    const C = 'c'.repeat(40);
    before(async () => { hub = await startFakeHub({ 'someone/tiny': { commits: { [C]: llama }, refs: { main: C } } }); });
    after(() => hub.close());
    const hubCases: [string, string[], RegExp][] = [
      ['convert', ['convert', 'someone/tiny', '--out', '<full>', '--kv-fraction', '0.5', '--calib', '<calib>'], notEmpty],
      ['export', ['export', 'someone/tiny', '--target', 'gguf', '--out', '<dir>', '--overwrite'], /is a folder/],
      ['finetune', ['finetune', 'someone/tiny', '--tokens', '<tokens>', '--out', '<full>'], notEmpty],
      ['export-llama2c', ['export-llama2c', 'someone/tiny', '--out', '<file>'], /exists; pass --overwrite/],
      ['sweep', ['sweep', 'someone/tiny', '--kv-fractions', '0.5', '--calib', '<calib>', '--out', '<full>'], notEmpty],
      ['bench', ['bench', 'someone/tiny', '--out', '<dir>', '--no-llamacpp'], /is a folder/],
    ];
    for (const [name, argv, want] of hubCases) {
      it(name, async () => {
        const subst: Record<string, string> = { '<full>': full, '<calib>': calib, '<dir>': emptyDir, '<tokens>': tokens, '<file>': file };
        const before = hub.requests.length;
        const r = await cli(argv.map((a) => subst[a] ?? a), { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(tmp, 'hf-cache'), HF_HUB_OFFLINE: undefined, HF_TOKEN: undefined });
        assert.equal(r.code, 1, r.err);
        assert.match(r.err, want);
        assert.equal(hub.requests.length, before, `requests sent: ${JSON.stringify(hub.requests.slice(before))}`);
      });
    }
  });
});
