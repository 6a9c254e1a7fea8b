// Q8_0 / Q4_0 weights: quantizers on hand-computed blocks (ggml's rounding rules: see
// src/kernels/ts/quant.ts), TypeScript vs native bit-identity, and every product with a
// quantized weight (gemv, gemvMulti, gemvSwiGlu, matmul) native vs TypeScript vs a float64
// product of the dequantized weights, at 1 and 2 threads. The comparison against llama.cpp's own
// quantizer is in quant-ggml.test.ts.
//
// Error measure: |y − ref| / Σ_k |ŵ_k·x_k| per output (the rounding of x to 16 bits is
// relative to each block's largest |x|, so it is bounded against the magnitudes, not against y).
process.env.TRANSMLA_ADAPTIVE_THREADS = '0'; // 2-thread runs must really use 2 threads, however busy the machine

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { tsKernels } from '../src/kernels/ts.js';
import type { Kernels, QuantDType } from '../src/kernels/types.js';
import { QUANT_BLOCK, tensorBytes } from '../src/tensor.js';

const { loadNativeAddon, loadNativeKernels } = await import('../src/kernels/native.js');
const native = loadNativeKernels().kernels ?? null;
const addon = loadNativeAddon().addon ?? null;
const nativeSkip: false | string = native || process.env.TRANSMLA_REQUIRE_NATIVE === '1' ? false : 'native addon unavailable';
const backends: [string, () => Kernels][] = [['ts', () => tsKernels], ['native', () => native ?? assert.fail('native kernels did not load')]];

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function randF32(n: number, r: () => number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function quantize(k: Kernels, x: Float32Array, t: QuantDType): Uint8Array {
  const out = new Uint8Array(tensorBytes(t, x.length));
  k.fromF32(x, t, out);
  return out;
}

describe('q8_0 / q4_0 blocks by hand', () => {
  // Q8_0, amax 127: d = 1 (f16 0x3c00), id = 1, q = roundf(x): halves go away from zero.
  const q8x = new Float32Array(32);
  q8x.set([127, -63.5, 0.5, -0.5, 2.5, -2.5, 1.49, 0.51, -127, 3]);
  const q8want = '003c' + '7f' + 'c0' + '01' + 'ff' + '03' + 'fd' + '01' + '01' + '81' + '03' + '00'.repeat(22);
  // Q4_0: the value of largest magnitude is −16 (first on the tie with +16), d = −16/−8 = 2 (f16
  // 0x4000), id = 0.5, nib = min(15, trunc(x·0.5 + 8.5)): −16 → 0, 16 → 16 → clamped 15, 1 → 9,
  // −1 → 8 (−0.5 + 8.5 = 8), 3 → 10 (1.5 + 8.5), 0 → 8. Element j < 16 is the low nibble of byte j.
  const q4x = new Float32Array(32);
  q4x.set([-16, 16, 1, -1, 3], 0);
  q4x.set([2, -3], 16); // elements 16, 17: 1 + 8.5 → 9; −1.5 + 8.5 → 7
  const q4want = '0040' + '90' + '7f' + '89' + '88' + '8a' + '88'.repeat(11);
  // With +16 first, max = +16: d = −2 (0xc000), id = −0.5: 16 → 0, −16 → 15 (value 14, clamped).
  const q4y = new Float32Array(32);
  q4y.set([16, -16]);
  const q4ywant = '00c0' + '80' + '8f' + '88'.repeat(14);

  for (const [name, k] of backends) {
    test(`${name}: quantizers give the hand-computed bytes`, { skip: name === 'native' ? nativeSkip : false }, () => {
      assert.equal(hex(quantize(k(), q8x, 'q8_0')), q8want);
      assert.equal(hex(quantize(k(), q4x, 'q4_0')), q4want);
      assert.equal(hex(quantize(k(), q4y, 'q4_0')), q4ywant);
      // amax 254: d = 2, id = 0.5 (the scale comes from the f32 d, not the stored f16).
      const x = new Float32Array(32);
      x.set([254, 3, 1, -1]);
      assert.equal(hex(quantize(k(), x, 'q8_0')), '0040' + '7f' + '02' + '01' + 'ff' + '00'.repeat(28));
      // All-zero blocks: q8_0 d = +0; q4_0 d = 0/−8 = −0, stored 0x8000, every nibble 8 (as ggml).
      assert.equal(hex(quantize(k(), new Float32Array(32), 'q8_0')), '00'.repeat(34));
      assert.equal(hex(quantize(k(), new Float32Array(32), 'q4_0')), '0080' + '88'.repeat(16));
      // A scale the f16 cannot hold exactly is rounded to nearest even: amax 127·(1 + 2^-11) → d = 1 + 2^-11 → 1.
      const y = new Float32Array(32);
      y[0] = 127 * (1 + 2 ** -11);
      assert.equal(hex(quantize(k(), y, 'q8_0')).slice(0, 6), '003c7f');
    });

    test(`${name}: dequantization is d·q (d·(nib − 8) for q4_0, low nibbles first)`, { skip: name === 'native' ? nativeSkip : false }, () => {
      const out = new Float32Array(32);
      k().toF32(quantize(k(), q8x, 'q8_0'), 'q8_0', out);
      assert.deepEqual([...out.subarray(0, 10)], [127, -64, 1, -1, 3, -3, 1, 1, -127, 3]);
      k().toF32(quantize(k(), q4x, 'q4_0'), 'q4_0', out);
      assert.deepEqual([...out.subarray(0, 5)], [-16, 14, 2, 0, 4]);
      assert.deepEqual([...out.subarray(16, 18)], [2, -2]);
      k().toF32(quantize(k(), q4y, 'q4_0'), 'q4_0', out);
      assert.deepEqual([...out.subarray(0, 3)], [16, -14, -0]);
    });

    test(`${name}: bad input is refused with one clear message`, { skip: name === 'native' ? nativeSkip : false }, () => {
      const kk = k();
      const W = new Uint8Array(34 * 4);
      const y = new Float32Array(2);
      assert.throws(() => kk.gemv(W, 'q8_0', new Float32Array(48), y, 2, 48), /K = 48 is not a multiple of 32/);
      assert.throws(() => kk.gemvSwiGlu(W, W, 'q4_0', new Float32Array(40), y, 2, 40), /K = 40 is not a multiple of 32/);
      assert.throws(() => kk.gemvMulti([W], 'q8_0', new Float32Array(40), [y], [2], 40), /K = 40 is not a multiple of 32/);
      assert.throws(() => kk.matmul(new Float32Array(64), W, 'q8_0', y, 1, 2, 64, false), /transB/);
      assert.throws(() => kk.gemv(W, 'q8_0', new Float32Array(64), new Float32Array(3), 3, 64), /too short|needs/);
      assert.throws(() => kk.gemv(new Uint16Array(64), 'q8_0', new Float32Array(32), y, 1, 32), /Uint8Array/);
      const x = new Float32Array(64);
      x[40] = NaN;
      assert.throws(() => kk.fromF32(x, 'q4_0', new Uint8Array(36)), /40\]? is .*finite/);
      assert.throws(() => kk.fromF32(new Float32Array(33), 'q8_0', new Uint8Array(34)), /33 values|whole number of blocks/);
      assert.throws(() => kk.toF32(new Uint8Array(35), 'q8_0', new Float32Array(32)), /34 bytes|needs? 34/);
    });
  }
});

