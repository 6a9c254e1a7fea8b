// Our stock-semantics MLA engine (on the folder, and on the GGUF read back) against llama.cpp's deepseek2 (through node-llama-cpp's CPU
// binary): a stock DeepSeek-V3 folder is exported to GGUF (f32, kv_b split into attn_k_b /
// attn_v_b), the same tokens are evaluated by both, next-token log-probs must agree to 1e-3.
// Random models (q_proj and q_lora layouts, rotate-half rows permuted on export) and, when the
// assets are there, kjv-gqa converted at 31.25 % KV and exported through the strict export.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertModel } from '../src/convert/transmla.js';
import { exportDeepseekV3 } from '../src/export/deepseek-v3.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { exportDeepseek2Gguf } from '../src/export/gguf-deepseek2.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { loadModel } from '../src/arch/load.js';
import { perplexity, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { assetPath } from './helpers/assets.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { randomDeepseek, type DeepseekSpec } from './helpers/random-deepseek.js';
import { logSoftmax, mulberry32 } from './helpers/random-llama.js';

const TOL = 1e-3;
const tmp = mkdtempSync(join(tmpdir(), 'transmla-llamacpp-ds2-'));
const cpp = useLlamaCpp();
after(() => rmSync(tmp, { recursive: true, force: true }));

/**
 * max |Δ log-prob| between llama.cpp on `gguf` and our engine on `folder`, over all positions and
 * tokens; also both perplexities of ids[1..] given their prefixes.
 */
async function compare(folder: string, gguf: string, ids: number[], ppl?: { ours: number; cpp: number }): Promise<number> {
  const ours = loadModel(folder).model;
  const V = ours.config.vocabSize;
  const logits = ours.forward(ids, ours.newCache(), { logits: 'all' }).slice();
  const ref = await cpp.logProbs(gguf, ids, V);
  let worst = 0, nllOurs = 0, nllCpp = 0;
  for (let t = 0; t < ids.length; t++) {
    const lp = logSoftmax(logits.subarray(t * V, (t + 1) * V));
    for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(lp[i]! - ref[t]![i]!));
    if (t + 1 < ids.length) { nllOurs -= lp[ids[t + 1]!]!; nllCpp -= ref[t]![ids[t + 1]!]!; }
  }
  if (ppl) { ppl.ours = Math.exp(nllOurs / (ids.length - 1)); ppl.cpp = Math.exp(nllCpp / (ids.length - 1)); }
  return worst;
}

const vocabDir = assetPath('models/TinyStories-656K');

