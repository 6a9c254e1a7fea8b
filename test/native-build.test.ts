// The native addon: it must load when TRANSMLA_REQUIRE_NATIVE=1 (CI), reject malformed calls with
// a JS error instead of crashing, and get a few hand-checkable results right. The exhaustive
// native-vs-TypeScript comparison lives in kernels.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadNativeAddon, loadNativeKernels } from '../src/kernels/native.ts';
import type { Kernels } from '../src/kernels/types.ts';

const required = process.env.TRANSMLA_REQUIRE_NATIVE === '1';
const loaded = loadNativeKernels();
// Without the requirement a missing addon skips these tests; with it they fail on `nk()`.
const skip = !loaded.kernels && !required ? `native addon not available: ${loaded.error}` : false;

function nk(): Kernels {
  assert.ok(loaded.kernels, `the native addon did not load: ${loaded.error}`);
  return loaded.kernels;
}

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
}

function random(n: number, r: () => number): Float32Array {
  return Float32Array.from({ length: n }, r);
}

test('TRANSMLA_REQUIRE_NATIVE=1: the addon loads and kernels() picks it', { skip: required ? false : 'TRANSMLA_REQUIRE_NATIVE is not set' }, async () => {
  assert.equal(loaded.error, undefined);
  assert.equal(nk().backend, 'native');
  const { kernels } = await import('../src/kernels/index.ts');
  assert.equal(kernels().backend, 'native');
  assert.ok(loadNativeAddon().addon!.threads() >= 1);
});

test('matmul rejects wrong array types, short buffers, bad sizes and overlapping output', { skip }, () => {
  const k = nk();
  const A = new Float32Array(6), B = new Float32Array(6), C = new Float32Array(4);
  assert.throws(() => k.matmul(new Float64Array(6) as unknown as Float32Array, B, 'f32', C, 2, 2, 3, false), { name: 'TypeError', message: /A must be a Float32Array/ });
  assert.throws(() => k.matmul(A, new Uint16Array(6), 'f32', C, 2, 2, 3, false), { name: 'TypeError', message: /B must be a Float32Array/ });
  assert.throws(() => k.matmul(A, B, 'bf16', C, 2, 2, 3, false), { name: 'TypeError', message: /B must be a Uint16Array/ });
  assert.throws(() => k.matmul(A, B, 'f8' as 'f32', C, 2, 2, 3, false), { name: 'TypeError', message: /bType must be/ });
  assert.throws(() => k.matmul(A, B, 'f32', new Float32Array(3), 2, 2, 3, false), { name: 'RangeError', message: /C is too short: need M\*N = 4/ });
  assert.throws(() => k.matmul(A, B, 'f32', C, 2, 3, 3, true), { name: 'RangeError', message: /B is too short/ });
  assert.throws(() => k.matmul(A, B, 'f32', C, 2.5, 2, 3, false), { name: 'RangeError', message: /M must be a non-negative integer/ });
  assert.throws(() => k.matmul(A, B, 'f32', C, -1, 2, 3, false), { name: 'RangeError', message: /M must be a non-negative integer/ });
  const shared = new Float32Array(10);
  assert.throws(() => k.matmul(shared.subarray(0, 6), B, 'f32', shared.subarray(5, 9), 2, 2, 3, false), { name: 'RangeError', message: /C must not overlap A/ });
  // Disjoint views of one buffer are fine.
  k.matmul(shared.subarray(0, 6), B, 'f32', shared.subarray(6, 10), 2, 2, 3, false);
});

