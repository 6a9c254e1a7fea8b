// Quantized weights in the engine: `--weights q8_0|q4_0` at load, Q8_0/Q4_0 GGUFs read as blocks,
// `export --target gguf --outtype q8_0|q4_0`, and the perplexity of each quantized model against
// llama.cpp on the same GGUF (relative difference ≤ 1e-3).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../src/arch/load.js';
import { describeModel } from '../src/arch/describe.js';
import { parseArgs } from '../src/cli/args.js';
import { ENGINE_FLAGS, engineFlags } from '../src/cli/engine-flags.js';
import { exportModel } from '../src/export/targets.js';
import { readGguf } from '../src/io/gguf.js';
import type { Decoder } from '../src/models/decoder.js';
import { GqaAttention } from '../src/models/attention.js';
import { SwiGluMlp } from '../src/models/mlp.js';
import { loadTokenizer } from '../src/tokenizer/tokenizer.js';
import { assetPath } from './helpers/assets.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { logSoftmax } from './helpers/random-llama.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-quant-engine-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const cpp = useLlamaCpp();
const dir = assetPath('models/kjv-gqa');
const text = assetPath('text/kjv-new-testament-eval.txt');
const skip = dir && text ? false : 'asset models/kjv-gqa or text/kjv-new-testament-eval.txt missing';

function ids(n: number): number[] {
  const tok = loadTokenizer(dir!);
  return tok.encode(readFileSync(text!, 'utf8').slice(0, 20 * n), { addBos: true }).slice(0, n);
}

/** Natural-log perplexity of next-token prediction over the ids, from log-probability rows. */
function pplOf(rows: (t: number) => Float64Array, tokens: number[]): number {
  let nll = 0;
  for (let t = 0; t + 1 < tokens.length; t++) nll -= rows(t)[tokens[t + 1]!]!;
  return Math.exp(nll / (tokens.length - 1));
}

function oursPpl(m: Decoder, tokens: number[]): number {
  const V = m.config.vocabSize;
  const logits = m.forward(tokens, m.newCache(), { logits: 'all' }).slice();
  return pplOf((t) => logSoftmax(logits.subarray(t * V, (t + 1) * V)), tokens);
}

function weightTypes(m: Decoder): Set<string> {
  const s = new Set<string>([m.embed.dtype, m.head.weight.dtype]);
  for (const l of m.layers) {
    const a = l.attn as GqaAttention, f = l.mlp as SwiGluMlp;
    for (const x of [a.q, a.k, a.v, a.o, f.gate, f.up, f.down]) s.add(x.weight.dtype);
  }
  return s;
}

