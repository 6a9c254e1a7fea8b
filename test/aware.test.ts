// The aware TransMLA methods (docs/methods.md#aware): query-aware RoRoPE, the output-aware latent
// with its least-squares refit, the NoPE logit refit, and the symmetric-matrix helpers they use.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { latentFromGqa } from '../src/convert/gqa-to-mla.js';
import { gqaLayerSource } from '../src/convert/mla-build.js';
import { absorbedQueryCov, awareRoRope } from '../src/convert/aware-rope.js';
import { awareLatent, type AwareStats } from '../src/convert/aware-latent.js';
import { assembleMla, type LatentLayer } from '../src/convert/latent-layer.js';
import { attentionLags, lagCosine, nopeRefit } from '../src/convert/nope-refit.js';
import { roRope } from '../src/convert/rorope.js';
import { projectedCov } from '../src/convert/calibrate.js';
import { gemmF64, transpose } from '../src/linalg/dense.js';
import { spdSolve, symPow } from '../src/linalg/sym.js';
import { HiddenStates } from '../src/eval/hidden-states.js';
import { buildModel } from '../src/arch/registry.js';
import { maxAbsDiff, mulberry32, randomLlama } from './helpers/random-llama.js';
import { mustAsset, skipUnlessAsset } from './helpers/assets.js';

function setup(seed: number): { L: LatentLayer; gram: Float64Array; model: ReturnType<typeof buildModel> } {
  const m = randomLlama({ hidden: 32, heads: 4, kvHeads: 2, headDim: 8, inter: 40, vocab: 30, layers: 1, attentionBias: true, seed });
  const model = buildModel(m.config, m.src);
  const L = latentFromGqa(gqaLayerSource(model, 0));
  const rnd = mulberry32(seed + 100), Dp = 33;
  const X = Float64Array.from({ length: 3 * Dp * Dp }, () => 2 * rnd() - 1);
  return { L, gram: gemmF64(X, X, Dp, Dp, 3 * Dp, true), model };
}

function qCovsOf(L: LatentLayer, gram: Float64Array): Float64Array[] {
  const Dp = L.hidden + 1, d = L.headDim;
  return Array.from({ length: L.nHeads }, (_, h) => projectedCov(L.wq.subarray(h * d * Dp, (h + 1) * d * Dp), d, gram, Dp));
}

/** kUp·Wk [H·d × (D+1)]: the keys every head sees, which a RoPE-commuting change of basis keeps. */
const keyProduct = (L: LatentLayer): Float64Array => gemmF64(L.kUp, L.wk, L.nHeads * L.headDim, L.hidden + 1, L.nK);

test('symPow and spdSolve: (A^½)² = A, A·spdSolve(A, B) = B', () => {
  const rnd = mulberry32(3), n = 6;
  const X = Float64Array.from({ length: n * 2 * n }, () => rnd() - 0.5);
  const A = gemmF64(X, X, n, n, 2 * n, true);
  const h = symPow(A, n, 0.5);
  assert.ok(maxAbsDiff(gemmF64(h, h, n, n, n), A) < 1e-10);
  const B = Float64Array.from({ length: n * 3 }, () => rnd());
  assert.ok(maxAbsDiff(gemmF64(A, spdSolve(A, n, B, 3), n, 3, n), B) < 1e-9);
});

