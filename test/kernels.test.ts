// Kernel tests. Every kernel of the TypeScript backend is checked against an independent
// float64 reference written here; the native backend is then checked against the TypeScript
// one. Without the addon the native half is skipped, unless TRANSMLA_REQUIRE_NATIVE=1.
//
// Error measure for f32 outputs (normwise): relErr(a, ref) = max|a−ref| / max(1e-30, max|ref|).
// Bounds: TS vs float64 reference ≤ 1e-6 (TS sums in float64 and rounds once);
//         native vs TS ≤ 1e-5 (native sums in f32).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { tsKernels } from '../src/kernels/ts.js';
import type { AttentionArgs, FloatData, FloatDType, Kernels } from '../src/kernels/types.js';

// ---------------------------------------------------------------------------------------------
// Backends

async function loadNative(): Promise<{ kernels: Kernels | null; why: string }> {
  try {
    const mod = (await import('../src/kernels/native.js')) as { loadNativeKernels: () => { kernels?: Kernels | null; error?: unknown } };
    const r = mod.loadNativeKernels();
    return r.kernels ? { kernels: r.kernels, why: '' } : { kernels: null, why: String(r.error) };
  } catch (e) {
    return { kernels: null, why: `src/kernels/native.ts failed to import: ${(e as Error).message}` };
  }
}
const native = await loadNative();
const REQUIRE_NATIVE = process.env.TRANSMLA_REQUIRE_NATIVE === '1';
/** node:test skip option for the native comparisons. */
const nativeSkip: false | string = native.kernels || REQUIRE_NATIVE ? false : `native addon unavailable (${native.why})`;
function nk(): Kernels {
  if (!native.kernels) assert.fail(`TRANSMLA_REQUIRE_NATIVE=1 but the native kernels did not load: ${native.why}`);
  assert.equal(native.kernels.backend, 'native');
  return native.kernels;
}

// ---------------------------------------------------------------------------------------------
// Deterministic random data

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    // mulberry32
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

