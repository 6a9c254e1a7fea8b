// Conversion building blocks: KV budgets, calibration sampling and streaming statistics,
// the DeepSeek-V3 config, and the query low rank at full rank.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { calibrationSamples, readDocuments } from '../src/convert/calibrate.js';
import { HiddenStates } from '../src/eval/hidden-states.js';
import { latentFromGqa } from '../src/convert/gqa-to-mla.js';
import { checkKvRank, defaultRopeDim, kvForFraction } from '../src/convert/kv-budget.js';
import { assembleMla } from '../src/convert/latent-layer.js';
import { buildMlaModel, gqaLayerSource } from '../src/convert/mla-build.js';
import { queryBasis } from '../src/convert/q-lora.js';
import { freqFoldCandidates } from '../src/convert/rorope.js';
import { gemmF64 } from '../src/linalg/dense.js';
import { mlaConfigJson, parseMlaConfig } from '../src/arch/deepseek.js';
import { rmsNorm } from '../src/models/ops.js';
import { loadTokenizer } from '../src/tokenizer/tokenizer.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { maxAbsDiff, mulberry32, randomLlama } from './helpers/random-llama.js';
import { buildModel } from '../src/arch/registry.js';

test('KV budgets: fractions of the source cache → (r, d_R), and the rank bound', () => {
  // kjv-gqa (G 2, d 64: 256 values), kjv-mha (4, 64: 512), TinyStories-656K (4, 16: 128), stories260K (4, 8: 64).
  const cases: [number, number, number, number, number][] = [
    [2, 64, 0.5, 96, 32], [2, 64, 0.3125, 48, 32], [2, 64, 0.125, 16, 16],
    [4, 64, 0.3125, 128, 32], [4, 16, 0.3125, 32, 8], [4, 16, 0.125, 8, 8],
    [4, 8, 0.5, 28, 4], [4, 8, 0.3125, 16, 4], [4, 8, 0.125, 4, 4],
  ];
  for (const [G, d, f, r, dR] of cases) {
    const c = kvForFraction({ nKvHeads: G, headDim: d }, f);
    assert.deepEqual([c.kvLoraRank, c.ropeDim], [r, dR], `G ${G} d ${d} F ${f}`);
    assert.equal(c.fraction, f);
  }
  assert.equal(kvForFraction({ nKvHeads: 2, headDim: 64 }, 0.3125, 16).kvLoraRank, 64);
  assert.equal(defaultRopeDim(128, 576), 64);
  assert.throws(() => kvForFraction({ nKvHeads: 4, headDim: 8 }, 0.05), /too small/);
  assert.throws(() => checkKvRank({ nKvHeads: 2, headDim: 64 }, 225, 32), /r ≤ 2·G·d − d_R = 2·2·64 − 32 = 224/);
  assert.deepEqual(freqFoldCandidates(64, 32), [2, 4, 8, 16, 32]);
  assert.deepEqual(freqFoldCandidates(8, 4), [2, 4]);
});

test('calibration samples: N × L tokens, seeded, BOS first, the same ids as the JS tokenizer', { skip: skipUnlessAsset('models/kjv-gqa') }, async () => {
  const tok = loadTokenizer(mustAsset('models/kjv-gqa'));
  const docs = readDocuments(mustAsset('text/kjv-old-testament-calib.txt'));
  assert.equal(docs.length, 929);
  const a = await calibrationSamples(tok, docs, { samples: 5, seqLen: 300, seed: 42 });
  const b = await calibrationSamples(tok, docs, { samples: 5, seqLen: 300, seed: 42 });
  const c = await calibrationSamples(tok, docs, { samples: 5, seqLen: 300, seed: 43 });
  assert.equal(a.length, 5);
  for (const s of a) { assert.equal(s.length, 300); assert.equal(s[0], tok.bosId); }
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  // encodeAsync takes the Rust tokenizer when it loads; the JS one must give the same samples.
  const js = Object.assign(Object.create(tok), { encodeAsync: async (t: string, o: Parameters<typeof tok.encode>[1]) => tok.encode(t, o) });
  assert.deepEqual(await calibrationSamples(js, docs, { samples: 5, seqLen: 300, seed: 42 }), a);
  // Short documents are joined with "\n\n" until a sample is full.
  const short = await calibrationSamples(tok, ['In the beginning.', 'And the earth.'], { samples: 2, seqLen: 40, seed: 1 });
  assert.ok(short.every((s) => s.length === 40));
});

