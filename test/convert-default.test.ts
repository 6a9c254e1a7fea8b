// The default `convert`: the stock DeepSeek-V3 folder stock engines run, written in one
// streaming sweep (with every stage evaluated in the same sweep); the exact variant under its own
// identity; the stage sweep scores exactly what whole-model evaluation scores.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { buildModel } from '../src/arch/registry.js';
import { loadModel } from '../src/arch/load.js';
import { STOCK_DEEPSEEK_V3_KEYS } from '../src/arch/deepseek-stock.js';
import { convertModel } from '../src/convert/transmla.js';
import { exportModel } from '../src/export/targets.js';
import { fidelity } from '../src/eval/fidelity.js';
import { perplexity, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { evalChunks, StageSweep } from '../src/eval/stage-sweep.js';
import { Decoder } from '../src/models/decoder.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import type { StockExportReport } from '../src/schema/transmla-json.js';
import { validateFolder } from '../src/validate/validate.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { randomLlama } from './helpers/random-llama.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-default-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const skip = skipUnlessAsset('models/kjv-gqa') || skipUnlessAsset('text/kjv-old-testament-calib.txt') || skipUnlessAsset('text/kjv-new-testament-eval.txt');

function evalFile(): string {
  const p = join(tmp, 'eval.txt');
  if (!existsSync(p)) writeFileSync(p, readFileSync(mustAsset('text/kjv-new-testament-eval.txt'), 'utf8').split('\n\n').slice(0, 4).join('\n\n'));
  return p;
}

const small = { kvFraction: 0.25, ropeDim: 16, freqFold: 4, calibSamples: 8, calibSeqLen: 64, seed: 3, evalCtx: 64, evalChunks: 3 } as const;

describe('default convert: the stock DeepSeek-V3 folder', { skip }, () => {
  test('stock keys, kv_a_layernorm, lm_head, card; stock engines load it and compute what it means; it reloads with the measured perplexity', async () => {
    const out = join(tmp, 'stock');
    const lines: string[] = [];
    const r = await convertModel({ model: mustAsset('models/kjv-gqa'), out, calib: mustAsset('text/kjv-old-testament-calib.txt'), evalTexts: [{ path: evalFile(), mode: 'file' }], ...small, log: (l) => lines.push(l) });
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.model_type, 'deepseek_v3');
    assert.deepEqual(Object.keys(cfg).filter((k) => !STOCK_DEEPSEEK_V3_KEYS.includes(k)), [], 'no custom keys');
    const ck = openCheckpoint(out);
    try {
      for (let l = 0; l < 6; l++) assert.ok(ck.has(`model.layers.${l}.self_attn.kv_a_layernorm.weight`));
      assert.ok(ck.has('lm_head.weight'), 'lm_head.weight written although the source ties it');
    } finally {
      ck.close();
    }
    assert.ok(existsSync(join(out, 'README.md')) && existsSync(join(out, 'report.html')));
    const tj = JSON.parse(readFileSync(join(out, 'transmla.json'), 'utf8')) as StockExportReport;
    assert.equal(tj.variant, 'deepseek-v3');
    assert.equal(tj.source.exactFolder, null);
    assert.equal((tj.conversion as { variant?: string }).variant, 'exact');
    // Four stages measured in the one sweep: original → partial RoPE → MLA → stock.
    assert.equal(r.evaluations.length, 1);
    assert.equal(r.stockExport!.evaluations.length, 1);
    const ev = r.stockExport!.evaluations[0]!;
    assert.ok(Math.abs(ev.exact.ppl - r.evaluations[0]!.mla.ppl) < 1e-9 * ev.exact.ppl, 'the exact MLA model is the same model in both comparisons');
    assert.ok(lines.some((l) => /^ {2}stock {9}ppl/.test(l)), lines.join('\n'));
    // Stock engines: transformers and llama.cpp load it and compute what it means (vLLM/SGLang
    // refuse this small latent shape for their kernels' sake, which validate states separately).
    const v = validateFolder(out);
    for (const e of ['transformers', 'llama.cpp'] as const) {
      const verdict = v.engines.find((x) => x.engine === e)!;
      assert.equal(verdict.loads, true, `${e}: ${verdict.reasons.join('; ')}`);
      assert.equal(verdict.correct, true, `${e}: ${verdict.reasons.join('; ')}`);
    }
    const loaded = loadModel(out);
    assert.equal(loaded.mla?.semantics, 'stock');
    const { ids, bos } = tokenizeForPerplexity(loaded.tokenizer!, readFileSync(evalFile(), 'utf8'));
    const p = await perplexity(loaded.model, ids, bos, { ctx: ev.ctx, maxChunks: ev.chunks });
    assert.ok(Math.abs(p.ppl - ev.stock.ppl) <= 1e-6 * ev.stock.ppl, `reloaded ${p.ppl} vs measured ${ev.stock.ppl}`);
  });

  test('--variant exact: its own model_type, which no stock engine takes for DeepSeek; transmla runs and exports it', async () => {
    const out = join(tmp, 'exact');
    await convertModel({ model: mustAsset('models/kjv-gqa'), out, variant: 'exact', calib: mustAsset('text/kjv-old-testament-calib.txt'), ...small, evaluate: false });
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.model_type, 'transmla_mla');
    const v = validateFolder(out);
    for (const e of v.engines) assert.equal(e.loads, false, `${e.engine} must refuse the exact variant`);
    assert.match(v.findings.find((f) => f.rule === 'model-type')!.message, /exact variant/);
    assert.equal(loadModel(out).mla?.semantics, 'exact');
    const stock = join(tmp, 'exact-exported');
    const r = await exportModel({ target: 'deepseek-v3', model: out, out: stock, calibSamples: 8, calibSeqLen: 64, seed: 3, evalCtx: 64, evalChunks: 1 });
    assert.equal(r.stock?.variant, 'deepseek-v3');
    assert.equal(loadModel(stock).mla?.semantics, 'stock');
  });
});

test('the stage sweep scores exactly what whole-model evaluation scores', async () => {
  const a = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, inter: 48, vocab: 61, layers: 3, seed: 5 });
  const b = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, inter: 48, vocab: 61, layers: 3, seed: 6 });
  const ma = buildModel(a.config, a.src), mb = buildModel(b.config, b.src);
  // Stages share the embedding (a conversion never changes it); layers, norm and head differ.
  const ids = Array.from({ length: 200 }, (_, i) => (i * 17 + 3) % 61);
  const want = await fidelity(ma, [new Decoder(ma.config, ma.embed, mb.layers, ma.norm, ma.head), new Decoder(ma.config, ma.embed, mb.layers, mb.norm, mb.head)], ids, false, { ctx: 32, maxChunks: 4 });
  const data = evalChunks(ids, false, 32, 4);
  const sweep = StageSweep.open(a.config, ma.embed, data, 3);
  try {
    for (let l = 0; l < 3; l++) sweep.advance([ma.layers[l]!, mb.layers[l]!, mb.layers[l]!]);
    const [got] = await sweep.finish([{ norm: ma.norm, head: ma.head }, { norm: ma.norm, head: ma.head }, { norm: mb.norm, head: mb.head }], [{ reference: 0, models: [1, 2] }]);
    assert.deepEqual(got!.reference, want.reference);
    assert.deepEqual(got!.models, want.models);
    assert.equal(got!.predictions, want.predictions);
  } finally {
    sweep.close();
  }
});
