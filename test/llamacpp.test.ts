// Our engine against llama.cpp (through node-llama-cpp's prebuilt CPU binary): every model is
// exported to GGUF with our writer (f32 tensors), the same token sequence is evaluated by both,
// and next-token log-probabilities at every position must agree to 1e-3.
// llama.cpp runs with an f32 KV cache and without flash attention: its default f16 cache
// alone moves log-probs by ~1e-2 on these models.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { exportLlamaGguf } from '../src/export/gguf-llama.js';
import { readConfig } from '../src/arch/registry.js';
import type { ModelArgs } from '../src/arch/args.js';
import { loadModel } from '../src/arch/load.js';
import type { WeightSource } from '../src/tensor.js';
import { loadTokenizer } from '../src/tokenizer/tokenizer.js';
import { assetPath } from './helpers/assets.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { logSoftmax, mulberry32, randomLlama, type RandomSpec } from './helpers/random-llama.js';
import { buildModel } from '../src/arch/registry.js';

const TOL = 1e-3;
const tmp = mkdtempSync(join(tmpdir(), 'transmla-llamacpp-'));
const cpp = useLlamaCpp();
after(() => rmSync(tmp, { recursive: true, force: true }));

async function compare(name: string, config: ModelArgs, weights: WeightSource, tokenizerDir: string, ids: number[]): Promise<number> {
  const gguf = join(tmp, `${name}.gguf`);
  exportLlamaGguf(gguf, config, weights, tokenizerDir, { outType: 'f32' });
  const ours = buildModel(config, weights);
  const V = config.vocabSize;
  const logits = ours.forward(ids, ours.newCache(), { logits: 'all' }).slice();
  const ref = await cpp.logProbs(gguf, ids, V);
  let worst = 0;
  for (let t = 0; t < ids.length; t++) {
    const lp = logSoftmax(logits.subarray(t * V, (t + 1) * V));
    for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(lp[i]! - ref[t]![i]!));
  }
  // Our engine reading the GGUF it wrote computes the same logits as from the source weights.
  const back = loadModel(gguf).model;
  const again = back.forward(ids, back.newCache(), { logits: 'all' });
  let roundTrip = 0;
  for (let i = 0; i < logits.length; i++) roundTrip = Math.max(roundTrip, Math.abs(again[i]! - logits[i]!));
  assert.ok(roundTrip <= 1e-5, `${name}: GGUF read back differs by ${roundTrip}`);
  return worst;
}

function textIds(modelDir: string, textRel: string, n: number): number[] | null {
  const textPath = assetPath(textRel);
  if (!textPath) return null;
  const tok = loadTokenizer(modelDir);
  return tok.encode(readFileSync(textPath, 'utf8').slice(0, 20 * n), { addBos: true }).slice(0, n);
}

describe('next-token log-probabilities vs llama.cpp (f32 GGUF)', () => {
  const real: [string, string, number][] = [
    ['TinyStories-656K', 'tinystories/tinystories_val_sample.txt', 128],
    ['TinyStories-656K-bf16', 'tinystories/tinystories_val_sample.txt', 128],
    ['kjv-mha', 'kjv-new-testament-eval.txt', 96],
    ['kjv-gqa', 'kjv-new-testament-eval.txt', 96],
  ];
  for (const [name, text, n] of real) {
    const dir = assetPath(`models/${name}`);
    it(`${name}${name.includes('bf16') || name === 'kjv-gqa' ? ' (bf16 widened to f32)' : ''}`, { skip: dir ? false : `asset models/${name} missing` }, async (t) => {
      if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
      const ids = textIds(dir!, `text/${text}`, n);
      if (!ids) return t.skip(`text/${text} missing`);
      const worst = await compare(name, readConfig(dir!), openCheckpoint(dir!), dir!, ids);
      t.diagnostic(`${ids.length} tokens, max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
      assert.ok(worst <= TOL, `${name}: max |Δ log-prob| ${worst} > ${TOL}`);
    });
  }

  // Random models use the TinyStories vocabulary (2048 tokens) so the GGUF carries a real tokenizer.
  const vocabDir = assetPath('models/TinyStories-656K');
  const random: [string, Partial<RandomSpec>][] = [
    ['random GQA 4 → 2', { heads: 4, kvHeads: 2 }],
    ['random Qwen2 (q/k/v biases)', { heads: 4, kvHeads: 2, modelType: 'qwen2', seed: 3 }],
    ['random GQA with llama3 RoPE scaling', {
      heads: 4, kvHeads: 2, headDim: 32, hidden: 128, seed: 4, ropeTheta: 500000,
      ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
    }],
  ];
  for (const [name, spec] of random) {
    it(name, { skip: vocabDir ? false : 'asset models/TinyStories-656K missing (its vocabulary is used)' }, async (t) => {
      if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
      const m = randomLlama({ hidden: 64, inter: 96, vocab: 2048, layers: 2, heads: 4, kvHeads: 2, ...spec });
      const rnd = mulberry32(99);
      const ids = [1, ...Array.from({ length: 95 }, () => 3 + Math.floor(rnd() * 2000))];
      const worst = await compare(name.replace(/\W+/g, '-'), m.config, m.src, vocabDir!, ids);
      t.diagnostic(`${ids.length} tokens, max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
      assert.ok(worst <= TOL, `${name}: max |Δ log-prob| ${worst} > ${TOL}`);
    });
  }
});
