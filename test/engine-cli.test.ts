// The inspect / ppl / generate commands, run in-process on the small TinyStories checkpoint.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commands } from '../src/cli/commands.js';
import { UsageError } from '../src/cli/args.js';
import { defaultPplContext, perplexity, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { loadModel } from '../src/arch/load.js';
import type { Decoder } from '../src/models/decoder.js';
import { assetPath } from './helpers/assets.js';
import { capture as captureIo } from './helpers/capture.js';

async function captureAll(fn: () => Promise<unknown>): Promise<{ out: string; err: string }> {
  const r = await captureIo(fn);
  return { out: r.out, err: r.err };
}

/** Runs a command, capturing what it writes to stdout. */
async function capture(name: string, argv: string[]): Promise<string> {
  const cmd = await commands[name]!();
  let out = '';
  const write = process.stdout.write.bind(process.stdout);
  const log = console.log;
  process.stdout.write = ((s: string | Uint8Array, ...rest: unknown[]) => {
    out += typeof s === 'string' ? s : Buffer.from(s).toString();
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  }) as typeof process.stdout.write;
  console.log = (...a: unknown[]) => { out += a.join(' ') + '\n'; };
  try {
    await cmd.run(argv);
  } finally {
    process.stdout.write = write;
    console.log = log;
  }
  return out;
}

const model = assetPath('models/TinyStories-656K');
const skip = model ? false : 'asset models/TinyStories-656K missing';

describe('engine commands', { skip }, () => {
  it('inspect reports heads, parameters and KV bytes per token', async () => {
    const text = await capture('inspect', [model!]);
    assert.match(text, /GQA: 8 heads \/ 4 KV heads, head_dim 16/);
    assert.match(text, /656\.0 K \(656,000\)/);
    // 2 layers · 2 · 4 KV heads · 16 · 4 bytes (f32 checkpoint)
    assert.match(text, /1,024 B\/token at f32/);
    assert.match(text, /4K context: 4\.00 MiB {3}32K context: 32\.0 MiB/);
    const json = JSON.parse(await capture('inspect', [model!, '--json'])) as { kvCache: { bytesPerToken: number }; params: number };
    assert.equal(json.kvCache.bytesPerToken, 1024);
    assert.equal(json.params, 656000);
  });

  it('ppl prints the number with its convention and matches the library', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ppl-cli-'));
    try {
      const stories = ['Once upon a time there was a cat. The cat liked milk.', 'Tom had a red ball. He played with it every day in the park.'];
      writeFileSync(join(dir, 't.jsonl'), stories.map((text) => JSON.stringify({ text })).join('\n') + '\n');
      const text = await capture('ppl', [model!, '--text', join(dir, 't.jsonl'), '--ctx', '8', '--max-chunks', '3']);
      const m = /^ppl (\d+\.\d+)/.exec(text);
      assert.ok(m, text);
      assert.match(text, /convention: GPTQ\/TransMLA convention: documents joined with "\\n\\n", tokenized once with one BOS at the start, non-overlapping 8-token chunks/);
      assert.match(text, /chunks: 3 of \d+ × 8 tokens/);
      const { model: lm, tokenizer } = loadModel(model!);
      const { ids } = tokenizeForPerplexity(tokenizer!, stories.join('\n\n'));
      const r = await perplexity(lm, ids, true, { ctx: 8, maxChunks: 3 });
      assert.equal(Number(m[1]), Number(r.ppl.toFixed(4)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('generate streams a greedy continuation, reproducibly', async () => {
    const args = [model!, '--prompt', 'Once upon a time', '--max-tokens', '12', '--temperature', '0', '--quiet'];
    const a = await capture('generate', args);
    const b = await capture('generate', args);
    assert.equal(a, b);
    assert.ok(a.trim().length > 10, `generated ${JSON.stringify(a)}`);
    const s1 = await capture('generate', [model!, '--prompt', 'Tom', '--max-tokens', '12', '--seed', '5', '--quiet']);
    const s2 = await capture('generate', [model!, '--prompt', 'Tom', '--max-tokens', '12', '--seed', '5', '--quiet']);
    assert.equal(s1, s2);
  });

  it('ppl: the default --ctx is the model\'s trained window (TinyStories-656K: 512), at most 2048', async () => {
    const text = assetPath('text/tinystories/tinystories_val_sample.txt')!;
    const ppl = await commands.ppl!();
    const r = await captureAll(() => ppl.run([model!, '--text', text, '--max-chunks', '2', '--json']));
    assert.equal((JSON.parse(r.out) as { ctx: number }).ctx, 512);
    assert.doesNotMatch(r.err, /exceeds the model's/);
    const { model: lm } = loadModel(model!);
    assert.equal(defaultPplContext(lm), 512);
    assert.equal(defaultPplContext({ config: { maxPositionEmbeddings: 131_072 }, slidingWindow: null } as Decoder), 2048);
    assert.equal(defaultPplContext({ config: { maxPositionEmbeddings: 32_768 }, slidingWindow: 1024 } as Decoder), 1024);
  });

  it('ppl --max-chunks tokenizes only what the chunks need, with the ids of the whole text', async () => {
    const path = assetPath('text/tinystories/tinystories_val_sample.txt')!;
    const ppl = await commands.ppl!();
    const r = await captureAll(() => ppl.run([model!, '--text', path, '--ctx', '128', '--max-chunks', '3', '--json']));
    const j = JSON.parse(r.out) as { ppl: number; chunks: number; tokenized: { chars: number; ofChars: number; complete: boolean } };
    assert.equal(j.tokenized.complete, false);
    assert.ok(j.tokenized.chars < j.tokenized.ofChars / 10, `${j.tokenized.chars} of ${j.tokenized.ofChars} characters`);
    const { model: lm, tokenizer } = loadModel(model!);
    // The whole text, tokenized (by the Rust binding: same ids as encode, test/tokenize-lazy.test.ts).
    const ids = await tokenizer!.encodeAsync(readFileSync(path, 'utf8'), { addBos: true });
    const whole = await perplexity(lm, ids, true, { ctx: 128, maxChunks: 3 });
    assert.equal(j.ppl, whole.ppl);
    const text = await capture('ppl', [model!, '--text', path, '--ctx', '128', '--max-chunks', '3']);
    assert.match(text, /tokens from the first \d+\.\d % of the text \(as far as the chunks need\)/);
  });

  it('rejects bad flags with a usage error', async () => {
    const gen = await commands.generate!();
    await assert.rejects(gen.run([model!, '--top-p', '0']), UsageError);
    const ppl = await commands.ppl!();
    await assert.rejects(ppl.run([model!]), /--text FILE is required/);
  });
});
