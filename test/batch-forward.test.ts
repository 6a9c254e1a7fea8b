// Decoder.forwardBatch: several sequences, each with its own cache and any number (≥ 1) of new
// tokens, in one step must give the logits of separate forward() calls (1e-5), for every
// attention layer (GQA, MHA, MLA exact and stock, MHA2MLA), with f32 and quantized latent caches,
// with absorbed decode steps and decompressed prefills mixed in one batch; and the caches must
// end up where separate calls leave them (a later single-sequence step agrees too).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel, parseConfig } from '../src/arch/registry.js';
import { setKvQuant, type Decoder } from '../src/models/decoder.js';
import type { KvCache } from '../src/models/kv-cache.js';
import { randomDeepseek } from './helpers/random-deepseek.js';
import { randomLlama } from './helpers/random-llama.js';
import { randomMixtral } from './helpers/random-mixtral.js';
import { randomMha2mla, randomMla } from './helpers/random-train.js';
import { randomTokens } from './helpers/logits.js';

const TOL = 1e-5;

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const models: [string, () => Decoder][] = [
  ['GQA (Llama, 3 query heads per KV head)', () => { const m = randomLlama({ hidden: 48, heads: 6, kvHeads: 2, inter: 64, vocab: 97, layers: 2, seed: 3 }); return buildModel(m.config, m.src); }],
  ['MHA with biases (Qwen2)', () => { const m = randomLlama({ hidden: 32, heads: 4, kvHeads: 4, inter: 48, vocab: 61, layers: 2, modelType: 'qwen2', seed: 4 }); return buildModel(m.config, m.src); }],
  ['MLA exact variant, q_lora, biases', () => { const m = randomMla({ hidden: 48, heads: 4, inter: 64, vocab: 83, layers: 2, nope: 8, rope: 8, v: 12, rank: 16, qLoraRank: 12, biases: true, seed: 5 }); return buildModel(m.cfg, m.src); }],
  ['MLA stock DeepSeek-V3 (latent norms, interleaved RoPE)', () => {
    const m = randomDeepseek({ hidden: 48, heads: 4, nope: 8, rope: 8, v: 8, kvLoraRank: 16, qLoraRank: null, inter: 64, vocab: 79, layers: 2, seed: 6, latentScale: 3 });
    return buildModel(parseConfig(m.json, 'random-ds3/config.json'), m.src);
  }],
  ['Qwen3 (per-head q/k RMSNorm before RoPE), biases', () => { const m = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, headDim: 12, inter: 40, vocab: 50, layers: 2, modelType: 'qwen3', attentionBias: true, seed: 8 }); return buildModel(m.config, m.src); }],
  ['Mixtral (4 experts, top-2)', () => { const m = randomMixtral({ hidden: 32, heads: 4, kvHeads: 2, inter: 24, vocab: 53, layers: 2, experts: 4, topK: 2, seed: 9 }); return buildModel(m.config, m.src); }],
  ['MHA2MLA (per-KV-head RoPE + shared latent), biases', () => { const m = randomMha2mla({ hidden: 48, heads: 6, kvHeads: 2, headDim: 16, inter: 64, vocab: 71, layers: 2, pairs: 3, rank: 12, biases: true, seed: 7 }); return buildModel(m.cfg, m.src); }],
];

/** Per sequence: a prompt already in its cache, then the new tokens of the batched step. */
const shapes: { name: string; prompt: number[]; step: number[] }[] = [
  { name: 'decode steps of 4 sequences at different lengths', prompt: [5, 1, 9, 3], step: [1, 1, 1, 1] },
  { name: 'prefills and decode steps mixed', prompt: [0, 7, 2, 0, 11], step: [6, 1, 3, 1, 2] },
  { name: 'one sequence, several tokens', prompt: [4], step: [5] },
];

describe('Decoder.forwardBatch equals separate forwards', () => {
  for (const [name, make] of models) {
    for (const quant of [null, { bits: 8 as const, group: 8 }]) {
      const mk = make();
      if (quant && !mk.layers[0]!.attn.latent) continue;
      for (const sh of shapes) {
        it(`${name}${quant ? ', int8 latent cache' : ''}: ${sh.name}`, () => {
          const model = make();
          if (quant) setKvQuant(model, quant);
          const V = model.config.vocabSize;
          const seqs = sh.prompt.map((n, i) => ({ prompt: randomTokens(n, V, 100 + i), step: randomTokens(sh.step[i]!, V, 200 + i), next: randomTokens(1, V, 300 + i) }));
          const fill = (): KvCache[] => seqs.map((s) => {
            const c = model.newCache();
            if (s.prompt.length > 0) model.forward(s.prompt, c);
            return c;
          });
          // Separate forwards: every new token's logits, then one more decode step each.
          const sepCaches = fill();
          const sepAll = seqs.map((s, i) => model.forward(s.step, sepCaches[i]!, { logits: 'all' }).slice());
          const sepNext = seqs.map((s, i) => model.forward(s.next, sepCaches[i]!).slice());
          // One batched step with all logits, one with the last rows only, then single decode steps.
          const caches = fill();
          const all = model.forwardBatch(seqs.map((s, i) => ({ tokens: s.step, cache: caches[i]! })), { logits: 'all' }).slice();
          let row = 0, worst = 0;
          seqs.forEach((s, i) => {
            worst = Math.max(worst, maxDiff(all.subarray(row * V, (row + s.step.length) * V), sepAll[i]!));
            row += s.step.length;
            assert.equal(caches[i]!.length, s.prompt.length + s.step.length);
          });
          const caches2 = fill();
          const last = model.forwardBatch(seqs.map((s, i) => ({ tokens: s.step, cache: caches2[i]! }))).slice();
          seqs.forEach((s, i) => {
            const sep = sepAll[i]!;
            worst = Math.max(worst, maxDiff(last.subarray(i * V, (i + 1) * V), sep.subarray((s.step.length - 1) * V)));
          });
          // The caches the batch filled serve later steps as separate ones do (batched too).
          const next = model.forwardBatch(seqs.map((s, i) => ({ tokens: s.next, cache: caches[i]! }))).slice();
          seqs.forEach((s, i) => { worst = Math.max(worst, maxDiff(model.forward(s.next, caches2[i]!), sepNext[i]!)); });
          seqs.forEach((_, i) => { worst = Math.max(worst, maxDiff(next.subarray(i * V, (i + 1) * V), sepNext[i]!)); });
          assert.ok(worst <= TOL, `max |Δ logit| ${worst} > ${TOL}`);
        });
      }
    }
  }

  it('refuses an empty batch, a sequence without tokens and a cache used twice', () => {
    const m = randomLlama({ hidden: 16, heads: 2, kvHeads: 1, inter: 24, vocab: 31, layers: 1, seed: 8 });
    const model = buildModel(m.config, m.src);
    const c = model.newCache();
    assert.throws(() => model.forwardBatch([]), /at least one sequence/);
    assert.throws(() => model.forwardBatch([{ tokens: [1], cache: c }, { tokens: [], cache: model.newCache() }]), /at least one token/);
    assert.throws(() => model.forwardBatch([{ tokens: [1], cache: c }, { tokens: [2], cache: c }]), /twice/);
  });
});