test('query-aware RoRoPE: an invertible change of basis (keys unchanged before truncation) that keeps the queried direction', () => {
  const { L, gram } = setup(5);
  const kCov = projectedCov(L.wk, L.nK, gram, L.hidden + 1);
  const res = awareRoRope(L, kCov, absorbedQueryCov(L, qCovsOf(L, gram)), { nKvHeads: 2, ropeDim: 4, freqFold: 2 });
  assert.ok(maxAbsDiff(keyProduct(res.layer), keyProduct(L)) < 1e-9, 'kUp·Wk preserved');
  assert.ok(res.ropeEnergy > 0 && res.ropeEnergy <= 1);
  // Isotropic keys, queries only along latent pair 1 (group 0): RoRoPE by key energy cannot tell,
  // the query-aware basis must keep exactly that pair's direction under RoPE.
  const nK = L.nK, I = new Float64Array(nK * nK), Q = new Float64Array(nK * nK);
  for (let i = 0; i < nK; i++) { I[i * nK + i] = 1; Q[i * nK + i] = 1e-3; }
  Q[2 * nK + 2] = Q[3 * nK + 3] = 100;
  const P = awareRoRope(L, I, Q, { nKvHeads: 2, ropeDim: 4, freqFold: 2 }).layer;
  const row = (W: Float64Array, i: number): Float64Array => W.subarray(i * (L.hidden + 1), (i + 1) * (L.hidden + 1));
  const cos = (a: Float64Array, b: Float64Array): number => {
    let ab = 0, aa = 0, bb = 0;
    for (let i = 0; i < a.length; i++) { ab += a[i]! * b[i]!; aa += a[i]! ** 2; bb += b[i]! ** 2; }
    return Math.abs(ab) / Math.sqrt(aa * bb);
  };
  assert.ok(cos(row(P.wk, 0), row(L.wk, 2)) > 0.999, 'RoPE pair 0 (re) is the queried pair');
  assert.ok(cos(row(P.wk, 1), row(L.wk, 3)) > 0.999, 'and its im part');
});

function awareStats(P: LatentLayer, gram: Float64Array, model: ReturnType<typeof buildModel>): AwareStats {
  const Dp = P.hidden + 1, N = P.nK + P.nV, tokens = gram[Dp * Dp - 1]!;
  const rows = new Float64Array(N * Dp);
  rows.set(P.wk);
  rows.set(P.wv, P.wk.length);
  const qCovs = qCovsOf(P, gram).map((c) => c.map((x) => x / tokens));
  const o = (model.layers[0]!.attn as unknown as { o: { weight: { data: Float32Array } } }).o.weight.data;
  const Wo = Float64Array.from(o), Hd = P.nHeads * P.headDim;
  const vMean = new Float64Array(P.nV);
  for (let i = 0; i < P.nV; i++) for (let j = 0; j < Dp; j++) vMean[i]! += (P.wv[i * Dp + j]! * gram[j * Dp + P.hidden]!) / tokens;
  return { kvCov: projectedCov(rows, N, gram, Dp), tokens, qCovs, vMean, oGram: gemmF64(transpose(Wo, P.hidden, Hd), Wo, Hd, Hd, P.hidden) };
}

/** kv_b·kv_a (latent rows) [H·2d × (D+1)] with the bias column: what the layer computes for k_nope and v. */
function latentProduct(w: ReturnType<typeof assembleMla>): Float64Array {
  const { hidden: D, kvLoraRank: r, nHeads: H, qkNopeHeadDim: dn, vHeadDim: dv } = w.dims;
  const A = new Float64Array(r * (D + 1));
  for (let i = 0; i < r; i++) {
    A.set(w.kvA.w.subarray(i * D, (i + 1) * D), i * (D + 1));
    A[i * (D + 1) + D] = w.kvA.b ? w.kvA.b[i]! : 0;
  }
  return gemmF64(w.kvB, A, H * (dn + dv), D + 1, r);
}

