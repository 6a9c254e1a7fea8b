// Strict DeepSeek-V3 export of an exact MLA folder: stock config keys only, lm_head always
// written, RoPE rows permuted exactly, which biases drop out exactly and which need the calibrated
// fold (test/bias-fold.test.ts runs it), the
// calibrated kv_a_layernorm + refit kv_b_proj, and the reported perplexities reproduced by
// reloading the folder.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { exportDeepseekV3 } from '../src/export/deepseek-v3.js';
import { foldAttentionBiases } from '../src/convert/stock-bias.js';
import { STOCK_DEEPSEEK_V3_KEYS } from '../src/arch/deepseek-stock.js';
import { convertToTarget } from '../src/export/targets.js';
import { readdirSync } from 'node:fs';
import { fitLatentNorm, fitResidual, LatentMomentStats, LatentNormStats, refit, stabilizingScales } from '../src/convert/latent-norm.js';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { parseMlaConfig } from '../src/arch/deepseek.js';
import { loadModel } from '../src/arch/load.js';
import { buildModel } from '../src/arch/registry.js';
import { describeModel, formatModelReport } from '../src/arch/describe.js';
import { MlaAttention } from '../src/models/mla-attention.js';
import { perplexity, tokenizeForPerplexity } from '../src/eval/perplexity.js';
import type { Tensor } from '../src/tensor.js';
import { commands } from '../src/cli/commands.js';
import { capture } from './helpers/capture.js';
import { UsageError } from '../src/cli/args.js';
import { readGguf } from '../src/io/gguf.js';
import { assetPath } from './helpers/assets.js';
import { randomDeepseek, type DeepseekSpec } from './helpers/random-deepseek.js';
import { MapSource, maxAbsDiff, mulberry32 } from './helpers/random-llama.js';
import { logits } from './helpers/logits.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-export-ds-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const vocabDir = assetPath('models/TinyStories-656K');
const calibText = assetPath('text/tinystories/tinystories_val_sample.txt');
const skip = vocabDir && calibText ? false : 'assets models/TinyStories-656K and text/tinystories missing (the tokenizer and calibration text are used)';

const spec: DeepseekSpec = { hidden: 32, heads: 4, nope: 8, rope: 8, v: 8, kvLoraRank: 16, qLoraRank: null, inter: 48, vocab: 2048, layers: 2, latentScale: 1 };

/** An "exact variant" folder (transmla.json marks it) from random DeepSeek weights, minus `drop`, plus `extra`. */
async function exactFolder(name: string, s: DeepseekSpec, opts: { drop?: RegExp; extra?: Map<string, Tensor> } = {}): Promise<{ dir: string; src: MapSource; json: Record<string, unknown> }> {
  const m = randomDeepseek(s);
  const map = new Map([...m.src.map].filter(([k]) => !(opts.drop && opts.drop.test(k))));
  for (const [k, v] of opts.extra ?? []) map.set(k, v);
  const dir = join(tmp, name);
  mkdirSync(dir);
  await writeCheckpoint(dir, [...map].map(([n, tensor]) => ({ name: n, tensor })));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(m.json));
  writeFileSync(join(dir, 'transmla.json'), JSON.stringify({ tool: 'transmla', method: 'test exact variant' }));
  writeHfFolderExtras(vocabDir!, dir);
  return { dir, src: new MapSource(map), json: m.json };
}

function tokens(n: number, seed: number): number[] {
  const r = mulberry32(seed);
  return Array.from({ length: n }, () => 3 + Math.floor(r() * 2000));
}
const small = { calibSamples: 8, calibSeqLen: 32, evalCtx: 32, evalChunks: 2 };

