// Converted Mixtral models as llama.cpp deepseek2 GGUFs with experts (through node-llama-cpp's
// CPU binary): the default convert writes the stock DeepSeek-V2 MoE folder, exportDeepseek2Gguf
// writes it as deepseek2 (expert_count, expert_used_count, softmax gating, renormalised weights,
// scale 1, the zero shared expert), and llama.cpp's next-token log-probs on the same tokens must
// agree with our engine's on the folder to 1e-4, as must the perplexity (relative).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertModel } from '../src/convert/transmla.js';
import { writeCheckpoint } from '../src/io/checkpoint.js';
import { exportDeepseek2Gguf } from '../src/export/gguf-deepseek2.js';
import { readGguf } from '../src/io/gguf.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { loadModel } from '../src/arch/load.js';
import { assetPath } from './helpers/assets.js';
import { useLlamaCpp } from './helpers/llamacpp.js';
import { randomMixtral } from './helpers/random-mixtral.js';
import { logSoftmax, mulberry32 } from './helpers/random-llama.js';

const TOL = 1e-4;
const tmp = mkdtempSync(join(tmpdir(), 'transmla-llamacpp-ds2moe-'));
const cpp = useLlamaCpp();
after(() => rmSync(tmp, { recursive: true, force: true }));

async function compare(folder: string, gguf: string, ids: number[]): Promise<{ worst: number; pplOurs: number; pplCpp: number }> {
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
  return { worst, pplOurs: Math.exp(nllOurs / (ids.length - 1)), pplCpp: Math.exp(nllCpp / (ids.length - 1)) };
}

const calib = assetPath('text/kjv-old-testament-calib.txt');
const vocabDir = assetPath('models/kjv-gqa');
const kjvMixtral = assetPath('models/kjv-mixtral');
const small = { calibSamples: 6, calibSeqLen: 64, seed: 3, evaluate: false } as const;

describe('deepseek2 GGUF with experts vs llama.cpp (f32)', () => {
  it('a random Mixtral with 8 experts / top-2, converted: expert metadata, and log-probs within 1e-4', { skip: calib && vocabDir ? false : 'assets kjv-gqa / kjv calibration text missing' }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const m = randomMixtral({ hidden: 64, heads: 4, kvHeads: 2, inter: 96, vocab: 32000, layers: 2, experts: 8, topK: 2, seed: 41 });
    const src = join(tmp, 'random-mixtral');
    mkdirSync(src);
    await writeCheckpoint(src, [...m.src.map].map(([n, tensor]) => ({ name: n, tensor })));
    writeFileSync(join(src, 'config.json'), JSON.stringify(m.json));
    writeHfFolderExtras(vocabDir!, src);
    const out = join(tmp, 'random-stock');
    await convertModel({ model: src, out, calib: calib!, kvLoraRank: 24, ropeDim: 8, freqFold: 2, ...small });
    const gguf = join(tmp, 'random.gguf');
    const res = exportDeepseek2Gguf(gguf, out, { outType: 'f32' });
    for (const n of ['blk.1.ffn_gate_inp.weight', 'blk.1.ffn_gate_exps.weight', 'blk.1.ffn_down_exps.weight', 'blk.1.ffn_up_shexp.weight']) assert.ok(res.tensorNames.includes(n), n);
    const f = readGguf(gguf);
    {
      assert.equal(f.getNumber('deepseek2.expert_count'), 8);
      assert.equal(f.getNumber('deepseek2.expert_used_count'), 2);
      assert.equal(f.getNumber('deepseek2.expert_gating_func'), 1);
      assert.equal(f.getNumber('deepseek2.leading_dense_block_count'), 0);
      assert.equal(f.getNumber('deepseek2.expert_shared_count'), 1);
      assert.equal(f.getNumber('deepseek2.expert_weights_scale'), 1);
    }
    const rnd = mulberry32(7);
    const ids = [1, ...Array.from({ length: 63 }, () => 3 + Math.floor(rnd() * 31000))];
    const { worst } = await compare(out, gguf, ids);
    t.diagnostic(`max |Δ log-prob| vs llama.cpp = ${worst.toExponential(2)}`);
    assert.ok(worst <= TOL, `max |Δ log-prob| ${worst} > ${TOL}`);
  });

  it('kjv-mixtral converted at 31.25 % KV: log-probs within 1e-4 and equal perplexity on real text', { skip: kjvMixtral && calib ? false : 'asset kjv-mixtral missing' }, async (t) => {
    if (cpp.unavailable()) return t.skip(cpp.unavailable() as string);
    const out = join(tmp, 'kjv-stock');
    await convertModel({ model: kjvMixtral!, out, calib: calib!, kvFraction: 0.3125, ropeDim: 32, freqFold: 2, ...small });
    const gguf = join(tmp, 'kjv.gguf');
    exportDeepseek2Gguf(gguf, out, { outType: 'f32' });
    const tok = loadModel(out).tokenizer!;
    const text = readFileSync(assetPath('text/kjv-new-testament-eval.txt')!, 'utf8').slice(0, 2000);
    const ids = tok.encode(text, { addBos: true }).slice(0, 128);
    const { worst, pplOurs, pplCpp } = await compare(out, gguf, ids);
    t.diagnostic(`${ids.length} tokens: max |Δ log-prob| ${worst.toExponential(2)}, ppl ours ${pplOurs.toFixed(6)} llama.cpp ${pplCpp.toFixed(6)}`);
    assert.ok(worst <= TOL, `max |Δ log-prob| ${worst} > ${TOL}`);
    assert.ok(Math.abs(pplOurs / pplCpp - 1) <= 1e-4, `ppl ${pplOurs} vs ${pplCpp}`);
  });
});
