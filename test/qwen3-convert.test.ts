// TransMLA on Qwen3 sources (convert/qk-norm.ts, models/mla-qknorm-attention.ts;
// docs/methods.md#qk-norm): the exact-structure MLA reproduces a Qwen3 model when nothing is
// truncated, its absorbed decode equals its decompressed prefill, the conversion does not depend
// on the (function-preserving) scale of W_k while the naive form does, and the default convert of
// kjv-qwen3 writes a stock DeepSeek-V3 folder whose deepseek2 GGUF llama.cpp agrees with.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadModel } from '../src/arch/load.js';
import { buildModel, requireConversion } from '../src/arch/registry.js';
import { assembleModel, mlaDecoderLayer, mlaRopeTable } from '../src/convert/mla-build.js';
import { naiveQkNorm } from '../src/convert/qk-norm.js';
import { mha2mlaDecoderLayer, mha2mlaLayer } from '../src/convert/mha2mla-layer.js';
import { gqaLayerSource } from '../src/convert/mla-build.js';
import { selectRopePairs } from '../src/convert/rope-select.js';
import { Mha2mlaQkNormAttention } from '../src/models/mha2mla-qknorm-attention.js';
import { ropeInvFreq } from '../src/models/rope.js';
import { transmlaLayer } from '../src/convert/transmla-layer.js';
import { convertModel } from '../src/convert/transmla.js';
import { HiddenStates } from '../src/eval/hidden-states.js';
import { perplexity, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { exportDeepseek2Gguf } from '../src/export/gguf-deepseek2.js';
import { GqaAttention } from '../src/models/attention.js';
import type { Decoder, DecoderLayer } from '../src/models/decoder.js';
import { Linear } from '../src/models/linear.js';
import { QkNormMlaAttention } from '../src/models/mla-qknorm-attention.js';
import { widen } from '../src/models/weights.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { assetPath } from './helpers/assets.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { decodeLogits, logits, randomTokens } from './helpers/logits.js';
import { logSoftmax, maxAbsDiff, randomLlama, type RandomSpec } from './helpers/random-llama.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-qwen3-convert-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const cpp = useLlamaCpp();

/** The source with every k_proj multiplied by s (Qwen3 computes the same function). */
function scaleKeys(m: Decoder, s: number): Decoder {
  const layers = m.layers.map((layer): DecoderLayer => {
    const a = layer.attn as GqaAttention;
    const k = new Linear({ dtype: 'f32', shape: a.k.weight.shape, data: Float32Array.from(widen(a.k.weight), (x) => x * s) }, null);
    return { ...layer, attn: new GqaAttention({ q: a.q, k, v: a.v, o: a.o, nHeads: a.nHeads, nKvHeads: a.nKvHeads, headDim: a.headDim, rope: a.rope, ropeLayout: a.ropeLayout, qkNorm: a.qkNorm }) };
  });
  return assembleModel(m, layers);
}

/** TransMLA of every layer of `m` (faithful order collapsed: statistics of the converted prefix). */
function convertInMemory(m: Decoder, shape: { ropeDim: number; freqFold: number; kvLoraRank: number }, naive = false): Decoder {
  const cfg = m.config;
  const samples = Array.from({ length: 6 }, (_, i) => Int32Array.from(randomTokens(32, cfg.vocabSize, 100 + i)));
  const states = HiddenStates.embed(m, samples);
  const rope = mlaRopeTable(m, shape.ropeDim);
  const layers: DecoderLayer[] = [];
  try {
    for (let l = 0; l < cfg.numLayers; l++) {
      const step = transmlaLayer(cfg, l, m.layers[l]!, states, null, { ...shape, qLoraRank: null, balance: 1 }, `layer ${l}`);
      const layer = mlaDecoderLayer(m, l, naive ? naiveQkNorm(step.weights) : step.weights, rope, { dtype: 'f32' });
      layers.push(layer);
      states.advance(layer);
    }
  } finally {
    states.close();
  }
  return assembleModel(m, layers);
}

const q3 = (over: Partial<RandomSpec> = {}) => randomLlama({ hidden: 32, heads: 4, kvHeads: 1, headDim: 16, inter: 40, vocab: 60, layers: 2, modelType: 'qwen3', seed: 21, ...over });

describe('TransMLA of a Qwen3 source: the exact-structure MLA', () => {
  it('the family now vouches for TransMLA (MHA2MLA still refuses with the reason)', () => {
    const m = q3();
    assert.doesNotThrow(() => requireConversion(m.config, 'transmla', 'q'));
    assert.throws(() => requireConversion(m.config, 'mha2mla', 'q'), /per-head key RMSNorm/);
  });

  it('nothing truncated (MQA, d_R = d, full rank): logits equal the Qwen3 source; absorbed decode equals prefill', () => {
    const m = q3();
    const src = buildModel(m.config, m.src);
    const mla = convertInMemory(src, { ropeDim: 16, freqFold: 1, kvLoraRank: 16 });
    assert.ok(mla.layers.every((l) => l.attn instanceof QkNormMlaAttention));
    assert.equal(mla.layers[0]!.attn.cacheElementsPerToken, 16 + 16 + 1, 'r + d_R + one 1/rms per KV head');
    const toks = randomTokens(20, 60, 3);
    const want = logits(src, toks), got = logits(mla, toks);
    assert.ok(maxAbsDiff(got, want) <= 1e-4, `max |Δ logit| ${maxAbsDiff(got, want)}`);
    assert.ok(maxAbsDiff(decodeLogits(mla, toks, 4), got) <= 1e-4, 'token-by-token (absorbed) decode differs from prefill');
    // The naive form (no 1/rms) is not the same model.
    const naive = convertInMemory(src, { ropeDim: 16, freqFold: 1, kvLoraRank: 16 }, true);
    assert.ok(maxAbsDiff(logits(naive, toks), want) > 1e-2);
  });

  it('GQA 4 → 2 at a truncated latent: absorbed decode equals prefill', () => {
    const m = q3({ kvHeads: 2, seed: 22 });
    const mla = convertInMemory(buildModel(m.config, m.src), { ropeDim: 8, freqFold: 2, kvLoraRank: 12 });
    assert.equal(mla.layers[1]!.attn.cacheElementsPerToken, 12 + 8 + 2);
    const toks = randomTokens(16, 60, 4);
    assert.ok(maxAbsDiff(decodeLogits(mla, toks, 3), logits(mla, toks)) <= 1e-4);
  });

  it('scaling W_k (which leaves Qwen3 unchanged) leaves the conversion unchanged, and breaks the naive form', () => {
    const m = q3({ kvHeads: 2, seed: 23 });
    const src = buildModel(m.config, m.src), scaled = scaleKeys(src, 8);
    const toks = randomTokens(16, 60, 5);
    assert.ok(maxAbsDiff(logits(scaled, toks), logits(src, toks)) <= 1e-4);
    const shape = { ropeDim: 8, freqFold: 2, kvLoraRank: 10 };
    const a = logits(convertInMemory(src, shape), toks), b = logits(convertInMemory(scaled, shape), toks);
    assert.ok(maxAbsDiff(a, b) <= 1e-3, `the conversion depends on the scale of W_k: max |Δ logit| ${maxAbsDiff(a, b)}`);
    const na = logits(convertInMemory(src, shape, true), toks), nb = logits(convertInMemory(scaled, shape, true), toks);
    assert.ok(maxAbsDiff(na, nb) > 0.1, 'the naive form should depend on the scale of W_k');
  });

  it('--variant exact and --q-lora-rank are refused with the reason', async () => {
    const m = q3();
    const dir = join(tmp, 'exact-refused');
    const vocab = assetPath('models/TinyStories-656K');
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
    await writeCheckpoint(dir, [...m.src.map].map(([name, tensor]) => ({ name, tensor })));
    if (vocab) writeHfFolderExtras(vocab, dir);
    await assert.rejects(convertModel({ model: dir, out: join(tmp, 'x'), variant: 'exact', kvLoraRank: 8, ropeDim: 8, freqFold: 1, calib: 'unused.txt' }), /--variant exact: the exact-structure MLA of a Qwen3 source/);
    const src = buildModel(m.config, m.src);
    assert.throws(() => transmlaLayer(m.config, 0, src.layers[0]!, HiddenStates.embed(src, [Int32Array.from(randomTokens(8, 60, 1))]), null, { ropeDim: 8, freqFold: 2, kvLoraRank: 8, qLoraRank: 8, balance: 1 }, 'x'), /--q-lora-rank is not supported/);
  });
});

describe('MHA2MLA of a Qwen3 source: norm (reconstructed or cached), then RoPE', () => {
  // θ = 1e60: every pair but pair 0 rotates by < 1e-6 over these positions, so keeping pair 0
  // (selection "high", r = 1) makes partial RoPE lossless, and at full rank the model is exact.
  const m = q3({ kvHeads: 2, ropeTheta: 1e60, seed: 24 });
  const src = buildModel(m.config, m.src);
  const inv = ropeInvFreq(16, 1e60, null);
  const build = (keyNorm: 'reconstructed' | 'cached', kvRank: number | 'full'): Decoder => assembleModel(src, src.layers.map((layer, l) => {
    const a = layer.attn as GqaAttention;
    const w = mha2mlaLayer(gqaLayerSource(src, l), { ropePairs: selectRopePairs('high', 1, 16, 2), kvRank, init: 'joint', inputCov: null, qkNorm: { q: a.qkNorm!.q, k: a.qkNorm!.k, eps: a.qkNorm!.eps, keyNorm } });
    return mha2mlaDecoderLayer(src, l, w, inv, { dtype: 'f32' });
  }));
  const toks = randomTokens(20, 60, 6);
  for (const keyNorm of ['reconstructed', 'cached'] as const) {
    it(`${keyNorm}: at full rank the logits equal the Qwen3 source; the cache is G·2r + R${keyNorm === 'cached' ? ' + G' : ''} values`, () => {
      const mm = build(keyNorm, 'full');
      assert.ok(mm.layers[0]!.attn instanceof Mha2mlaQkNormAttention);
      assert.equal(mm.layers[0]!.attn.cacheElementsPerToken, 2 * 2 + 2 * (2 * 16 - 2) + (keyNorm === 'cached' ? 2 : 0));
      const d = maxAbsDiff(logits(mm, toks), logits(src, toks));
      assert.ok(d <= 1e-4, `max |Δ logit| ${d}`);
      assert.ok(maxAbsDiff(decodeLogits(mm, toks, 4), logits(mm, toks)) <= 1e-4);
    });
  }
  it('truncated: the rebuilt-key normaliser and the cached one are different models', () => {
    assert.ok(maxAbsDiff(logits(build('reconstructed', 12), toks), logits(build('cached', 12), toks)) > 1e-3);
  });
});

describe('kjv-qwen3 → stock DeepSeek-V3 folder → deepseek2 GGUF, against llama.cpp', () => {
  const kjv = assetPath('models/kjv-qwen3'), calib = assetPath('text/kjv-old-testament-calib.txt'), evalText = assetPath('text/kjv-new-testament-eval.txt');
  it('convert (default stock variant) at 31.25 % KV; llama.cpp log-probs within 1e-3; the folder\'s perplexity is the reported one', { skip: kjv && calib && evalText ? false : 'assets models/kjv-qwen3, text/kjv-* missing', timeout: 900_000 }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const evalPath = join(tmp, 'kjv-eval-small.txt');
    writeFileSync(evalPath, readFileSync(evalText!, 'utf8').split('\n\n').slice(0, 4).join('\n\n'));
    const out = join(tmp, 'kjv-qwen3-ds3');
    const rep = await convertModel({ model: kjv!, out, kvFraction: 0.3125, ropeDim: 64, freqFold: 2, calib: calib!, calibSamples: 16, calibSeqLen: 128, evalTexts: [{ path: evalPath, mode: 'file' }], evalCtx: 128, evalChunks: 2 });
    const ev = rep.evaluations[0]!, st = rep.stockExport!.evaluations[0]!;
    t.diagnostic(`ppl original ${ev.original.ppl.toFixed(3)}, exact-structure MLA ${ev.mla.ppl.toFixed(3)}, stock ${st.stock.ppl.toFixed(3)} (${st.pplGapPercent.toFixed(2)} % vs exact)`);
    assert.ok(ev.mla.ppl < 1.1 * ev.original.ppl && st.stock.ppl < 1.1 * ev.original.ppl);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.model_type, 'deepseek_v3');
    const gguf = join(tmp, 'kjv-qwen3-ds3.gguf');
    exportDeepseek2Gguf(gguf, out, { outType: 'f32' });
    const ours = loadModel(out);
    const ids = tokenizeForPerplexity(ours.tokenizer!, readFileSync(evalPath, 'utf8')).ids.slice(0, 200);
    const V = ours.config.vocabSize;
    const lg = ours.model.forward(ids, ours.model.newCache(), { logits: 'all' }).slice();
    const ref = await cpp.logProbs(gguf, ids, V);
    let worst = 0;
    for (let p = 0; p < ids.length; p++) {
      const lp = logSoftmax(lg.subarray(p * V, (p + 1) * V));
      for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(lp[i]! - ref[p]![i]!));
    }
    t.diagnostic(`${ids.length} tokens, max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-3, `max |Δ log-prob| ${worst}`);
    const r = await perplexity(ours.model, tokenizeForPerplexity(ours.tokenizer!, readFileSync(evalPath, 'utf8')).ids, true, { ctx: st.ctx, maxChunks: st.chunks });
    assert.ok(Math.abs(r.ppl - st.stock.ppl) <= 1e-6 * st.stock.ppl, `folder ppl ${r.ppl} vs reported ${st.stock.ppl}`);
  });
});
