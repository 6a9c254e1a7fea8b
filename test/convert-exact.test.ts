// The lossless steps of the conversion: GQA/MHA → MLA rewrite, RoRoPE rotation before
// truncation, BKV-PCA at full rank; and the MLA engine's absorbed vs decompressed forms.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bkvPca, maxKvRank } from '../src/convert/bkv-pca.js';
import { exactMla, latentFromGqa } from '../src/convert/gqa-to-mla.js';
import { assembleMla, type LatentLayer } from '../src/convert/latent-layer.js';
import { buildMlaModel, gqaLayerSource } from '../src/convert/mla-build.js';
import { roRope } from '../src/convert/rorope.js';
import { gemmF64 } from '../src/linalg/dense.js';
import { loadModel } from '../src/arch/load.js';
import { setMlaMode } from '../src/models/decoder.js';
import { skipUnlessAsset, mustAsset } from './helpers/assets.js';
import { maxAbsDiff, mulberry32, randomLlama, type RandomSpec } from './helpers/random-llama.js';
import { logits, decodeLogits, randomTokens } from './helpers/logits.js';
import { buildModel } from '../src/arch/registry.js';

/** A random positive-definite Gram of [x;1] (D+1 square), as calibration would give. */
function randomGram(Dp: number, seed: number): Float64Array {
  const n = 3 * Dp;
  const r = mulberry32(seed);
  const Xt = Float64Array.from({ length: Dp * n }, () => 2 * r() - 1);
  return gemmF64(Xt, Xt, Dp, Dp, n, true);
}

/** W·G·Wᵀ for W [rows × (D+1)]. */
function project(W: Float64Array, rows: number, G: Float64Array, Dp: number): Float64Array {
  return gemmF64(gemmF64(W, G, rows, Dp, Dp), W, rows, rows, Dp, true);
}

function randomKeyCov(L: LatentLayer, seed: number): Float64Array {
  return project(L.wk, L.nK, randomGram(L.hidden + 1, seed), L.hidden + 1);
}

function kvCovOf(L: LatentLayer, seed: number): Float64Array {
  const Dp = L.hidden + 1;
  const W = new Float64Array((L.nK + L.nV) * Dp);
  W.set(L.wk);
  W.set(L.wv, L.nK * Dp);
  return project(W, L.nK + L.nV, randomGram(Dp, seed), Dp);
}

const specs: [string, RandomSpec][] = [
  ['GQA', { hidden: 32, heads: 4, kvHeads: 2, headDim: 8, inter: 48, vocab: 50, layers: 2, seed: 11 }],
  ['MHA', { hidden: 24, heads: 3, kvHeads: 3, headDim: 8, inter: 40, vocab: 40, layers: 2, seed: 12 }],
  ['GQA+bias (qwen2)', { hidden: 32, heads: 4, kvHeads: 1, headDim: 8, inter: 48, vocab: 50, layers: 2, modelType: 'qwen2', tied: true, seed: 13 }],
  ['MHA+llama3 scaling', { hidden: 32, heads: 2, kvHeads: 2, headDim: 16, inter: 48, vocab: 50, layers: 2, seed: 14,
    ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } }],
];