function relErr(a: ArrayLike<number>, ref: ArrayLike<number>, n = ref.length): number {
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    const d = Math.abs(a[i] - ref[i]);
    if (!(d <= num)) num = d; // NaN propagates as a failure
    den = Math.max(den, Math.abs(ref[i]));
  }
  return num / Math.max(1e-30, den);
}
function assertClose(a: ArrayLike<number>, ref: ArrayLike<number>, tol: number, what: string, n = ref.length): void {
  const e = relErr(a, ref, n);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(3)} > ${tol}`);
}

// ---------------------------------------------------------------------------------------------
// Independent reference for f16/bf16 (formula decode; nearest-value search for encode)

const FMT = {
  f16: { expBits: 5, manBits: 10, bias: 15, maxFinite: 0x7bff, inf: 0x7c00 },
  bf16: { expBits: 8, manBits: 7, bias: 127, maxFinite: 0x7f7f, inf: 0x7f80 },
} as const;
type Half = keyof typeof FMT;

function decodeRef(h: number, type: Half): number {
  const f = FMT[type];
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> f.manBits) & ((1 << f.expBits) - 1);
  const m = h & ((1 << f.manBits) - 1);
  if (e === (1 << f.expBits) - 1) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * m * 2 ** (1 - f.bias - f.manBits);
  return sign * (1 + m / 2 ** f.manBits) * 2 ** (e - f.bias);
}

/** NaN bit conventions (x86 hardware behaviour): quiet bit set, sign and top payload bits kept. */
function nanToHalfRef(bits: number, type: Half): number {
  return type === 'f16' ? ((bits >>> 16) & 0x8000) | 0x7e00 | ((bits & 0x7fffff) >>> 13) : ((bits >>> 16) | 0x40) & 0xffff;
}
function halfNanToF32Ref(h: number, type: Half): number {
  return type === 'f16' ? (((h & 0x8000) << 16) | 0x7fc00000 | ((h & 0x3ff) << 13)) >>> 0 : (h << 16) >>> 0;
}

/** Round an f32 (given as bits) to the nearest half, ties to the even pattern, by binary search over positive patterns (monotone in value). */
function encodeRef(bits: number, type: Half): number {
  const f = FMT[type];
  const x = new Float32Array(new Uint32Array([bits]).buffer)[0];
  if (Number.isNaN(x)) return nanToHalfRef(bits, type);
  const sign = bits >>> 31 ? 0x8000 : 0;
  const ax = Math.abs(x);
  if (ax === Infinity) return sign | f.inf;
  let lo = 0, hi: number = f.maxFinite; // largest pattern with value <= ax
  if (decodeRef(hi, type) <= ax) lo = hi;
  else {
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (decodeRef(mid, type) <= ax) lo = mid;
      else hi = mid;
    }
  }
  const loV = decodeRef(lo, type);
  if (loV === ax) return sign | lo;
  // Above the largest finite value, the next step (as if the exponent were unbounded) is Inf.
  const hiV = lo === f.maxFinite ? 2 * loV - decodeRef(lo - 1, type) : decodeRef(lo + 1, type);
  const mid = (loV + hiV) / 2;
  const pick = ax < mid ? lo : ax > mid ? lo + 1 : lo % 2 === 0 ? lo : lo + 1;
  return sign | pick;
}

function widenRef(B: FloatData, type: FloatDType): Float64Array {
  const out = new Float64Array(B.length);
  for (let i = 0; i < B.length; i++) out[i] = type === 'f32' ? B[i] : decodeRef(B[i], type);
  return out;
}

/** Random B data of the given dtype (f16/bf16 from random f32 through the TS narrowing). */
function randB(n: number, type: FloatDType, r: () => number): FloatData {
  const f = randF32(n, r);
  if (type === 'f32') return f;
  const h = new Uint16Array(n);
  tsKernels.fromF32(f, type, h);
  return h;
}

// ---------------------------------------------------------------------------------------------
// Conversions

function conversionInputs(type: Half): Uint32Array {
  const r = rng(type === 'f16' ? 11 : 12);
  const out: number[] = [
    0, 0x80000000, 0x7f800000, 0xff800000, // ±0, ±Inf
    0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fa00000, 0x7fbfffff, 0x7fffffff, 0x7f802000, 0x7f801fff, // NaNs (quiet, signalling, payloads)
    0x00000001, 0x80000001, 0x007fffff, 0x00400000, 0x00800000, // f32 subnormals and the smallest normal
    0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f7f7fff, 0x7f7f0000, // near the f32/bf16 maximum
  ];
  const fv = new Float32Array(1);
  const fb = new Uint32Array(fv.buffer);
  const push = (x: number) => {
    fv[0] = x;
    if (fv[0] === x) out.push(fb[0], (fb[0] ^ 0x80000000) >>> 0);
  };
  // f16 edges: max 65504, the overflow tie 65520, min normal, min subnormal, their halves.
  for (const x of [65504, 65519, 65520, 65521, 65536, 2 ** -14, 2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 2 ** -26, 3 * 2 ** -25, 1, 1 + 2 ** -11, 1 + 3 * 2 ** -11]) push(x);
  // Exact halfway points (and their f32 neighbours) between consecutive half values.
  for (let i = 0; i < 3000; i++) {
    const h = Math.floor(r() * (FMT[type].maxFinite - 1));
    const mid = (decodeRef(h, type) + decodeRef(h + 1, type)) / 2;
    push(mid);
    fv[0] = mid;
    const b = fb[0];
    out.push(b + 1, b - 1);
  }
  for (let i = 0; i < 20000; i++) out.push(Math.floor(r() * 4294967296)); // every exponent range
  for (let i = 0; i < 5000; i++) out.push((Math.floor(r() * 0x08000000) + 0x33000000) >>> 0); // around the f16 subnormal range
  return Uint32Array.from(out, (x) => x >>> 0);
}

describe('conversions', () => {
  for (const type of ['f16', 'bf16'] as const) {
    test(`toF32 ${type}: all 65536 patterns match the formula decode (NaN: quiet, payload kept)`, () => {
      const src = new Uint16Array(65536).map((_, i) => i);
      const dst = new Float32Array(65536);
      tsKernels.toF32(src, type, dst);
      const bits = new Uint32Array(dst.buffer);
      for (let h = 0; h < 65536; h++) {
        const ref = decodeRef(h, type);
        if (Number.isNaN(ref)) assert.equal(bits[h], halfNanToF32Ref(h, type), `NaN pattern 0x${h.toString(16)}`);
        else assert.ok(Object.is(dst[h], ref), `0x${h.toString(16)}: got ${dst[h]}, want ${ref}`);
      }
    });

    test(`fromF32 ${type}: round to nearest even, specials, subnormals, halfway cases`, () => {
      const bitsIn = conversionInputs(type);
      const src = new Float32Array(bitsIn.buffer);
      const dst = new Uint16Array(src.length);
      tsKernels.fromF32(src, type, dst);
      for (let i = 0; i < src.length; i++) {
        const want = encodeRef(bitsIn[i], type);
        if (dst[i] !== want) assert.fail(`f32 0x${bitsIn[i].toString(16)} (${src[i]}): got 0x${dst[i].toString(16)}, want 0x${want.toString(16)}`);
      }
    });

    test(`fromF32 ${type}: round trip of every non-NaN pattern is the identity`, () => {
      const src = new Uint16Array(65536).map((_, i) => i);
      const f = new Float32Array(65536);
      const back = new Uint16Array(65536);
      tsKernels.toF32(src, type, f);
      tsKernels.fromF32(f, type, back);
      for (let h = 0; h < 65536; h++) {
        if (!Number.isNaN(decodeRef(h, type))) assert.equal(back[h], h, `pattern 0x${h.toString(16)}`);
      }
    });

    test(`native vs ts: conversions ${type} are bit-exact`, { skip: nativeSkip }, () => {
      const K = nk();
      const all = new Uint16Array(65536).map((_, i) => i);
      const a = new Float32Array(65536), b = new Float32Array(65536);
      tsKernels.toF32(all, type, a);
      K.toF32(all, type, b);
      const ab = new Uint32Array(a.buffer), bb = new Uint32Array(b.buffer);
      for (let h = 0; h < 65536; h++) if (ab[h] !== bb[h]) assert.fail(`toF32 0x${h.toString(16)}: ts 0x${ab[h].toString(16)}, native 0x${bb[h].toString(16)}`);
      const bitsIn = conversionInputs(type);
      const src = new Float32Array(bitsIn.buffer);
      const x = new Uint16Array(src.length), y = new Uint16Array(src.length);
      tsKernels.fromF32(src, type, x);
      K.fromF32(src, type, y);
      for (let i = 0; i < src.length; i++) if (x[i] !== y[i]) assert.fail(`fromF32 0x${bitsIn[i].toString(16)}: ts 0x${x[i].toString(16)}, native 0x${y[i].toString(16)}`);
      // Odd length and an offset view exercise the vector tails.
      const part = src.subarray(3, 3 + 13);
      const p1 = new Uint16Array(13), p2 = new Uint16Array(13);
      tsKernels.fromF32(part, type, p1);
      K.fromF32(part, type, p2);
      assert.deepEqual(p2, p1);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// matmul / gemv

function matmulRef(A: Float32Array, B: Float64Array, C0: Float32Array | null, M: number, N: number, K: number, transB: boolean): Float64Array {
  const C = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = C0 ? C0[i * N + j] : 0;
      for (let k = 0; k < K; k++) s += A[i * K + k] * (transB ? B[j * K + k] : B[k * N + j]);
      C[i * N + j] = s;
    }
  }
  return C;
}

const MS = [1, 3, 17, 64];
const NKS: [number, number][] = [[1, 1], [5, 33], [33, 5], [1, 64], [64, 1], [576, 64], [65, 577]];
const DTYPES: FloatDType[] = ['f32', 'bf16', 'f16'];
const SENTINEL = 12345.5;

interface MatCase { M: number; N: number; K: number; type: FloatDType; transB: boolean; accumulate: boolean }
/** Every shape × dtype × NN/NT; accumulate on 3 of each 7 (period coprime to the 6 dtype/transpose combinations, so all of them get both). */
function matCases(): MatCase[] {
  const cases: MatCase[] = [];
  let c = 0;
  for (const M of MS) for (const [N, K] of NKS) for (const type of DTYPES) for (const transB of [false, true]) cases.push({ M, N, K, type, transB, accumulate: c++ % 7 < 3 });
  return cases;
}

/** Runs one case on a backend. A and C are offset views and C has a sentinel tail that must survive. */
function runMatmul(k: Kernels, cs: MatCase, seed: number) {
  const r = rng(seed);
  const { M, N, K, type, transB, accumulate } = cs;
  const A = randF32(M * K + 5, r).subarray(5);
  const B = randB(N * K, type, r);
  const C0 = randF32(M * N, r);
  const Cbuf = new Float32Array(M * N + 7).fill(SENTINEL);
  const C = Cbuf.subarray(2, 2 + M * N + 3);
  if (accumulate) C.set(C0);
  k.matmul(A, B, type, C, M, N, K, transB, accumulate);
  for (let i = M * N; i < C.length; i++) assert.equal(C[i], SENTINEL, 'matmul wrote past M*N');
  assert.equal(Cbuf[0], SENTINEL);
  return { A, B, C0: accumulate ? C0 : null, C: C.subarray(0, M * N) };
}
const caseName = (c: MatCase) => `M=${c.M} N=${c.N} K=${c.K} B=${c.type}${c.transB ? ' NT' : ' NN'}${c.accumulate ? ' +=' : ''}`;

describe('matmul', () => {
  test('ts vs float64 reference (all shapes, dtypes, NN/NT, accumulate)', () => {
    matCases().forEach((cs, i) => {
      const { A, B, C0, C } = runMatmul(tsKernels, cs, 100 + i);
      const ref = matmulRef(A, widenRef(B, cs.type), C0, cs.M, cs.N, cs.K, cs.transB);
      assertClose(C, ref, 1e-6, caseName(cs));
    });
  });

  test('K = 0 gives zeros (or leaves C when accumulating); M or N = 0 is a no-op', () => {
    const C = new Float32Array([1, 2, 3, 4]);
    tsKernels.matmul(new Float32Array(0), new Float32Array(0), 'f32', C, 2, 2, 0, false, true);
    assert.deepEqual(C, new Float32Array([1, 2, 3, 4]));
    tsKernels.matmul(new Float32Array(0), new Float32Array(0), 'f32', C, 2, 2, 0, true);
    assert.deepEqual(C, new Float32Array(4));
    tsKernels.matmul(new Float32Array(0), new Float32Array(4), 'f32', C, 0, 2, 2, false);
  });

  test('rejects short buffers and a dtype that does not match the data', () => {
    assert.throws(() => tsKernels.matmul(new Float32Array(3), new Float32Array(4), 'f32', new Float32Array(4), 2, 2, 2, false), /A holds 3/);
    assert.throws(() => tsKernels.matmul(new Float32Array(4), new Float32Array(4), 'bf16', new Float32Array(4), 2, 2, 2, false), /Uint16Array/);
    assert.throws(() => tsKernels.matmul(new Float32Array(4), new Float32Array(4), 'f32', new Float32Array(3), 2, 2, 2, false), /C holds 3/);
  });

  test('native vs ts (all shapes, dtypes, NN/NT, accumulate)', { skip: nativeSkip }, () => {
    const K = nk();
    matCases().forEach((cs, i) => {
      const t = runMatmul(tsKernels, cs, 100 + i);
      const n = runMatmul(K, cs, 100 + i);
      assertClose(n.C, t.C, 1e-5, `native ${caseName(cs)}`);
    });
  });

  test('native vs ts on a larger product (64×1000×1000 NT, bf16)', { skip: nativeSkip }, () => {
    const K = nk();
    const cs: MatCase = { M: 64, N: 1000, K: 1000, type: 'bf16', transB: true, accumulate: false };
    assertClose(runMatmul(K, cs, 7).C, runMatmul(tsKernels, cs, 7).C, 1e-5, caseName(cs));
  });
});

describe('matmulTN (C = Aᵀ·B)', () => {
  const shapes: [number, number, number][] = [[1, 1, 1], [1, 17, 5], [7, 1, 9], [13, 33, 1], [6, 16, 256], [37, 50, 300], [100, 64, 257]];
  function runTN(k: Kernels, M: number, N: number, K: number, accumulate: boolean, seed: number) {
    const r = rng(seed);
    const A = randF32(K * M, r), B = randF32(K * N, r);
    const C = randF32(M * N + 3, r);
    C.fill(SENTINEL, M * N);
    const C0 = C.slice(0, M * N);
    k.matmulTN(A, B, C.subarray(0, M * N), M, N, K, accumulate);
    assert.equal(C[M * N], SENTINEL, 'matmulTN wrote past M*N');
    return { A, B, C0, C: C.subarray(0, M * N) };
  }
  function refTN(A: Float32Array, B: Float32Array, C0: Float32Array | null, M: number, N: number, K: number): Float64Array {
    const out = new Float64Array(M * N);
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
      let s = C0 ? C0[i * N + j]! : 0;
      for (let k = 0; k < K; k++) s += A[k * M + i]! * B[k * N + j]!;
      out[i * N + j] = s;
    }
    return out;
  }
  test('ts vs float64 reference (with and without accumulate)', () => {
    shapes.forEach(([M, N, K], i) => {
      for (const acc of [false, true]) {
        const { A, B, C0, C } = runTN(tsKernels, M, N, K, acc, 300 + i);
        assertClose(C, refTN(A, B, acc ? C0 : null, M, N, K), 1e-6, `tn ${M}×${N}×${K} acc=${acc}`);
      }
    });
  });
  test('native vs ts', { skip: nativeSkip }, () => {
    const Kn = nk();
    shapes.forEach(([M, N, K], i) => {
      for (const acc of [false, true]) {
        assertClose(runTN(Kn, M, N, K, acc, 300 + i).C, runTN(tsKernels, M, N, K, acc, 300 + i).C, 1e-5, `native tn ${M}×${N}×${K} acc=${acc}`);
      }
    });
    assert.throws(() => Kn.matmulTN(new Float32Array(5), new Float32Array(6), new Float32Array(6), 2, 3, 3), /too short/);
  });
});

describe('gemv', () => {
  const shapes: [number, number][] = [[1, 1], [1, 33], [5, 1], [33, 5], [64, 576], [577, 65], [3, 1024]];
  function runGemv(k: Kernels, N: number, K: number, type: FloatDType, seed: number) {
    const r = rng(seed);
    const W = randB(N * K, type, r);
    const x = randF32(K + 1, r).subarray(1);
    const y = new Float32Array(N + 2).fill(SENTINEL);
    k.gemv(W, type, x, y, N, K);
    assert.equal(y[N], SENTINEL, 'gemv wrote past N');
    return { W, x, y: y.subarray(0, N) };
  }
  test('ts vs float64 reference', () => {
    for (const [N, K] of shapes) {
      for (const type of DTYPES) {
        const { W, x, y } = runGemv(tsKernels, N, K, type, N * 7 + K);
        const ref = matmulRef(x, widenRef(W, type), null, 1, N, K, true);
        assertClose(y, ref, 1e-6, `gemv N=${N} K=${K} ${type}`);
      }
    }
  });
  test('native vs ts', { skip: nativeSkip }, () => {
    const Kn = nk();
    for (const [N, K] of shapes) {
      for (const type of DTYPES) {
        assertClose(runGemv(Kn, N, K, type, N * 7 + K).y, runGemv(tsKernels, N, K, type, N * 7 + K).y, 1e-5, `native gemv N=${N} K=${K} ${type}`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Fused decode kernels: gemvMulti, gemvSwiGlu, siluMul

function siluRef(g: number): number {
  return g / (1 + Math.exp(-g));
}

describe('gemvMulti', () => {
  // [Ns], K: odd sizes, a 1-row weight, tails of the 8-row blocks, K below and above 16.
  const cases: [number[], number][] = [[[1], 1], [[1, 7, 9], 33], [[384, 128, 128], 384], [[5, 0, 17], 16], [[13, 8, 1, 31], 65], [[3, 3], 1024]];
  function run(k: Kernels, Ns: number[], K: number, type: FloatDType, seed: number) {
    const r = rng(seed);
    const Ws = Ns.map((N) => randB(N * K, type, r));
    const x = randF32(K, r);
    const ys = Ns.map((N) => new Float32Array(N + 1).fill(SENTINEL));
    k.gemvMulti(Ws, type, x, ys.map((y, i) => y.subarray(0, Ns[i])), Ns, K);
    ys.forEach((y, i) => assert.equal(y[Ns[i]!], SENTINEL, 'gemvMulti wrote past N'));
    return { Ws, x, ys: ys.map((y, i) => y.subarray(0, Ns[i])) };
  }
  test('ts vs float64 reference', () => {
    for (const [Ns, K] of cases) {
      for (const type of DTYPES) {
        const { Ws, x, ys } = run(tsKernels, Ns, K, type, K + Ns.length);
        Ns.forEach((N, i) => assertClose(ys[i]!, matmulRef(x, widenRef(Ws[i]!, type), null, 1, N, K, true), 1e-6, `gemvMulti ${i} N=${N} K=${K} ${type}`));
      }
    }
  });
  test('ts: rejects mismatched lists and overlapping outputs', () => {
    const W = new Float32Array(8), x = new Float32Array(2), y = new Float32Array(8);
    assert.throws(() => tsKernels.gemvMulti([W], 'f32', x, [y, y], [4], 2), /same length/);
    assert.throws(() => tsKernels.gemvMulti([W, W], 'f32', x, [y.subarray(0, 4), y.subarray(2, 6)], [4, 4], 2), /overlap/);
  });
  test('native vs ts', { skip: nativeSkip }, () => {
    const Kn = nk();
    for (const [Ns, K] of cases) {
      for (const type of DTYPES) {
        const n = run(Kn, Ns, K, type, K + Ns.length), t = run(tsKernels, Ns, K, type, K + Ns.length);
        Ns.forEach((N, i) => assertClose(n.ys[i]!, t.ys[i]!, 1e-5, `native gemvMulti ${i} N=${N} K=${K} ${type}`));
      }
    }
  });
  test('native: rejects mismatched lists, short buffers and overlapping outputs', { skip: nativeSkip }, () => {
    const Kn = nk();
    const W = new Float32Array(8), x = new Float32Array(2), y = new Float32Array(8);
    assert.throws(() => Kn.gemvMulti([W], 'f32', x, [y, y], [4], 2), /same length/);
    assert.throws(() => Kn.gemvMulti([W], 'f32', x, [y], [5], 2), /too short/);
    assert.throws(() => Kn.gemvMulti([W, W], 'f32', x, [y.subarray(0, 4), y.subarray(2, 6)], [4, 4], 2), /overlap/);
    assert.throws(() => Kn.gemvMulti([new Uint16Array(8)], 'f32', x, [y], [4], 2), TypeError);
  });
});

describe('gemvSwiGlu and siluMul', () => {
  const shapes: [number, number][] = [[1, 1], [1, 40], [3, 17], [4, 16], [9, 33], [1024, 384], [37, 200]];
  function runSwi(k: Kernels, N: number, K: number, type: FloatDType, seed: number) {
    const r = rng(seed);
    const Wg = randB(N * K, type, r), Wu = randB(N * K, type, r);
    const x = randF32(K, r, 2);
    const out = new Float32Array(N + 1).fill(SENTINEL);
    k.gemvSwiGlu(Wg, Wu, type, x, out.subarray(0, N), N, K);
    assert.equal(out[N], SENTINEL, 'gemvSwiGlu wrote past N');
    return { Wg, Wu, x, out: out.subarray(0, N) };
  }
  test('ts vs float64 reference', () => {
    for (const [N, K] of shapes) {
      for (const type of DTYPES) {
        const { Wg, Wu, x, out } = runSwi(tsKernels, N, K, type, N + 3 * K);
        const g = matmulRef(x, widenRef(Wg, type), null, 1, N, K, true), u = matmulRef(x, widenRef(Wu, type), null, 1, N, K, true);
        const ref = Array.from(g, (gv, i) => siluRef(gv) * u[i]!);
        assertClose(out, ref, 1e-6, `gemvSwiGlu N=${N} K=${K} ${type}`);
      }
    }
  });
  test('native vs ts', { skip: nativeSkip }, () => {
    const Kn = nk();
    for (const [N, K] of shapes) {
      for (const type of DTYPES) {
        assertClose(runSwi(Kn, N, K, type, N + 3 * K).out, runSwi(tsKernels, N, K, type, N + 3 * K).out, 1e-5, `native gemvSwiGlu N=${N} K=${K} ${type}`);
      }
    }
  });
  function siluInputs(n: number, seed: number): { g: Float32Array; u: Float32Array } {
    const r = rng(seed);
    const g = randF32(n, r, 12);
    // Extremes: large |g| (σ saturates), ±0, and values around the clamp of the exponential.
    const special = [0, -0, 1e-30, -1e-30, 30, -30, 88, -88, 100, -100, 1e4, -1e4];
    for (let i = 0; i < Math.min(n, special.length); i++) g[i] = special[i]!;
    return { g, u: randF32(n, r, 3) };
  }
  for (const n of [1, 7, 8, 9, 1023, 5000]) {
    test(`siluMul n=${n}: ts vs reference, native vs ts`, () => {
      const { g, u } = siluInputs(n, n);
      const t = g.slice();
      tsKernels.siluMul(t, u, n);
      assertClose(t, Array.from(g, (gv, i) => siluRef(gv) * u[i]!), 1e-6, 'ts siluMul');
      if (nativeSkip === false) {
        const nv = g.slice();
        nk().siluMul(nv, u, n);
        // Elementwise relative check (the normwise one would hide errors on small outputs).
        for (let i = 0; i < n; i++) {
          const d = Math.abs(nv[i]! - t[i]!), m = Math.abs(t[i]!);
          assert.ok(d <= 2e-6 * m + 1e-30, `native siluMul[${i}] (g=${g[i]}): ${nv[i]} vs ${t[i]}`);
        }
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------
// rmsNorm and addInPlace: the native ones must give the TypeScript bits (conversions are locked
// byte for byte), in place and not, on values spanning many magnitudes.

describe('rmsNorm and addInPlace', () => {
  const bits = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  for (const [T, D] of [[1, 1], [1, 7], [3, 384], [257, 384], [40, 4096]] as const) {
    test(`T=${T} D=${D}: ts vs reference, native bit-identical to ts`, () => {
      const r = rng(T * 1000 + D);
      const x = Float32Array.from({ length: T * D }, () => (r() - 0.5) * 10 ** Math.floor(r() * 8 - 4));
      const w = Float32Array.from({ length: D }, () => r() - 0.5), eps = 1e-5;
      const t = new Float32Array(T * D);
      tsKernels.rmsNorm(x, T, D, w, eps, t);
      for (let row = 0; row < T; row++) {
        let ss = 0;
        for (let i = 0; i < D; i++) ss += x[row * D + i]! ** 2;
        const inv = 1 / Math.sqrt(ss / D + eps);
        for (let i = 0; i < D; i++) assert.equal(t[row * D + i], Math.fround(x[row * D + i]! * inv * w[i]!));
      }
      const y = Float32Array.from({ length: T * D }, () => (r() - 0.5) * 10 ** Math.floor(r() * 8 - 4));
      const sum = x.slice();
      tsKernels.addInPlace(sum, y, T * D);
      for (let i = 0; i < T * D; i++) assert.equal(sum[i], Math.fround(x[i]! + y[i]!));
      if (nativeSkip === false) {
        const nv = new Float32Array(T * D), inPlace = x.slice(), ns = x.slice();
        nk().rmsNorm(x, T, D, w, eps, nv);
        nk().rmsNorm(inPlace, T, D, w, eps, inPlace);
        nk().addInPlace(ns, y, T * D);
        assert.ok(bits(nv).equals(bits(t)), 'native rmsNorm differs from ts');
        assert.ok(bits(inPlace).equals(bits(t)), 'native rmsNorm in place differs from ts');
        assert.ok(bits(ns).equals(bits(sum)), 'native addInPlace differs from ts');
      }
    });
  }
  test('native refuses a short weight and partly overlapping buffers', { skip: nativeSkip }, () => {
    const x = new Float32Array(12);
    assert.throws(() => nk().rmsNorm(x, 3, 4, new Float32Array(3), 1e-5, new Float32Array(12)), /w is too short/);
    assert.throws(() => nk().rmsNorm(x, 2, 4, new Float32Array(4), 1e-5, x.subarray(2, 10)), /must not overlap/);
  });
});

// ---------------------------------------------------------------------------------------------
// gramAccumulate

describe('gramAccumulate', () => {
  const shapes: [number, number][] = [[1, 1], [1, 5], [7, 1], [7, 33], [100, 130], [200, 64]];
  function runGram(k: Kernels, T: number, K: number, seed: number) {
    const r = rng(seed);
    const X = randF32(T * K, r);
    // Start from a symmetric non-zero accumulator: the kernel must add, not overwrite.
    const acc = new Float64Array(K * K);
    for (let i = 0; i < K; i++) for (let j = 0; j <= i; j++) acc[i * K + j] = acc[j * K + i] = r();
    const acc0 = acc.slice();
    k.gramAccumulate(X, T, K, acc);
    return { X, acc, acc0 };
  }
  test('ts vs float64 reference (both triangles, accumulates)', () => {
    for (const [T, K] of shapes) {
      const { X, acc, acc0 } = runGram(tsKernels, T, K, T + 1000 * K);
      const ref = acc0.slice();
      for (let t = 0; t < T; t++) for (let a = 0; a < K; a++) for (let b = 0; b < K; b++) ref[a * K + b] += X[t * K + a] * X[t * K + b];
      assertClose(acc, ref, 1e-13, `gram T=${T} K=${K}`);
    }
  });
  test('native vs ts', { skip: nativeSkip }, () => {
    const Kn = nk();
    for (const [T, K] of [...shapes, [2048, 96] as [number, number]]) {
      const a = runGram(Kn, T, K, T + 1000 * K).acc;
      const b = runGram(tsKernels, T, K, T + 1000 * K).acc;
      assertClose(a, b, 1e-5, `native gram T=${T} K=${K}`);
      for (let i = 0; i < K; i++) for (let j = 0; j < i; j++) assert.equal(a[i * K + j], a[j * K + i], 'native gram is not symmetric');
    }
  });
});

// ---------------------------------------------------------------------------------------------
// eigh

function symRandom(n: number, r: () => number): Float64Array {
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) A[i * n + j] = A[j * n + i] = r() * 2 - 1;
  return A;
}
/** Random orthogonal matrix by modified Gram–Schmidt (twice) on random columns. */
function randOrthogonal(n: number, r: () => number): Float64Array {
  const Q = new Float64Array(n * n).map(() => r() * 2 - 1);
  for (let j = 0; j < n; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let l = 0; l < j; l++) {
        let d = 0;
        for (let i = 0; i < n; i++) d += Q[i * n + j] * Q[i * n + l];
        for (let i = 0; i < n; i++) Q[i * n + j] -= d * Q[i * n + l];
      }
    }
    let s = 0;
    for (let i = 0; i < n; i++) s += Q[i * n + j] ** 2;
    s = Math.sqrt(s);
    for (let i = 0; i < n; i++) Q[i * n + j] /= s;
  }
  return Q;
}
/** Q diag(lams) Qᵀ */
function withSpectrum(lams: number[], r: () => number): Float64Array {
  const n = lams.length;
  const Q = randOrthogonal(n, r);
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let k = 0; k < n; k++) s += Q[i * n + k] * lams[k] * Q[j * n + k];
    A[i * n + j] = s;
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) A[j * n + i] = A[i * n + j]; // exactly symmetric
  return A;
}

/** Checks residual, orthogonality and order; the strict upper triangle is poisoned with NaN first. */
function checkEigh(k: Kernels, A: Float64Array, n: number, what: string): Float64Array {
  // Frobenius norm and residuals are computed on A/amax so that huge entries cannot overflow.
  const amax = Math.max(...Array.from(A, Math.abs));
  const sc = amax > 0 ? 1 / amax : 1;
  let norm = 0;
  for (const x of A) norm += (x * sc) ** 2;
  norm = Math.sqrt(norm);
  const poisoned = A.slice();
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) poisoned[i * n + j] = NaN;
  const copy = poisoned.slice();
  const { values, vectors } = k.eigh(poisoned, n);
  assert.ok(poisoned.every((x, i) => Object.is(x, copy[i])), `${what}: eigh modified its input`);
  assert.equal(values.length, n);
  assert.equal(vectors.length, n * n);
  for (let j = 1; j < n; j++) assert.ok(values[j] <= values[j - 1], `${what}: eigenvalues not descending at ${j}`);
  let res = 0, orth = 0;
  for (let j = 0; j < n; j++) {
    let rr = 0;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let l = 0; l < n; l++) s += A[i * n + l] * sc * vectors[l * n + j];
      rr += (s - values[j] * sc * vectors[i * n + j]) ** 2;
    }
    res = Math.max(res, Math.sqrt(rr));
    for (let l = 0; l <= j; l++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += vectors[i * n + j] * vectors[i * n + l];
      orth = Math.max(orth, Math.abs(s - (l === j ? 1 : 0)));
    }
  }
  res /= Math.max(norm, 1e-300);
  assert.ok(res <= 1e-10, `${what}: residual ‖Av−λv‖/‖A‖_F = ${res.toExponential(2)}`);
  assert.ok(orth <= 1e-10, `${what}: orthogonality ${orth.toExponential(2)}`);
  return values;
}

describe('eigh', () => {
  const cases: { name: string; n: number; A: Float64Array; spectrum?: number[] }[] = [];
  for (const n of [1, 2, 7, 64, 200]) cases.push({ name: `random n=${n}`, n, A: symRandom(n, rng(n)) });
  {
    const spectrum = [3, 3, 3, 1, 1, -2, -2, -2, -2, 0, 0, 5];
    cases.push({ name: 'repeated eigenvalues', n: spectrum.length, A: withSpectrum(spectrum, rng(5)), spectrum });
  }
  cases.push({ name: 'zero matrix n=9', n: 9, A: new Float64Array(81), spectrum: new Array(9).fill(0) });
  {
    // Covariance-like: eigenvalues from 1 down to 1e-12 (the PCA use case).
    const spectrum = Array.from({ length: 40 }, (_, i) => 10 ** (-12 * i / 39));
    cases.push({ name: 'graded spectrum 1..1e-12', n: 40, A: withSpectrum(spectrum, rng(6)), spectrum });
  }
  {
    const n = 30;
    const A = new Float64Array(n * n);
    for (let i = 0; i < n; i++) A[i * n + i] = (i % 7) - 3;
    cases.push({ name: 'diagonal with ties', n, A, spectrum: Array.from({ length: n }, (_, i) => (i % 7) - 3) });
  }
  {
    const n = 16;
    const A = symRandom(n, rng(8)).map((x) => x * 1e150);
    cases.push({ name: 'huge entries (1e150)', n, A });
  }

  for (const c of cases) {
    test(`ts: ${c.name}`, () => {
      const values = checkEigh(tsKernels, c.A, c.n, c.name);
      if (c.spectrum) {
        const want = [...c.spectrum].sort((a, b) => b - a);
        const scale = Math.max(1, ...want.map(Math.abs));
        for (let j = 0; j < c.n; j++) assert.ok(Math.abs(values[j] - want[j]) <= 1e-12 * scale, `${c.name}: λ${j} = ${values[j]}, want ${want[j]}`);
      }
    });
  }

  test('ts: 2×2 and 1×1 closed forms', () => {
    const r = tsKernels.eigh(new Float64Array([2, NaN, 1, 2]), 2);
    assert.ok(Math.abs(r.values[0] - 3) < 1e-15 && Math.abs(r.values[1] - 1) < 1e-15);
    assert.deepEqual(tsKernels.eigh(new Float64Array([-4]), 1), { values: new Float64Array([-4]), vectors: new Float64Array([1]) });
    assert.deepEqual(tsKernels.eigh(new Float64Array(0), 0), { values: new Float64Array(0), vectors: new Float64Array(0) });
  });

  test('ts: non-finite input is an error', () => {
    assert.throws(() => tsKernels.eigh(new Float64Array([1, 0, Infinity, 1]), 2), /finite/);
  });

  test('native: same checks, and eigenvalues agree with ts', { skip: nativeSkip }, () => {
    const K = nk();
    for (const c of cases) {
      const a = checkEigh(K, c.A, c.n, `native ${c.name}`);
      const b = tsKernels.eigh(c.A, c.n).values;
      const scale = Math.max(1e-300, ...Array.from(b, Math.abs));
      for (let j = 0; j < c.n; j++) assert.ok(Math.abs(a[j] - b[j]) <= 1e-12 * scale, `native ${c.name}: λ${j} ${a[j]} vs ts ${b[j]}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// attention