describe('native quantizers and dequantizers are bit-identical to the TypeScript ones', { skip: nativeSkip }, () => {
  test('random rows, ties and extreme scales', () => {
    const r = rng(11);
    const n = 32 * 4096;
    const cases: [string, Float32Array][] = [['uniform', randF32(n, r, 3)]];
    // Values on exact halves of the quantization grid (ties), and scales across the f16 range.
    const ties = new Float32Array(n);
    for (let b = 0; b < n / 32; b++) {
      const amax = 2 ** (Math.floor(r() * 40) - 24) * (1 + Math.floor(r() * 8) / 8);
      for (let j = 0; j < 32; j++) ties[b * 32 + j] = (Math.floor(r() * 255) - 127 + 0.5) / 127 * amax;
      ties[b * 32 + Math.floor(r() * 32)] = r() < 0.5 ? amax : -amax;
    }
    cases.push(['ties', ties]);
    const heavy = randF32(n, r);
    for (let i = 0; i < n; i += 97) heavy[i] = (r() < 0.5 ? -1 : 1) * 1e4 * r(); // outliers, as in LLM weights
    cases.push(['outliers', heavy]);
    for (const [what, x] of cases) {
      for (const t of ['q8_0', 'q4_0'] as const) {
        const a = quantize(tsKernels, x, t), b = quantize(native!, x, t);
        assert.ok(Buffer.from(a).equals(Buffer.from(b)), `${what} ${t}: blocks differ`);
        const da = new Float32Array(n), db = new Float32Array(n);
        tsKernels.toF32(a, t, da);
        native!.toF32(a, t, db);
        assert.ok(Buffer.from(da.buffer).equals(Buffer.from(db.buffer)), `${what} ${t}: dequantized values differ`);
      }
    }
  });
});

