// Plain-JS GEMM and GEMV. V8 does not vectorise, so speed comes from 4×4 register tiles
// (16 accumulators, 8 loads per 16 multiply-adds) over a packed copy of B in which each
// group of 4 output columns is contiguous along K. Packing is also where f16/bf16 are
// widened, so every B element is converted once per call, not once per row of A.
// Fewer than 4 rows of A skip packing (it would cost as much as the product).
// Sums are kept in float64 over the full K and rounded to f32 once.
import type { FloatData, FloatDType, QuantDType, WeightData, WeightDType } from '../types.js';
import { BF16_TO_F32, F16_TO_F32 } from './half.js';
import { gemvQuant, matmulQuant } from './matmul-quant.js';

function isQuant(t: WeightDType): t is QuantDType {
  return t === 'q8_0' || t === 'q4_0';
}

/** Columns of B packed per panel: the panel (K × NB doubles) stays cache-resident while all rows of A stream past. */
const NB = 16;

function widenTable(type: FloatDType): Float32Array | null {
  if (type === 'f32') return null;
  if (type === 'bf16') return BF16_TO_F32;
  if (type === 'f16') return F16_TO_F32;
  throw new Error(`unsupported dtype ${String(type)}`);
}

function checkData(name: string, data: FloatData, type: FloatDType, need: number): void {
  if (type !== 'f32' && type !== 'f16' && type !== 'bf16') throw new Error(`${name}: unsupported dtype ${String(type)}`);
  const ok = type === 'f32' ? data instanceof Float32Array : data instanceof Uint16Array;
  if (!ok) throw new Error(`${name}: dtype ${type} needs ${type === 'f32' ? 'Float32Array' : 'Uint16Array'} data`);
  if (data.length < need) throw new Error(`${name}: holds ${data.length} values, needs ${need}`);
}