test('streamed hidden states and Grams match a direct forward', () => {
  const m = randomLlama({ hidden: 16, heads: 4, kvHeads: 2, headDim: 4, inter: 24, vocab: 30, layers: 3, seed: 3 });
  const model = buildModel(m.config, m.src);
  const rnd = mulberry32(9);
  const L = 10, N = 3, D = 16;
  const samples = Array.from({ length: N }, () => Int32Array.from({ length: L }, () => Math.floor(rnd() * 30)));
  const h = HiddenStates.embed(model, samples);
  try {
    h.advance(model.layers[0]!);
    const gram = h.gram(model.layers[1]!.inputNorm);
    assert.equal(gram[D * (D + 1) + D], N * L, 'the bias entry counts tokens');
    const expect = new Float64Array((D + 1) * (D + 1));
    // The raw stream after all layers + final norm equals Decoder.hidden.
    h.advance(model.layers[1]!);
    h.advance(model.layers[2]!);
    const finalGram = h.gram(model.norm);
    for (const ids of samples) {
      const y = model.hidden(Array.from(ids), model.newCache(), 0);
      const Y = new Float32Array(L * (D + 1));
      for (let t = 0; t < L; t++) { Y.set(y.subarray(t * D, (t + 1) * D), t * (D + 1)); Y[t * (D + 1) + D] = 1; }
      const Yd = Float64Array.from(Y);
      const yty = gemmF64(transposeOf(Yd, L, D + 1), transposeOf(Yd, L, D + 1), D + 1, D + 1, L, true);
      for (let i = 0; i < yty.length; i++) expect[i]! += yty[i]!;
    }
    assert.ok(maxAbsDiff(finalGram, expect) <= 1e-3 * Math.max(...expect.map(Math.abs)), 'final-normed Gram equals the direct forward');
  } finally {
    h.close();
  }
});

function transposeOf(A: Float64Array, m: number, n: number): Float64Array {
  const T = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) T[j * m + i] = A[i * n + j]!;
  return T;
}

test('q_lora at full rank (r_q = H·d ≤ D) is exact', () => {
  const m = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, headDim: 8, inter: 40, vocab: 30, layers: 2, attentionBias: true, seed: 21 });
  const src = buildModel(m.config, m.src);
  const tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3];
  const ref = src.forward(tokens, src.newCache(), { logits: 'all' }).slice();
  const rnd = mulberry32(4);
  const layers = src.layers.map((_, l) => {
    const L = latentFromGqa(gqaLayerSource(src, l));
    const n = 32, Dp = 33;
    const X = Float64Array.from({ length: Dp * 3 * Dp }, () => 2 * rnd() - 1);
    const gram = gemmF64(X, X, Dp, Dp, 3 * Dp, true);
    const qCov = gemmF64(gemmF64(L.wq, gram, n, Dp, Dp), L.wq, n, n, Dp, true);
    return assembleMla(L, null, queryBasis(L, qCov, 32));
  });
  assert.equal(layers[0]!.dims.qLoraRank, 32);
  assert.ok(layers[0]!.qB!.b !== null, 'the query bias rides on q_b');
  const mla = buildMlaModel(src, layers, { dtype: 'f32', ropeInvFreq: latentFromGqa(gqaLayerSource(src, 0)).ropeInvFreq });
  assert.ok(maxAbsDiff(mla.forward(tokens, mla.newCache(), { logits: 'all' }), ref) <= 1e-4);
  assert.throws(() => queryBasis(latentFromGqa(gqaLayerSource(src, 0)), new Float64Array(32 * 32), 33), /q_lora_rank must be an integer in \[1, min\(H·d, hidden\) = 32\]/);
});

test('DeepSeek-V3 config: written from a Llama config, read back; MoE and YaRN refused', () => {
  const m = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, headDim: 8, inter: 40, vocab: 30, layers: 2, seed: 1,
    ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } });
  const json = mlaConfigJson(m.config, { kvLoraRank: 20, qLoraRank: null, qkRopeHeadDim: 4, qkNopeHeadDim: 8, vHeadDim: 8, attentionBias: false });
  const back = parseMlaConfig(JSON.parse(JSON.stringify(json)), 'config.json');
  assert.deepEqual(back.mla, { kvLoraRank: 20, qLoraRank: null, qkRopeHeadDim: 4, qkNopeHeadDim: 8, vHeadDim: 8, ropeInterleave: true, semantics: 'exact', yarn: null, attentionBias: false });
  assert.equal(back.hiddenSize, 32);
  assert.equal(back.numLayers, 2);
  assert.deepEqual(back.ropeScaling, m.config.ropeScaling);
  assert.equal(json.first_k_dense_replace, 2);
  // MoE layers from first_k_dense_replace on run only with Mixtral's routing (arch/deepseek-moe.ts).
  assert.throws(() => parseMlaConfig({ ...json, first_k_dense_replace: 1, n_routed_experts: 8 }, 'c.json'), /norm_topk_prob is absent: this engine runs mixture-of-experts layers with Mixtral's routing only/);
  assert.equal(parseMlaConfig({ ...json, first_k_dense_replace: 1, n_routed_experts: 8, norm_topk_prob: true }, 'c.json').moe?.firstDense, 1);
  assert.throws(() => parseMlaConfig({ ...json, rope_scaling: { type: 'yarn', factor: 4 } }, 'c.json'), /yarn is not supported/);
  assert.throws(() => parseMlaConfig({ ...json, kv_lora_rank: 0 }, 'c.json'), /kv_lora_rank must be an integer ≥ 1/);
});
