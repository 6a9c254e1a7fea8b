// Stock DeepSeek-V3 semantics in the engine (kv_a_layernorm / q_a_layernorm, interleaved RoPE,
// YaRN frequencies + attention factor + softmax mscale) against an independent float64
// reference written like the stock modelling code; absorbed decode against the decompressed
// forward; and how a folder's semantics are decided (transmla.json).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { mlaSemantics, parseMlaConfig } from '../src/arch/deepseek.js';
import { loadModel } from '../src/arch/load.js';
import { buildModel } from '../src/arch/registry.js';
import { setMlaMode } from '../src/models/decoder.js';
import { yarnInvFreq } from '../src/models/yarn.js';
import { randomDeepseek, referenceDeepseekLogits, type DeepseekSpec } from './helpers/random-deepseek.js';
import { MapSource, maxAbsDiff } from './helpers/random-llama.js';
import { logits, decodeLogits, flat, randomTokens as tokens } from './helpers/logits.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-stock-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const base: DeepseekSpec = { hidden: 32, heads: 4, nope: 8, rope: 8, v: 6, kvLoraRank: 12, qLoraRank: null, inter: 40, vocab: 50, layers: 2 };
const yarn = { type: 'yarn', factor: 4, original_max_position_embeddings: 8, beta_fast: 32, beta_slow: 1, mscale: 0.9, mscale_all_dim: 1.1 };
const cases: [string, DeepseekSpec][] = [
  ['q_proj', { ...base, seed: 1 }],
  ['q_lora (q_a_layernorm)', { ...base, qLoraRank: 10, seed: 2 }],
  ['YaRN (mscale, mscale_all_dim)', { ...base, seed: 3, ropeScaling: yarn, maxPositionEmbeddings: 32 }],
  ['rope_interleave false, tied', { ...base, seed: 4, ropeHalf: true, tied: true }],
];

describe('stock DeepSeek-V3 semantics', () => {
  for (const [name, spec] of cases) {
    it(`matches the float64 stock reference, absorbed = decompressed: ${name}`, () => {
      const m = randomDeepseek(spec);
      const model = buildModel(parseMlaConfig(m.json, 'config.json', 'stock'), m.src);
      const toks = tokens(20, spec.vocab, 7);
      const ref = flat(referenceDeepseekLogits(m, toks));
      setMlaMode(model, 'decompressed');
      const dec = logits(model, toks);
      assert.ok(maxAbsDiff(dec, ref) <= 1e-4, `decompressed vs reference ${maxAbsDiff(dec, ref)}`);
      setMlaMode(model, 'absorbed');
      const abs = logits(model, toks);
      assert.ok(maxAbsDiff(abs, dec) <= 1e-4, `absorbed vs decompressed ${maxAbsDiff(abs, dec)}`);
      setMlaMode(model, 'auto');
      const step = decodeLogits(model, toks, 5);
      assert.ok(maxAbsDiff(step, dec) <= 1e-4, `prefill + decode vs forward ${maxAbsDiff(step, dec)}`);
    });
  }

  it('the norms matter: dropping kv_a_layernorm (exact semantics) changes the logits', () => {
    const m = randomDeepseek({ ...base, seed: 5 });
    const noNorm = new MapSource(new Map([...m.src.map].filter(([k]) => !k.includes('kv_a_layernorm'))));
    const exact = buildModel(parseMlaConfig(m.json, 'config.json', 'exact'), noNorm);
    const stock = buildModel(parseMlaConfig(m.json, 'config.json', 'stock'), m.src);
    const toks = tokens(8, base.vocab, 3);
    assert.ok(maxAbsDiff(logits(exact, toks), logits(stock, toks)) > 1e-2);
  });

  it('YaRN frequencies: unscaled above the fast band, divided by factor below the slow band', () => {
    const inv = yarnInvFreq(64, 10000, { type: 'yarn', factor: 40, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, mscale: 1, mscaleAllDim: 1, attentionFactor: null, truncate: true });
    assert.equal(inv[0], 1);
    assert.ok(Math.abs(inv[31]! - Math.pow(10000, -62 / 64) / 40) < 1e-18);
  });

  it('a stock folder without kv_a_layernorm, or with a q_proj bias, is refused clearly', () => {
    const m = randomDeepseek({ ...base, seed: 6 });
    const noNorm = new MapSource(new Map([...m.src.map].filter(([k]) => !k.includes('kv_a_layernorm'))));
    assert.throws(() => buildModel(parseMlaConfig(m.json, 'config.json', 'stock'), noNorm), /without model\.layers\.0\.self_attn\.kv_a_layernorm\.weight.*restore its transmla\.json/);
    const withBias = new MapSource(new Map(m.src.map));
    withBias.map.set('model.layers.0.self_attn.q_proj.bias', { dtype: 'f32', shape: [base.heads * 16], data: new Float32Array(base.heads * 16) });
    assert.throws(() => buildModel(parseMlaConfig(m.json, 'config.json', 'stock'), withBias), /has no model\.layers\.0\.self_attn\.q_proj\.bias/);
    assert.throws(() => parseMlaConfig({ ...m.json, rope_scaling: yarn }, 'config.json', 'exact'), /yarn is not supported in an exact-variant folder/);
  });

  it('folder semantics: no marker → stock; converter transmla.json or qk_latent_layernorm false → exact; variant deepseek-v3 → stock', async () => {
    const m = randomDeepseek({ ...base, seed: 8 });
    const dir = join(tmp, 'ds');
    mkdirSync(dir);
    await writeCheckpoint(dir, [...m.src.map].map(([name, tensor]) => ({ name, tensor })));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
    assert.equal(mlaSemantics(dir), 'stock');
    const toks = tokens(10, base.vocab, 9);
    const ref = flat(referenceDeepseekLogits(m, toks));
    const loaded = loadModel(dir);
    assert.equal(loaded.mla?.semantics, 'stock');
    assert.ok(maxAbsDiff(logits(loaded.model, toks), ref) <= 1e-4);
    writeFileSync(join(dir, 'transmla.json'), JSON.stringify({ tool: 'transmla', method: 'x' }));
    assert.equal(mlaSemantics(dir), 'exact');
    writeFileSync(join(dir, 'transmla.json'), JSON.stringify({ tool: 'transmla', variant: 'deepseek-v3' }));
    assert.equal(mlaSemantics(dir), 'stock');
    // The converter's config key alone (no transmla.json) marks the exact variant too.
    rmSync(join(dir, 'transmla.json'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...m.json, qk_latent_layernorm: false }));
    assert.equal(mlaSemantics(dir), 'exact');
  });
});
