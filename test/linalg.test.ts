// Float64 linear algebra: eighTop, PCA, thin SVD and the covariance-weighted low-rank factorisation.
// Runs on whichever kernel backend kernels() picks (native when built, else TypeScript).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { eigh, eighTop } from '../src/linalg/eigh.js';
import { pca, secondMoment } from '../src/linalg/pca.js';
import { svd, weightedLowRank } from '../src/linalg/svd.js';

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
function gauss(r: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}
function randMat(m: number, n: number, r: () => number): Float64Array {
  const g = gauss(r);
  return new Float64Array(m * n).map(() => g());
}

/** C = A·B with A [m×k], B [k×n] (naive, for checking). */
function mul(A: ArrayLike<number>, B: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let l = 0; l < k; l++) {
    const a = A[i * k + l];
    for (let j = 0; j < n; j++) C[i * n + j] += a * B[l * n + j];
  }
  return C;
}
function tr(A: ArrayLike<number>, m: number, n: number): Float64Array {
  const T = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) T[j * m + i] = A[i * n + j];
  return T;
}
function fro2(A: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < A.length; i++) s += A[i] * A[i];
  return s;
}
function sub(A: ArrayLike<number>, B: ArrayLike<number>): Float64Array {
  return Float64Array.from(A, (x, i) => x - B[i]);
}
/** Random orthogonal [n×n] from the eigenvectors of a random symmetric matrix. */
function randOrthogonal(n: number, r: () => number): Float64Array {
  const X = randMat(n, n, r);
  return eigh(mul(X, tr(X, n, n), n, n, n), n).vectors;
}
/** Q·diag(d)·Qᵀ */
function fromSpectrum(Q: Float64Array, d: number[]): Float64Array {
  const n = d.length;
  const QD = Float64Array.from(Q, (x, i) => x * d[i % n]);
  const A = mul(QD, tr(Q, n, n), n, n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) A[j * n + i] = A[i * n + j];
  return A;
}
/** max |MᵀM − I| for M [m×k] with orthonormal columns expected. */
function orthErr(M: Float64Array, m: number, k: number): number {
  const G = mul(tr(M, m, k), M, k, m, k);
  let e = 0;
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) e = Math.max(e, Math.abs(G[i * k + j] - (i === j ? 1 : 0)));
  return e;
}
function reconstruct(U: Float64Array, S: Float64Array, Vt: Float64Array, m: number, r: number, n: number): Float64Array {
  const US = Float64Array.from(U, (x, i) => x * S[i % r]);
  return mul(US, Vt, m, r, n);
}
/** Weighted error tr((W−Ŵ) C (W−Ŵ)ᵀ) = ‖(W−Ŵ)C^{1/2}‖_F². */
function weightedErr(W: Float64Array, What: Float64Array, C: Float64Array, m: number, n: number): number {
  const D = sub(W, What);
  const DC = mul(D, C, m, n, n);
  let s = 0;
  for (let i = 0; i < m * n; i++) s += DC[i] * D[i];
  return s;
}

describe('eighTop', () => {
  test('returns the k largest pairs as columns', () => {
    const r = rng(1);
    const n = 9;
    const spectrum = [5, -1, 4, 0.5, 3, 2, -7, 1, 0];
    const A = fromSpectrum(randOrthogonal(n, r), spectrum);
    const { values, vectors } = eighTop(A, n, 3);
    assert.equal(vectors.length, n * 3);
    [5, 4, 3].forEach((want, j) => assert.ok(Math.abs(values[j] - want) < 1e-12, `λ${j}=${values[j]}`));
    const Av = mul(A, vectors, n, n, 3);
    for (let i = 0; i < n * 3; i++) assert.ok(Math.abs(Av[i] - vectors[i] * values[i % 3]) < 1e-12);
    assert.throws(() => eighTop(A, n, 10), /k must be/);
  });
});