test('output-aware latent: exact at full rank; below it the refit residual is the dropped weighted energy; a source target moves the refit', () => {
  const { L, gram, model } = setup(7);
  const P = roRope(L, projectedCov(L.wk, L.nK, gram, L.hidden + 1), { nKvHeads: 2, ropeDim: 4, freqFold: 2 }).layer;
  const st = awareStats(P, gram, model);
  const m = P.nK - P.ropeDim + P.nV;
  const full = awareLatent(P, st, { rank: m });
  assert.ok(maxAbsDiff(latentProduct(full.weights), latentProduct(assembleMla(P))) < 1e-7, 'full rank reproduces the layer');
  assert.ok(full.refitResidual < 1e-9);
  const r = 6;
  const low = awareLatent(P, st, { rank: r });
  assert.equal(low.weights.dims.kvLoraRank, r);
  assert.ok(Math.abs(low.refitResidual - (1 - low.energy)) < 1e-8, `${low.refitResidual} vs ${1 - low.energy}`);
  // Target = 2 × the regressor's outputs: the least-squares up-projection doubles, the down one stays.
  const twice = awareLatent(P, { ...st, cross: { kvCross: st.kvCov.map((x) => 2 * x), kvTarget: st.kvCov.map((x) => 4 * x) } }, { rank: r });
  assert.ok(maxAbsDiff(twice.weights.kvB, low.weights.kvB.map((x) => 2 * x)) < 1e-8);
  assert.ok(maxAbsDiff(twice.weights.kvA.w, low.weights.kvA.w) < 1e-12);
  assert.throws(() => awareLatent(P, st, { rank: m + 1 }), /kv_lora_rank must be an integer in \[1, 2·G·d − d_R = 28\]/);
});

test('NoPE refit: ρ = E_p[cos ωΔ] scales only the NoPE key columns; the lag histogram holds one unit per query', () => {
  assert.equal(lagCosine(Float64Array.from([1, 0, 0]), 0.7), 1);
  assert.ok(Math.abs(lagCosine(Float64Array.from([1, 0, 1]), Math.PI / 2)) < 1e-12, '(cos 0 + cos π)/2 = 0');
  const { L, gram, model } = setup(11);
  const P = roRope(L, projectedCov(L.wk, L.nK, gram, L.hidden + 1), { nKvHeads: 2, ropeDim: 4, freqFold: 2 }).layer;
  const T = 5;
  const atZero = Array.from({ length: 4 }, () => Float64Array.from({ length: T }, (_, k) => (k === 0 ? 1 : 0)));
  assert.deepEqual(nopeRefit(P, L, atZero).layer.kUp, P.kUp, 'attention on the current token only: RoPE never mattered');
  const atTwo = Array.from({ length: 4 }, () => Float64Array.from({ length: T }, (_, k) => (k === 2 ? 1 : 0)));
  const R = nopeRefit(P, L, atTwo).layer;
  const nK = P.nK, d = P.headDim;
  for (let h = 0; h < 4; h++) {
    for (let e = 0; e < d; e++) {
      const r0 = (h * d + e) * nK;
      let src = 0;
      while (L.kUp[r0 + src] === 0) src++;
      const rho = Math.cos(2 * L.ropeInvFreq[src >> 1]!);
      for (let c = 0; c < nK; c++) {
        const want = c < P.ropeDim ? P.kUp[r0 + c]! : P.kUp[r0 + c]! * rho;
        assert.ok(Math.abs(R.kUp[r0 + c]! - want) < 1e-12, `head ${h} dim ${e} column ${c}`);
      }
    }
  }
  const samples = [Int32Array.from([1, 5, 7, 2, 9, 3]), Int32Array.from([4, 4, 8, 1, 0, 6])];
  const states = HiddenStates.embed(model, samples);
  try {
    const hist = attentionLags(L, states, model.layers[0]!.inputNorm, model.config.rmsNormEps, 8);
    for (const hh of hist) {
      const total = hh.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(total - 2 * 6) < 1e-9, `Σ p over all queries = ${total}`);
      assert.ok(hh.every((x) => x >= 0) && hh[5]! <= 2 + 1e-12);
    }
  } finally {
    states.close();
  }
});

