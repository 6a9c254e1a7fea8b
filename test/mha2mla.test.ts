// The MHA2MLA method: partial-RoPE selection, the per-KV-head-RoPE MLA engine variant (exact
// against a float64 partial-RoPE reference, absorbed = decompressed = token-by-token decode),
// the low-rank initialisations, and the pipeline end to end on a real checkpoint.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, test } from 'node:test';
import { commands } from '../src/cli/commands.js';
import { exportModel } from '../src/export/targets.js';
import { buildMha2mlaModel, convertMha2mla, mha2mlaBudget } from '../src/convert/mha2mla.js';
import type { Mha2mlaReport } from '../src/schema/transmla-json.js';
import { headRowOrder, mha2mlaLayer, type Mha2mlaLayerWeights } from '../src/convert/mha2mla-layer.js';
import { gqaLayerSource } from '../src/convert/mla-build.js';
import { PairNormAccumulator, pairRmsFromGram, selectRopePairs, type PairNorms } from '../src/convert/rope-select.js';
import { mha2mlaConfigJson, parseMha2mlaConfig } from '../src/arch/mha2mla.js';
import { type Decoder, setMlaMode } from '../src/models/decoder.js';
import { loadModel } from '../src/arch/load.js';
import { gemmF64 } from '../src/linalg/dense.js';
import { svd } from '../src/linalg/svd.js';
import { perplexity, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { describeModel } from '../src/arch/describe.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { maxAbsDiff, mulberry32, randomLlama, referenceLogits, type RandomSpec } from './helpers/random-llama.js';
import { logits, decodeLogits, randomTokens, flat } from './helpers/logits.js';
import { buildModel } from '../src/arch/registry.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-mha2mla-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A random positive-definite D×D second moment. */
function randomCov(D: number, seed: number): Float64Array {
  const r = mulberry32(seed), n = 3 * D;
  const Xt = Float64Array.from({ length: D * n }, () => (2 * r() - 1) * (1 + 3 * r()));
  return gemmF64(Xt, Xt, D, D, n, true);
}

// hidden < rows of [W_k,nope ; W_v], so a rank-D latent is exact (the stacked matrix has rank D).
const specs: [string, RandomSpec][] = [
  ['GQA + q/k/v/o biases', { hidden: 32, heads: 4, kvHeads: 2, headDim: 16, inter: 48, vocab: 50, layers: 2, attentionBias: true, seed: 21 }],
  ['MHA, bf16, llama3 scaling', { hidden: 40, heads: 3, kvHeads: 3, headDim: 16, inter: 40, vocab: 40, layers: 2, dtype: 'bf16', seed: 22,
    ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } }],
];

/** Distinct kept pairs per layer and KV head (r = 2 of d/2 = 8). */
function pairsFor(G: number, l: number): number[][] {
  return Array.from({ length: G }, (_, g) => [(g + l) % 4, 4 + ((3 * g + l) % 4)].sort((a, b) => a - b));
}

for (const [name, spec] of specs) {
  test(`MHA2MLA layers are exact against a float64 partial-RoPE reference, in every attention form: ${name}`, () => {
    const m = randomLlama(spec);
    const src = buildModel(m.config, m.src);
    const G = spec.kvHeads, d = spec.headDim!, D = spec.hidden;
    const tokens = randomTokens(13, spec.vocab, 3);
    const kept = (l: number, g: number, k: number) => pairsFor(G, l)[g]!.includes(k);
    const ref = flat(referenceLogits(m, tokens, kept));
    const build = (kvRank: number | 'full', init: 'joint' | 'split', cov: boolean): Decoder => buildMha2mlaModel(src, src.layers.map((_, l) =>
      mha2mlaLayer(gqaLayerSource(src, l), { ropePairs: pairsFor(G, l), kvRank, init, inputCov: cov ? randomCov(D, 40 + l) : null })), 'f32');
    const mK = G * (d - 4), mV = G * d;
    const variants: [string, Decoder][] = [
      ['full (partial RoPE only)', build('full', 'joint', false)],
      ['joint, rank D', build(D, 'joint', false)],
      ['joint activation-aware, rank D', build(D, 'joint', true)],
      ['split, ranks mK + mV', build(Math.min(mK, D) + Math.min(mV, D), 'split', false)],
    ];
    for (const [what, model] of variants) {
      setMlaMode(model, 'decompressed');
      const dec = maxAbsDiff(logits(model, tokens), ref);
      setMlaMode(model, 'absorbed');
      const abs = maxAbsDiff(logits(model, tokens), ref);
      setMlaMode(model, 'auto');
      const step = maxAbsDiff(decodeLogits(model, tokens), ref);
      assert.ok(dec <= 2e-4 && abs <= 2e-4 && step <= 2e-4, `${what}: decompressed ${dec}, absorbed ${abs}, decode ${step}`);
    }
    // A truncated latent is a different (lossy) model, but its two forms still agree.
    const low = build(6, 'joint', false);
    const a = logits(low, tokens);
    setMlaMode(low, 'absorbed');
    assert.ok(maxAbsDiff(logits(low, tokens), a) <= 2e-4);
    assert.ok(maxAbsDiff(a, ref) > 1e-3, 'rank 6 is lossy');
  });
}

