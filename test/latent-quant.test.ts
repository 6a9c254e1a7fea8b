// The quantized latent cache: storage format (codes, f16 scales, bytes counted), error bounds,
// and the MLA layers of both variants running on it (prefill and decode see the same values).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { latentFromGqa, exactMla } from '../src/convert/gqa-to-mla.js';
import { buildMha2mlaModel } from '../src/convert/mha2mla.js';
import { mha2mlaLayer } from '../src/convert/mha2mla-layer.js';
import { buildMlaModel, gqaLayerSource } from '../src/convert/mla-build.js';
import { kvQuantName, parseKvQuant, QuantizedCacheBuffer, quantRowLayout } from '../src/models/latent-quant.js';
import { type Decoder, setKvQuant, setMlaMode } from '../src/models/decoder.js';
import { maxAbsDiff, mulberry32, randomLlama, type RandomSpec } from './helpers/random-llama.js';
import { logits, decodeLogits } from './helpers/logits.js';
import { buildModel } from '../src/arch/registry.js';

test('--kv-quant specs', () => {
  assert.deepEqual(parseKvQuant('int8'), { bits: 8, group: 32 });
  assert.deepEqual(parseKvQuant('int4:token'), { bits: 4, group: 0 });
  assert.deepEqual(parseKvQuant('int4:g64'), { bits: 4, group: 64 });
  assert.equal(parseKvQuant('none'), null);
  assert.equal(kvQuantName(parseKvQuant('int8:g16')), 'int8:g16');
  assert.throws(() => parseKvQuant('int2'), /--kv-quant must be none, int8 or int4/);
  assert.throws(() => parseKvQuant('int8:g0'), /group size must be a positive integer/);
});

test('rows round-trip within half a quantization step; bytes = codes + f16 scales', () => {
  const W = 37, N = 9;
  const r = mulberry32(4);
  const x = Float32Array.from({ length: W * N }, (_, i) => (2 * r() - 1) * (i % W < 5 ? 40 : 0.3));
  x.fill(0, 2 * W, 3 * W); // an all-zero row: scale 0, decodes to zeros
  for (const [q, bytes] of [[{ bits: 8, group: 8 }, 37 + 2 * 5], [{ bits: 4, group: 16 }, 19 + 2 * 3], [{ bits: 8, group: 0 }, 37 + 2]] as const) {
    const b = new QuantizedCacheBuffer(W, q);
    assert.equal(b.bytesPerToken('f32'), bytes);
    assert.equal(quantRowLayout(q, W).bytes, bytes);
    b.ensure(3);
    b.write(0, x.subarray(0, 3 * W), 3);
    b.ensure(N); // growth keeps the rows written
    b.write(3, x.subarray(3 * W), N - 3);
    const y = new Float32Array(W * N);
    b.read(0, N, y);
    const gw = q.group === 0 ? W : q.group, qmax = q.bits === 8 ? 127 : 7;
    for (let t = 0; t < N; t++) {
      for (let e = 0; e < W; e++) {
        const g0 = Math.floor(e / gw) * gw;
        let amax = 0;
        for (let i = g0; i < Math.min(g0 + gw, W); i++) amax = Math.max(amax, Math.abs(x[t * W + i]!));
        // Half a step, plus the f16 rounding of the scale (relative 2^-11) at the largest code.
        const bound = (amax / qmax) * 0.5 * (1 + 1e-3) + amax * 2 ** -10;
        assert.ok(Math.abs(y[t * W + e]! - x[t * W + e]!) <= bound, `${kvQuantName(q)} row ${t} elem ${e}: |${y[t * W + e]} − ${x[t * W + e]}| > ${bound}`);
      }
    }
    for (let e = 0; e < W; e++) assert.equal(y[2 * W + e], 0);
    assert.equal(b.allocatedBytes(), b.capacity * bytes);
  }
});

const spec: RandomSpec = { hidden: 32, heads: 4, kvHeads: 2, headDim: 16, inter: 48, vocab: 50, layers: 2, seed: 41 };

test('both MLA variants on a quantized cache: prefill = decode = absorbed, close to f32, bytes counted', () => {
  const m = randomLlama(spec);
  const src = buildModel(m.config, m.src);
  const tokens = Array.from({ length: 15 }, (_, i) => (i * 7 + 3) % spec.vocab);
  const latents = src.layers.map((_, l) => latentFromGqa(gqaLayerSource(src, l)));
  const variants: [string, () => Decoder, number][] = [
    // TransMLA exact form: one latent row of 2·G·d = 64 values per layer.
    ['DeepSeek MLA', () => buildMlaModel(src, latents.map(exactMla), { dtype: 'f32', ropeInvFreq: latents[0]!.ropeInvFreq }), 64],
    // MHA2MLA: G·2r + R = 2·4 + 20 = 28 values per layer.
    ['MHA2MLA', () => buildMha2mlaModel(src, src.layers.map((_, l) => mha2mlaLayer(gqaLayerSource(src, l), { ropePairs: [[0, 3], [1, 5]], kvRank: 20, init: 'joint', inputCov: null })), 'f32'), 28],
  ];
  for (const [name, make, width] of variants) {
    const f32 = logits(make(), tokens);
    for (const [q, tol] of [[{ bits: 8, group: 32 }, 0.05], [{ bits: 4, group: 16 }, 1.0]] as const) {
      const model = make();
      setKvQuant(model, q);
      const l = quantRowLayout(q, width);
      assert.equal(model.newCache().bytesPerToken('bf16'), 2 * l.bytes, `${name} ${kvQuantName(q)} bytes`);
      const full = logits(model, tokens);
      const step = decodeLogits(model, tokens);
      setMlaMode(model, 'absorbed');
      const abs = logits(model, tokens);
      assert.ok(maxAbsDiff(step, full) <= 1e-4 && maxAbsDiff(abs, full) <= 1e-4, `${name} ${kvQuantName(q)}: decode ${maxAbsDiff(step, full)}, absorbed ${maxAbsDiff(abs, full)}`);
      const err = maxAbsDiff(full, f32);
      assert.ok(err > 0 && err <= tol, `${name} ${kvQuantName(q)}: |Δ logits| ${err}`);
    }
  }
  assert.throws(() => setKvQuant(src, { bits: 8, group: 32 }), /needs an MLA model/);
});
