// The Qwen3 family (arch/qwen3.ts; docs/methods.md#qk-norm): config parsing with Qwen3Config's
// defaults, the engine's per-head q/k RMSNorm against an independent float64 forward on random
// models, GGUF export (llama.cpp architecture "qwen3") checked against llama.cpp itself —
// next-token log-probs within 1e-4 on kjv-qwen3 and on random Qwen3 models, and the perplexity of
// kjv-qwen3 from both engines on the same GGUF — and the conversions' refusal.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, test } from 'node:test';
import { describeModel, formatModelReport } from '../src/arch/describe.js';
import { loadModel } from '../src/arch/load.js';
import { QWEN3_CONVERSION_REFUSAL } from '../src/arch/qwen3.js';
import { buildModel, parseConfig, readConfig, requireConversion } from '../src/arch/registry.js';
import { convertModel } from '../src/convert/transmla.js';
import { perplexity, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { exportFolderGguf, ggufExportUnsupported } from '../src/export/gguf.js';
import { exportLlamaGguf } from '../src/export/gguf-llama.js';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { readGguf } from '../src/io/gguf.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import type { ModelArgs } from '../src/arch/args.js';
import type { WeightSource } from '../src/tensor.js';
import { loadTokenizer } from '../src/tokenizer/tokenizer.js';
import { assetPath, mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { decodeLogits, logits } from './helpers/logits.js';
import { logSoftmax, MapSource, maxAbsDiff, mulberry32, randomLlama, referenceLogits, type RandomSpec } from './helpers/random-llama.js';

const TOL = 1e-4;
const tmp = mkdtempSync(join(tmpdir(), 'transmla-qwen3-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const cpp = useLlamaCpp();

const q3 = (over: Partial<RandomSpec> = {}) => randomLlama({ hidden: 32, heads: 4, kvHeads: 2, headDim: 12, inter: 40, vocab: 50, layers: 2, modelType: 'qwen3', seed: 5, ...over });

describe('Qwen3 config.json', () => {
  test('kjv-qwen3 parses as the qwen3 family', { skip: skipUnlessAsset('models/kjv-qwen3') }, () => {
    const c = readConfig(mustAsset('models/kjv-qwen3'));
    assert.deepEqual(
      [c.family, c.modelType, c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize, c.rmsNormEps, c.ropeTheta, c.tieWordEmbeddings, c.attentionBias, c.oBias, c.slidingWindow, c.torchDtype],
      ['qwen3', 'qwen3', 384, 1024, 6, 6, 2, 64, 32000, 1e-6, 1e6, true, false, false, null, 'bfloat16'],
    );
  });

  test('Qwen3Config defaults: head_dim 128 (not hidden/heads), 32768 positions; attention_bias gives q/k/v and o biases', () => {
    const base = { architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 100 };
    const c = parseConfig(base, 'c.json');
    assert.deepEqual([c.headDim, c.maxPositionEmbeddings, c.rmsNormEps, c.attentionBias, c.oBias], [128, 32768, 1e-6, false, false]);
    const b = parseConfig({ ...base, head_dim: 16, attention_bias: true }, 'c.json');
    assert.deepEqual([b.headDim, b.attentionBias, b.oBias, b.mlpBias], [16, true, true, false]);
    // Architectures alone name the family; model_type alone too.
    assert.equal(parseConfig({ ...base, model_type: undefined }, 'c.json').family, 'qwen3');
    assert.equal(parseConfig({ ...base, architectures: undefined }, 'c.json').family, 'qwen3');
  });

  test('sliding window only with use_sliding_window and a layer at or past max_window_layers', () => {
    const base = { model_type: 'qwen3', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 4, num_attention_heads: 4, vocab_size: 100, sliding_window: 256 };
    assert.equal(parseConfig(base, 'c.json').slidingWindow, null);
    assert.equal(parseConfig({ ...base, use_sliding_window: true, max_window_layers: 4 }, 'c.json').slidingWindow, null);
    assert.equal(parseConfig({ ...base, use_sliding_window: true, max_window_layers: 2 }, 'c.json').slidingWindow, 256);
    assert.equal(parseConfig({ ...base, use_sliding_window: true, layer_types: ['full_attention', 'sliding_attention'] }, 'c.json').slidingWindow, 256);
  });

  test('MHA2MLA refuses a Qwen3 source with the reason (TransMLA takes it: test/qwen3-convert.test.ts)', () => {
    const m = q3();
    assert.throws(() => requireConversion(m.config, 'mha2mla', 'some/qwen3'), (e: unknown) => (e as Error).message.startsWith('some/qwen3 (qwen3) cannot be converted with MHA2MLA: ') && (e as Error).message.includes(QWEN3_CONVERSION_REFUSAL));
  });
});

describe('Qwen3 engine: per-head q/k RMSNorm before RoPE', () => {
  const cases: [string, Partial<RandomSpec>][] = [
    ['GQA 4 → 2, head_dim 12 ≠ hidden/heads', {}],
    ['MHA, attention_bias (q/k/v/o biases), tied head', { heads: 2, kvHeads: 2, headDim: 16, attentionBias: true, tied: true, seed: 6 }],
    ['MQA, bf16 weights', { heads: 4, kvHeads: 1, dtype: 'bf16', seed: 7 }],
  ];
  for (const [name, spec] of cases) {
    it(`${name}: logits match the float64 reference; decode matches the full forward`, () => {
      const m = q3(spec);
      const model = buildModel(m.config, m.src);
      const toks = Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 50);
      const ours = logits(model, toks);
      const ref = referenceLogits(m, toks);
      const V = m.config.vocabSize;
      let worst = 0;
      ref.forEach((row, t) => { worst = Math.max(worst, maxAbsDiff(ours.subarray(t * V, (t + 1) * V), row)); });
      assert.ok(worst <= 2e-5, `max |Δ logit| ${worst}`);
      assert.ok(maxAbsDiff(decodeLogits(model, toks, 5), ours) <= 1e-5);
    });
  }

  it('the norms matter: the reference without them is far from the engine', () => {
    const m = q3();
    const toks = [1, 5, 9, 2, 7, 3, 8];
    const ours = logits(buildModel(m.config, m.src), toks);
    const ref = referenceLogits(m, toks);
    // Without the norm weights the reference is a plain GQA model: far from ours.
    const plain = new Map([...m.f64].filter(([k]) => !/_norm\.weight$/.test(k) || !k.includes('self_attn')));
    const refPlain = referenceLogits({ ...m, f64: plain }, toks);
    const V = m.config.vocabSize;
    const last = (a: ArrayLike<number>, off = 0) => Array.from({ length: V }, (_, i) => a[off + i]!);
    assert.ok(maxAbsDiff(last(ours, (toks.length - 1) * V), last(ref[toks.length - 1]!)) <= 2e-5);
    assert.ok(maxAbsDiff(last(ours, (toks.length - 1) * V), last(refPlain[toks.length - 1]!)) > 1e-2, 'the QK-norm changes the model');
  });

  it('inspect names the QK-norm; the parameter count includes q_norm/k_norm', () => {
    const m = q3();
    const model = buildModel(m.config, m.src);
    const n = [...m.src.map.values()].reduce((s, t) => s + t.data.length, 0);
    assert.equal(model.paramCount(), n);
    const d = describeModel({ model, config: m.config, tokenizer: null, format: 'hf', path: 'random' });
    assert.equal(d.qkNorm, true);
    assert.match(formatModelReport(d), /GQA: 4 heads \/ 2 KV heads, head_dim 12, per-head q\/k RMSNorm;/);
  });
});

const vocabDir = assetPath('models/TinyStories-656K');

/** max |Δ log-prob| of our engine on (config, weights) vs llama.cpp on the GGUF we write, and the GGUF read back. */
async function compareWithLlamaCpp(name: string, config: ModelArgs, weights: WeightSource, tokenizerDir: string, ids: number[]): Promise<number> {
  const gguf = join(tmp, `${name}.gguf`);
  const res = exportLlamaGguf(gguf, config, weights, tokenizerDir, { outType: 'f32' });
  assert.equal(res.arch, 'qwen3');
  assert.ok(res.tensorNames.includes('blk.0.attn_q_norm.weight') && res.tensorNames.includes('blk.0.attn_k_norm.weight'));
  const ours = buildModel(config, weights);
  const V = config.vocabSize;
  const lg = logits(ours, ids);
  const ref = await cpp.logProbs(gguf, ids, V);
  let worst = 0;
  for (let t = 0; t < ids.length; t++) {
    const lp = logSoftmax(lg.subarray(t * V, (t + 1) * V));
    for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(lp[i]! - ref[t]![i]!));
  }
  const back = loadModel(gguf);
  assert.equal(back.config.family, 'qwen3');
  assert.ok(maxAbsDiff(logits(back.model, ids), lg) <= 1e-5, `${name}: GGUF read back differs`);
  return worst;
}

describe('Qwen3 GGUF (llama.cpp architecture qwen3) vs llama.cpp', () => {
  const random: [string, Partial<RandomSpec>][] = [
    ['random Qwen3 GQA 4 → 2, head_dim 24 (heads × head_dim ≠ hidden)', { hidden: 64, heads: 4, kvHeads: 2, headDim: 24, seed: 11 }],
    ['random Qwen3 MHA, tied head, θ 10⁶', { hidden: 64, heads: 4, kvHeads: 4, headDim: 16, tied: true, ropeTheta: 1e6, seed: 12 }],
  ];
  for (const [name, spec] of random) {
    it(name, { skip: vocabDir ? false : 'asset models/TinyStories-656K missing (its vocabulary is used)' }, async (t) => {
      if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
      const m = randomLlama({ inter: 96, vocab: 2048, layers: 2, modelType: 'qwen3', hidden: 64, heads: 4, kvHeads: 2, ...spec });
      const rnd = mulberry32(99);
      const ids = [1, ...Array.from({ length: 95 }, () => 3 + Math.floor(rnd() * 2000))];
      const worst = await compareWithLlamaCpp(name.replace(/\W+/g, '-'), m.config, m.src, vocabDir!, ids);
      t.diagnostic(`${ids.length} tokens, max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
      assert.ok(worst <= TOL, `${name}: max |Δ log-prob| ${worst} > ${TOL}`);
    });
  }

  const kjv = assetPath('models/kjv-qwen3'), evalText = assetPath('text/kjv-new-testament-eval.txt');
  it('kjv-qwen3 (bf16 widened to f32): log-probs within 1e-4, perplexity from both engines on the same GGUF', { skip: kjv && evalText ? false : 'assets models/kjv-qwen3 and text/kjv-new-testament-eval.txt needed' }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const tok = loadTokenizer(kjv!);
    const { ids, bos } = tokenizeForPerplexity(tok, readFileSync(evalText!, 'utf8').slice(0, 60000));
    const ck = openCheckpoint(kjv!);
    try {
      const worst = await compareWithLlamaCpp('kjv-qwen3', readConfig(kjv!), ck, kjv!, ids.slice(0, 96));
      t.diagnostic(`96 tokens, max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
      assert.ok(worst <= TOL, `kjv-qwen3: max |Δ log-prob| ${worst} > ${TOL}`);
    } finally {
      ck.close();
    }
    // Perplexity, GPTQ/TransMLA convention (non-overlapping chunks from an empty cache), on the
    // f32 GGUF by both engines: ours reading the GGUF, llama.cpp evaluating every chunk.
    const gguf = join(tmp, 'kjv-qwen3.gguf');
    const ctx = 256, chunks = 4;
    const model = loadModel(gguf).model;
    const ours = await perplexity(model, ids, bos, { ctx, maxChunks: chunks });
    let nll = 0, worst = 0;
    const seqs = Array.from({ length: chunks }, (_, c) => ids.slice(c * ctx, (c + 1) * ctx));
    const V = 32000;
    await cpp.eachLogProbs(gguf, seqs, V, (c, rows) => {
      const lg = logits(model, seqs[c]!);
      for (let p = 0; p + 1 < ctx; p++) {
        nll -= rows[p]![seqs[c]![p + 1]!]!;
        const lp = logSoftmax(lg.subarray(p * V, (p + 1) * V));
        for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(lp[i]! - rows[p]![i]!));
      }
    });
    const cppPpl = Math.exp(nll / (chunks * (ctx - 1)));
    t.diagnostic(`kjv-qwen3 ppl (${chunks} × ${ctx} tokens of kjv-new-testament-eval): ours ${ours.ppl.toFixed(4)}, llama.cpp ${cppPpl.toFixed(4)}, max |Δ log-prob| over ${chunks * ctx} positions ${worst.toExponential(2)}`);
    assert.ok(worst <= TOL, `max |Δ log-prob| ${worst}`);
    assert.ok(Math.abs(ours.ppl / cppPpl - 1) <= 1e-4, `ppl ours ${ours.ppl} vs llama.cpp ${cppPpl}`);
  });

  it('export refusals: a qwen3 model as llama.cpp "llama", and a Qwen3 checkpoint with an o_proj bias', async () => {
    const m = q3({ hidden: 64, headDim: 16, vocab: 2048 });
    assert.throws(() => exportLlamaGguf(join(tmp, 'x.gguf'), m.config, m.src, vocabDir ?? tmp, { arch: 'llama' }), /a qwen3 model cannot be written as llama\.cpp architecture "llama" \(its form: qwen3\)/);
    const b = q3({ hidden: 64, headDim: 16, vocab: 2048, attentionBias: true });
    assert.throws(() => exportLlamaGguf(join(tmp, 'y.gguf'), b.config, b.src, vocabDir ?? tmp), /qwen3 architecture has no attn_output bias/);
    const dir = join(tmp, 'biased-qwen3');
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(b.json));
    await writeCheckpoint(dir, [...b.src.map].map(([name, tensor]) => ({ name, tensor })));
    assert.match(ggufExportUnsupported(dir) ?? '', /no attn_output bias.*attention_bias: true/);
    assert.throws(() => exportFolderGguf(dir, join(tmp, 'z.gguf'), 'f32'), /no attn_output bias/);
  });

  it('a folder exports through exportFolderGguf with attn_q_norm/attn_k_norm as F32 and qwen3 metadata', { skip: vocabDir ? false : 'asset models/TinyStories-656K missing' }, async () => {
    const m = randomLlama({ hidden: 64, heads: 4, kvHeads: 2, headDim: 24, inter: 96, vocab: 2048, layers: 2, modelType: 'qwen3', dtype: 'bf16', seed: 13 });
    const dir = join(tmp, 'folder-qwen3');
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
    await writeCheckpoint(dir, [...m.src.map].map(([name, tensor]) => ({ name, tensor })));
    writeHfFolderExtras(vocabDir!, dir);
    const out = join(tmp, 'folder-qwen3.gguf');
    exportFolderGguf(dir, out, 'bf16');
    const g = readGguf(out);
    assert.equal(g.metadata.get('general.architecture')?.value, 'qwen3');
    assert.equal(g.metadata.get('qwen3.attention.key_length')?.value, 24);
    assert.equal(g.tensorInfo('blk.1.attn_k_norm.weight').typeName, 'F32');
    assert.equal(g.tensorInfo('blk.1.attn_q.weight').typeName, 'BF16');
    const back = loadModel(out).model;
    const toks = [1, 4, 9, 16, 25];
    assert.ok(maxAbsDiff(logits(back, toks), logits(buildModel(m.config, new MapSource(m.src.map)), toks)) <= 1e-5);
  });
});