test('gemv, conversions, gramAccumulate, eigh and attention reject malformed arguments', { skip }, () => {
  const k = nk();
  assert.throws(() => k.gemv(new Float32Array(6), 'f32', new Float32Array(2), new Float32Array(2), 2, 3), { name: 'RangeError', message: /x is too short/ });
  assert.throws(() => k.gemv(new Float32Array(6), 'f16', new Float32Array(3), new Float32Array(2), 2, 3), { name: 'TypeError', message: /W must be a Uint16Array/ });
  assert.throws(() => k.toF32(new Uint16Array(4), 'bf16', new Float32Array(3)), { name: 'RangeError', message: /same length/ });
  assert.throws(() => k.fromF32(new Float32Array(4), 'f32' as 'bf16', new Uint16Array(4)), { name: 'TypeError', message: /type must be one of 'f16', 'bf16', 'q8_0', 'q4_0'/ });
  assert.throws(() => k.fromF32(new Float32Array(32), 'q8_0', new Uint16Array(17) as unknown as Uint8Array), { name: 'TypeError', message: /dst must be a Uint8Array/ });
  assert.throws(() => k.gemv(new Uint8Array(34), 'q4_0' as 'q8_0', new Float32Array(32), new Float32Array(2), 2, 32), { name: 'RangeError', message: /W is too short/ });
  assert.throws(() => k.gramAccumulate(new Float32Array(6), 3, 2, new Float32Array(4) as unknown as Float64Array), { name: 'TypeError', message: /acc must be a Float64Array/ });
  assert.throws(() => k.gramAccumulate(new Float32Array(6), 3, 2, new Float64Array(3)), { name: 'RangeError', message: /acc is too short/ });
  assert.throws(() => k.eigh(new Float64Array(8), 3), { name: 'RangeError', message: /A is too short/ });
  assert.throws(() => k.eigh(Float64Array.of(1, 0, NaN, 1), 2), /matrix entry \(1, 0\) is not finite/);

  const base = { q: new Float32Array(2 * 4 * 3), tq: 2, nHeads: 4, nKvHeads: 2, headDimK: 3, headDimV: 3, k: new Float32Array(3 * 6), kTokenStride: 6, v: new Float32Array(3 * 6), vTokenStride: 6, pos0: 1, scale: 1, out: new Float32Array(2 * 4 * 3) };
  k.attention(base);
  assert.throws(() => k.attention({ ...base, nKvHeads: 3 }), { name: 'RangeError', message: /multiple of nKvHeads/ });
  assert.throws(() => k.attention({ ...base, pos0: 2 }), { name: 'RangeError', message: /k is too short/ });
  const cache = new Float32Array(48);
  assert.throws(() => k.attention({ ...base, k: cache, out: cache.subarray(24) }), { name: 'RangeError', message: /out must not overlap k/ });
  assert.throws(() => k.attention({ ...base, scale: Number.NaN }), { name: 'RangeError', message: /scale must be finite/ });
});

test('matmul matches a float64 reference across the small-M path, edge tiles and KC blocks', { skip }, () => {
  const k = nk();
  const r = seeded(7);
  for (const M of [1, 3, 4, 5, 8, 9, 13]) {
    for (const transB of [false, true]) {
      for (const bType of ['f32', 'bf16', 'f16'] as const) {
        const N = 19, K = 300;
        const A = random(M * K, r);
        const Bf = random(K * N, r);
        let B: Float32Array | Uint16Array = Bf;
        let Bw = Bf;
        if (bType !== 'f32') {
          B = new Uint16Array(Bf.length);
          k.fromF32(Bf, bType, B);
          Bw = new Float32Array(Bf.length);
          k.toF32(B, bType, Bw);
        }
        const C0 = random(M * N, r);
        const C = C0.slice();
        k.matmul(A, B, bType, C, M, N, K, transB, true);
        for (let i = 0; i < M; i++) {
          for (let j = 0; j < N; j++) {
            let ref = C0[i * N + j], mag = Math.abs(C0[i * N + j]);
            for (let p = 0; p < K; p++) {
              const prod = A[i * K + p] * (transB ? Bw[j * K + p] : Bw[p * N + j]);
              ref += prod;
              mag += Math.abs(prod);
            }
            assert.ok(Math.abs(C[i * N + j] - ref) <= 1e-6 * mag, `M=${M} ${transB ? 'NT' : 'NN'} ${bType} C[${i},${j}] = ${C[i * N + j]}, expected ${ref}`);
          }
        }
      }
    }
  }
});