function checkDims(name: string, dims: Record<string, number>): void {
  for (const [k, v] of Object.entries(dims)) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${name}: ${k} must be a non-negative integer, got ${v}`);
  }
}

/**
 * Packs columns j0..j0+nc-1 of op(B) into P: for column group g (4 columns), P[(g*K + k)*4 + c] = op(B)[k, j0+4g+c].
 * Columns past nc are zero so the micro-kernel never needs an N tail.
 */
function packPanel(B: FloatData, table: Float32Array | null, P: Float64Array, N: number, K: number, transB: boolean, j0: number, nc: number): void {
  const groups = (nc + 3) >> 2;
  P.fill(0, 0, groups * K * 4);
  for (let jj = 0; jj < nc; jj++) {
    const j = j0 + jj;
    const base = (jj >> 2) * K * 4 + (jj & 3);
    if (transB) {
      // Row j of B ([N×K]) is column j of op(B): contiguous reads.
      const row = j * K;
      if (table === null) for (let k = 0; k < K; k++) P[base + k * 4] = B[row + k];
      else for (let k = 0; k < K; k++) P[base + k * 4] = table[B[row + k]];
    } else {
      if (table === null) for (let k = 0; k < K; k++) P[base + k * 4] = B[k * N + j];
      else for (let k = 0; k < K; k++) P[base + k * 4] = table[B[k * N + j]];
    }
  }
}

export function matmul(A: Float32Array, B: WeightData, bType: WeightDType, C: Float32Array, M: number, N: number, K: number, transB: boolean, accumulate = false): void {
  checkDims('matmul', { M, N, K });
  if (isQuant(bType)) return matmulQuant(A, B as Uint8Array, bType, C, M, N, K, transB, accumulate);
  checkData('matmul B', B as FloatData, bType, N * K);
  if (A.length < M * K) throw new Error(`matmul: A holds ${A.length} values, needs M*K = ${M * K}`);
  if (C.length < M * N) throw new Error(`matmul: C holds ${C.length} values, needs M*N = ${M * N}`);
  if (M === 0 || N === 0) return;
  if (K === 0) {
    if (!accumulate) C.fill(0, 0, M * N);
    return;
  }
  if (M < 4) {
    // Too few rows to repay packing: stream B once, widening each block of it once.
    if (transB) smallNT(A, B as FloatData, bType, C, M, N, K, accumulate);
    else smallNN(A, B as FloatData, bType, C, M, N, K, accumulate);
    return;
  }
  const table = widenTable(bType);
  const P = new Float64Array(((Math.min(N, NB) + 3) >> 2) * 4 * K);
  for (let j0 = 0; j0 < N; j0 += NB) {
    const nc = Math.min(NB, N - j0);
    packPanel(B as FloatData, table, P, N, K, transB, j0, nc);
    const groups = (nc + 3) >> 2;
    let i = 0;
    for (; i + 4 <= M; i += 4) {
      const a0 = i * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
      for (let g = 0; g < groups; g++) {
        let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
        let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
        let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        let p = g * K * 4;
        for (let k = 0; k < K; k++, p += 4) {
          const b0 = P[p], b1 = P[p + 1], b2 = P[p + 2], b3 = P[p + 3];
          const x0 = A[a0 + k], x1 = A[a1 + k], x2 = A[a2 + k], x3 = A[a3 + k];
          c00 += x0 * b0; c01 += x0 * b1; c02 += x0 * b2; c03 += x0 * b3;
          c10 += x1 * b0; c11 += x1 * b1; c12 += x1 * b2; c13 += x1 * b3;
          c20 += x2 * b0; c21 += x2 * b1; c22 += x2 * b2; c23 += x2 * b3;
          c30 += x3 * b0; c31 += x3 * b1; c32 += x3 * b2; c33 += x3 * b3;
        }
        const j = j0 + g * 4;
        const w = Math.min(4, N - j);
        store(C, i * N + j, w, accumulate, c00, c01, c02, c03);
        store(C, (i + 1) * N + j, w, accumulate, c10, c11, c12, c13);
        store(C, (i + 2) * N + j, w, accumulate, c20, c21, c22, c23);
        store(C, (i + 3) * N + j, w, accumulate, c30, c31, c32, c33);
      }
    }
    for (; i < M; i++) {
      const a0 = i * K;
      for (let g = 0; g < groups; g++) {
        let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
        let p = g * K * 4;
        for (let k = 0; k < K; k++, p += 4) {
          const x = A[a0 + k];
          c0 += x * P[p]; c1 += x * P[p + 1]; c2 += x * P[p + 2]; c3 += x * P[p + 3];
        }
        const j = j0 + g * 4;
        store(C, i * N + j, Math.min(4, N - j), accumulate, c0, c1, c2, c3);
      }
    }
  }
}

function store(C: Float32Array, o: number, w: number, acc: boolean, v0: number, v1: number, v2: number, v3: number): void {
  if (acc) {
    // Add in double, round once: the same as accumulating the whole product in one pass.
    C[o] += v0;
    if (w > 1) C[o + 1] += v1;
    if (w > 2) C[o + 2] += v2;
    if (w > 3) C[o + 3] += v3;
  } else {
    C[o] = v0;
    if (w > 1) C[o + 1] = v1;
    if (w > 2) C[o + 2] = v2;
    if (w > 3) C[o + 3] = v3;
  }
}

/** Rows of W widened per block: 4 rows at a time share each load of x. */
export function gemv(W: WeightData, wType: WeightDType, x: Float32Array, y: Float32Array, N: number, K: number): void {
  checkDims('gemv', { N, K });
  if (isQuant(wType)) return gemvQuant(W as Uint8Array, wType, x, y, N, K);
  checkData('gemv W', W as FloatData, wType, N * K);
  if (x.length < K) throw new Error(`gemv: x holds ${x.length} values, needs K = ${K}`);
  if (y.length < N) throw new Error(`gemv: y holds ${y.length} values, needs N = ${N}`);
  const half = wType !== 'f32';
  // For f16/bf16, R holds the current 4-row block in f32; for f32 we read W directly.
  const R = half ? new Float32Array(4 * K) : (W as Float32Array);
  const Ru = new Uint32Array(R.buffer, R.byteOffset, half ? R.length : 0);
  let n = 0;
  for (; n + 4 <= N; n += 4) {
    let r0 = n * K;
    if (half) {
      widenRows(W as Uint16Array, wType, r0, 4 * K, R, Ru);
      r0 = 0;
    }
    const r1 = r0 + K, r2 = r1 + K, r3 = r2 + K;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let k = 0; k < K; k++) {
      const xv = x[k];
      s0 += R[r0 + k] * xv; s1 += R[r1 + k] * xv; s2 += R[r2 + k] * xv; s3 += R[r3 + k] * xv;
    }
    y[n] = s0; y[n + 1] = s1; y[n + 2] = s2; y[n + 3] = s3;
  }
  for (; n < N; n++) {
    let r0 = n * K;
    if (half) {
      widenRows(W as Uint16Array, wType, r0, K, R, Ru);
      r0 = 0;
    }
    let s = 0;
    for (let k = 0; k < K; k++) s += R[r0 + k] * x[k];
    y[n] = s;
  }
}

/** R[0..count) = widened W[from..from+count); bf16 is a shift written through a u32 view of R. */
function widenRows(W: Uint16Array, type: FloatDType, from: number, count: number, R: Float32Array, Ru: Uint32Array): void {
  if (type === 'bf16') {
    for (let i = 0; i < count; i++) Ru[i] = W[from + i] << 16;
  } else {
    const t = F16_TO_F32;
    for (let i = 0; i < count; i++) R[i] = t[W[from + i]];
  }
}

/** C = A·Bᵀ for M < 4: each 4-row block of B is widened once and dotted with every row of A. */
function smallNT(A: Float32Array, B: FloatData, bType: FloatDType, C: Float32Array, M: number, N: number, K: number, accumulate: boolean): void {
  const half = bType !== 'f32';
  const R = half ? new Float32Array(4 * K) : (B as Float32Array);
  const Ru = new Uint32Array(R.buffer, R.byteOffset, half ? R.length : 0);
  for (let n = 0; n < N; n += 4) {
    const w = Math.min(4, N - n);
    let r0 = n * K;
    if (half) {
      widenRows(B as Uint16Array, bType, r0, w * K, R, Ru);
      r0 = 0;
    }
    // Rows past N alias row 0 of the block; their results are never stored.
    const r1 = w > 1 ? r0 + K : r0, r2 = w > 2 ? r0 + 2 * K : r0, r3 = w > 3 ? r0 + 3 * K : r0;
    for (let i = 0; i < M; i++) {
      const a = i * K;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let k = 0; k < K; k++) {
        const x = A[a + k];
        s0 += x * R[r0 + k]; s1 += x * R[r1 + k]; s2 += x * R[r2 + k]; s3 += x * R[r3 + k];
      }
      store(C, i * N + n, w, accumulate, s0, s1, s2, s3);
    }
  }
}

/** C = A·B for M < 4 with B [K×N]: row k of B is widened once and added into float64 row sums. */
function smallNN(A: Float32Array, B: FloatData, bType: FloatDType, C: Float32Array, M: number, N: number, K: number, accumulate: boolean): void {
  const half = bType !== 'f32';
  const R = half ? new Float32Array(N) : (B as Float32Array);
  const Ru = new Uint32Array(R.buffer, R.byteOffset, half ? R.length : 0);
  const S = new Float64Array(M * N);
  for (let k = 0; k < K; k++) {
    let r = k * N;
    if (half) {
      widenRows(B as Uint16Array, bType, r, N, R, Ru);
      r = 0;
    }
    for (let i = 0; i < M; i++) {
      const x = A[i * K + k];
      const s = i * N;
      for (let j = 0; j < N; j++) S[s + j] += x * R[r + j];
    }
  }
  if (accumulate) for (let i = 0; i < M * N; i++) C[i] += S[i];
  else for (let i = 0; i < M * N; i++) C[i] = S[i];
}

/** y_i = W_i · x for each i (the reference of the fused decode projections). */
export function gemvMulti(Ws: readonly WeightData[], wType: WeightDType, x: Float32Array, ys: readonly Float32Array[], Ns: readonly number[], K: number): void {
  if (Ws.length !== ys.length || Ws.length !== Ns.length) throw new Error('gemvMulti: Ws, ys and Ns must have the same length');
  if (Ws.length > 8) throw new Error('gemvMulti: at most 8 weights per call');
  for (let i = 0; i < Ws.length; i++) {
    for (let j = 0; j < ys.length; j++) {
      if (j !== i && ys[i]!.buffer === ys[j]!.buffer) {
        const a0 = ys[i]!.byteOffset, a1 = a0 + Ns[i]! * 4, b0 = ys[j]!.byteOffset, b1 = b0 + Ns[j]! * 4;
        if (a0 < b1 && b0 < a1 && Ns[i]! > 0 && Ns[j]! > 0) throw new Error('gemvMulti: outputs overlap');
      }
    }
  }
  for (let i = 0; i < Ws.length; i++) gemv(Ws[i]!, wType, x, ys[i]!, Ns[i]!, K);
}

/** silu(g)·u as the engine defines it: g / (1 + e^−g) · u. */
export function siluMul(gate: Float32Array, up: Float32Array, n: number): void {
  checkDims('siluMul', { n });
  if (gate.length < n || up.length < n) throw new Error(`siluMul: gate and up need ${n} values`);
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    gate[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
}

/** out[t] = x[t] / rms(x[t]) · w, row by row (sum of squares in float64; types.ts). */
export function rmsNorm(x: Float32Array, T: number, D: number, w: Float32Array, eps: number, out: Float32Array): void {
  for (let t = 0; t < T; t++) {
    const o = t * D;
    let ss = 0;
    for (let i = 0; i < D; i++) { const v = x[o + i]!; ss += v * v; }
    const inv = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) out[o + i] = x[o + i]! * inv * w[i]!;
  }
}

/** x += y over n elements. */
export function addInPlace(x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[i]! += y[i]!;
}

/** out = silu(Wg·x) ⊙ (Wu·x). */
export function gemvSwiGlu(Wg: WeightData, Wu: WeightData, wType: WeightDType, x: Float32Array, out: Float32Array, N: number, K: number): void {
  checkDims('gemvSwiGlu', { N, K });
  if (out.length < N) throw new Error(`gemvSwiGlu: out holds ${out.length} values, needs N = ${N}`);
  const u = new Float32Array(N);
  gemv(Wg, wType, x, out, N, K);
  gemv(Wu, wType, x, u, N, K);
  siluMul(out, u, N);
}

/** C[M×N] (+)= A[K×M]ᵀ · B[K×N]; sums in float64, rounded once (like matmul). */
export function matmulTN(A: Float32Array, B: Float32Array, C: Float32Array, M: number, N: number, K: number, accumulate = false): void {
  checkDims('matmulTN', { M, N, K });
  if (A.length < K * M) throw new Error(`matmulTN: A holds ${A.length} values, needs K*M = ${K * M}`);
  if (B.length < K * N) throw new Error(`matmulTN: B holds ${B.length} values, needs K*N = ${K * N}`);
  if (C.length < M * N) throw new Error(`matmulTN: C holds ${C.length} values, needs M*N = ${M * N}`);
  const row = new Float64Array(N);
  for (let i = 0; i < M; i++) {
    row.fill(0);
    for (let k = 0; k < K; k++) {
      const a = A[k * M + i]!;
      if (a === 0) continue;
      const bo = k * N;
      for (let j = 0; j < N; j++) row[j]! += a * B[bo + j]!;
    }
    const co = i * N;
    for (let j = 0; j < N; j++) C[co + j] = accumulate ? C[co + j]! + row[j]! : row[j]!;
  }
}