for (const [name, spec] of specs) {
  test(`exact GQA→MLA rewrite reproduces the logits: ${name}`, () => {
    const m = randomLlama(spec);
    const src = buildModel(m.config, m.src);
    const tokens = randomTokens(14, spec.vocab, 5);
    const ref = logits(src, tokens);
    const latents = src.layers.map((_, l) => latentFromGqa(gqaLayerSource(src, l)));
    const mla = buildMlaModel(src, latents.map(exactMla), { dtype: 'f32', ropeInvFreq: latents[0]!.ropeInvFreq });
    setMlaMode(mla, 'decompressed');
    assert.ok(maxAbsDiff(logits(mla, tokens), ref) <= 1e-4, 'decompressed');
    setMlaMode(mla, 'absorbed');
    assert.ok(maxAbsDiff(logits(mla, tokens), ref) <= 1e-4, 'absorbed');
    setMlaMode(mla, 'auto');
    assert.ok(maxAbsDiff(decodeLogits(mla, tokens), ref) <= 1e-4, 'decode');
  });

  test(`RoRoPE rotation without truncation is exact, BKV-PCA at full rank is exact: ${name}`, () => {
    const m = randomLlama(spec);
    const src = buildModel(m.config, m.src);
    const tokens = randomTokens(12, spec.vocab, 6);
    const ref = logits(src, tokens);
    const G = spec.kvHeads, d = spec.headDim!;
    const latents = src.layers.map((_, l) => latentFromGqa(gqaLayerSource(src, l)));
    const rotated = latents.map((L, l) => roRope(L, randomKeyCov(L, 100 + l), { nKvHeads: G, ropeDim: 'all', freqFold: 1 }).layer);
    // The rotation really changed the weights (with one KV head it can only flip signs)…
    if (G > 1) assert.ok(maxAbsDiff(rotated[0]!.wk, latents[0]!.wk) > 1e-3);
    // …and every score is unchanged.
    const mla = buildMlaModel(src, rotated.map((L) => assembleMla(L)), { dtype: 'f32', ropeInvFreq: rotated[0]!.ropeInvFreq });
    assert.ok(maxAbsDiff(logits(mla, tokens), ref) <= 1e-4);

    // Truncated RoRoPE (lossy) then BKV-PCA at r = 2Gd − d_R: equal to the partial-RoPE model.
    const dR = d / 2;
    const partial = latents.map((L, l) => roRope(L, randomKeyCov(L, 200 + l), { nKvHeads: G, ropeDim: dR, freqFold: 2 }).layer);
    const pModel = buildMlaModel(src, partial.map((L) => assembleMla(L)), { dtype: 'f32' });
    const pLogits = logits(pModel, tokens);
    const full = partial.map((L, l) => bkvPca(L, kvCovOf(L, 300 + l), { rank: maxKvRank(L) }).weights);
    assert.equal(full[0]!.dims.kvLoraRank, 2 * G * d - dR);
    const bModel = buildMlaModel(src, full, { dtype: 'f32' });
    assert.ok(maxAbsDiff(logits(bModel, tokens), pLogits) <= 1e-4);
    setMlaMode(bModel, 'absorbed');
    assert.ok(maxAbsDiff(logits(bModel, tokens), pLogits) <= 1e-4);
  });
}

test('kv_lora_rank above 2·G·d − d_R is refused with the bound in the message', () => {
  const m = randomLlama(specs[0]![1]);
  const src = buildModel(m.config, m.src);
  const L = roRope(latentFromGqa(gqaLayerSource(src, 0)), randomKeyCov(latentFromGqa(gqaLayerSource(src, 0)), 1), { nKvHeads: 2, ropeDim: 4, freqFold: 2 }).layer;
  assert.throws(() => bkvPca(L, kvCovOf(L, 2), { rank: 29 }), /kv_lora_rank 29 exceeds .* 2·G·d − d_R = 32 − 4 = 28/);
});

for (const name of ['kjv-gqa', 'kjv-mha']) {
  test(`exact rewrite of the real ${name}: logits equal (max |Δ| ≤ 1e-4)`, { skip: skipUnlessAsset(`models/${name}`) }, () => {
    const { model: src } = loadModel(mustAsset(`models/${name}`));
    const tokens = randomTokens(24, 32000, 9);
    const ref = logits(src, tokens);
    const latents = src.layers.map((_, l) => latentFromGqa(gqaLayerSource(src, l)));
    const mla = buildMlaModel(src, latents.map(exactMla), { dtype: 'f32', ropeInvFreq: latents[0]!.ropeInvFreq, mode: 'decompressed' });
    const d1 = maxAbsDiff(logits(mla, tokens), ref);
    setMlaMode(mla, 'absorbed');
    const d2 = maxAbsDiff(logits(mla, tokens), ref);
    assert.ok(d1 <= 1e-4 && d2 <= 1e-4, `decompressed ${d1}, absorbed ${d2}`);
  });
}
