// The Llama-family engine against an independent float64 forward pass, and its pieces:
// RoPE layouts, KV cache accounting, prefill vs decode, sampling, perplexity convention,
// and the real checkpoints in the shared assets.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyRope, ropeInvFreq, RopeTable } from '../src/models/rope.js';
import { halfToInterleavedPerm } from '../src/io/rope-rows.js';
import { loadModel } from '../src/arch/load.js';
import { GqaAttention } from '../src/models/attention.js';
import { argmax, Rng, sampleToken } from '../src/models/sample.js';
import { generate } from '../src/models/generate.js';
import { nllOf, perplexity, readEvalText } from '../src/eval/perplexity.js';
import type { Tensor } from '../src/tensor.js';
import { assetPath } from './helpers/assets.js';
import { logSoftmax, MapSource, maxAbsDiff, randomLlama, referenceLogits, type RandomSpec } from './helpers/random-llama.js';
import { buildModel, parseConfig } from '../src/arch/registry.js';

const TOKENS = [1, 17, 5, 33, 9, 60, 2, 41, 13, 7, 58, 3];

function checkAgainstReference(spec: RandomSpec, tol = 1e-4): void {
  const m = randomLlama(spec);
  const model = buildModel(m.config, m.src);
  const ref = referenceLogits(m, TOKENS);
  const V = m.config.vocabSize;
  const all = model.forward(TOKENS, model.newCache(), { logits: 'all' }).slice();
  let worst = 0;
  for (let t = 0; t < TOKENS.length; t++) worst = Math.max(worst, maxAbsDiff(all.subarray(t * V, (t + 1) * V), ref[t]!));
  assert.ok(worst <= tol, `prefill logits differ from the float64 reference by ${worst}`);
  // Token-by-token decode against the cache gives the same logits as the batched prefill.
  const cache = model.newCache();
  let dec = 0;
  for (let t = 0; t < TOKENS.length; t++) {
    const l = model.forward([TOKENS[t]!], cache, { logits: 'last' });
    dec = Math.max(dec, maxAbsDiff(l, all.subarray(t * V, (t + 1) * V)));
  }
  assert.ok(dec <= 1e-4, `decode differs from prefill by ${dec}`);
  // Prefill in two pieces (the second starting at pos0 = 5) agrees too.
  const c2 = model.newCache();
  model.forward(TOKENS.slice(0, 5), c2, { logits: 'last' });
  const rest = model.forward(TOKENS.slice(5), c2, { logits: 'all' });
  assert.ok(maxAbsDiff(rest, all.subarray(5 * V)) <= 1e-4, 'two-piece prefill differs');
  assert.equal(c2.length, TOKENS.length);
}

const base = { hidden: 32, inter: 48, vocab: 64, layers: 2 };

describe('Llama engine vs a float64 reference', () => {
  it('MHA, f32, untied head', () => checkAgainstReference({ ...base, heads: 4, kvHeads: 4 }));
  it('GQA 4 → 2, f32, tied head', () => checkAgainstReference({ ...base, heads: 4, kvHeads: 2, tied: true, seed: 2 }));
  it('GQA 4 → 2, bf16 weights (widened in the kernels), tied head stored as lm_head.weight', () =>
    checkAgainstReference({ ...base, heads: 4, kvHeads: 2, tied: true, tiedAsLmHead: true, dtype: 'bf16', seed: 3 }));
  it('MQA 4 → 1 with head_dim ≠ hidden/heads', () => checkAgainstReference({ ...base, heads: 4, kvHeads: 1, headDim: 12, seed: 4 }));
  it('Qwen2-style q/k/v biases, linear RoPE scaling', () =>
    checkAgainstReference({ ...base, heads: 4, kvHeads: 2, modelType: 'qwen2', ropeScaling: { type: 'linear', factor: 4 }, seed: 5 }));
  it('f16 weights, GQA 4 → 2', () => checkAgainstReference({ ...base, heads: 4, kvHeads: 2, dtype: 'f16', seed: 8 }));
  it('Llama attention_bias (q/k/v/o biases), bf16', () =>
    checkAgainstReference({ ...base, heads: 4, kvHeads: 2, attentionBias: true, dtype: 'bf16', seed: 6 }));
  it('llama3 RoPE scaling (every frequency band exercised)', () =>
    checkAgainstReference({
      ...base, heads: 2, kvHeads: 1, headDim: 32, ropeTheta: 500000, seed: 7,
      // Small original context so that high, medium and low bands all occur at d = 32.
      ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
    }));
});

