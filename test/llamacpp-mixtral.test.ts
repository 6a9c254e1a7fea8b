// Our Mixtral engine against llama.cpp (node-llama-cpp's prebuilt CPU binary): each model is
// exported with our writer to an f32 GGUF (llama.cpp's "llama" architecture with expert_count,
// ffn_gate_inp and stacked ffn_{gate,up,down}_exps), the same tokens are evaluated by both, and
// next-token log-probabilities at every position must agree to 1e-4. llama.cpp runs with an f32
// KV cache and without flash attention (test/helpers/llamacpp.ts).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MixtralArgs } from '../src/arch/mixtral.js';
import { buildModel, readConfig } from '../src/arch/registry.js';
import { exportMixtralGguf } from '../src/export/gguf-mixtral.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import type { WeightSource } from '../src/tensor.js';
import { loadTokenizer } from '../src/tokenizer/tokenizer.js';
import { assetPath } from './helpers/assets.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { logSoftmax, mulberry32 } from './helpers/random-llama.js';
import { randomMixtral, type RandomMixtralSpec } from './helpers/random-mixtral.js';

const TOL = 1e-4;
const tmp = mkdtempSync(join(tmpdir(), 'transmla-llamacpp-mixtral-'));
const cpp = useLlamaCpp();
after(() => rmSync(tmp, { recursive: true, force: true }));

/** max |Δ log-prob| between llama.cpp on our GGUF and our engine on the source weights. */
async function compare(name: string, config: MixtralArgs, weights: WeightSource, tokenizerDir: string, ids: number[]): Promise<number> {
  const gguf = join(tmp, `${name}.gguf`);
  exportMixtralGguf(gguf, config, weights, tokenizerDir, { outType: 'f32' });
  const ours = buildModel(config, weights);
  const V = config.vocabSize;
  const logits = ours.forward(ids, ours.newCache(), { logits: 'all' }).slice();
  const ref = await cpp.logProbs(gguf, ids, V);
  let worst = 0;
  for (let t = 0; t < ids.length; t++) {
    const lp = logSoftmax(logits.subarray(t * V, (t + 1) * V));
    for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(lp[i]! - ref[t]![i]!));
  }
  return worst;
}

describe('Mixtral next-token log-probabilities vs llama.cpp (f32 GGUF)', () => {
  const dir = assetPath('models/kjv-mixtral');
  it('kjv-mixtral (4 experts, top-2; bf16 widened to f32)', { skip: dir ? false : 'asset models/kjv-mixtral missing' }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const textPath = assetPath('text/kjv-new-testament-eval.txt');
    if (!textPath) return t.skip('text/kjv-new-testament-eval.txt missing');
    const ids = loadTokenizer(dir!).encode(readFileSync(textPath, 'utf8').slice(0, 4000), { addBos: true }).slice(0, 96);
    const ck = openCheckpoint(dir!);
    try {
      const worst = await compare('kjv-mixtral', readConfig(dir!) as MixtralArgs, ck, dir!, ids);
      t.diagnostic(`${ids.length} tokens, max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
      assert.ok(worst <= TOL, `kjv-mixtral: max |Δ log-prob| ${worst} > ${TOL}`);
    } finally {
      ck.close();
    }
  });

  // Random models use the TinyStories vocabulary (2048 tokens) so the GGUF carries a real tokenizer.
  const vocabDir = assetPath('models/TinyStories-656K');
  const base: RandomMixtralSpec = { hidden: 64, heads: 4, kvHeads: 2, inter: 96, vocab: 2048, layers: 2, experts: 8, topK: 2 };
  const random: [string, Partial<RandomMixtralSpec>][] = [
    ['random Mixtral, 8 experts top-2, GQA 4 → 2', { seed: 41 }],
    ['random Mixtral, 8 experts top-2, MHA, tied head, head_dim ≠ hidden/heads', { kvHeads: 4, headDim: 24, tied: true, seed: 42 }],
    ['random Mixtral, 8 experts top-2, bf16 weights, rope θ 1e6, 3 layers', { dtype: 'bf16', ropeTheta: 1e6, layers: 3, seed: 43 }],
  ];
  for (const [name, spec] of random) {
    it(name, { skip: vocabDir ? false : 'asset models/TinyStories-656K missing (its vocabulary is used)' }, async (t) => {
      if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
      const m = randomMixtral({ ...base, ...spec });
      const rnd = mulberry32(99);
      const ids = [1, ...Array.from({ length: 95 }, () => 3 + Math.floor(rnd() * 2000))];
      const worst = await compare(name.replace(/\W+/g, '-'), m.config, m.src, vocabDir!, ids);
      t.diagnostic(`${ids.length} tokens, max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
      assert.ok(worst <= TOL, `${name}: max |Δ log-prob| ${worst} > ${TOL}`);
    });
  }
});