interface Worst {
  vsTs: number;
  vsExact: number;
}

/** Max over outputs of |y − ref| / Σ|ŵ·x| against the TS result and the exact float64 product Ŵ·x. */
function compare(Wf: Float32Array, X: Float32Array, M: number, N: number, K: number, got: Float32Array, ts: Float32Array, w: Worst): void {
  for (let i = 0; i < M; i++) {
    for (let n = 0; n < N; n++) {
      let ref = 0, mag = 0;
      for (let k = 0; k < K; k++) {
        const p = Wf[n * K + k]! * X[i * K + k]!;
        ref += p;
        mag += Math.abs(p);
      }
      const g = got[i * N + n]!;
      const den = Math.max(mag, 1e-30);
      w.vsTs = Math.max(w.vsTs, Number.isNaN(g) ? Infinity : Math.abs(g - ts[i * N + n]!) / den);
      w.vsExact = Math.max(w.vsExact, Number.isNaN(g) ? Infinity : Math.abs(g - ref) / den);
    }
  }
}

// Native vs TS: both multiply the same rounded x̂ and Ŵ (f32 vs float64 sums). Against Ŵ·x the
// only other error is the rounding of x: ≤ Σ|ŵ|·max|x_block|/65534, at most ~3e-5 here.
const TOL_TS = 2e-6, TOL_EXACT = 1e-4;

describe('the rounded activations x̂ are the same on both backends', { skip: nativeSkip }, () => {
  // An identity weight (q8_0 blocks with d = 1 and one code 1 per row) makes every product return
  // x̂ itself: y_j = d_x·q_x[j], a single rounding on either backend, so they must agree bit for bit.
  const K = 256;
  const eye = new Uint8Array(K * (K / 32) * 34);
  for (let n = 0; n < K; n++) {
    for (let b = 0; b < K / 32; b++) eye.set([0x00, 0x3c], (n * (K / 32) + b) * 34); // f16 1.0
    eye[(n * (K / 32) + (n >> 5)) * 34 + 2 + (n & 31)] = 1;
  }
  const f32 = new Float32Array(1), i32 = new Int32Array(f32.buffer);
  const step = (x: number, k: number): number => {
    f32[0] = x;
    i32[0] += x >= 0 ? k : -k;
    return f32[0];
  };
  /** Blocks whose x·id (f32) lands on or beside halves of the integer grid, at random scales. */
  function ties(rows: number, seed: number): Float32Array {
    const r = rng(seed);
    const x = new Float32Array(rows * K);
    for (let b = 0; b < x.length / 32; b++) {
      const amax = b % 3 === 0 ? 32767 : Math.fround(2 ** (Math.floor(r() * 30) - 15) * (1 + r()));
      const d = Math.fround(amax / 32767), id = Math.fround(1 / d);
      x[b * 32] = r() < 0.5 ? amax : -amax;
      for (let j = 1; j < 32; j++) {
        const t = (Math.floor(r() * 65534) - 32767) * (r() < 0.8 ? 1 : 0.0001) + 0.5;
        x[b * 32 + j] = step(Math.fround(Math.fround(t) / id), Math.floor(r() * 5) - 2);
        if (Math.abs(x[b * 32 + j]!) >= amax) x[b * 32 + j] = 0.49999997;
      }
    }
    // Block 0 (d = 1): the halves and the float just below 0.5, where a plain t + 0.5 would round up.
    x.set([32767, 0.49999997, -0.49999997, 0.5, -0.5, 1.5, 2.5, -2.5, 32766.5, -32766.5, 0.49999994], 0);
    return x;
  }

  test('gemv (one row), matmul with ≤ 8 rows and the packed GEMM (> 8 rows)', () => {
    for (const M of [1, 5, 12]) {
      const A = ties(M, M);
      const yt = new Float32Array(M * K), yn = new Float32Array(M * K);
      if (M === 1) {
        tsKernels.gemv(eye, 'q8_0', A, yt, K, K);
        native!.gemv(eye, 'q8_0', A, yn, K, K);
      } else {
        tsKernels.matmul(A, eye, 'q8_0', yt, M, K, K, true);
        native!.matmul(A, eye, 'q8_0', yn, M, K, K, true);
      }
      let diff = 0;
      for (let i = 0; i < yt.length; i++) if (!Object.is(yt[i], yn[i])) diff++;
      assert.equal(diff, 0, `M = ${M}: ${diff} of ${yt.length} rounded activations differ`);
      // Block 0 has max|x| = 32767, so d = 1 and x̂ is x rounded half away from zero.
      for (let j = 0; j < 32; j++) {
        const v = A[j]!;
        assert.equal(yt[j], (v < 0 ? -1 : 1) * Math.floor(Math.abs(v) + 0.5) + 0, `x̂[${j}] of ${v}`);
      }
    }
  });
});