describe('strict DeepSeek-V3 export', { skip }, () => {
  it('writes a stock folder: known keys only, lm_head, norms; reloads in stock semantics with the reported ppl', async () => {
    const { dir } = await exactFolder('plain', { ...spec, seed: 21, tied: true }, { drop: /kv_a_layernorm/ });
    const out = join(tmp, 'plain-out');
    const evalPath = join(tmp, 'eval.txt');
    writeFileSync(evalPath, readFileSync(calibText!, 'utf8').slice(0, 4000));
    const rep = await exportDeepseekV3({ model: dir, out, calib: calibText!, evalTexts: [{ path: evalPath, mode: 'file' }], ...small });
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    for (const k of Object.keys(cfg)) assert.ok(STOCK_DEEPSEEK_V3_KEYS.includes(k), `unknown config key ${k}`);
    assert.deepEqual(cfg.architectures, ['DeepseekV3ForCausalLM']);
    assert.equal(cfg.model_type, 'deepseek_v3');
    assert.equal(cfg.first_k_dense_replace, spec.layers);
    assert.equal(cfg.auto_map, undefined);
    const ck = openCheckpoint(out);
    assert.ok(ck.has('lm_head.weight'), 'lm_head.weight written even when tied');
    assert.ok(ck.has('model.layers.1.self_attn.kv_a_layernorm.weight'));
    ck.close();
    const card = readFileSync(join(out, 'README.md'), 'utf8');
    assert.match(card, /^---\nbase_model: .*\nlibrary_name: transformers\npipeline_tag: text-generation\ntags:\n/);
    const tj = JSON.parse(readFileSync(join(out, 'transmla.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(tj.variant, 'deepseek-v3');
    const ev = rep.evaluations[0]!;
    assert.ok(Number.isFinite(ev.pplGapPercent));
    // The reloaded folder runs stock semantics and reproduces the reported ppl.
    const loaded = loadModel(out);
    assert.equal(loaded.mla?.semantics, 'stock');
    assert.match(formatModelReport(describeModel(loaded)), /stock DeepSeek-V3 semantics/);
    const { ids, bos } = tokenizeForPerplexity(loaded.tokenizer!, readFileSync(evalPath, 'utf8'));
    const r = await perplexity(loaded.model, ids, bos, { ctx: ev.ctx, maxChunks: ev.chunks });
    assert.ok(Math.abs(r.ppl - ev.stock.ppl) <= 1e-6 * ev.stock.ppl, `reloaded ${r.ppl} vs reported ${ev.stock.ppl}`);
  });

  it('q_lora: q_a_layernorm is calibrated too; absorbed decode of the export matches its forward', async () => {
    const { dir } = await exactFolder('qlora', { ...spec, qLoraRank: 12, seed: 26 }, { drop: /(kv_a|q_a)_layernorm/ });
    const out = join(tmp, 'qlora-out');
    const rep = await exportDeepseekV3({ model: dir, out, calib: calibText!, ...small });
    assert.ok(rep.layers.every((l) => l.qResidual !== null && l.qResidual < 0.5 && l.kvResidual < 0.5), JSON.stringify(rep.layers));
    const ck = openCheckpoint(out);
    assert.ok(ck.has('model.layers.0.self_attn.q_a_layernorm.weight') && ck.has('model.layers.0.self_attn.q_b_proj.weight'));
    ck.close();
    const ev = rep.evaluations[0]!;
    assert.ok(Number.isFinite(ev.stock.ppl) && ev.stock.ppl > 0);
    const loaded = loadModel(out);
    assert.equal(loaded.mla?.semantics, 'stock');
    // Absorbed decode = decompressed forward on the exported stock model.
    const toks = tokens(20, 4);
    const m = loaded.model;
    const V = m.config.vocabSize;
    const full = logits(m, toks);
    const cache = m.newCache();
    m.forward(toks.slice(0, 10), cache);
    for (let i = 10; i < 20; i++) {
      const l = m.forward([toks[i]!], cache, { logits: 'last' });
      assert.ok(maxAbsDiff(l, full.subarray(i * V, (i + 1) * V)) <= 1e-4);
    }
  });

  it('is exact when nothing needs calibrating: rotate-half RoPE rows permuted to interleaved, existing norm kept', async () => {
    const { dir } = await exactFolder('half', { ...spec, seed: 22, ropeHalf: true, latentScale: 3 });
    const out = join(tmp, 'half-out');
    await exportDeepseekV3({ model: dir, out, calib: calibText!, ...small });
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.rope_interleave, true);
    const toks = tokens(24, 5);
    const a = logits(loadModel(dir).model, toks), b = logits(loadModel(out).model, toks);
    assert.ok(maxAbsDiff(a, b) <= 1e-4, `exported vs exact ${maxAbsDiff(a, b)}`);
  });

  it('the latent-norm fit is exact when the latent RMS is constant, and least squares otherwise', () => {
    const r = 6, rows = 5, rnd = mulberry32(3);
    const W = Float64Array.from({ length: rows * r }, () => rnd() - 0.5);
    const st = new LatentNormStats(r, 0);
    const X = new Float32Array(200 * r);
    for (let t = 0; t < 200; t++) {
      let ss = 0;
      for (let i = 0; i < r; i++) { X[t * r + i] = rnd() - 0.5; ss += X[t * r + i]! ** 2; }
      const k = 2 / Math.sqrt(ss / r); // every token at RMS 2
      for (let i = 0; i < r; i++) X[t * r + i]! *= k;
    }
    st.add(X, 200, r);
    const fit = fitLatentNorm(st);
    const W2 = refit(W, rows, fit);
    for (let t = 0; t < 200; t++) {
      const c = X.subarray(t * r, (t + 1) * r);
      const n = Array.from(c, (v, i) => (v / 2) * fit.weight[i]!);
      for (let o = 0; o < rows; o++) {
        let y = 0, y2 = 0;
        for (let i = 0; i < r; i++) { y += W[o * r + i]! * c[i]!; y2 += W2[o * r + i]! * n[i]!; }
        assert.ok(Math.abs(y - y2) < 1e-5, `${y} vs ${y2}`);
      }
    }
  });

  it('per-channel stabilizing scales steady the latent RMS and shrink the refit error', () => {
    // Channels 0,1 lie on a circle of radius 3 (their squares sum to 9); channels 2..5 are noise
    // of varying size, which makes rms(c) vary per token unless they are down-weighted.
    const r = 6, rows = 4, N = 400, rnd = mulberry32(5);
    const X = new Float32Array(N * r);
    for (let t = 0; t < N; t++) {
      const a = 2 * Math.PI * rnd();
      X[t * r] = 3 * Math.cos(a); X[t * r + 1] = 3 * Math.sin(a);
      for (let i = 2; i < r; i++) X[t * r + i] = (rnd() - 0.5) * (0.5 + i * 0.3);
    }
    const W = Float64Array.from({ length: rows * r }, () => rnd() - 0.5);
    const plain = new LatentNormStats(r, 0);
    plain.add(X, N, r);
    const m = new LatentMomentStats(r);
    m.add(X, N, r);
    const sc = stabilizingScales(m);
    const scaled = new LatentNormStats(r, 0);
    scaled.add(X, N, r, 0, sc);
    const Wt = W.map((v, k) => v / sc[k % r]!);
    const e0 = fitResidual(W, rows, plain), e1 = fitResidual(Wt, rows, scaled);
    assert.ok(e1 < 0.5 * e0, `stabilized residual ${e1} vs plain ${e0}`);
    assert.ok(sc[2]! < sc[0]! && sc[5]! < sc[0]!, `noise channels down-weighted: ${Array.from(sc).map((x) => x.toFixed(3))}`);
  });

  it('key-only latent bias drops out exactly (no calibration); query, value, RoPE-key and o_proj biases are marked for the calibrated fold', async () => {
    const m = randomDeepseek({ ...spec, vocab: 64, seed: 23 });
    const H = spec.heads, dn = spec.nope, dv = spec.v, r = spec.kvLoraRank, dR = spec.rope;
    // Zero the value rows' last two latent columns; a bias on those two latent coordinates then
    // reaches only the NoPE keys.
    const kvb = m.src.map.get('model.layers.0.self_attn.kv_b_proj.weight')!.data as Float32Array;
    for (let h = 0; h < H; h++) for (let i = 0; i < dv; i++) { const row = (h * (dn + dv) + dn + i) * r; kvb[row + r - 1] = 0; kvb[row + r - 2] = 0; }
    const noNorm = new Map([...m.src.map].filter(([k]) => !k.includes('kv_a_layernorm')));
    const exactCfg = parseMlaConfig(m.json, 'config.json', 'exact');
    const bias = new Float32Array(r + dR);
    bias[r - 1] = 2.5; bias[r - 2] = -1.5;
    const withBias = new Map(noNorm);
    withBias.set('model.layers.0.self_attn.kv_a_proj_with_mqa.bias', { dtype: 'f32', shape: [r + dR], data: bias });
    const A = buildModel(exactCfg, new MapSource(withBias)), B = buildModel(exactCfg, new MapSource(noNorm));
    const toks = tokens(16, 9).map((t) => t % 64);
    assert.ok(maxAbsDiff(logits(A, toks), logits(B, toks)) <= 1e-5, 'the key-only bias does not change the output');
    const none = { latentKeyOnly: false, query: false, ropeKey: false, value: false };
    assert.deepEqual(foldAttentionBiases(A.layers[0]!.attn as MlaAttention, 0), { ...none, latentKeyOnly: true });
    const plan = (name: string, data: Float32Array) => foldAttentionBiases(buildModel(exactCfg, new MapSource(new Map([...noNorm, [`model.layers.0.self_attn.${name}.bias`, { dtype: 'f32', shape: [data.length], data }]]))).layers[0]!.attn as MlaAttention, 0);
    const vb = new Float32Array(r + dR); vb[0] = 1;
    assert.deepEqual(plan('kv_a_proj_with_mqa', vb), { ...none, value: true });
    const rb = new Float32Array(r + dR); rb[r] = 1;
    assert.deepEqual(plan('kv_a_proj_with_mqa', rb), { ...none, ropeKey: true });
    const qb = new Float32Array(H * (dn + dR)); qb[3] = 0.5;
    assert.deepEqual(plan('q_proj', qb), { ...none, query: true });
    const ob = new Float32Array(spec.hidden); ob[1] = 0.5;
    assert.deepEqual(plan('o_proj', ob), { ...none, value: true });
    // A bias under an existing kv_a_layernorm cannot be separated from the latent: refused.
    const withNorm = buildModel(exactCfg, new MapSource(new Map([...m.src.map, ['model.layers.0.self_attn.kv_a_proj_with_mqa.bias', { dtype: 'f32', shape: [r + dR], data: vb }]])));
    assert.throws(() => foldAttentionBiases(withNorm.layers[0]!.attn as MlaAttention, 0), /already has kv_a_layernorm.*Refusing rather than dropping it/);
  });

  it('refuses a folder that already runs stock semantics, and writes nothing', async () => {
    const { dir } = await exactFolder('stock-in', { ...spec, seed: 24 });
    rmSync(join(dir, 'transmla.json'));
    const out = join(tmp, 'stock-in-out');
    await assert.rejects(exportDeepseekV3({ model: dir, out, calib: calibText!, ...small }), /already runs in stock DeepSeek-V3 semantics/);
    assert.equal(existsSync(out), false);
  });

  it('CLI: transmla export --target gguf goes through the strict export; bad flags are usage errors', async () => {
    const { dir } = await exactFolder('cli', { ...spec, seed: 25 }, { drop: /kv_a_layernorm/ });
    const cmd = await commands.export!();
    await assert.rejects(cmd.run([dir, '--out', join(tmp, 'x')]), (e: unknown) => e instanceof UsageError && /--target is required/.test((e as Error).message));
    await assert.rejects(cmd.run([dir, '--out', join(tmp, 'x'), '--target', 'onnx']), UsageError);
    const conv = await commands.convert!();
    await assert.rejects(conv.run([dir, '--out', join(tmp, 'y'), '--calib', calibText!, '--kv-fraction', '0.5', '--outtype', 'f16']), /--outtype needs --target gguf/);
    const gguf = join(tmp, 'cli.gguf');
    const { out } = await capture(() => cmd.run([dir, '--target', 'gguf', '--out', gguf, '--calib', calibText!, '--calib-samples', '4', '--calib-seqlen', '32', '--eval-ctx', '32', '--eval-chunks', '1', '--outtype', 'f16']));
    // The strict export in between goes to a scratch folder that is deleted: it is not a result.
    assert.doesNotMatch(out, /\.transmla-/);
    assert.match(out, new RegExp(`^wrote ${gguf} \\(deepseek2, f16, \\d+ tensors\\)$`, 'm'));
    const g = readGguf(gguf);
    assert.equal(g.metadata.get('general.architecture')?.value, 'deepseek2');
    assert.equal(g.metadata.get('deepseek2.attention.kv_lora_rank')?.value, spec.kvLoraRank);
    assert.ok(g.tensors.some((t) => t.name === 'blk.1.attn_kv_a_norm.weight'));
  });

  it('convert --target deepseek-v3 (library): converts, exports, leaves no intermediate folder', async () => {
    const before = new Set(readdirSync(tmp));
    const out = join(tmp, 'ts-ds3');
    const evalPath = join(tmp, 'eval-ts.txt');
    writeFileSync(evalPath, readFileSync(calibText!, 'utf8').slice(0, 3000));
    const lines: string[] = [];
    const r = await convertToTarget(
      { model: vocabDir!, out, kvLoraRank: 8, ropeDim: 4, freqFold: 4, calib: calibText!, calibSamples: 4, calibSeqLen: 32, evalTexts: [{ path: evalPath, mode: 'file' }], evalCtx: 32, evalChunks: 2, log: (l) => lines.push(l) },
      { target: 'deepseek-v3' },
    );
    // Only the final folder is printed as a result; the exact intermediate is deleted.
    assert.deepEqual(lines.filter((l) => /^(saved|report) /.test(l)), [`saved ${out}`, `report ${join(out, 'report.html')}`]);
    assert.ok(!lines.some((l) => l.includes('.transmla-')), lines.join('\n'));
    assert.equal(r.conversion.variant, 'exact');
    assert.equal(r.export.stock?.variant, 'deepseek-v3');
    assert.ok(r.export.stock!.evaluations[0]!.exact.ppl > 0);
    assert.equal(loadModel(out).mla?.semantics, 'stock');
    // report.html leads with the export's exact-vs-stock table, then the conversion's sections.
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.match(html, /Strict DeepSeek-V3 export/);
    assert.match(html, /<svg/);
    const added = readdirSync(tmp).filter((n) => !before.has(n));
    assert.deepEqual(added.sort(), ['eval-ts.txt', 'ts-ds3']);
  });
});