describe('RoPE', () => {
  it('llama3 inverse frequencies: high band kept, low band divided, middle interpolated', () => {
    const s = { type: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 };
    const plain = ropeInvFreq(32, 500000);
    const scaled = ropeInvFreq(32, 500000, s);
    let kept = 0, divided = 0, mid = 0;
    for (let i = 0; i < 16; i++) {
      const wl = (2 * Math.PI) / plain[i]!;
      if (wl < 16) { assert.equal(scaled[i], plain[i]); kept++; }
      else if (wl > 64) { assert.ok(Math.abs(scaled[i]! - plain[i]! / 8) < 1e-18); divided++; }
      else { assert.ok(scaled[i]! < plain[i]! && scaled[i]! > plain[i]! / 8); mid++; }
    }
    assert.ok(kept > 0 && divided > 0 && mid > 0, `bands ${kept}/${mid}/${divided}`);
    const lin = ropeInvFreq(8, 10000, { type: 'linear', factor: 2 });
    assert.equal(lin[1], Math.pow(10000, -2 / 8) / 2);
  });

  it('rotate-half equals interleaved after the per-head row permutation', () => {
    const d = 16, H = 3, T = 5, pos0 = 7;
    const table = RopeTable.create(d, 10000);
    const x = new Float32Array(T * H * d).map((_, i) => Math.sin(i * 1.7));
    const perm = halfToInterleavedPerm(d);
    const xi = new Float32Array(x.length);
    for (let r = 0; r < T * H; r++) for (let j = 0; j < d; j++) xi[r * d + j] = x[r * d + perm[j]!]!;
    applyRope(x, T, H, d, table, pos0, 'half');
    applyRope(xi, T, H, d, table, pos0, 'interleaved');
    for (let r = 0; r < T * H; r++) for (let j = 0; j < d; j++) assert.equal(xi[r * d + j], x[r * d + perm[j]!]);
  });

  it('a model with permuted q/k rows and interleaved RoPE gives the same logits', () => {
    const m = randomLlama({ ...base, heads: 4, kvHeads: 2, attentionBias: true, seed: 11 });
    const d = m.config.headDim;
    const perm = halfToInterleavedPerm(d);
    const map = new Map<string, Tensor>(m.src.map);
    for (const [name, t] of m.src.map) {
      if (!/self_attn\.[qk]_proj\.(weight|bias)$/.test(name)) continue;
      const cols = t.shape.length === 2 ? t.shape[1]! : 1;
      const src = t.data as Float32Array, out = new Float32Array(src.length);
      const rows = t.shape[0]!;
      for (let r = 0; r < rows; r++) {
        const head = Math.floor(r / d), j = r % d;
        out.set(src.subarray((head * d + perm[j]!) * cols, (head * d + perm[j]! + 1) * cols), r * cols);
      }
      map.set(name, { ...t, data: out });
    }
    const a = buildModel(m.config, m.src);
    const b = buildModel(m.config, new MapSource(map), { ropeLayout: 'interleaved' });
    const la = a.forward(TOKENS, a.newCache(), { logits: 'all' }).slice();
    const lb = b.forward(TOKENS, b.newCache(), { logits: 'all' });
    assert.ok(maxAbsDiff(la, lb) <= 1e-5);
  });

  it('partial rotation at an offset leaves the other elements alone', () => {
    const table = RopeTable.create(4, 10000);
    const x = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]);
    applyRope(x, 1, 1, 8, table, 3, 'interleaved', 4);
    assert.deepEqual([...x.subarray(0, 4)], [1, 2, 3, 4]);
    const c = Math.cos(3), s = Math.sin(3);
    assert.ok(Math.abs(x[4]! - (5 * c - 6 * s)) < 1e-6 && Math.abs(x[5]! - (6 * c + 5 * s)) < 1e-6);
  });
});