describe('quantized weights in the engine', () => {
  for (const type of ['q8_0', 'q4_0'] as const) {
    it(`${type}: --weights at load equals the ${type} GGUF export read back, and its perplexity matches llama.cpp's within 1e-3`, { skip }, async (t) => {
      const tokens = ids(96);
      const atLoad = loadModel(dir!, { weights: type }).model;
      assert.deepEqual([...weightTypes(atLoad)], [type], 'every matrix is quantized at load');
      const gguf = join(tmp, `kjv-gqa-${type}.gguf`);
      await exportModel({ target: 'gguf', model: dir!, out: gguf, outType: type });
      const f = readGguf(gguf);
      assert.equal(f.weightDType('blk.0.ffn_down.weight'), type);
      assert.equal(f.weightDType('blk.0.attn_norm.weight'), 'f32');
      assert.equal(f.requireNumber('general.file_type'), type === 'q8_0' ? 7 : 2);
      const fromGguf = loadModel(gguf).model;
      assert.deepEqual([...weightTypes(fromGguf)], [type], 'a quantized GGUF is run on its blocks');
      // Our quantizer and the export's are one, and the GGUF's q/k rows are permuted back whole:
      // the two models compute the same logits bit for bit.
      const a = atLoad.forward(tokens, atLoad.newCache(), { logits: 'all' }).slice();
      const b = fromGguf.forward(tokens, fromGguf.newCache(), { logits: 'all' });
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      assert.equal(worst, 0, `--weights ${type} and the ${type} GGUF differ by ${worst}`);

      const ours = oursPpl(fromGguf, tokens);
      const float = oursPpl(loadModel(dir!).model, tokens);
      t.diagnostic(`perplexity ${type} ${ours.toFixed(4)} vs bf16 ${float.toFixed(4)}`);
      assert.ok(Math.abs(ours - float) / float < (type === 'q8_0' ? 0.01 : 0.2), 'quantization moves perplexity by a plausible amount');
      if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
      const ref = await cpp.logProbs(gguf, tokens, atLoad.config.vocabSize);
      const theirs = pplOf((i) => ref[i]!, tokens);
      const rel = Math.abs(ours - theirs) / theirs;
      t.diagnostic(`llama.cpp ${theirs.toFixed(4)}, relative difference ${rel.toExponential(2)}`);
      assert.ok(rel <= 1e-3, `${type}: perplexity ${ours} vs llama.cpp ${theirs} (relative ${rel})`);
    });
  }

  const mixtral = assetPath('models/kjv-mixtral');
  it('Mixtral: a Q8_0 GGUF with stacked experts reads back as --weights q8_0 computes', { skip: mixtral ? false : 'asset models/kjv-mixtral missing' }, async () => {
    const gguf = join(tmp, 'kjv-mixtral-q8_0.gguf');
    await exportModel({ target: 'gguf', model: mixtral!, out: gguf, outType: 'q8_0' });
    assert.equal(readGguf(gguf).weightDType('blk.0.ffn_up_exps.weight'), 'q8_0');
    const a = loadModel(mixtral!, { weights: 'q8_0' }).model, b = loadModel(gguf).model;
    const tokens = [1, 17, 300, 4000, 25, 9];
    const x = a.forward(tokens, a.newCache(), { logits: 'all' }).slice(), y = b.forward(tokens, b.newCache(), { logits: 'all' });
    let worst = 0;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
    assert.equal(worst, 0);
  });

  it('inspect counts the weights as stored and the cache at the engine\'s dtype', { skip: dir ? false : 'asset models/kjv-gqa missing' }, () => {
    const d = describeModel(loadModel(dir!, { weights: 'q8_0', kvDtype: 'bf16' }));
    assert.equal(d.weightDtype, 'q8_0');
    assert.equal(d.weightBytes, Math.round((d.params * 34) / 32));
    // 6 layers · 2 (K, V) · 2 KV heads · 64: reported at the checkpoint's bf16, kept at bf16.
    assert.equal(d.kvCache.elementsPerToken, 1536);
    assert.equal(d.kvCache.engineDtype, 'bf16');
    assert.equal(d.kvCache.engineBytesPerToken, 1536 * 2);
    assert.equal(describeModel(loadModel(dir!, { kvDtype: 'f32' })).kvCache.engineBytesPerToken, 1536 * 4);
    const flags = (argv: string[]) => engineFlags(parseArgs(argv, { ...ENGINE_FLAGS }));
    assert.deepEqual(flags([]), { weights: null, kvDtype: 'f16' });
    assert.deepEqual(flags(['--weights', 'q4_0', '--kv-dtype', 'f32']), { weights: 'q4_0', kvDtype: 'f32' });
    assert.throws(() => flags(['--weights', 'q5_0']), /--weights must be q8_0 or q4_0, got "q5_0"/);
    assert.throws(() => flags(['--kv-dtype', 'f8']), /--kv-dtype must be f16, bf16 or f32/);
  });

  it('a matrix whose rows are not whole blocks stays float at load, and is written F16 in a quantized GGUF', () => {
    // The decision is one function (io/gguf-model.ts matrixType) shared by export and load.
    return import('../src/io/gguf-model.js').then(({ matrixType }) => {
      assert.equal(matrixType('q8_0', 64), 'q8_0');
      assert.equal(matrixType('q4_0', 48), 'f16');
      assert.equal(matrixType('bf16', 48), 'bf16');
    });
  });
});
