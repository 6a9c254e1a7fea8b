// Kernel benchmark: throughput of the native kernels (and the TS reference on one size, for
// contrast). Every timed kernel is first checked against a float64 reference on sampled
// outputs; the error is reported next to the speed.
// Args: --runs N (timed repetitions of the large cases, default 7), --threads N (OpenMP team),
//       --eigh-max N (largest eigh size, default 1024), --skip-ts, --only a,b,… (sections to run;
//       gemvQuant and attentionCache are the quantized-weight and half-cache decode kernels of
//       bench/kernels-quant.ts).
// Timings are wall-clock: run it on an otherwise idle machine (loadavg is recorded).
import os from 'node:os';
import { loadNativeAddon, loadNativeKernels } from '../src/kernels/native.js';
import type { FloatDType, Kernels } from '../src/kernels/types.js';
import { cacheAttentionSection, QUANT_NOTES, quantGemvSection } from './kernels-quant.js';
import { arg, asType, machine, randomF32, rng, round, sci, time, widened } from './lib/kernel-timing.js';

/** Max over sampled (i, j) of |C − ref| / Σ|a·b| with a float64 reference. */
function matmulError(A: Float32Array, Bw: Float32Array, C: Float32Array, M: number, N: number, K: number, transB: boolean, r: () => number): number {
  let worst = 0;
  for (let s = 0; s < 64; s++) {
    const i = Math.floor((r() + 0.5) * M), j = Math.floor((r() + 0.5) * N);
    let ref = 0, mag = 0;
    for (let p = 0; p < K; p++) {
      const prod = A[i * K + p] * (transB ? Bw[j * K + p] : Bw[p * N + j]);
      ref += prod;
      mag += Math.abs(prod);
    }
    worst = Math.max(worst, Math.abs(C[i * N + j] - ref) / mag);
  }
  return worst;
}

function benchMatmul(k: Kernels, M: number, K: number, N: number, transB: boolean, bType: FloatDType, runs: number) {
  const r = rng(M * 31 + K * 7 + N);
  const A = randomF32(M * K, r);
  const B = asType(k, randomF32(K * N, r), bType);
  const C = new Float32Array(M * N);
  k.matmul(A, B, bType, C, M, N, K, transB);
  const maxRelErr = matmulError(A, widened(k, B, bType), C, M, N, K, transB, r);
  const t = time(() => k.matmul(A, B, bType, C, M, N, K, transB), runs);
  const flop = 2 * M * N * K;
  return { M, K, N, layout: transB ? 'NT' : 'NN', bType, gflopsBest: round(flop / t.best / 1e9), gflopsMedian: round(flop / t.median / 1e9), runs: t.runs, cpuPerWall: t.cpuPerWall, maxRelErr: sci(maxRelErr) };
}

function benchGemv(k: Kernels, wType: FloatDType, matrices: number, runs: number) {
  const N = 4096, K = 4096;
  const r = rng(matrices * 101 + wType.length);
  const Ws = Array.from({ length: matrices }, () => asType(k, randomF32(N * K, r), wType));
  const x = randomF32(K, r);
  const y = new Float32Array(N);
  // Correctness on the first matrix.
  k.gemv(Ws[0], wType, x, y, N, K);
  const Ww = widened(k, Ws[0], wType);
  let worst = 0;
  for (let s = 0; s < 32; s++) {
    const n = Math.floor((r() + 0.5) * N);
    let ref = 0, mag = 0;
    for (let p = 0; p < K; p++) {
      ref += Ww[n * K + p] * x[p];
      mag += Math.abs(Ww[n * K + p] * x[p]);
    }
    worst = Math.max(worst, Math.abs(y[n] - ref) / mag);
  }
  // One timed run = 16 calls, cycling through the matrices (8 × ≥32 MB defeats the 32 MB L3).
  const calls = 16;
  let next = 0;
  const t = time(() => {
    for (let c = 0; c < calls; c++) k.gemv(Ws[next++ % matrices], wType, x, y, N, K);
  }, runs, 2);
  const bytes = N * K * (wType === 'f32' ? 4 : 2) * calls;
  const flop = 2 * N * K * calls;
  return {
    N, K, wType,
    weights: matrices === 1 ? 'cache-resident (1 matrix)' : `DRAM (rotating ${matrices} matrices)`,
    gflopsBest: round(flop / t.best / 1e9), gflopsMedian: round(flop / t.median / 1e9),
    gbpsBest: round(bytes / t.best / 1e9), gbpsMedian: round(bytes / t.median / 1e9),
    usPerCallBest: round((t.best / calls) * 1e6), runs: t.runs, cpuPerWall: t.cpuPerWall, maxRelErr: sci(worst),
  };
}

function benchSmallM(k: Kernels, runs: number) {
  const K = 2048, N = 2048;
  return [1, 2, 4, 5, 8, 16, 32].map((M) => {
    const r = rng(M);
    const A = randomF32(M * K, r);
    const B = asType(k, randomF32(N * K, r), 'bf16');
    const C = new Float32Array(M * N);
    const t = time(() => k.matmul(A, B, 'bf16', C, M, N, K, true), runs * 4, 2);
    return { M, K, N, layout: 'NT', bType: 'bf16', gflopsBest: round((2 * M * N * K) / t.best / 1e9), usBest: round(t.best * 1e6), cpuPerWall: t.cpuPerWall };
  });
}

