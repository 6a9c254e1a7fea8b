// The calibrated bias fold of the strict DeepSeek-V3 export (docs/methods.md#bias-fold): the
// closed-form residuals against direct sums; exactness when the layer input has an exactly
// constant channel (query, RoPE-key, value and o_proj biases, q_proj and q_lora layouts); and a
// random Qwen2 model with Qwen2.5-like key biases converted with TransMLA and exported — with a
// near-constant ("massive activation") channel the fold is accepted and closer to the exact model
// than dropping the biases; without one it is refused under the default bound.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, test } from 'node:test';
import { parseMlaConfig } from '../src/arch/deepseek.js';
import { loadModel } from '../src/arch/load.js';
import { buildModel } from '../src/arch/registry.js';
import { convertModel } from '../src/convert/transmla.js';
import { fidelity } from '../src/eval/fidelity.js';
import { tokenizeForPerplexity } from '../src/eval/perplexity.js';
import { constantFit, constantResidual, foldResidual, latentKeyResidual } from '../src/convert/bias-fold.js';
import { exportDeepseekV3 } from '../src/export/deepseek-v3.js';
import { calibratedFold, DEFAULT_MAX_BIAS_RESIDUAL, foldAttentionBiases } from '../src/convert/stock-bias.js';
import { openCheckpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { writeHfFolderExtras } from '../src/io/hf-folder.js';
import { MlaAttention } from '../src/models/mla-attention.js';
import type { ModelScore, StockExportReport } from '../src/schema/transmla-json.js';
import type { Tensor } from '../src/tensor.js';
import { assetPath } from './helpers/assets.js';
import { logits } from './helpers/logits.js';
import { randomDeepseek, type DeepseekSpec } from './helpers/random-deepseek.js';
import { MapSource, maxAbsDiff, mulberry32, randomLlama } from './helpers/random-llama.js';

const tmp = mkdtempSync(join(tmpdir(), 'transmla-bias-fold-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function gramOf(X: Float64Array, T: number, D: number): Float64Array {
  const Dp = D + 1, G = new Float64Array(Dp * Dp);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < Dp; i++) {
      const a = i < D ? X[t * D + i]! : 1;
      for (let j = 0; j < Dp; j++) G[i * Dp + j]! += a * (j < D ? X[t * D + j]! : 1);
    }
  }
  return G;
}

test('closed-form residuals equal the direct sums over the calibration tokens', () => {
  const T = 400, D = 6, rows = 3, rnd = mulberry32(3);
  const X = Float64Array.from({ length: T * D }, (_, k) => (k % D === 1 ? 0.8 : 0) + (2 * rnd() - 1));
  const f = constantFit(gramOf(X, T, D), D);
  const L = Float64Array.from({ length: rows * D }, () => 2 * rnd() - 1);
  const c = Float64Array.from({ length: rows }, () => 3 * (2 * rnd() - 1));
  const a = c.map((v, i) => v * (1 + 0.1 * i));
  let e1 = 0, err = 0, den = 0;
  const ux = (t: number) => { let s = 0; for (let j = 0; j < D; j++) s += f.u[j]! * X[t * D + j]!; return s; };
  for (let t = 0; t < T; t++) {
    const s = ux(t);
    e1 += (1 - s) ** 2;
    for (let i = 0; i < rows; i++) {
      let y = c[i]!;
      for (let j = 0; j < D; j++) y += L[i * D + j]! * X[t * D + j]!;
      den += y * y;
      err += (c[i]! - a[i]! * s) ** 2;
    }
  }
  assert.ok(Math.abs(constantResidual(f) - e1 / T) < 1e-12, `ε ${constantResidual(f)} vs ${e1 / T}`);
  assert.ok(Math.abs(foldResidual(f, L, rows, c, a) - err / den) < 1e-12);
  // u is the least-squares solution: perturbing it only increases E(1 − uᵀx)².
  for (let j = 0; j < D; j++) {
    const u2 = Float64Array.from(f.u); u2[j]! += 1e-3;
    let e2 = 0;
    for (let t = 0; t < T; t++) { let s = 0; for (let k = 0; k < D; k++) s += u2[k]! * X[t * D + k]!; e2 += (1 - s) ** 2; }
    assert.ok(e2 / T > e1 / T);
  }
  // NoPE-key side effect: only δ·(uᵀx − mean) counts.
  const K = L, Kd = c;
  let kerr = 0, kden = 0, m = 0;
  const mean = new Float64Array(rows);
  for (let t = 0; t < T; t++) { m += ux(t) / T; for (let i = 0; i < rows; i++) { let y = 0; for (let j = 0; j < D; j++) y += K[i * D + j]! * X[t * D + j]!; mean[i]! += y / T; } }
  for (let t = 0; t < T; t++) {
    const s = ux(t);
    for (let i = 0; i < rows; i++) {
      let y = 0;
      for (let j = 0; j < D; j++) y += K[i * D + j]! * X[t * D + j]!;
      kden += (y - mean[i]!) ** 2;
      kerr += (Kd[i]! * (s - m)) ** 2;
    }
  }
  assert.ok(Math.abs(latentKeyResidual(f, K, rows, Kd) - kerr / kden) < 1e-10);
});

