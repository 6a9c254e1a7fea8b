// Linear / SharedInputLinears with a q8_0/q4_0 weight (quantizeTensor), against the same layer
// on the dequantized f32 weight: one token (GEMV) and several (GEMM), the fused q/k/v path, and
// the constructor's refusals.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernels } from '../src/kernels/index.js';
import { Linear, SharedInputLinears } from '../src/models/linear.js';
import { quantizeTensor, widen } from '../src/models/weights.js';
import type { Tensor } from '../src/tensor.js';
import { mulberry32 } from './helpers/random-llama.js';

function randTensor(shape: [number, number], seed: number, dtype: 'f32' | 'bf16' = 'f32'): Tensor {
  const r = mulberry32(seed);
  const f = new Float32Array(shape[0] * shape[1]);
  for (let i = 0; i < f.length; i++) f[i] = (r() * 2 - 1) * 0.2;
  if (dtype === 'f32') return { dtype, shape, data: f };
  const u = new Uint16Array(f.length);
  kernels().fromF32(f, 'bf16', u);
  return { dtype, shape, data: u };
}

/** Max |a − b| over outputs, relative to Σ|w·x| of each output. */
function relToMagnitude(a: Float32Array, b: Float32Array, W: Float32Array, x: Float32Array, T: number, N: number, K: number): number {
  let worst = 0;
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let mag = 0;
      for (let k = 0; k < K; k++) mag += Math.abs(W[n * K + k]! * x[t * K + k]!);
      worst = Math.max(worst, Math.abs(a[t * N + n]! - b[t * N + n]!) / mag);
    }
  }
  return worst;
}

describe('Linear with a quantized weight', () => {
  for (const type of ['q8_0', 'q4_0'] as const) {
    test(`${type}: forward for 1 and 7 tokens matches the dequantized f32 layer; fused q/k/v matches separate calls`, () => {
      const N = 45, K = 96;
      const w = randTensor([N, K], 1, 'bf16');
      const q = quantizeTensor(w, type);
      assert.equal(q.dtype, type);
      assert.equal(q.data.length, N * 3 * (type === 'q8_0' ? 34 : 18));
      const deq = widen(q);
      const bias = new Float32Array(N).map((_, i) => i / 10);
      const lq = new Linear(q, bias), lf = new Linear({ dtype: 'f32', shape: [N, K], data: deq }, bias);
      const r = mulberry32(2);
      for (const T of [1, 7]) {
        const x = new Float32Array(T * K).map(() => r() * 2 - 1);
        const yq = new Float32Array(T * N), yf = new Float32Array(T * N);
        lq.forward(x, T, yq);
        lf.forward(x, T, yf);
        const e = relToMagnitude(yq, yf, deq, x, T, N, K);
        assert.ok(e <= 1e-4, `${T} tokens: ${e}`);
        assert.ok(e > 0, 'the activations are rounded to 16 bits, so the results are not bit-equal');
      }
      // Three projections of one input through the fused decode call vs one call each.
      const ls = [lq, new Linear(quantizeTensor(randTensor([8, K], 3), type)), new Linear(quantizeTensor(randTensor([8, K], 4), type))];
      const x = new Float32Array(K).map(() => r() * 2 - 1);
      const fused = ls.map((l) => new Float32Array(l.outFeatures)), sep = ls.map((l) => new Float32Array(l.outFeatures));
      new SharedInputLinears(ls).forward(x, 1, fused);
      ls.forEach((l, i) => l.forward(x, 1, sep[i]!));
      for (let i = 0; i < ls.length; i++) assert.deepEqual([...fused[i]!], [...sep[i]!]);
    });
  }

  test('quantizeTensor equals the kernels\' quantizer on the widened values; bad shapes are refused', () => {
    const w = randTensor([4, 64], 5, 'bf16');
    const q = quantizeTensor(w, 'q8_0');
    const ref = new Uint8Array(q.data.length);
    kernels().fromF32(widen(w), 'q8_0', ref);
    assert.deepEqual([...q.data], [...ref]);
    assert.throws(() => quantizeTensor(randTensor([4, 48], 6), 'q4_0'), /rows are not a multiple of 32/);
    assert.throws(() => new Linear({ dtype: 'q8_0', shape: [2, 48], data: new Uint8Array(102) }), /multiple of 32/);
    assert.throws(() => new Linear({ dtype: 'q4_0', shape: [2, 64], data: new Uint8Array(71) }), /needs 72 bytes/);
  });
});