describe('pca', () => {
  test('exact second moment: variances, directions, energy curve; damping shifts nothing', () => {
    const r = rng(2);
    const n = 7;
    const spectrum = [9, 4, 2, 1, 0.5, 0.1, 0];
    const Q = randOrthogonal(n, r);
    const sigma = fromSpectrum(Q, spectrum);
    const copy = sigma.slice();
    const plain = pca(sigma, n);
    const damped = pca(sigma, n, { damp: 0.01, k: 3 });
    assert.deepEqual(sigma, copy, 'pca modified its input');
    assert.ok(Math.abs(damped.shift - (0.01 * 16.6) / n) < 1e-14);
    const total = spectrum.reduce((a, b) => a + b);
    let run = 0;
    spectrum.forEach((lam, j) => {
      run += lam;
      assert.ok(Math.abs(plain.variances[j] - lam) < 1e-12, `variance ${j}`);
      assert.ok(Math.abs(damped.variances[j] - lam) < 1e-12, `damped variance ${j}`);
      assert.ok(Math.abs(plain.energy[j] - run / total) < 1e-12, `energy ${j}`);
    });
    assert.equal(plain.energy[n - 1], 1);
    assert.equal(damped.components.length, n * 3);
    // Distinct eigenvalues: each component is ± the true direction, damped or not.
    for (let j = 0; j < 3; j++) {
      let d1 = 0, d2 = 0;
      for (let i = 0; i < n; i++) {
        d1 += plain.components[i * n + j] * Q[i * n + j];
        d2 += damped.components[i * 3 + j] * Q[i * n + j];
      }
      assert.ok(Math.abs(Math.abs(d1) - 1) < 1e-10 && Math.abs(Math.abs(d2) - 1) < 1e-10, `component ${j}: |cos| ${d1} ${d2}`);
    }
  });

  test('sampled data with a known covariance recovers it', () => {
    const r = rng(3);
    const g = gauss(r);
    const n = 6, T = 40000;
    const spectrum = [16, 8, 4, 1, 0.25, 0.01];
    const Q = randOrthogonal(n, r);
    // x = Q·diag(√λ)·z with z ~ N(0, I), so E[xxᵀ] = Q diag(λ) Qᵀ.
    const X = new Float32Array(T * n);
    for (let t = 0; t < T; t++) {
      const z = spectrum.map((l) => Math.sqrt(l) * g());
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let j = 0; j < n; j++) s += Q[i * n + j] * z[j];
        X[t * n + i] = s;
      }
    }
    // Two chunks through the accumulator, then divide by T.
    const half = (T / 2) * n;
    const acc = secondMoment(X.subarray(0, half), T / 2, n);
    secondMoment(X.subarray(half), T / 2, n, acc);
    const cov = acc.map((v) => v / T);
    const res = pca(cov, n, { damp: 0.01 });
    spectrum.forEach((lam, j) => {
      const rel = Math.abs(res.variances[j] - lam) / lam;
      assert.ok(rel < 0.05, `variance ${j}: ${res.variances[j]} vs ${lam}`);
    });
    for (let j = 0; j < 3; j++) {
      let d = 0;
      for (let i = 0; i < n; i++) d += res.components[i * n + j] * Q[i * n + j];
      assert.ok(Math.abs(d) > 0.99, `direction ${j}: |cos| = ${Math.abs(d)}`);
    }
  });

  test('zero matrix: zero variances, energy 1, orthonormal components', () => {
    const res = pca(new Float64Array(16), 4, { damp: 0.01 });
    assert.deepEqual(Array.from(res.variances), [0, 0, 0, 0]);
    assert.deepEqual(Array.from(res.energy), [1, 1, 1, 1]);
    assert.ok(orthErr(res.components, 4, 4) < 1e-14);
  });
});