function benchGram(k: Kernels, T: number, K: number, runs: number) {
  const r = rng(T + K);
  const X = randomF32(T * K, r);
  const acc = new Float64Array(K * K);
  k.gramAccumulate(X, T, K, acc);
  let worst = 0;
  for (let s = 0; s < 32; s++) {
    const i = Math.floor((r() + 0.5) * K), j = Math.floor((r() + 0.5) * K);
    let ref = 0, mag = 0;
    for (let t = 0; t < T; t++) {
      ref += X[t * K + i] * X[t * K + j];
      mag += Math.abs(X[t * K + i] * X[t * K + j]);
    }
    worst = Math.max(worst, Math.abs(acc[i * K + j] - ref) / mag);
  }
  const t = time(() => k.gramAccumulate(X, T, K, acc), runs);
  // Counted as the full 2·T·K² product although only the lower triangle is computed.
  const flop = 2 * T * K * K;
  return { T, K, msBest: round(t.best * 1e3, 2), msMedian: round(t.median * 1e3, 2), effectiveGflopsBest: round(flop / t.best / 1e9), runs: t.runs, cpuPerWall: t.cpuPerWall, maxRelErr: sci(worst) };
}

function benchEigh(k: Kernels, n: number, runs: number) {
  // Covariance-like SPD matrix with decaying column scales (the PCA use case).
  const r = rng(n);
  const T = 2 * n;
  const X = new Float32Array(T * n);
  for (let t = 0; t < T; t++) for (let j = 0; j < n; j++) X[t * n + j] = r() * Math.exp(-j / (n / 8));
  const G = new Float64Array(n * n);
  k.gramAccumulate(X, T, n, G);
  for (let i = 0; i < G.length; i++) G[i] /= T;
  let res: ReturnType<Kernels['eigh']> | undefined;
  const t = time(() => (res = k.eigh(G, n)), runs, 0);
  const { values, vectors } = res!;
  let amax = 0;
  for (const x of G) amax = Math.max(amax, Math.abs(x));
  const sample = [0, 1, 2, n >> 2, n >> 1, n - 3, n - 2, n - 1];
  let residual = 0, orthogonality = 0;
  for (const j of sample) {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += G[i * n + p] * vectors[p * n + j];
      residual = Math.max(residual, Math.abs(s - values[j] * vectors[i * n + j]) / amax);
    }
    for (let l = 0; l < n; l++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += vectors[p * n + j] * vectors[p * n + l];
      orthogonality = Math.max(orthogonality, Math.abs(s - (j === l ? 1 : 0)));
    }
  }
  return {
    n, secondsBest: round(t.best, 3), secondsMedian: round(t.median, 3), runs: t.runs, cpuPerWall: t.cpuPerWall,
    residual: sci(residual), orthogonality: sci(orthogonality), sampledPairs: sample.length,
    note: 'residual = max |G·v − λ·v| / max|G|, orthogonality = max |vᵢ·vⱼ − δᵢⱼ| over the sampled eigenvectors against all',
    eigenvalueRange: [sci(values[0]), sci(values[n - 1])],
  };
}

function benchAttention(k: Kernels, label: string, tq: number, pos0: number, nHeads: number, nKvHeads: number, dk: number, dv: number, alias: boolean, runs: number) {
  const r = rng(tq * 13 + pos0);
  const T = pos0 + tq;
  const kStride = nKvHeads * dk;
  const q = randomF32(tq * nHeads * dk, r);
  const kc = randomF32(T * kStride, r);
  const vStride = alias ? kStride : nKvHeads * dv;
  const vc = alias ? kc : randomF32(T * vStride, r);
  const out = new Float32Array(tq * nHeads * dv);
  const args = { q, tq, nHeads, nKvHeads, headDimK: dk, headDimV: dv, k: kc, kTokenStride: kStride, v: vc, vTokenStride: vStride, pos0, scale: 1 / Math.sqrt(dk), out };
  const t = time(() => k.attention(args), runs, 1);
  let pairs = 0;
  for (let i = 0; i < tq; i++) pairs += pos0 + i + 1;
  const flop = 2 * pairs * nHeads * (dk + dv);
  return { case: label, tq, pos0, nHeads, nKvHeads, headDimK: dk, headDimV: dv, vAliasesK: alias, msBest: round(t.best * 1e3, 3), msMedian: round(t.median * 1e3, 3), gflopsBest: round(flop / t.best / 1e9), cpuPerWall: t.cpuPerWall };
}

function benchConvert(k: Kernels, runs: number) {
  const n = 1 << 24;
  const r = rng(5);
  const f = randomF32(n, r);
  const u = new Uint16Array(n);
  const back = new Float32Array(n);
  const rows = [] as object[];
  for (const type of ['bf16', 'f16'] as const) {
    const narrow = time(() => k.fromF32(f, type, u), runs);
    const widen = time(() => k.toF32(u, type, back), runs);
    rows.push({ type, elements: n, narrowGElemPerS: round(n / narrow.best / 1e9, 2), widenGElemPerS: round(n / widen.best / 1e9, 2) });
  }
  return rows;
}