describe('products with quantized weights: native vs TypeScript vs float64 Ŵ·x', () => {
  const shapes: [number, number][] = [[1, 32], [7, 96], [33, 288], [301, 1056], [129, 4128]];
  for (const t of ['q8_0', 'q4_0'] as const) {
    for (const threads of [1, 2]) {
      test(`${t}, ${threads} thread${threads > 1 ? 's' : ''}: gemv, gemvMulti, gemvSwiGlu, matmul (K not a multiple of 256, N odd)`, { skip: nativeSkip }, () => {
        addon!.setThreads(threads);
        const r = rng(threads * 7 + (t === 'q8_0' ? 1 : 2));
        const w: Worst = { vsTs: 0, vsExact: 0 };
        for (const [N, K] of shapes) {
          const W = quantize(tsKernels, randF32(N * K, r, 0.5), t);
          const Wf = new Float32Array(N * K);
          tsKernels.toF32(W, t, Wf);
          const x = randF32(K, r, 2);
          // gemv
          const yt = new Float32Array(N), yn = new Float32Array(N);
          tsKernels.gemv(W, t, x, yt, N, K);
          native!.gemv(W, t, x, yn, N, K);
          compare(Wf, x, 1, N, K, yn, yt, w);
          // gemvMulti: three weights sharing x (the q/k/v of a decode step).
          const W2 = quantize(tsKernels, randF32(3 * K, r), t);
          const W2f = new Float32Array(3 * K);
          tsKernels.toF32(W2, t, W2f);
          const ys = [new Float32Array(N), new Float32Array(3), new Float32Array(N)];
          native!.gemvMulti([W, W2, W], t, x, ys, [N, 3, N], K);
          compare(Wf, x, 1, N, K, ys[0]!, yt, w);
          compare(Wf, x, 1, N, K, ys[2]!, yt, w);
          const y2 = new Float32Array(3);
          tsKernels.gemv(W2, t, x, y2, 3, K);
          compare(W2f, x, 1, 3, K, ys[1]!, y2, w);
          // gemvSwiGlu
          const Wu = quantize(tsKernels, randF32(N * K, r, 0.5), t);
          const st = new Float32Array(N), sn = new Float32Array(N);
          tsKernels.gemvSwiGlu(W, Wu, t, x, st, N, K);
          native!.gemvSwiGlu(W, Wu, t, x, sn, N, K);
          // out = silu(g)·u: errors δg, δu (each ≤ TOL_TS·Σ|ŵ·x|) reach it as |silu'(g)·u|·δg + |silu(g)|·δu, |silu'| < 1.1.
          const ut = new Float32Array(N);
          tsKernels.gemv(Wu, t, x, ut, N, K);
          for (let n = 0; n < N; n++) {
            let magG = 0, magU = 0;
            for (let k = 0; k < K; k++) magG += Math.abs(Wf[n * K + k]! * x[k]!);
            const Wuf = new Float32Array(K);
            tsKernels.toF32(Wu.subarray(n * (K / 32) * QUANT_BLOCK[t].bytes, (n + 1) * (K / 32) * QUANT_BLOCK[t].bytes), t, Wuf);
            for (let k = 0; k < K; k++) magU += Math.abs(Wuf[k]! * x[k]!);
            const g = yt[n]!, silu = g / (1 + Math.exp(-g));
            const tol = TOL_TS * (1.1 * magG * Math.abs(ut[n]!) + Math.abs(silu) * magU) + 1e-6 * Math.abs(st[n]!);
            assert.ok(Math.abs(sn[n]! - st[n]!) <= tol, `swiglu ${N}×${K} [${n}]: ${sn[n]} vs ${st[n]} (tolerance ${tol})`);
          }
          // matmul: the small-M path (≤ 8 rows) and the packed GEMM (more), with and without accumulate.
          for (const M of [1, 3, 8, 9, 20]) {
            const A = randF32(M * K, r, 2);
            const Ct = randF32(M * N, r), Cn = Ct.slice(), base = Ct.slice();
            tsKernels.matmul(A, W, t, Ct, M, N, K, true, true);
            native!.matmul(A, W, t, Cn, M, N, K, true, true);
            for (let i = 0; i < Ct.length; i++) { Ct[i] -= base[i]!; Cn[i] -= base[i]!; }
            compare(Wf, A, M, N, K, Cn, Ct, w);
          }
        }
        assert.ok(w.vsTs <= TOL_TS, `native vs TypeScript: ${w.vsTs.toExponential(2)} > ${TOL_TS}`);
        assert.ok(w.vsExact <= TOL_EXACT, `native vs float64 Ŵ·x: ${w.vsExact.toExponential(2)} > ${TOL_EXACT}`);
        addon!.setThreads(2);
      });
    }
  }

  test('TypeScript vs float64 Ŵ·x, and the rounding of x is what makes the difference', () => {
    const r = rng(5);
    const N = 17, K = 320;
    for (const t of ['q8_0', 'q4_0'] as const) {
      const W = quantize(tsKernels, randF32(N * K, r), t);
      const Wf = new Float32Array(N * K);
      tsKernels.toF32(W, t, Wf);
      // x exactly representable after rounding (a multiple of d = max|x|/32767 = 1): no error at all.
      const xi = new Float32Array(K);
      for (let k = 0; k < K; k++) xi[k] = Math.round((r() * 2 - 1) * 32767);
      for (let b = 0; b < K / 32; b++) xi[b * 32] = 32767;
      const y = new Float32Array(N);
      tsKernels.gemv(W, t, xi, y, N, K);
      for (let n = 0; n < N; n++) {
        let ref = 0;
        for (let k = 0; k < K; k++) ref += Wf[n * K + k]! * xi[k]!;
        assert.equal(y[n], Math.fround(ref), `integer x: y[${n}] is exact`);
      }
      // A general x: the error stays inside the rounding bound Σ|ŵ|·max|x_b|/65534.
      const x = randF32(K, r, 3);
      tsKernels.gemv(W, t, x, y, N, K);
      for (let n = 0; n < N; n++) {
        let ref = 0, bound = 0;
        for (let b = 0; b < K / 32; b++) {
          let amax = 0, wsum = 0;
          for (let j = 0; j < 32; j++) { amax = Math.max(amax, Math.abs(x[b * 32 + j]!)); wsum += Math.abs(Wf[n * K + b * 32 + j]!); }
          bound += wsum * amax / 65534;
        }
        for (let k = 0; k < K; k++) ref += Wf[n * K + k]! * x[k]!;
        assert.ok(Math.abs(y[n]! - ref) <= bound * 1.001 + 1e-6 * Math.abs(ref), `${t} y[${n}]: error ${Math.abs(y[n]! - ref)} above the bound ${bound}`);
      }
    }
  });

  test('a non-finite activation gives NaN outputs instead of garbage', { skip: nativeSkip }, () => {
    const K = 64, N = 3;
    const W = quantize(tsKernels, randF32(N * K, rng(3)), 'q8_0');
    const x = randF32(K, rng(4));
    x[5] = Infinity;
    for (const k of [tsKernels, native!]) {
      const y = new Float32Array(N);
      k.gemv(W, 'q8_0', x, y, N, K);
      assert.ok(y.every(Number.isNaN), `${k.backend}: ${[...y]}`);
    }
  });

  test('tensorBytes counts blocks', () => {
    assert.equal(tensorBytes('q8_0', 4096 * 4096), 4096 * 128 * QUANT_BLOCK.q8_0.bytes);
    assert.equal(tensorBytes('q4_0', 64), 36);
    assert.equal(tensorBytes('bf16', 10), 20);
    assert.throws(() => tensorBytes('q4_0', 48), /48 elements are not a whole number of q4_0 blocks of 32/);
  });
});