function attentionRef(a: AttentionArgs): Float64Array {
  const out = new Float64Array(a.tq * a.nHeads * a.headDimV);
  const group = a.nHeads / a.nKvHeads;
  for (let i = 0; i < a.tq; i++) {
    for (let h = 0; h < a.nHeads; h++) {
      const g = Math.floor(h / group);
      const nKeys = a.pos0 + a.tq;
      const s: number[] = [];
      for (let t = 0; t < nKeys; t++) {
        if (t > a.pos0 + i) { s.push(-Infinity); continue; } // causal mask
        let d = 0;
        for (let j = 0; j < a.headDimK; j++) d += a.q[(i * a.nHeads + h) * a.headDimK + j] * a.k[t * a.kTokenStride + g * a.headDimK + j];
        s.push(d * a.scale);
      }
      const m = Math.max(...s);
      const w = s.map((x) => Math.exp(x - m));
      const z = w.reduce((x, y) => x + y, 0);
      for (let j = 0; j < a.headDimV; j++) {
        let o = 0;
        for (let t = 0; t < nKeys; t++) o += w[t] * a.v[t * a.vTokenStride + g * a.headDimV + j];
        out[(i * a.nHeads + h) * a.headDimV + j] = o / z;
      }
    }
  }
  return out;
}