async function tsContrast(runs: number) {
  try {
    const { tsKernels } = (await import('../src/kernels/ts.js')) as { tsKernels: Kernels };
    return [false, true].map((transB) => benchMatmul(tsKernels, 512, 576, 576, transB, 'f32', Math.max(2, Math.ceil(runs / 3))));
  } catch (e) {
    return { unavailable: e instanceof Error ? e.message : String(e) };
  }
}

const SECTIONS = ['matmul', 'matmulSmallM', 'tsBackendMatmul', 'gemv', 'gemvQuant', 'gram', 'eigh', 'attention', 'attentionCache', 'convert'] as const;
type Section = (typeof SECTIONS)[number];

/** --only a,b,…: the sections to run (default all). */
function sections(args: string[]): Set<Section> {
  const i = args.indexOf('--only');
  if (i < 0) return new Set(SECTIONS);
  const want = (args[i + 1] ?? '').split(',').filter((x) => x.length > 0);
  const bad = want.filter((x) => !(SECTIONS as readonly string[]).includes(x));
  if (want.length === 0 || bad.length > 0) throw new Error(`--only takes a comma-separated list of ${SECTIONS.join(', ')}; got ${args[i + 1] ?? 'nothing'}`);
  return new Set(want as Section[]);
}

export async function run(args: string[]): Promise<object> {
  const { addon, error } = loadNativeAddon();
  const native = loadNativeKernels().kernels;
  if (!addon || !native) throw new Error(`the native addon is not available: ${error}`);
  const runs = arg(args, '--runs', 7);
  if (args.includes('--threads')) addon.setThreads(arg(args, '--threads', 2));
  const eighMax = arg(args, '--eigh-max', 1024);
  const only = sections(args);
  const loadStart = os.loadavg().map((x) => round(x, 2));
  const t0 = performance.now();
  const skipped = { skipped: 'not in --only' };

  const matmul = [] as object[];
  if (only.has('matmul')) {
    for (const [M, K, N] of [[512, 576, 576], [2048, 2048, 2048]])
      for (const transB of [false, true])
        for (const bType of ['f32', 'bf16'] as const) matmul.push(benchMatmul(native, M, K, N, transB, bType, M * K * N > 1e9 ? runs : runs * 4));
  }

  const gemv = [] as object[];
  if (only.has('gemv')) for (const wType of ['f32', 'bf16', 'f16'] as const) for (const matrices of [1, 8]) gemv.push(benchGemv(native, wType, matrices, runs));

  const eigh = [] as object[];
  if (only.has('eigh')) for (const n of [256, 512, 1024, 2048, 4096].filter((n) => n <= eighMax)) eigh.push(benchEigh(native, n, n >= 1024 ? Math.min(runs, 3) : runs));

  const result = {
    benchmark: 'kernels',
    machine: machine(addon.threads()),
    loadavg: { start: loadStart, end: [] as number[] },
    notes: [
      'GFLOP/s = 2·M·N·K / seconds; best and median of `runs` timed runs after a warm-up run.',
      'matmul B is [K×N] for NN and [N×K] (a weight stored [out,in]) for NT; A and C are f32.',
      'GEMV GB/s counts weight bytes only; the DRAM rows cycle through 8 different 4096×4096 matrices.',
      ...QUANT_NOTES,
      'cpuPerWall ≈ machine.threads means the cores were ours during that measurement; lower values mean other processes competed and the figure understates the kernel.',
    ],
    matmul,
    matmulSmallM: only.has('matmulSmallM') ? benchSmallM(native, runs) : skipped,
    tsBackendMatmul: args.includes('--skip-ts') || !only.has('tsBackendMatmul') ? { skipped: true } : await tsContrast(runs),
    gemv,
    gemvQuant: only.has('gemvQuant') ? quantGemvSection(native, runs) : skipped,
    gram: only.has('gram') ? [benchGram(native, 2048, 1024, runs), benchGram(native, 2048, 576, runs)] : skipped,
    eigh,
    attention: only.has('attention') ? [
      benchAttention(native, 'prefill 512 (SmolLM2-135M heads)', 512, 0, 9, 3, 64, 64, false, runs),
      benchAttention(native, 'decode at 2048 (SmolLM2-135M heads)', 1, 2047, 9, 3, 64, 64, false, runs * 4),
      benchAttention(native, 'decode at 2048, MLA latent cache (k=576, v aliases k)', 1, 2047, 9, 1, 576, 512, true, runs * 4),
    ] : skipped,
    attentionCache: only.has('attentionCache') ? cacheAttentionSection(native, runs) : skipped,
    convert: only.has('convert') ? benchConvert(native, runs) : skipped,
    totalSeconds: 0,
  };
  result.loadavg.end = os.loadavg().map((x) => round(x, 2));
  result.totalSeconds = round((performance.now() - t0) / 1e3);
  return result;
}
