// The conversion pipeline end to end on the real small checkpoints (small calibration sizes):
// the saved DeepSeek-V3 folder reloads through loadModel and reproduces the measured numbers,
// transmla.json records the run, and the engine's two MLA forms agree on the converted model.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { convertModel } from '../src/convert/transmla.js';
import type { ConvertReport } from '../src/schema/transmla-json.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { perplexity, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { describeModel } from '../src/arch/describe.js';
import { loadModel } from '../src/arch/load.js';
import { setMlaMode } from '../src/models/decoder.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';
import { maxAbsDiff } from './helpers/random-llama.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-convert-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const skip = skipUnlessAsset('models/kjv-gqa') || skipUnlessAsset('models/kjv-mha') || skipUnlessAsset('text/kjv-old-testament-calib.txt') || skipUnlessAsset('text/kjv-new-testament-eval.txt');

/** A short evaluation file (the first chapters of the held-out text) so tests tokenize little. */
function smallEvalText(): string {
  const p = join(tmp, 'eval-small.txt');
  if (!existsSync(p)) {
    const docs = readFileSync(mustAsset('text/kjv-new-testament-eval.txt'), 'utf8').split('\n\n').slice(0, 3);
    writeFileSync(p, docs.join('\n\n'));
  }
  return p;
}

const CTX = 64;

async function reloadAndCheck(out: string, report: ConvertReport, evalPath: string): Promise<void> {
  const loaded = loadModel(out);
  assert.ok(loaded.mla, 'the folder loads as an MLA model');
  const { model, tokenizer } = loaded;
  const { ids, bos } = tokenizeForPerplexity(tokenizer!, readFileSync(evalPath, 'utf8'), tokenizer!.addBosByDefault);
  const ev = report.evaluations[0]!;
  const r = await perplexity(model, ids, bos, { ctx: CTX, maxChunks: ev.chunks });
  assert.ok(Math.abs(r.ppl - ev.mla.ppl) <= 1e-6 * ev.mla.ppl, `reloaded ppl ${r.ppl} vs measured ${ev.mla.ppl}`);

  // Absorbed (latent cache) vs decompressed forward, and token-by-token decode.
  const tokens = ids.slice(0, 40);
  setMlaMode(model, 'decompressed');
  const dec = model.forward(tokens, model.newCache(), { logits: 'all' }).slice();
  setMlaMode(model, 'absorbed');
  const abs = model.forward(tokens, model.newCache(), { logits: 'all' }).slice();
  assert.ok(maxAbsDiff(dec, abs) <= 1e-4, `absorbed vs decompressed ${maxAbsDiff(dec, abs)}`);
  setMlaMode(model, 'auto');
  const V = model.config.vocabSize;
  const cache = model.newCache();
  model.forward(tokens.slice(0, 30), cache); // decompressed prefill fills the latent cache…
  let worst = 0;
  for (let i = 30; i < 40; i++) { // …then absorbed decode continues from it
    const l = model.forward([tokens[i]!], cache, { logits: 'last' });
    worst = Math.max(worst, maxAbsDiff(l, dec.subarray(i * V, (i + 1) * V)));
  }
  assert.ok(worst <= 1e-4, `prefill + decode vs full forward ${worst}`);

  const d = describeModel(loaded);
  assert.equal(d.kvCache.bytesPerToken, report.kvCache.bytesPerTokenAfter);
  assert.equal(d.mla!.kvLoraRank, report.parameters.kvLoraRank);
  assert.equal(d.mla!.semantics, 'exact', 'a converted folder runs as the exact variant');
}