describe('deepseek2 GGUF: next-token log-probabilities vs llama.cpp (f32)', () => {
  const base: DeepseekSpec = { hidden: 64, heads: 4, nope: 16, rope: 8, v: 16, kvLoraRank: 24, qLoraRank: null, inter: 96, vocab: 2048, layers: 2 };
  const random: [string, DeepseekSpec][] = [
    ['random stock DeepSeek-V3, q_proj', { ...base, seed: 31 }],
    ['random stock DeepSeek-V3, q_lora + tied', { ...base, qLoraRank: 20, tied: true, seed: 32 }],
    ['random stock DeepSeek-V3, rope_interleave false (rows permuted)', { ...base, ropeHalf: true, v: 12, seed: 33 }],
  ];
  for (const [name, spec] of random) {
    it(name, { skip: vocabDir ? false : 'asset models/TinyStories-656K missing (its vocabulary is used)' }, async (t) => {
      if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
      const m = randomDeepseek(spec);
      const dir = join(tmp, name.replace(/\W+/g, '-'));
      mkdirSync(dir);
      await writeCheckpoint(dir, [...m.src.map].map(([n, tensor]) => ({ name: n, tensor })));
      writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
      writeHfFolderExtras(vocabDir!, dir);
      const gguf = join(tmp, `${name.replace(/\W+/g, '-')}.gguf`);
      const res = exportDeepseek2Gguf(gguf, dir, { outType: 'f32' });
      assert.ok(res.tensorNames.includes('blk.0.attn_k_b.weight') && res.tensorNames.includes('blk.0.attn_v_b.weight'));
      const rnd = mulberry32(99);
      const ids = [1, ...Array.from({ length: 63 }, () => 3 + Math.floor(rnd() * 2000))];
      const worst = await compare(dir, gguf, ids);
      t.diagnostic(`${ids.length} tokens, max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
      assert.ok(worst <= TOL, `${name}: max |Δ log-prob| ${worst} > ${TOL}`);
    });
  }

  for (const outType of ['f16', 'bf16'] as const) {
    it(`random stock DeepSeek-V3 as ${outType} GGUF: llama.cpp loads it (16-bit weights and activations: loose bound 0.1)`, { skip: vocabDir ? false : 'asset models/TinyStories-656K missing' }, async (t) => {
      if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
      const m = randomDeepseek({ ...base, qLoraRank: 20, seed: 34 });
      const dir = join(tmp, `half-${outType}`);
      mkdirSync(dir);
      await writeCheckpoint(dir, [...m.src.map].map(([n, tensor]) => ({ name: n, tensor })));
      writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
      writeHfFolderExtras(vocabDir!, dir);
      const gguf = join(tmp, `half-${outType}.gguf`);
      exportDeepseek2Gguf(gguf, dir, { outType });
      const rnd = mulberry32(7);
      const ids = [1, ...Array.from({ length: 31 }, () => 3 + Math.floor(rnd() * 2000))];
      const worst = await compare(dir, gguf, ids);
      t.diagnostic(`${ids.length} tokens, max |Δ log-prob| vs llama.cpp (${outType} weights) = ${worst.toExponential(2)}`);
      assert.ok(worst <= 0.1, `${outType}: max |Δ log-prob| ${worst}`);
    });
  }

  const kjv = assetPath('models/kjv-gqa');
  const calib = assetPath('text/kjv-old-testament-calib.txt');
  const evalText = assetPath('text/kjv-new-testament-eval.txt');
  it('kjv-gqa converted at 31.25 % KV, strict export, GGUF', { skip: kjv && calib && evalText ? false : 'assets models/kjv-gqa, text/kjv-* missing', timeout: 900_000 }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const evalPath = join(tmp, 'kjv-eval-small.txt');
    writeFileSync(evalPath, readFileSync(evalText!, 'utf8').split('\n\n').slice(0, 4).join('\n\n'));
    const exact = join(tmp, 'kjv-gqa-mla'), stock = join(tmp, 'kjv-gqa-ds3');
    // A fixed shape (d_R 32, FreqFold 2) and small calibration keep this test short.
    await convertModel({ variant: 'exact', model: kjv!, out: exact, kvFraction: 0.3125, ropeDim: 32, freqFold: 2, calib: calib!, calibSamples: 16, calibSeqLen: 128, evalTexts: [{ path: evalPath, mode: 'file' }], evalCtx: 128, evalChunks: 2 });
    const rep = await exportDeepseekV3({ model: exact, out: stock, calib: calib!, calibSamples: 16, calibSeqLen: 128, evalTexts: [{ path: evalPath, mode: 'file' }], evalCtx: 128, evalChunks: 2 });
    const ev = rep.evaluations[0]!;
    t.diagnostic(`ppl exact ${ev.exact.ppl.toFixed(3)}, stock ${ev.stock.ppl.toFixed(3)} (${ev.pplGapPercent.toFixed(2)} %)`);
    const gguf = join(tmp, 'kjv-gqa-ds3.gguf');
    exportDeepseek2Gguf(gguf, stock, { outType: 'f32' });
    const tok = loadModel(stock).tokenizer!;
    const ids = tokenizeForPerplexity(tok, readFileSync(evalPath, 'utf8')).ids.slice(0, 256);
    const ppl = { ours: 0, cpp: 0 };
    const worst = await compare(stock, gguf, ids, ppl);
    t.diagnostic(`${ids.length} tokens, max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)} (bf16 weights widened to f32); ppl of the ${ids.length - 1} predictions: ours ${ppl.ours.toFixed(4)}, llama.cpp ${ppl.cpp.toFixed(4)}`);
    assert.ok(worst <= TOL, `kjv-gqa: max |Δ log-prob| ${worst} > ${TOL}`);
    assert.ok(Math.abs(ppl.ours / ppl.cpp - 1) <= 1e-3, `ppl ours ${ppl.ours} vs llama.cpp ${ppl.cpp}`);
    // The GGUF itself, read back by our engine (arch/deepseek-gguf.ts), against llama.cpp on the same file.
    const pplGguf = { ours: 0, cpp: 0 };
    const worstGguf = await compare(gguf, gguf, ids, pplGguf);
    t.diagnostic(`GGUF read back: max |Δ log-prob| vs llama.cpp = ${worstGguf.toExponential(2)}; ppl ours ${pplGguf.ours.toFixed(4)}, llama.cpp ${pplGguf.cpp.toFixed(4)}`);
    assert.ok(worstGguf <= 1e-4 && Math.abs(pplGguf.ours / pplGguf.cpp - 1) <= 1e-4, `GGUF read back: ${worstGguf}, ppl ${pplGguf.ours} vs ${pplGguf.cpp}`);
    // Our perplexity of the GGUF-equivalent folder is what the export reported.
    const r = await perplexity(loadModel(stock).model, tokenizeForPerplexity(tok, readFileSync(evalPath, 'utf8')).ids, true, { ctx: ev.ctx, maxChunks: ev.chunks });
    assert.ok(Math.abs(r.ppl - ev.stock.ppl) <= 1e-6 * ev.stock.ppl);
  });

  it('kjv-gqa with per-layer widths (--rank-alloc joint), stock folder padded to the largest, GGUF', { skip: kjv && calib ? false : 'assets models/kjv-gqa, text/kjv-* missing', timeout: 900_000 }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const stock = join(tmp, 'kjv-gqa-joint-ds3');
    const rep = await convertModel({
      model: kjv!, out: stock, evaluate: false, kvFraction: 0.125, ropeDim: 16, freqFold: 4, calib: calib!, calibSamples: 6, calibSeqLen: 64,
      rankAlloc: 'joint', nopeRefit: true, latent: 'output-aware',
    });
    const dims = rep.parameters.qkRopeHeadDims!;
    assert.ok(new Set(dims).size > 1 || new Set(rep.parameters.kvLoraRanks).size > 1, 'widths differ between layers');
    const gguf = join(tmp, 'kjv-gqa-joint-ds3.gguf');
    exportDeepseek2Gguf(gguf, stock, { outType: 'f32' });
    const rnd = mulberry32(7);
    const ids = [1, ...Array.from({ length: 63 }, () => 3 + Math.floor(rnd() * 30000))];
    const worst = await compare(stock, gguf, ids);
    t.diagnostic(`layers (r + d_R) ${rep.parameters.kvLoraRanks!.map((r, l) => `${r}+${dims[l]}`).join(' ')} padded to one width; max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
    assert.ok(worst <= TOL, `per-layer widths padded: max |Δ log-prob| ${worst} > ${TOL}`);
  });
});