test('partial RoPE row order: kept pairs interleaved first, the rest ascending', () => {
  assert.deepEqual([...headRowOrder('half', 8, [1, 3])], [1, 5, 3, 7, 0, 2, 4, 6]);
  assert.deepEqual([...headRowOrder('interleaved', 8, [0])], [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual([...headRowOrder('half', 8, [])], [0, 1, 2, 3, 4, 5, 6, 7]);
});

test('selection strategies: S_high, S_low, S_uniform, and S_2-norm per KV group', () => {
  assert.deepEqual(selectRopePairs('high', 4, 64, 2), [[0, 1, 2, 3], [0, 1, 2, 3]]);
  assert.deepEqual(selectRopePairs('low', 4, 64, 1), [[28, 29, 30, 31]]);
  // ⌊k·d/(2r)⌋ for k < r: d = 64, r = 4 → stride 8.
  assert.deepEqual(selectRopePairs('uniform', 4, 64, 1), [[0, 8, 16, 24]]);
  assert.deepEqual(selectRopePairs('uniform', 3, 16, 1), [[0, 2, 5]]);
  // 2 KV heads, 2 query heads each, 4 pairs: group scores (q0+q1)·k.
  const norms: PairNorms = {
    nHeads: 4, nKvHeads: 2, pairs: 4, stat: 'mean',
    q: Float64Array.from([1, 1, 1, 1, 1, 1, 1, 1, /* group 1 */ 5, 0, 1, 1, 5, 0, 1, 1]),
    k: Float64Array.from([1, 3, 2, 0.5, /* group 1 */ 1, 100, 2, 3]),
  };
  // Group 0: scores 2·[1, 3, 2, 0.5] → pairs 1, 2. Group 1: [10·1, 0, 2·2, 2·3] → pairs 0, 3.
  assert.deepEqual(selectRopePairs('2norm', 2, 8, 2, norms), [[1, 2], [0, 3]]);
  assert.throws(() => selectRopePairs('2norm', 2, 8, 2), /needs calibration statistics/);
  assert.throws(() => selectRopePairs('high', 4, 8, 1), /--rope-pairs must be an integer in 0..3/);
});

test('pair norms: the exact mean accumulator, and the RMS surrogate from the Gram (mean ≤ rms)', () => {
  const H = 2, G = 1, d = 4, D = 3, T = 50;
  const r = mulberry32(9);
  const wq = Float64Array.from({ length: H * d * (D + 1) }, () => 2 * r() - 1);
  const wk = Float64Array.from({ length: G * d * (D + 1) }, () => 2 * r() - 1);
  const X = Float64Array.from({ length: T * (D + 1) }, (_, i) => (i % (D + 1) === D ? 1 : 2 * r() - 1));
  const proj = (W: Float64Array, rows: number) => Float32Array.from(gemmF64(X, W, T, rows, D + 1, true));
  const acc = new PairNormAccumulator(H, G, d, 'half');
  acc.add(proj(wq, H * d), proj(wk, G * d), T);
  const mean = acc.result();
  const q = proj(wq, H * d);
  let direct = 0;
  for (let t = 0; t < T; t++) direct += Math.hypot(q[t * H * d + 4 + 1]!, q[t * H * d + 4 + 3]!); // head 1, pair 1 = elements 1, 3
  assert.ok(Math.abs(mean.q[1 * 2 + 1]! - direct / T) < 1e-5);
  const XtX = new Float64Array((D + 1) ** 2);
  for (let t = 0; t < T; t++) for (let i = 0; i <= D; i++) for (let j = 0; j <= D; j++) XtX[i * (D + 1) + j]! += X[t * (D + 1) + i]! * X[t * (D + 1) + j]!;
  const rms = pairRmsFromGram(wq, wk, H, G, d, 'half', XtX, D + 1, T);
  for (let i = 0; i < mean.q.length; i++) assert.ok(mean.q[i]! <= rms.q[i]! + 1e-6, `pair ${i}: mean ${mean.q[i]} > rms ${rms.q[i]}`);
  for (let i = 0; i < mean.k.length; i++) assert.ok(mean.k[i]! <= rms.k[i]! + 1e-6);
});

test('low rank: weight-only joint keeps exactly the top singular values; activation-aware has the smaller weighted error', () => {
  const spec: RandomSpec = { hidden: 32, heads: 4, kvHeads: 2, headDim: 16, inter: 48, vocab: 50, layers: 1, seed: 31 };
  const m = randomLlama(spec);
  const src = buildModel(m.config, m.src);
  const s = gqaLayerSource(src, 0);
  const pairs = [[0, 1], [0, 1]];
  const R = 10, D = 32, C = randomCov(D, 5);
  const wo = mha2mlaLayer(s, { ropePairs: pairs, kvRank: R, init: 'joint', inputCov: null });
  const aw = mha2mlaLayer(s, { ropePairs: pairs, kvRank: R, init: 'joint', inputCov: C });
  const full = mha2mlaLayer(s, { ropePairs: pairs, kvRank: 'full', init: 'joint', inputCov: null });
  const W = full.down, rows = full.dims.kvRank; // [K_nope ; V] itself
  const sv = svd(W, rows, D).S;
  let tot = 0, top = 0;
  sv.forEach((x, i) => { tot += x * x; if (i < R) top += x * x; });
  assert.ok(Math.abs(wo.energy - top / tot) < 1e-9, `energy ${wo.energy} vs σ share ${top / tot}`);
  const weightedErr = (w: Mha2mlaLayerWeights): number => {
    const up = new Float64Array(rows * R);
    up.set(w.upK.w);
    up.set(w.upV.w, w.upK.w.length);
    const E = gemmF64(up, w.down, rows, D, R).map((x, i) => W[i]! - x);
    const EC = gemmF64(E, C, rows, D, D);
    let e = 0;
    for (let i = 0; i < E.length; i++) e += EC[i]! * E[i]!;
    return e;
  };
  assert.ok(weightedErr(aw) < weightedErr(wo), `aware ${weightedErr(aw)} vs weight-only ${weightedErr(wo)}`);
  // Split at the same R: ⌈R/2⌉ key + ⌊R/2⌋ value components, one latent of R.
  const sp = mha2mlaLayer(s, { ropePairs: pairs, kvRank: R, init: 'split', inputCov: null });
  assert.equal(sp.dims.kvRank, R);
  const mK = 2 * 12;
  for (let i = 0; i < mK; i++) for (let c = 5; c < R; c++) assert.equal(sp.upK.w[i * R + c], 0);
  assert.ok(sp.energy < wo.energy, 'joint keeps more of the stacked matrix than split at equal R');
});

test('budget: equal cache to TransMLA at a fraction, with clear errors when RoPE keys fill it', () => {
  // kjv-gqa: G = 2, d = 64 → 256 values; 31.25 % = 80 = 2·2·4 + 64.
  assert.deepEqual(mha2mlaBudget({ nKvHeads: 2, headDim: 64, hidden: 384 }, { kvFraction: 0.3125 }), { ropePairs: 4, kvRank: 64, width: 80, fraction: 0.3125 });
  // stories260K-like: G = 4, d = 8, 12.5 % = 8 values, all taken by 4·2·1 RoPE dims.
  assert.throws(() => mha2mlaBudget({ nKvHeads: 4, headDim: 8, hidden: 64 }, { kvFraction: 0.125 }), /all taken by the RoPE keys/);
  assert.throws(() => mha2mlaBudget({ nKvHeads: 2, headDim: 64, hidden: 384 }, { kvRank: 500 }), /1\.\.240/);
});

test('MHA2MLA config.json: written fields parse back; malformed selections are refused with the key named', () => {
  const m = randomLlama(specs[0]![1]);
  const pairs = [pairsFor(2, 0), pairsFor(2, 1)];
  const json = mha2mlaConfigJson(m.config, { kvLoraRank: 12, ropePairsPerHead: 2, ropePairs: pairs });
  assert.equal(json.model_type, 'llama_mha2mla');
  const back = parseMha2mlaConfig(JSON.parse(JSON.stringify(json)), 'c.json');
  assert.deepEqual(back.mha2mla, { kvLoraRank: 12, ropePairsPerHead: 2, ropePairs: pairs });
  assert.deepEqual([back.numKvHeads, back.headDim, back.numLayers], [2, 16, 2]);
  const bad = (patch: Record<string, unknown>, re: RegExp) => assert.throws(() => parseMha2mlaConfig({ ...json, ...patch }, 'c.json'), re);
  bad({ mha2mla_rope_pairs: [pairs[0]] }, /mha2mla_rope_pairs must list 2 layers/);
  bad({ mha2mla_rope_pairs: [[[3, 1], [0, 4]], pairs[1]] }, /\[0\]\[0\] must be strictly ascending/);
  bad({ mha2mla_rope_pairs: [[[0, 8], [0, 4]], pairs[1]] }, /index 8 is not in 0\.\.7/);
  bad({ rope_pairs_per_head: 8 }, /rope_pairs_per_head must be an integer in 0\.\.7/);
  bad({ kv_lora_rank: 0 }, /kv_lora_rank/);
});

const skipReal = skipUnlessAsset('models/kjv-mha') || skipUnlessAsset('text/kjv-old-testament-calib.txt') || skipUnlessAsset('text/kjv-new-testament-eval.txt');

test('convert --method mha2mla on kjv-mha (S_2-norm, activation-aware joint, 12.5 %): folder reloads, reproduces its perplexity, reports its cache', { skip: skipReal }, async () => {
  const evalPath = join(tmp, 'eval.txt');
  writeFileSync(evalPath, readFileSync(mustAsset('text/kjv-new-testament-eval.txt'), 'utf8').split('\n\n').slice(0, 3).join('\n\n'));
  const out = join(tmp, 'kjv-mha-m2m');
  const report = await convertMha2mla({
    model: mustAsset('models/kjv-mha'), out, kvFraction: 0.125, selection: '2norm', init: 'joint', weighting: 'activations',
    calib: mustAsset('text/kjv-old-testament-calib.txt'), calibSamples: 8, calibSeqLen: 64, seed: 3,
    evalTexts: [{ path: evalPath, mode: 'file' }], evalCtx: 64, evalChunks: 3,
  });
  // kjv-mha: G = 4, d = 64 → 512 values; 12.5 % = 64 = 4·2·4 + 32.
  const p = report.parameters;
  assert.deepEqual([p.ropePairsPerHead, p.kvLoraRank, p.kvFraction], [4, 32, 0.125]);
  assert.equal(report.kvCache.bytesPerTokenAfter, 6 * 64 * 4);
  assert.equal(p.ropePairs.length, 6);
  assert.ok(p.ropePairs.every((l) => l.length === 4 && l.every((g) => g.length === 4)));
  const ev = report.evaluations[0]!;
  assert.ok(ev.original.ppl > 1 && ev.partialRope.kl > 0 && ev.mla.kl >= ev.partialRope.kl * 0.5);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'transmla.json']) assert.ok(existsSync(join(out, f)), f);
  const saved = JSON.parse(readFileSync(join(out, 'transmla.json'), 'utf8')) as Mha2mlaReport;
  assert.equal(saved.method, 'mha2mla');
  assert.deepEqual(saved.calibration.statistics, ['mean query/key pair norms', 'layer-input second moment']);

  const loaded = loadModel(out);
  assert.ok(loaded.mha2mla && !loaded.mla);
  assert.deepEqual(loaded.mha2mla.ropePairs, p.ropePairs);
  const { ids, bos } = tokenizeForPerplexity(loaded.tokenizer!, readFileSync(evalPath, 'utf8'));
  const r = await perplexity(loaded.model, ids, bos, { ctx: 64, maxChunks: 3 });
  assert.ok(Math.abs(r.ppl - ev.mla.ppl) <= 1e-6 * ev.mla.ppl, `reloaded ${r.ppl} vs measured ${ev.mla.ppl}`);
  // Prefill (decompressed) then absorbed decode continues from the same cache.
  const tokens = ids.slice(0, 30);
  const all = logits(loaded.model, tokens);
  const cache = loaded.model.newCache();
  loaded.model.forward(tokens.slice(0, 20), cache);
  const V = loaded.config.vocabSize;
  let worst = 0;
  for (let i = 20; i < 30; i++) worst = Math.max(worst, maxAbsDiff(loaded.model.forward([tokens[i]!], cache, { logits: 'last' }), all.subarray(i * V, (i + 1) * V)));
  assert.ok(worst <= 1e-3, `prefill + decode vs full forward ${worst}`);

  const d = describeModel(loaded);
  assert.equal(d.kvCache.bytesPerToken, report.kvCache.bytesPerTokenAfter);
  assert.deepEqual(d.mha2mla, { kvLoraRank: 32, ropePairsPerHead: 4, kvHeads: 4 });
  // int4 in groups of 32: 64 values → 32 code bytes + 2 f16 scales = 36 B per layer.
  const q4 = describeModel(loadModel(out, { kvQuant: { bits: 4, group: 32 } }));
  assert.equal(q4.kvCache.bytesPerToken, 6 * 36);
  assert.equal(q4.kvCache.quant, 'int4:g32');

  // The CLI: inspect --kv-quant and ppl --kv-quant on the folder.
  const text = await captureStdout(async () => (await commands.inspect!()).run([out, '--kv-quant', 'int8:token']));
  assert.match(text, /KV cache {5}396 B\/token with int8:token codes \+ f16 scales/); // 6 · (64 + 2)
  const pplOut = await captureStdout(async () => (await commands.ppl!()).run([out, '--text', evalPath, '--ctx', '64', '--max-chunks', '3', '--kv-quant', 'int8', '--json']));
  const q8 = JSON.parse(pplOut) as { ppl: number; kvQuant: string };
  assert.equal(q8.kvQuant, 'int8:g32');
  assert.ok(Math.abs(Math.log(q8.ppl / ev.mla.ppl)) < 0.01, `int8 cache ppl ${q8.ppl} vs f32 ${ev.mla.ppl}`);

  // No stock export exists (one shared RoPE key head in DeepSeek-V3): the message says what does
  // work — TransMLA on the source, which --method mha2mla would reject with --target.
  const noStock = join(tmp, 'mha2mla-export');
  for (const target of ['deepseek-v3', 'gguf'] as const) {
    await assert.rejects(exportModel({ model: out, target, out: noStock, calib: mustAsset('text/kjv-old-testament-calib.txt') }), (e: unknown) => {
      const m = (e as Error).message;
      assert.equal(m, `${out} is an MHA2MLA folder (RoPE keys per KV head); stock DeepSeek-V3 code has one RoPE key shared by all heads, so it has no stock form. ` +
        `Convert the source with TransMLA (the default method) instead: transmla convert ${resolve(mustAsset('models/kjv-mha'))} --target deepseek-v3 --kv-fraction 0.125 --calib ${resolve(mustAsset('text/kjv-old-testament-calib.txt'))} --out DIR`);
      return true;
    });
  }
  assert.equal(existsSync(noStock), false);
});

async function captureStdout(fn: () => Promise<unknown>): Promise<string> {
  let out = '';
  const log = console.log;
  console.log = (...a: unknown[]) => { out += a.join(' ') + '\n'; };
  try {
    await fn();
  } finally {
    console.log = log;
  }
  return out;
}