describe('svd', () => {
  /** Builds A = U0 diag(s) V0ᵀ [m×n] with known singular values (zeros allowed). */
  function withSingular(m: number, n: number, s: number[], r: () => number): Float64Array {
    const Um = randOrthogonal(m, r), Vn = randOrthogonal(n, r);
    const k = s.length;
    const A = new Float64Array(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
      let v = 0;
      for (let l = 0; l < k; l++) v += Um[i * m + l] * s[l] * Vn[j * n + l];
      A[i * n + j] = v;
    }
    return A;
  }

  function check(A: Float64Array | Float32Array, m: number, n: number, what: string, known?: number[]): void {
    const k = Math.min(m, n);
    const { U, S, Vt, r } = svd(A, m, n);
    assert.equal(r, k);
    assert.ok([...U, ...S, ...Vt].every(Number.isFinite), `${what}: non-finite output`);
    for (let j = 1; j < k; j++) assert.ok(S[j] <= S[j - 1] && S[j] >= 0, `${what}: S not descending/non-negative`);
    const err = Math.sqrt(fro2(sub(A, reconstruct(U, S, Vt, m, k, n))) / Math.max(1e-300, fro2(A)));
    assert.ok(err <= 1e-10, `${what}: reconstruction error ${err.toExponential(2)}`);
    assert.ok(orthErr(U, m, k) <= 1e-10, `${what}: UᵀU − I = ${orthErr(U, m, k).toExponential(2)}`);
    assert.ok(orthErr(tr(Vt, k, n), n, k) <= 1e-10, `${what}: VVᵀ − I`);
    if (known) {
      const want = [...known, ...new Array(k - known.length).fill(0)].sort((a, b) => b - a);
      for (let j = 0; j < k; j++) assert.ok(Math.abs(S[j] - want[j]) <= 1e-10 * want[0], `${what}: σ${j} = ${S[j]}, want ${want[j]}`);
    }
  }

  test('reconstructs tall, wide, square, vector-shaped and f32 matrices to 1e-10', () => {
    const r = rng(4);
    check(randMat(60, 20, r), 60, 20, 'tall 60×20');
    check(randMat(20, 61, r), 20, 61, 'wide 20×61');
    check(randMat(30, 30, r), 30, 30, 'square 30×30');
    check(randMat(1, 9, r), 1, 9, 'row 1×9');
    check(randMat(9, 1, r), 9, 1, 'column 9×1');
    check(withSingular(25, 18, [10, 7, 5, 3, 2, 1, 0.5, 0.25, 0.1, 0.05, 0.01, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9], r), 25, 18, 'graded σ 10..1e-9', [10, 7, 5, 3, 2, 1, 0.5, 0.25, 0.1, 0.05, 0.01, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9]);
    check(new Float32Array(randMat(40, 24, r)), 40, 24, 'f32 input 40×24');
    check(new Float32Array(randMat(24, 40, r)), 24, 40, 'f32 input 24×40');
  });

  test('rank-deficient input: exact zeros, orthonormal completion, no NaNs', () => {
    const r = rng(5);
    check(withSingular(40, 25, [5, 4, 3, 2, 1, 0.5, 0.1], r), 40, 25, 'rank 7 of 40×25', [5, 4, 3, 2, 1, 0.5, 0.1]);
    check(withSingular(12, 30, [3, 1], r), 12, 30, 'rank 2 of 12×30 (wide)', [3, 1]);
    check(new Float64Array(8 * 5), 8, 5, 'zero 8×5', []);
    const dup = randMat(10, 3, r);
    const A = new Float64Array(10 * 6); // two identical column blocks: rank 3
    for (let i = 0; i < 10; i++) for (let j = 0; j < 6; j++) A[i * 6 + j] = dup[i * 3 + (j % 3)];
    check(A, 10, 6, 'duplicated columns');
    const { S } = svd(A, 10, 6);
    assert.deepEqual(Array.from(S.subarray(3)), [0, 0, 0]);
  });

  test('truncation is Eckart–Young optimal: residual² = Σ dropped σ²', () => {
    const r = rng(6);
    for (const [m, n] of [[40, 30], [25, 45]]) {
      const A = randMat(m, n, r);
      const full = svd(A, m, n);
      for (const rank of [0, 1, 5, 17]) {
        const t = svd(A, m, n, rank);
        assert.equal(t.U.length, m * rank);
        assert.equal(t.Vt.length, rank * n);
        for (let j = 0; j < rank; j++) assert.ok(Math.abs(t.S[j] - full.S[j]) <= 1e-12 * full.S[0]);
        const resid = fro2(sub(A, reconstruct(t.U, t.S, t.Vt, m, rank, n)));
        let dropped = 0;
        for (let j = rank; j < Math.min(m, n); j++) dropped += full.S[j] ** 2;
        assert.ok(Math.abs(resid - dropped) <= 1e-10 * fro2(A), `${m}×${n} rank ${rank}: ${resid} vs ${dropped}`);
      }
    }
    assert.throws(() => svd(new Float64Array(6), 2, 3, 3), /rank must be/);
  });
});