interface AttnCase { name: string; tq: number; pos0: number; nHeads: number; nKvHeads: number; dk: number; dv: number; kPad: number; alias: boolean; qScale: number }
const ATTN: AttnCase[] = [
  { name: 'decode tq=1 pos0=9, GQA 4→2', tq: 1, pos0: 9, nHeads: 4, nKvHeads: 2, dk: 16, dv: 16, kPad: 0, alias: false, qScale: 1 },
  { name: 'decode tq=1 pos0=0 (single key)', tq: 1, pos0: 0, nHeads: 4, nKvHeads: 2, dk: 8, dv: 8, kPad: 0, alias: false, qScale: 1 },
  { name: 'prefill tq=7 pos0=5, GQA 4→2, padded stride', tq: 7, pos0: 5, nHeads: 4, nKvHeads: 2, dk: 16, dv: 12, kPad: 3, alias: false, qScale: 1 },
  { name: 'prefill tq=6 pos0=0, MHA 3 heads', tq: 6, pos0: 0, nHeads: 3, nKvHeads: 3, dk: 33, dv: 33, kPad: 0, alias: false, qScale: 1 },
  { name: 'MLA-like: v aliases k, headDimV < headDimK, one latent head', tq: 5, pos0: 4, nHeads: 4, nKvHeads: 1, dk: 40, dv: 32, kPad: 0, alias: true, qScale: 1 },
  { name: 'MLA-like decode, 8 heads', tq: 1, pos0: 30, nHeads: 8, nKvHeads: 1, dk: 72, dv: 64, kPad: 0, alias: true, qScale: 1 },
  { name: 'large logits (stable softmax)', tq: 3, pos0: 2, nHeads: 2, nKvHeads: 1, dk: 8, dv: 8, kPad: 0, alias: false, qScale: 300 },
  // Shapes that exercise the blocked kernel: several key tiles (64 keys), query blocks, odd
  // head sizes, groups of 3 and 6 query heads, and decode splits over the keys (one KV head).
  { name: 'decode tq=1 pos0=700, GQA 6→2 × 64 (kjv-gqa)', tq: 1, pos0: 700, nHeads: 6, nKvHeads: 2, dk: 64, dv: 64, kPad: 0, alias: false, qScale: 1 },
  { name: 'prefill tq=131 pos0=0, GQA 6→2 × 64', tq: 131, pos0: 0, nHeads: 6, nKvHeads: 2, dk: 64, dv: 64, kPad: 0, alias: false, qScale: 1 },
  { name: 'prefill tq=37 pos0=90, GQA 6→1, odd dims 33/17, padded', tq: 37, pos0: 90, nHeads: 6, nKvHeads: 1, dk: 33, dv: 17, kPad: 5, alias: false, qScale: 2 },
  { name: 'MLA-like decode split, pos0=1500, 5 heads, dk 96 / dv 64', tq: 1, pos0: 1500, nHeads: 5, nKvHeads: 1, dk: 96, dv: 64, kPad: 0, alias: true, qScale: 1 },
  { name: 'MLA-like chunk tq=3 pos0=600 (split with a masked tail)', tq: 3, pos0: 600, nHeads: 4, nKvHeads: 1, dk: 40, dv: 24, kPad: 0, alias: true, qScale: 1 },
  { name: 'MHA tq=65 pos0=64, 1-dim heads, large logits', tq: 65, pos0: 64, nHeads: 3, nKvHeads: 3, dk: 1, dv: 1, kPad: 0, alias: false, qScale: 50 },
];