describe('KV cache', () => {
  it('reports bytes per token at a dtype and what it allocates', () => {
    const m = randomLlama({ ...base, heads: 4, kvHeads: 2, layers: 3 });
    const model = buildModel(m.config, m.src);
    const cache = model.newCache();
    // layers · (K + V) · kvHeads · headDim
    assert.equal(cache.elementsPerToken, 3 * 2 * 2 * 8);
    assert.equal(cache.bytesPerToken('f32'), 3 * 2 * 2 * 8 * 4);
    assert.equal(cache.bytesPerToken('bf16'), 3 * 2 * 2 * 8 * 2);
    assert.equal(cache.allocatedBytes(), 0);
    model.forward(TOKENS, cache);
    assert.equal(cache.length, TOKENS.length);
    assert.ok(cache.allocatedBytes() >= TOKENS.length * cache.bytesPerToken('f32'));
    cache.reserve(1000);
    assert.equal(cache.allocatedBytes(), 1000 * cache.bytesPerToken('f32'));
    assert.equal(model.layers[0]!.attn.cacheElementsPerToken, 2 * 2 * 8);
    assert.ok(model.layers[0]!.attn instanceof GqaAttention);
  });

  it('rewinding with pos0 recomputes from there', () => {
    const m = randomLlama({ ...base, heads: 4, kvHeads: 2, seed: 9 });
    const model = buildModel(m.config, m.src);
    const cache = model.newCache();
    const full = model.forward(TOKENS, cache, { logits: 'all' }).slice();
    const V = m.config.vocabSize;
    const again = model.forward(TOKENS.slice(8), cache, { pos0: 8, logits: 'all' });
    assert.ok(maxAbsDiff(again, full.subarray(8 * V)) <= 1e-5);
    assert.throws(() => model.forward([1], cache, { pos0: 50 }), /past the 12 cached tokens/);
  });

  it('counts parameters once for a tied head', () => {
    const m = randomLlama({ ...base, heads: 4, kvHeads: 2, tied: true });
    const model = buildModel(m.config, m.src);
    let n = 0;
    for (const t of m.f64.values()) n += t.length;
    assert.equal(model.paramCount(), n);
  });

  it('names the missing tensor and a wrong shape', () => {
    const m = randomLlama({ ...base, heads: 4, kvHeads: 2 });
    const map = new Map(m.src.map);
    map.delete('model.layers.1.mlp.up_proj.weight');
    assert.throws(() => buildModel(m.config, new MapSource(map)), /model\.layers\.1\.mlp\.up_proj\.weight/);
    const bad = { ...m.config, intermediateSize: 40 };
    assert.throws(() => buildModel(bad, m.src), /shape \[48, 32\], expected \[40, 32\]/);
  });
});

describe('sampling and generation', () => {
  it('the RNG is deterministic and roughly uniform', () => {
    const a = new Rng(42), b = new Rng(42), c = new Rng(43);
    const xs = Array.from({ length: 1000 }, () => a.next());
    assert.deepEqual(xs.slice(0, 5), Array.from({ length: 5 }, () => b.next()));
    assert.notEqual(xs[0], c.next());
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    assert.ok(Math.abs(mean - 0.5) < 0.05 && xs.every((x) => x >= 0 && x < 1));
  });

  it('temperature 0 is argmax; tiny top-p is argmax; draws follow the distribution', () => {
    const logits = new Float32Array([0, 2, 1, -1]);
    const rng = new Rng(1);
    assert.equal(sampleToken(logits, { temperature: 0, topP: 1 }, rng), 1);
    for (let i = 0; i < 20; i++) assert.equal(sampleToken(logits, { temperature: 1, topP: 0.1 }, rng), 1);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 20000; i++) counts[sampleToken(logits, { temperature: 1, topP: 1 }, rng)]!++;
    const p = logSoftmax(logits).map(Math.exp);
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(counts[i]! / 20000 - p[i]!) < 0.015, `token ${i}: ${counts[i]! / 20000} vs ${p[i]}`);
    // top-p 0.7 keeps {1, 2} (0.665 < 0.7 ≤ 0.91): token 0 and 3 never appear.
    for (let i = 0; i < 500; i++) assert.ok([1, 2].includes(sampleToken(logits, { temperature: 1, topP: 0.7 }, rng)));
  });

  it('greedy generation follows the reference argmax and stops at EOS', async () => {
    const m = randomLlama({ ...base, heads: 4, kvHeads: 2, seed: 21 });
    const model = buildModel(m.config, m.src);
    const prompt = [1, 5, 9];
    const out: number[] = [];
    const it = generate(model, prompt, { maxTokens: 6, stopIds: [] });
    for (;;) { const r = await it.next(); if (r.done) { assert.equal(r.value.generated, 6); break; } out.push(r.value); }
    const seq = [...prompt];
    for (let i = 0; i < 6; i++) {
      const ref = referenceLogits(m, seq);
      seq.push(argmax(Float32Array.from(ref[ref.length - 1]!)));
    }
    assert.deepEqual(out, seq.slice(3));
    // With the first generated token as the stop id nothing is yielded.
    const it2 = generate(model, prompt, { maxTokens: 6, stopIds: [out[0]!] });
    const r = await it2.next();
    assert.equal(r.done, true);
    assert.equal((r.value as { stoppedBy: string }).stoppedBy, 'eos');
  });
});