test('convert: the aware flags are validated with one usage line', async () => {
  const { runCli } = await import('../src/cli/run.js');
  const { capture } = await import('./helpers/capture.js');
  const cases: [string[], RegExp][] = [
    [['--latent', 'svd'], /--latent must be bkv-pca or output-aware, got "svd"/],
    [['--rope-basis', 'x'], /--rope-basis must be pca or query-aware, got "x"/],
    [['--key-weight', '2'], /--key-weight weighs the output-aware latent's key term; it needs --latent output-aware/],
    [['--latent', 'output-aware', '--key-weight', '0'], /--key-weight must be/],
  ];
  for (const [flags, msg] of cases) {
    const r = await capture(() => runCli(['convert', 'no-such-model', '--no-save', '--calib', 'c.txt', '--kv-fraction', '0.5', ...flags]));
    assert.equal(r.value, 2, `${flags.join(' ')}: ${r.err}`);
    assert.match(r.err, msg);
  }
});

test('convert: the aware methods refuse a Qwen3 source (per-head q/k RMSNorm) before any calibration', { skip: skipUnlessAsset('models/kjv-qwen3') }, async () => {
  const { runCli } = await import('../src/cli/run.js');
  const { capture } = await import('./helpers/capture.js');
  const r = await capture(() => runCli(['convert', mustAsset('models/kjv-qwen3'), '--no-save', '--calib', mustAsset('text/kjv-old-testament-calib.txt'), '--kv-fraction', '0.5', '--nope-refit']));
  assert.equal(r.value, 1, r.err);
  assert.match(r.err, /kjv-qwen3: the aware methods .* do not model Qwen3's per-head q\/k RMSNorm yet/);
  assert.doesNotMatch(r.err, /calibration:/);
});

test('convert on TinyStories-656K at 12.5 % (64 × 256 calibration, 8 chunks of the validation text): nope-refit + output-aware latent beats faithful TransMLA at the same shape', { skip: skipUnlessAsset('models/TinyStories-656K') }, async () => {
  const { convertModel } = await import('../src/convert/transmla.js');
  const { textModeFor } = await import('../src/eval/perplexity.js');
  const model = mustAsset('models/TinyStories-656K');
  const calib = mustAsset('text/tinystories/tinystories_train_lowercased_sample.txt');
  const val = mustAsset('text/tinystories/tinystories_val_sample.txt');
  const common = {
    model, out: null, kvFraction: 0.125, ropeDim: 8, freqFold: 2, calib, calibSamples: 64, calibSeqLen: 256, seed: 42,
    evalTexts: [{ path: val, mode: textModeFor(val) }], evalChunks: 8, evalCtx: 256, variant: 'exact' as const, search: 'proxy' as const,
  };
  const faithful = await convertModel(common);
  const aware = await convertModel({ ...common, nopeRefit: true, latent: 'output-aware' });
  assert.equal(faithful.parameters.latent, undefined, 'faithful reports no aware fields');
  assert.equal(aware.parameters.latent, 'output-aware');
  assert.equal(aware.parameters.nopeRefit, true);
  assert.deepEqual([aware.parameters.kvLoraRank, aware.parameters.qkRopeHeadDim], [faithful.parameters.kvLoraRank, faithful.parameters.qkRopeHeadDim]);
  assert.equal(aware.kvCache.bytesPerTokenAfter, faithful.kvCache.bytesPerTokenAfter);
  for (const l of aware.layers) {
    assert.ok(l.refitResidual! >= 0 && l.refitResidual! < 1, `refit residual ${l.refitResidual}`);
    assert.ok(l.nopeRho! > -1 && l.nopeRho! <= 1);
  }
  const [f, a] = [faithful.evaluations[0]!, aware.evaluations[0]!];
  assert.equal(f.original.ppl, a.original.ppl);
  assert.ok(a.mla.kl < f.mla.kl, `KL ${a.mla.kl} vs faithful ${f.mla.kl}`);
  assert.ok(a.mla.ppl < f.mla.ppl, `ppl ${a.mla.ppl} vs faithful ${f.mla.ppl}`);
});