function makeAttn(c: AttnCase, seed: number): AttentionArgs {
  const r = rng(seed);
  const nKeys = c.pos0 + c.tq;
  const kTokenStride = c.nKvHeads * c.dk + c.kPad;
  const k = randF32(nKeys * kTokenStride + 4, r); // a few spare tokens' worth is allowed
  let v: Float32Array, vTokenStride: number;
  if (c.alias) {
    // Latent cache: value = first dv dims of the key row (vTokenStride = kTokenStride).
    v = k;
    vTokenStride = kTokenStride;
  } else {
    vTokenStride = c.nKvHeads * c.dv + c.kPad;
    v = randF32(nKeys * vTokenStride, r);
  }
  return {
    q: randF32(c.tq * c.nHeads * c.dk, r, c.qScale), tq: c.tq, nHeads: c.nHeads, nKvHeads: c.nKvHeads,
    headDimK: c.dk, headDimV: c.dv, k, kTokenStride, v, vTokenStride, pos0: c.pos0,
    scale: 1 / Math.sqrt(c.dk), out: new Float32Array(c.tq * c.nHeads * c.dv),
  };
}

describe('attention', () => {
  ATTN.forEach((c, i) => {
    test(`ts vs float64 reference: ${c.name}`, () => {
      const a = makeAttn(c, 50 + i);
      tsKernels.attention(a);
      assert.ok(a.out.every(Number.isFinite), 'non-finite output');
      assertClose(a.out, attentionRef(a), 1e-6, c.name);
    });
  });
  test('ts: future keys are ignored (causality)', () => {
    const a = makeAttn(ATTN[2], 77);
    tsKernels.attention(a);
    const before = a.out.slice();
    // Overwrite every key/value after the last visible position of query 0 and recompute query 0 alone.
    const one: AttentionArgs = { ...a, tq: 1, q: a.q.subarray(0, a.nHeads * a.headDimK), out: new Float32Array(a.nHeads * a.headDimV) };
    const k = a.k.slice(), v = a.v.slice();
    for (let t = a.pos0 + 1; t < a.pos0 + a.tq; t++) {
      k.fill(1e6, t * a.kTokenStride, (t + 1) * a.kTokenStride);
      v.fill(1e6, t * a.vTokenStride, (t + 1) * a.vTokenStride);
    }
    tsKernels.attention({ ...one, k, v });
    assertClose(one.out, before.subarray(0, one.out.length), 1e-7, 'query 0 with future keys poisoned');
  });
  test('ts: rejects nHeads not a multiple of nKvHeads, and short caches', () => {
    const a = makeAttn(ATTN[0], 1);
    assert.throws(() => tsKernels.attention({ ...a, nKvHeads: 3 }), /multiple/);
    assert.throws(() => tsKernels.attention({ ...a, pos0: 50 }), /k holds/);
  });
  test('native vs ts (all cases)', { skip: nativeSkip }, () => {
    const K = nk();
    ATTN.forEach((c, i) => {
      const t = makeAttn(c, 50 + i);
      const n = makeAttn(c, 50 + i);
      tsKernels.attention(t);
      K.attention(n);
      assertClose(n.out, t.out, 1e-5, `native ${c.name}`);
    });
  });
});