test('conversions round to nearest even and keep NaN/Inf', { skip }, () => {
  const k = nk();
  const src = Float32Array.of(1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -0, 3.4028234663852886e38, Infinity, Number.NaN, 65520, 5.960464477539063e-8);
  const bf = new Uint16Array(src.length);
  const h = new Uint16Array(src.length);
  k.fromF32(src, 'bf16', bf);
  k.fromF32(src, 'f16', h);
  // bf16: ties go to the even mantissa (1+2^-8 → 1, 1+3·2^-8 → 1+2^-6); FLT_MAX rounds to Inf.
  assert.deepEqual(Array.from(bf.subarray(0, 6)), [0x3f80, 0x3f80, 0x3f82, 0x8000, 0x7f80, 0x7f80]);
  assert.ok((bf[6] & 0x7f80) === 0x7f80 && (bf[6] & 0x7f) !== 0, 'bf16 NaN stays NaN');
  // f16: 65520 is the overflow tie → Inf; 2^-24 is the smallest subnormal.
  assert.equal(h[7], 0x7c00);
  assert.equal(h[8], 0x0001);
  assert.ok((h[6] & 0x7c00) === 0x7c00 && (h[6] & 0x3ff) !== 0, 'f16 NaN stays NaN');
  const back = new Float32Array(3);
  k.toF32(Uint16Array.of(0x3f80, 0xc040, 0x0001), 'bf16', back);
  assert.deepEqual(Array.from(back), [1, -3, 9.183549615799121e-41]);
  k.toF32(Uint16Array.of(0x3c00, 0xc200, 0x0001), 'f16', back);
  assert.deepEqual(Array.from(back), [1, -3, 5.960464477539063e-8]);
});

test('gramAccumulate adds XᵀX in float64 across 256-row tiles', { skip }, () => {
  const k = nk();
  const r = seeded(11);
  const T = 600, K = 70;
  const X = random(T * K, r);
  const acc = Float64Array.from({ length: K * K }, (_, i) => i % 5);
  k.gramAccumulate(X, T, K, acc);
  for (let i = 0; i < K; i++) {
    for (let j = 0; j < K; j++) {
      let ref = (i * K + j) % 5, mag = 0;
      for (let t = 0; t < T; t++) {
        ref += X[t * K + i] * X[t * K + j];
        mag += Math.abs(X[t * K + i] * X[t * K + j]);
      }
      assert.ok(Math.abs(acc[i * K + j] - ref) <= 1e-6 * mag, `acc[${i},${j}]`);
    }
  }
});

test('eigh: sorted eigenpairs that reconstruct the matrix', { skip }, () => {
  const k = nk();
  const two = k.eigh(Float64Array.of(2, 0, 1, 2), 2); // only the lower triangle is read
  assert.ok(Math.abs(two.values[0] - 3) < 1e-14 && Math.abs(two.values[1] - 1) < 1e-14);
  assert.ok(Math.abs(Math.abs(two.vectors[0]) - Math.SQRT1_2) < 1e-14 && Math.abs(two.vectors[0] - two.vectors[2]) < 1e-14);

  const r = seeded(3);
  const n = 60;
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) A[i * n + j] = A[j * n + i] = r();
  const { values, vectors } = k.eigh(A, n);
  for (let j = 1; j < n; j++) assert.ok(values[j] <= values[j - 1], 'values sorted descending');
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let rec = 0, dot = 0;
      for (let p = 0; p < n; p++) {
        rec += vectors[i * n + p] * values[p] * vectors[j * n + p];
        dot += vectors[p * n + i] * vectors[p * n + j];
      }
      assert.ok(Math.abs(rec - A[i * n + j]) < 1e-13, `V·Λ·Vᵀ[${i},${j}]`);
      assert.ok(Math.abs(dot - (i === j ? 1 : 0)) < 1e-13, `VᵀV[${i},${j}]`);
    }
  }
});

test('attention: one visible key returns its value; equal scores average the values', { skip }, () => {
  const k = nk();
  // Two heads sharing one KV head; value rows [1,2] and [3,4].
  const kc = Float32Array.of(0.5, 0.5, 0.5, 0.5);
  const vc = Float32Array.of(1, 2, 3, 4);
  const out = new Float32Array(2 * 2 * 2);
  k.attention({ q: new Float32Array(2 * 2 * 2).fill(1), tq: 2, nHeads: 2, nKvHeads: 1, headDimK: 2, headDimV: 2, k: kc, kTokenStride: 2, v: vc, vTokenStride: 2, pos0: 0, scale: 1, out });
  assert.deepEqual(Array.from(out.subarray(0, 4)), [1, 2, 1, 2]);
  assert.ok(Math.abs(out[4] - 2) < 1e-6 && Math.abs(out[5] - 3) < 1e-6 && Math.abs(out[6] - 2) < 1e-6 && Math.abs(out[7] - 3) < 1e-6);
});