test('convert kjv-gqa at 31.25 % (d_R and M searched): DeepSeek-V3 folder, transmla.json, reload reproduces the MLA perplexity', { skip }, async () => {
  const out = join(tmp, 'kjv-gqa-mla');
  const calib = mustAsset('text/kjv-old-testament-calib.txt');
  const evalPath = smallEvalText();
  const report = await convertModel({
    variant: 'exact',
    model: mustAsset('models/kjv-gqa'), out, kvFraction: 0.3125, freqFold: 'auto',
    calib, calibSamples: 8, calibSeqLen: 64, seed: 7, searchChunks: 1,
    evalTexts: [{ path: evalPath, mode: 'file' }], evalCtx: CTX, evalChunks: 3,
  });
  const p = report.parameters;
  // 2·G·d = 256 → a budget of 80 = r + d_R, split by the search.
  assert.equal(p.kvLoraRank + p.qkRopeHeadDim, 80);
  assert.deepEqual([p.qkNopeHeadDim, p.vHeadDim, p.qLoraRank, p.ropeDimRequested], [64, 64, null, 'auto']);
  assert.equal(report.kvCache.bytesPerTokenBefore, 6 * 256 * 2);
  assert.equal(report.kvCache.bytesPerTokenAfter, 6 * 80 * 2);
  const tried = new Set(report.search.trace.map((t) => t.ropeDim));
  assert.deepEqual([...tried].sort((a, b) => a - b), [2, 4, 8, 16, 32, 64]);
  const best = report.search.trace.reduce((a, b) => (b.score < a.score ? b : a));
  assert.deepEqual([best.ropeDim, best.freqFold, best.kvLoraRank], [p.qkRopeHeadDim, p.freqFold, p.kvLoraRank]);

  const files = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'transmla.json'];
  for (const f of files) assert.ok(existsSync(join(out, f)), `${f} written`);
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  // The exact variant's own identity: no stock engine takes it for DeepSeek-V3.
  assert.equal(cfg.model_type, 'transmla_mla');
  assert.deepEqual(cfg.architectures, ['TransmlaMlaForCausalLM']);
  assert.deepEqual([cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.q_lora_rank, cfg.num_key_value_heads], [p.kvLoraRank, p.qkRopeHeadDim, 64, 64, null, 6]);
  assert.equal(cfg.rope_interleave, true);
  assert.equal(cfg.torch_dtype, 'bfloat16');

  const ck = openCheckpoint(out);
  try {
    const a = 'model.layers.0.self_attn';
    assert.deepEqual(ck.info(`${a}.q_proj.weight`).shape, [6 * (64 + p.qkRopeHeadDim), 384]);
    assert.deepEqual(ck.info(`${a}.kv_a_proj_with_mqa.weight`).shape, [80, 384]);
    assert.deepEqual(ck.info(`${a}.kv_b_proj.weight`).shape, [6 * 128, p.kvLoraRank]);
    assert.deepEqual(ck.info(`${a}.o_proj.weight`).shape, [384, 384]);
    assert.equal(ck.info(`${a}.kv_b_proj.weight`).dtype, 'BF16');
    assert.ok(!ck.has(`${a}.k_proj.weight`) && !ck.has(`${a}.kv_a_layernorm.weight`));
    assert.ok(ck.has('model.layers.5.mlp.down_proj.weight') && ck.has('model.norm.weight'));
  } finally {
    ck.close();
  }

  const saved = JSON.parse(readFileSync(join(out, 'transmla.json'), 'utf8')) as ConvertReport;
  assert.equal(saved.calibration.sha256, createHash('sha256').update(readFileSync(calib)).digest('hex'));
  assert.deepEqual([saved.calibration.samples, saved.calibration.seqLen, saved.calibration.seed], [8, 64, 7]);
  assert.equal(saved.parameters.calibOrder, 'faithful');
  assert.match(saved.parameters.ropeLayout, /interleaved/);
  const ev = saved.evaluations[0]!;
  for (const s of [ev.original, ev.partialRope, ev.mla]) assert.ok(Number.isFinite(s.ppl) && s.ppl > 1);
  assert.equal(ev.original.kl, 0);
  assert.ok(ev.mla.kl > 0 && ev.mla.top1 > 0.3 && ev.mla.top1 <= 1);
  assert.ok(saved.peakRssBytes > 0 && saved.seconds.convertTotal > 0);

  await reloadAndCheck(out, report, evalPath);
});

test('convert kjv-mha with q_lora, sequential calibration order, fixed freqfold: reloads and agrees', { skip }, async () => {
  const out = join(tmp, 'kjv-mha-mla');
  const evalPath = smallEvalText();
  const report = await convertModel({
    variant: 'exact',
    model: mustAsset('models/kjv-mha'), out, kvLoraRank: 96, ropeDim: 16, qLoraRank: 128, freqFold: 8,
    calib: mustAsset('text/kjv-old-testament-calib.txt'), calibSamples: 8, calibSeqLen: 64, calibOrder: 'sequential',
    evalTexts: [{ path: evalPath, mode: 'file' }], evalCtx: CTX, evalChunks: 2,
  });
  assert.deepEqual([report.parameters.kvLoraRank, report.parameters.qkRopeHeadDim, report.parameters.qLoraRank, report.parameters.freqFold], [96, 16, 128, 8]);
  assert.equal(report.search.trace.length, 0);
  const ck = openCheckpoint(out);
  try {
    assert.deepEqual(ck.info('model.layers.0.self_attn.q_a_proj.weight').shape, [128, 256]);
    assert.deepEqual(ck.info('model.layers.0.self_attn.q_b_proj.weight').shape, [4 * (64 + 16), 128]);
    assert.ok(!ck.has('model.layers.0.self_attn.q_proj.weight'));
    assert.equal(ck.info('model.layers.0.self_attn.q_a_proj.weight').dtype, 'F32');
  } finally {
    ck.close();
  }
  await reloadAndCheck(out, report, evalPath);
});

test('conversion refuses impossible shapes with clear errors', { skip }, async () => {
  const base = { model: mustAsset('models/kjv-gqa'), out: null, freqFold: 2 as const, calib: smallEvalText(), calibSamples: 1, calibSeqLen: 8 };
  await assert.rejects(convertModel({ variant: 'exact', ...base, kvLoraRank: 240, ropeDim: 32 }), /--kv-lora-rank 240 is larger than .* r ≤ 2·G·d − d_R = 2·2·64 − 32 = 224/);
  await assert.rejects(convertModel({ variant: 'exact', ...base, kvLoraRank: 64, ropeDim: 24 }), /qk_rope_head_dim 24 must divide head_dim 64/);
  await assert.rejects(convertModel({ variant: 'exact', ...base, kvLoraRank: 64, ropeDim: 32, freqFold: 3 }), /freqfold 3 must be a multiple of/);
  await assert.rejects(convertModel({ variant: 'exact', ...base, kvFraction: 0.01 }), /too small/);
  await assert.rejects(convertModel({ variant: 'exact', ...base, kvLoraRank: 64, ropeDim: 'auto' }), /--rope-dim auto needs --kv-fraction/);
  await assert.rejects(convertModel({ variant: 'exact', ...base, kvFraction: 0.5, kvLoraRank: 10 }), /either --kv-lora-rank or --kv-fraction/);
  const out = join(tmp, 'not-mla-yet');
  await assert.rejects(convertModel({ variant: 'exact', ...base, out, kvLoraRank: 64, ropeDim: 32, calib: join(tmp, 'missing.txt') }), /missing\.txt/);
  assert.ok(!existsSync(out), 'nothing written on failure');
});
