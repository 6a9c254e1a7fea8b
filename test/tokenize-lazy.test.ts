// Lazy tokenization (tokenizeEnough) gives the ids of the whole text for the prefix it covers,
// on the shared texts with each shared tokenizer; encodeAsync (the Rust binding) gives the same
// ids as encode (the JS library), and falls back to it when the binding is switched off.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { readEvalText, tokenizeEnough, type TextMode } from '../src/eval/perplexity.js';
import { loadTokenizer, type TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { nativeTokenizersUnavailable } from '../src/tokenizer/native-tokenizers.js';
import { assetPath, REPO_ROOT } from './helpers/assets.js';

const TOKENIZERS = ['models/kjv-gqa', 'models/TinyStories-656K', 'models/stories260K/tok512.bin'];
const TEXTS: [string, TextMode][] = [
  ['text/kjv-new-testament-eval.txt', 'file'],
  ['text/kjv-new-testament-eval.jsonl', 'jsonl'],
  ['text/tinystories/tinystories_val_sample.txt', 'file'],
  ['text/wikitext-2-raw/wiki.test.raw', 'lines'],
];
const missing = [...TOKENIZERS, ...TEXTS.map((t) => t[0])].filter((p) => assetPath(p) === null);
const skip = missing.length > 0 ? `assets missing: ${missing.join(', ')}` : false;

describe('tokenizeEnough', { skip }, () => {
  for (const tp of TOKENIZERS) {
    test(`${tp}: the first N ids equal the whole text's, from a prefix cut at a document boundary`, async () => {
      const tok: TextTokenizer = loadTokenizer(assetPath(tp)!);
      for (const [path, mode] of TEXTS) {
        // The llama2.c tokenizer is our own (slower) encoder: a 60 kB slice keeps this quick.
        const { text: full } = readEvalText(assetPath(path)!, mode);
        const text = tok.kind === 'llama2c' ? full.slice(0, 60_000) : full;
        const whole = await tok.encodeAsync(text, { addBos: tok.addBosByDefault });
        for (const need of tok.kind === 'llama2c' ? [100, 2048] : [100, 2048, 16_384]) {
          const r = await tokenizeEnough(tok, text, need);
          assert.equal(r.complete, false, `${path} need ${need}`);
          assert.ok(r.chars < text.length && text.startsWith('\n\n', r.chars), `${path}: cut at a document boundary`);
          assert.ok(r.ids.length >= need, `${path}: ${r.ids.length} ≥ ${need}`);
          assert.deepEqual(r.ids.slice(0, need), whole.slice(0, need), `${tp} × ${path}, need ${need}`);
          assert.equal(r.bos, tok.addBosByDefault);
        }
        const all = await tokenizeEnough(tok, text, undefined);
        assert.deepEqual([all.complete, all.chars, all.ids.length], [true, text.length, whole.length]);
      }
    });
  }

  test('a text shorter than what is needed is tokenized whole; no BOS when asked', async () => {
    const tok = loadTokenizer(assetPath('models/kjv-gqa')!);
    const r = await tokenizeEnough(tok, 'In the beginning.\n\nAnd the earth.', 10_000, false);
    assert.equal(r.complete, true);
    assert.deepEqual(r.ids, tok.encode('In the beginning.\n\nAnd the earth.', { addBos: false }));
  });
});

describe('encodeAsync', { skip }, () => {
  test('the Rust binding is in use and gives the JS library\'s ids', async () => {
    assert.equal(nativeTokenizersUnavailable(), null);
    for (const tp of ['models/kjv-gqa', 'models/TinyStories-656K']) {
      const tok = loadTokenizer(assetPath(tp)!);
      for (const [path, mode] of TEXTS) {
        const text = readEvalText(assetPath(path)!, mode).text.slice(0, 30_000);
        assert.deepEqual(await tok.encodeAsync(text, { addBos: true }), tok.encode(text, { addBos: true }), `${tp} × ${path}`);
      }
      assert.deepEqual(await tok.encodeAsync('', { addBos: true }), tok.encode('', { addBos: true }));
    }
  });

  test('TRANSMLA_TOKENIZERS=js falls back to the JS library with the same ids', () => {
    const script = `
      import { loadTokenizer } from ${JSON.stringify(join(REPO_ROOT, 'src/tokenizer/tokenizer.ts'))};
      import { nativeTokenizersUnavailable } from ${JSON.stringify(join(REPO_ROOT, 'src/tokenizer/native-tokenizers.ts'))};
      const tok = loadTokenizer(${JSON.stringify(assetPath('models/kjv-gqa'))});
      const ids = await tok.encodeAsync('And God said, Let there be light: and there was light.', { addBos: true });
      console.log(JSON.stringify({ why: nativeTokenizersUnavailable(), ids }));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, TRANSMLA_TOKENIZERS: 'js' } });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout) as { why: string; ids: number[] };
    assert.equal(got.why, 'TRANSMLA_TOKENIZERS=js');
    const tok = loadTokenizer(assetPath('models/kjv-gqa')!);
    assert.deepEqual(got.ids, tok.encode('And God said, Let there be light: and there was light.', { addBos: true }));
  });
});