describe('weightedLowRank', () => {
  /** Anisotropic covariance: random directions, variances log-spread over 1e-3..1e2. */
  function anisotropic(n: number, r: () => number): Float64Array {
    const spectrum = Array.from({ length: n }, (_, i) => 10 ** (2 - (5 * i) / (n - 1)));
    return fromSpectrum(randOrthogonal(n, r), spectrum);
  }
  function plainTruncated(W: Float64Array, m: number, n: number, rank: number): Float64Array {
    const t = svd(W, m, n, rank);
    return reconstruct(t.U, t.S, t.Vt, m, rank, n);
  }

  for (const [m, n, rank] of [[12, 40, 4], [50, 16, 5]] as const) {
    test(`${m}×${n} rank ${rank}: beats plain truncated SVD under the weighted norm, and is optimal`, () => {
      const r = rng(m * 100 + n);
      const W = randMat(m, n, r);
      const C = anisotropic(n, r);
      const f = weightedLowRank(W, m, n, C, rank);
      assert.equal(f.up.length, m * rank);
      assert.equal(f.down.length, rank * n);
      assert.ok(orthErr(f.up, m, rank) < 1e-10);
      const What = mul(f.up, f.down, m, rank, n);
      const ours = weightedErr(W, What, C, m, n);
      const svdErr = weightedErr(W, plainTruncated(W, m, n, rank), C, m, n);
      assert.ok(ours < 0.9 * svdErr, `weighted error ${ours} is not clearly below plain SVD's ${svdErr}`);
      assert.ok(Math.abs(ours - f.error) <= 1e-9 * f.total, `reported error ${f.error} vs measured ${ours}`);
      // The optimum is the sum of the dropped eigenvalues of W C Wᵀ.
      const M = mul(mul(W, C, m, n, n), tr(W, m, n), m, n, m);
      const lam = Array.from(eigh(M, m).values);
      const opt = lam.slice(rank).reduce((a, b) => a + Math.max(0, b), 0);
      assert.ok(Math.abs(ours - opt) <= 1e-9 * f.total, `error ${ours} vs optimum ${opt}`);
      for (let j = 0; j < rank; j++) assert.ok(Math.abs(f.kept[j] - lam[j]) <= 1e-9 * lam[0], `kept[${j}]`);
      // The whole spectrum: min(m, n) values, the kept ones first, equal to W C Wᵀ's eigenvalues, summing to the total.
      assert.equal(f.spectrum.length, Math.min(m, n));
      for (let j = 0; j < rank; j++) assert.equal(f.spectrum[j], f.kept[j]);
      for (let j = 0; j < f.spectrum.length; j++) assert.ok(Math.abs(f.spectrum[j] - Math.max(0, lam[j])) <= 1e-8 * lam[0], `spectrum[${j}]`);
      assert.ok(Math.abs(f.spectrum.reduce((a, b) => a + b, 0) - f.total) <= 1e-8 * f.total);
    });
  }

  for (const [m, n, rank] of [[10, 30, 3], [30, 10, 3]] as const) {
    test(`${m}×${n}: with C = I it equals plain truncated SVD`, () => {
      const r = rng(7 + m);
      const W = randMat(m, n, r);
      const I = new Float64Array(n * n);
      for (let i = 0; i < n; i++) I[i * n + i] = 1;
      const f = weightedLowRank(W, m, n, I, rank);
      const What = mul(f.up, f.down, m, rank, n);
      const ref = plainTruncated(W, m, n, rank);
      const diff = Math.sqrt(fro2(sub(What, ref)) / fro2(W));
      assert.ok(diff <= 1e-10, `Ŵ differs from truncated SVD by ${diff.toExponential(2)}`);
    });
  }

  test('singular covariance: finite factors, no worse than plain SVD', () => {
    const r = rng(9);
    const m = 8, n = 20, rank = 3;
    const W = randMat(m, n, r);
    const X = randMat(5, n, r); // only 5 input directions ever seen
    const C = mul(tr(X, 5, n), X, n, 5, n);
    for (const [mm, nn, WW] of [[m, n, W], [n, m, tr(W, m, n)]] as const) {
      const Cx = mm === m ? C : (() => { const Y = randMat(3, nn, r); return mul(tr(Y, 3, nn), Y, nn, 3, nn); })();
      const f = weightedLowRank(WW, mm, nn, Cx, rank);
      assert.ok([...f.up, ...f.down].every(Number.isFinite));
      const ours = weightedErr(WW, mul(f.up, f.down, mm, rank, nn), Cx, mm, nn);
      const plain = weightedErr(WW, plainTruncated(WW, mm, nn, rank), Cx, mm, nn);
      assert.ok(ours <= plain * (1 + 1e-9) + 1e-12, `${mm}×${nn}: ${ours} vs plain ${plain}`);
    }
  });
});