describe('the fold is exact when the layer input has an exactly constant channel', () => {
  for (const qLoraRank of [null, 6] as const) {
    it(`query, RoPE-key, value and o_proj biases, ${qLoraRank === null ? 'q_proj' : 'q_lora'}`, () => {
      const spec: DeepseekSpec = { hidden: 24, heads: 3, nope: 6, rope: 4, v: 5, kvLoraRank: 10, qLoraRank, inter: 30, vocab: 40, layers: 1, seed: 41, latentScale: 1 };
      const m = randomDeepseek(spec);
      const D = spec.hidden, H = spec.heads, qh = spec.nope + spec.rope, r = spec.kvLoraRank, dR = spec.rope;
      const map = new Map([...m.src.map].filter(([k]) => !/(kv_a|q_a)_layernorm/.test(k)));
      // Every embedding row has channel 0 = 3 and the same norm: RMSNorm(row) has a constant channel 0.
      const emb = map.get('model.embed_tokens.weight')!.data as Float32Array;
      for (let v = 0; v < spec.vocab; v++) {
        const row = emb.subarray(v * D, (v + 1) * D);
        let ss = 0;
        for (let j = 1; j < D; j++) ss += row[j]! ** 2;
        const k = Math.sqrt(20 / ss);
        row[0] = 3;
        for (let j = 1; j < D; j++) row[j]! *= k;
      }
      const rnd = mulberry32(42);
      const vec = (n: number, a: number) => Float32Array.from({ length: n }, () => a * (2 * rnd() - 1));
      const p = 'model.layers.0.self_attn';
      const bias = (name: string, data: Float32Array): void => { map.set(`${p}.${name}.bias`, { dtype: 'f32', shape: [data.length], data }); };
      if (qLoraRank === null) bias('q_proj', vec(H * qh, 1));
      else {
        // A q_b bias inside q_b's range folds exactly through the query latent.
        const Wb = map.get(`${p}.q_b_proj.weight`)!.data as Float32Array, z = vec(qLoraRank, 2);
        bias('q_b_proj', Float32Array.from({ length: H * qh }, (_, i) => { let s = 0; for (let j = 0; j < qLoraRank; j++) s += Wb[i * qLoraRank + j]! * z[j]!; return s; }));
      }
      bias('kv_a_proj_with_mqa', vec(r + dR, 5));
      // An o_proj bias in the range of W_o·W_UV is reachable through the latent.
      const B = map.get(`${p}.kv_b_proj.weight`)!.data as Float32Array, Wo = map.get(`${p}.o_proj.weight`)!.data as Float32Array;
      const z = vec(r, 1), dn = spec.nope, dv = spec.v;
      const vz = new Float64Array(H * dv);
      for (let h = 0; h < H; h++) for (let i = 0; i < dv; i++) { let s = 0; for (let j = 0; j < r; j++) s += B[(h * (dn + dv) + dn + i) * r + j]! * z[j]!; vz[h * dv + i] = s; }
      bias('o_proj', Float32Array.from({ length: D }, (_, i) => { let s = 0; for (let j = 0; j < H * dv; j++) s += Wo[i * H * dv + j]! * vz[j]!; return s; }));
      const cfg = parseMlaConfig(m.json, 'config.json', 'exact');
      const biased = buildModel(cfg, new MapSource(map));
      const a = biased.layers[0]!.attn as MlaAttention;
      const plan = foldAttentionBiases(a, 0);
      assert.deepEqual(plan, { latentKeyOnly: false, query: true, ropeKey: true, value: true });
      // Calibration inputs: every token's normed embedding.
      const X = new Float64Array(spec.vocab * D), g = biased.layers[0]!.inputNorm;
      for (let v = 0; v < spec.vocab; v++) {
        let ss = 0;
        for (let j = 0; j < D; j++) ss += emb[v * D + j]! ** 2;
        const inv = 1 / Math.sqrt(ss / D + cfg.rmsNormEps);
        for (let j = 0; j < D; j++) X[v * D + j] = emb[v * D + j]! * inv * g[j]!;
      }
      const f = constantFit(gramOf(X, spec.vocab, D), D);
      assert.ok(constantResidual(f) < 1e-9, `ε ${constantResidual(f)}`);
      const fold = calibratedFold(a, plan, f);
      const rep = fold.report;
      assert.ok(Math.max(rep.query!, rep.ropeKey!, rep.value!, rep.latentKey!) < 1e-8, JSON.stringify(rep));
      const folded = new Map([...map].filter(([k]) => !k.endsWith('.bias')));
      const put = (name: string, W: Float64Array, rows: number): void => { folded.set(`${p}.${name}.weight`, { dtype: 'f32', shape: [rows, D], data: Float32Array.from(W) }); };
      if (fold.q) put('q_proj', fold.q, H * qh);
      if (fold.qA) put('q_a_proj', fold.qA, qLoraRank!);
      put('kv_a_proj_with_mqa', fold.kvA, r + dR);
      const toks = Array.from({ length: 20 }, (_, i) => (i * 11 + 5) % spec.vocab);
      const noBias = buildModel(cfg, new MapSource(folded));
      const ref = logits(biased, toks);
      const dropped = buildModel(cfg, new MapSource(new Map([...map].filter(([k]) => !k.endsWith('.bias')))));
      assert.ok(maxAbsDiff(logits(noBias, toks), ref) <= 1e-4, `folded vs biased: ${maxAbsDiff(logits(noBias, toks), ref)}`);
      assert.ok(maxAbsDiff(logits(dropped, toks), ref) > 1e-2, 'the biases matter');
    });
  }
});