describe('perplexity', () => {
  it('chunks, drops the tail, and averages NLL as computed by hand', async () => {
    const m = randomLlama({ ...base, heads: 4, kvHeads: 2, seed: 31 });
    const model = buildModel(m.config, m.src);
    const ids = [1, 4, 8, 15, 16, 23, 42, 7, 9, 11, 3]; // 11 tokens, ctx 4 → 2 chunks, 3 dropped
    const r = await perplexity(model, ids, true, { ctx: 4, logitRows: 2 });
    let sum = 0;
    for (const c of [ids.slice(0, 4), ids.slice(4, 8)]) {
      const ref = referenceLogits(m, c);
      for (let t = 0; t < 3; t++) sum -= logSoftmax(ref[t]!)[c[t + 1]!]!;
    }
    assert.equal(r.chunks, 2);
    assert.equal(r.predictions, 6);
    assert.ok(Math.abs(r.nll - sum / 6) < 1e-5, `${r.nll} vs ${sum / 6}`);
    assert.ok(Math.abs(r.ppl - Math.exp(sum / 6)) < 1e-4);
    assert.match(r.convention, /one BOS at the start/);
    assert.match(r.convention, /non-overlapping 4-token chunks \(tail dropped\)/);
    const one = await perplexity(model, ids, true, { ctx: 4, maxChunks: 1 });
    assert.equal(one.chunks, 1);
    assert.equal(one.chunksAvailable, 2);
    await assert.rejects(perplexity(model, ids, true, { ctx: 12 }), /fewer than one 12-token chunk/);
  });

  it('nllOf is −log softmax', () => {
    const l = new Float32Array([1, 2, 3]);
    assert.ok(Math.abs(nllOf(l, 2) - -logSoftmax(l)[2]!) < 1e-12);
  });

  it('reads .txt as is, .jsonl and line-documents joined with blank lines', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ppl-'));
    try {
      writeFileSync(join(dir, 'a.txt'), 'one\n\ntwo\n');
      writeFileSync(join(dir, 'a.jsonl'), '{"text":"one"}\n\n{"title":"t","text":"two"}\n');
      writeFileSync(join(dir, 'w.raw'), ' \n = T = \n \nline\n');
      writeFileSync(join(dir, 'bad.jsonl'), '{"text":"one"}\n{"txt":1}\n');
      assert.deepEqual(readEvalText(join(dir, 'a.txt')), { text: 'one\n\ntwo\n', documents: 2 });
      assert.deepEqual(readEvalText(join(dir, 'a.jsonl')), { text: 'one\n\ntwo', documents: 2 });
      assert.equal(readEvalText(join(dir, 'w.raw'), 'lines').text, '\n\n = T = \n' + '\n\n' + '' + '\n\n' + 'line\n');
      assert.throws(() => readEvalText(join(dir, 'bad.jsonl')), /bad\.jsonl:2: .*"text"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('shared checkpoints', () => {
  for (const name of ['kjv-gqa', 'kjv-mha', 'TinyStories-656K', 'TinyStories-656K-bf16']) {
    const path = assetPath(`models/${name}`);
    it(`${name} loads and gives finite logits; prefill equals decode`, { skip: path ? false : `asset models/${name} missing` }, () => {
      const { model, tokenizer } = loadModel(path!);
      assert.ok(tokenizer, 'the folder has a tokenizer');
      const ids = tokenizer.encode('In the beginning there was a little girl', { addBos: true });
      const V = model.config.vocabSize;
      const all = model.forward(ids, model.newCache(), { logits: 'all' }).slice();
      assert.ok(all.every(Number.isFinite));
      const cache = model.newCache();
      let diff = 0;
      for (let t = 0; t < ids.length; t++) diff = Math.max(diff, maxAbsDiff(model.forward([ids[t]!], cache), all.subarray(t * V, (t + 1) * V)));
      assert.ok(diff < 1e-3, `decode vs prefill ${diff}`);
    });
  }

  it('the two TinyStories checkpoints (f32 vs bf16, tied weight under different names) agree', { skip: assetPath('models/TinyStories-656K-bf16') && assetPath('models/TinyStories-656K') ? false : 'assets missing' }, () => {
    // The f32 file holds bf16-representable values, so both compute the same function.
    const a = loadModel(assetPath('models/TinyStories-656K')!);
    const b = loadModel(assetPath('models/TinyStories-656K-bf16')!);
    assert.equal(a.model.weightDtype, 'f32');
    assert.equal(b.model.weightDtype, 'bf16');
    assert.equal(a.model.paramCount(), b.model.paramCount());
    const ids = a.tokenizer!.encode('Once upon a time', { addBos: true });
    const la = a.model.forward(ids, a.model.newCache(), { logits: 'all' }).slice();
    const lb = b.model.forward(ids, b.model.newCache(), { logits: 'all' });
    assert.ok(maxAbsDiff(la, lb) <= 1e-4, `logits differ by ${maxAbsDiff(la, lb)}`);
  });

  it('a llama2.c .bin loads directly, tokenizer found beside it', { skip: assetPath('models/stories260K') ? false : 'asset models/stories260K missing' }, () => {
    const m = loadModel(join(assetPath('models/stories260K')!, 'stories260K.bin'));
    assert.equal(m.format, 'llama2c');
    assert.equal(m.config.numKvHeads, 4);
    const cache = m.model.newCache();
    const out: number[] = [];
    let tok = m.tokenizer!.bosId!;
    for (let i = 0; i < 12; i++) out.push((tok = argmax(m.model.forward([tok], cache))));
    assert.match(m.tokenizer!.decode(out), /^Once upon a time, there was a little girl/);
  });
});

describe('sliding-window configs (the engine implements full attention only)', () => {
  const spec: RandomSpec = { ...base, heads: 4, kvHeads: 2, modelType: 'mistral', slidingWindow: 8, seed: 21 };
  it('contexts within the window are computed (and match the reference); longer ones are refused', () => {
    const m = randomLlama(spec);
    const model = buildModel(m.config, m.src);
    assert.equal(model.slidingWindow, 8);
    const ref = referenceLogits(m, TOKENS.slice(0, 8));
    const all = model.forward(TOKENS.slice(0, 8), model.newCache(), { logits: 'all' });
    assert.ok(maxAbsDiff(all.subarray(7 * 64, 8 * 64), ref[7]!) <= 1e-4);
    assert.throws(() => model.forward(TOKENS.slice(0, 9), model.newCache()), /sliding-window attention \(window 8 tokens\)/);
    // Decoding past the window is refused too, at the step that would cross it.
    const cache = model.newCache();
    model.forward(TOKENS.slice(0, 8), cache);
    assert.throws(() => model.forward([3], cache), /at most 8 tokens/);
  });
  it('perplexity refuses a ctx past the window, accepts one within it', async () => {
    const m = randomLlama(spec);
    const model = buildModel(m.config, m.src);
    const ids = Array.from({ length: 40 }, (_, i) => (i * 7) % 60 + 3);
    await assert.rejects(perplexity(model, ids, false, { ctx: 16 }), /exceeds the model's sliding attention window of 8 tokens/);
    const r = await perplexity(model, ids, false, { ctx: 8 });
    assert.ok(Number.isFinite(r.ppl));
  });
  it('use_sliding_window: false (and llama configs) mean full attention', () => {
    const m = randomLlama({ ...spec, modelType: 'llama' });
    assert.equal(buildModel(m.config, m.src).slidingWindow, null);
    const mm = randomLlama(spec);
    const cfg = parseConfig({ ...mm.config.raw, use_sliding_window: false }, 'config.json');
    assert.equal(buildModel(cfg, mm.src).slidingWindow, null);
  });
});