const vocabDir = assetPath('models/TinyStories-656K');
const calibText = assetPath('text/tinystories/tinystories_val_sample.txt');
const skip = vocabDir && calibText ? false : 'assets models/TinyStories-656K and text/tinystories missing (the tokenizer and calibration text are used)';

/** A random Qwen2 source folder (q/k/v biases, key biases ×10). */
async function qwen2Source(name: string, massive: number): Promise<string> {
  const m = randomLlama({ hidden: 64, heads: 4, kvHeads: 2, inter: 96, vocab: 2048, layers: 2, modelType: 'qwen2', seed: 27, biasScale: { q: 1, k: 10, v: 0.5 }, massive });
  const src = join(tmp, `${name}-src`);
  mkdirSync(src);
  await writeCheckpoint(src, [...m.src.map].map(([n, tensor]) => ({ name: n, tensor })));
  writeFileSync(join(src, 'config.json'), JSON.stringify(m.json));
  writeHfFolderExtras(vocabDir!, src);
  return src;
}

const shape = { kvLoraRank: 16, ropeDim: 4, freqFold: 4, calibSamples: 16, calibSeqLen: 64, evalCtx: 64, evalChunks: 2 };

/** A random Qwen2 folder converted with TransMLA (exact MLA folder). */
async function qwen2Exact(name: string, massive: number): Promise<string> {
  const exact = join(tmp, `${name}-mla`);
  await convertModel({ variant: 'exact', model: await qwen2Source(name, massive), out: exact, calib: calibText!, ...shape });
  return exact;
}

const opts = { calibSamples: 16, calibSeqLen: 64, evalCtx: 64, evalChunks: 4 };

describe('a converted Qwen2 model (q/k/v biases, key biases ×10) to stock DeepSeek-V3', { skip }, () => {
  it('with a massive-activation channel: folded, residuals recorded, no bias tensors, closer to the exact model than dropping the biases', async (t) => {
    const exact = await qwen2Exact('massive', 30);
    const out = join(tmp, 'massive-ds3');
    const rep = await exportDeepseekV3({ model: exact, out, calib: calibText!, ...opts });
    const tj = JSON.parse(readFileSync(join(out, 'transmla.json'), 'utf8')) as StockExportReport;
    assert.equal(tj.maxBiasResidual, DEFAULT_MAX_BIAS_RESIDUAL);
    for (const [l, layer] of tj.layers.entries()) {
      const f = layer.biasFold!;
      assert.ok(f && f.query !== null && f.ropeKey !== null && f.value !== null, `layer ${l}: ${JSON.stringify(layer)}`);
      assert.ok(f.attention <= DEFAULT_MAX_BIAS_RESIDUAL);
      t.diagnostic(`layer ${l}: attention output ${f.attention.toExponential(2)} (λ ${f.lambda}), constant ${f.constant.toExponential(2)}, query ${f.query!.toExponential(2)}, RoPE key ${f.ropeKey!.toExponential(2)}, value/output ${f.value!.toExponential(2)}, NoPE key ${f.latentKey!.toExponential(2)}; kv_b refit ${layer.kvResidual.toExponential(2)}`);
    }
    const ck = openCheckpoint(out);
    assert.ok(!ck.names().some((n) => n.endsWith('.bias')), 'stock DeepSeek-V3 has no attention biases');
    ck.close();
    assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).attention_bias, false);
    const ev = rep.evaluations[0]!;
    // The same export of the exact folder with its biases removed: what dropping them costs.
    const dropped = join(tmp, 'massive-dropped-mla');
    mkdirSync(dropped);
    const src = openCheckpoint(exact);
    await writeCheckpoint(dropped, src.names().filter((n) => !n.endsWith('.bias')).map((n) => ({ name: n, tensor: src.get(n) as Tensor })));
    src.close();
    for (const f of ['config.json', 'transmla.json']) writeFileSync(join(dropped, f), readFileSync(join(exact, f)));
    writeHfFolderExtras(vocabDir!, dropped);
    const droppedOut = join(tmp, 'massive-dropped-ds3');
    await exportDeepseekV3({ model: dropped, out: droppedOut, calib: calibText!, ...opts });
    const loaded = loadModel(exact);
    const text = readFileSync(calibText!, 'utf8');
    const { ids, bos } = tokenizeForPerplexity(loaded.tokenizer!, text.slice(text.length - 60000));
    const fid = await fidelity(loaded.model, [loadModel(out).model, loadModel(droppedOut).model], ids, bos, { ctx: 64, maxChunks: 16 });
    const [fold, drop] = fid.models as [ModelScore, ModelScore];
    t.diagnostic(`${fid.predictions} predictions: exact ppl ${fid.reference.ppl.toFixed(3)}; stock, biases folded: ppl ${fold.ppl.toFixed(3)}, KL ${fold.kl.toExponential(2)}, top-1 ${(100 * fold.top1).toFixed(2)} %; ` +
      `stock, biases dropped: ppl ${drop.ppl.toFixed(3)}, KL ${drop.kl.toExponential(2)}, top-1 ${(100 * drop.top1).toFixed(2)} %`);
    t.diagnostic(`export evaluation (${ev.text}): exact ${ev.exact.ppl.toFixed(3)}, stock ${ev.stock.ppl.toFixed(3)} (${ev.pplGapPercent.toFixed(2)} %), KL ${ev.stock.kl.toExponential(2)}`);
    assert.ok(fold.kl < 0.1 * drop.kl, 'folding the biases is much closer to the exact model than dropping them');
  });

  it('the default convert folds the same biases in its own sweep: the same tensors as convert --variant exact + export; refused the same way without the channel', async () => {
    const out = join(tmp, 'massive-default');
    await convertModel({ model: join(tmp, 'massive-src'), out, calib: calibText!, ...shape });
    const a = openCheckpoint(out), b = openCheckpoint(join(tmp, 'massive-ds3'));
    try {
      assert.deepEqual(a.names().sort(), b.names().sort());
      for (const n of a.names()) assert.deepEqual(a.get(n), b.get(n), n);
    } finally {
      a.close();
      b.close();
    }
    const tj = JSON.parse(readFileSync(join(out, 'transmla.json'), 'utf8')) as StockExportReport;
    assert.ok(tj.layers.every((l) => l.biasFold && l.biasFold.attention <= DEFAULT_MAX_BIAS_RESIDUAL));
    const refused = join(tmp, 'plain-default');
    await assert.rejects(convertModel({ model: await qwen2Source('plain-default', 0), out: refused, calib: calibText!, ...shape }), /layer 0: its attention biases, which stock DeepSeek-V3 has no place for, .*exceeds --max-bias-residual 0\.05/);
    assert.equal(existsSync(refused), false);
  });

  it('without one: refused under the default --max-bias-residual with the residual named; accepted when the bound is raised', async (t) => {
    const exact = await qwen2Exact('plain', 0);
    const out = join(tmp, 'plain-ds3');
    await assert.rejects(exportDeepseekV3({ model: exact, out, calib: calibText!, ...opts }), /layer 0: its attention biases, which stock DeepSeek-V3 has no place for, fold into the weights only with a relative error of attention output .*exceeds --max-bias-residual 0\.05/);
    assert.equal(existsSync(out), false);
    const rep = await exportDeepseekV3({ model: exact, out, calib: calibText!, ...opts, maxBiasResidual: 10 });
    const ev = rep.evaluations[0]!;
    t.diagnostic(`attention-output errors ${rep.layers.map((l) => l.biasFold!.attention.toExponential(2)).join(', ')}; exact ppl ${ev.exact.ppl.toFixed(3)}, stock ${ev.stock.ppl.toFixed(3)} (${ev.pplGapPercent.toFixed(2)} %)`);
    assert.ok(Number.isFinite(ev.pplGapPercent));
  });
});

test('CLI: --max-bias-residual is checked (a number ≥ 0; not with the exact variant, which keeps its biases)', async () => {
  const { commands } = await import('../src/cli/commands.js');
  const { UsageError } = await import('../src/cli/args.js');
  const exp = await commands.export!();
  await assert.rejects(exp.run([tmp, '--target', 'deepseek-v3', '--out', join(tmp, 'x'), '--max-bias-residual', '-1']), (e: unknown) => e instanceof UsageError && /--max-bias-residual must be a number ≥ 0, got "-1"/.test((e as Error).message));
  const conv = await commands.convert!();
  await assert.rejects(conv.run([tmp, '--out', join(tmp, 'y'), '--calib', 'c.txt', '--kv-fraction', '0.5', '--variant', 'exact', '--max-bias-residual', '0.1']), (e: unknown) => e instanceof UsageError && /--max-bias-residual bounds the bias fold of the stock folder; the exact variant keeps its biases/.test((e as Error).message));
});
