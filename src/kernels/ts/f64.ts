// Float64 kernels of conversion and evaluation in TypeScript: the fallback and the oracle of
// native/dgemm.cc, native/dgemm-seq.cc and native/fidelity.cc (semantics in ../types.ts).

/** C[M×N] = A[M×K]·op(B), C overwritten; 4×4 register tiles over columns of op(B) packed per 4. */
export function dgemm(A: Float64Array, B: Float64Array, C: Float64Array, M: number, N: number, K: number, transB: boolean): void {
  C.fill(0, 0, M * N);
  if (M === 0 || N === 0 || K === 0) return;
  const P = new Float64Array(4 * K);
  for (let j = 0; j < N; j += 4) {
    const w = Math.min(4, N - j);
    // Pack columns j..j+3 of op(B): P[k*4 + c] (zero beyond N so the tile needs no tail).
    P.fill(0);
    for (let c = 0; c < w; c++) {
      if (transB) for (let k = 0, o = (j + c) * K; k < K; k++) P[k * 4 + c] = B[o + k]!;
      else for (let k = 0; k < K; k++) P[k * 4 + c] = B[k * N + j + c]!;
    }
    let i = 0;
    for (; i + 4 <= M; i += 4) {
      const a0 = i * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let k = 0, p = 0; k < K; k++, p += 4) {
        const b0 = P[p]!, b1 = P[p + 1]!, b2 = P[p + 2]!, b3 = P[p + 3]!;
        const x0 = A[a0 + k]!, x1 = A[a1 + k]!, x2 = A[a2 + k]!, x3 = A[a3 + k]!;
        c00 += x0 * b0; c01 += x0 * b1; c02 += x0 * b2; c03 += x0 * b3;
        c10 += x1 * b0; c11 += x1 * b1; c12 += x1 * b2; c13 += x1 * b3;
        c20 += x2 * b0; c21 += x2 * b1; c22 += x2 * b2; c23 += x2 * b3;
        c30 += x3 * b0; c31 += x3 * b1; c32 += x3 * b2; c33 += x3 * b3;
      }
      put(C, i * N + j, w, c00, c01, c02, c03);
      put(C, (i + 1) * N + j, w, c10, c11, c12, c13);
      put(C, (i + 2) * N + j, w, c20, c21, c22, c23);
      put(C, (i + 3) * N + j, w, c30, c31, c32, c33);
    }
    for (; i < M; i++) {
      const a0 = i * K;
      let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      for (let k = 0, p = 0; k < K; k++, p += 4) {
        const x = A[a0 + k]!;
        c0 += x * P[p]!; c1 += x * P[p + 1]!; c2 += x * P[p + 2]!; c3 += x * P[p + 3]!;
      }
      put(C, i * N + j, w, c0, c1, c2, c3);
    }
  }
}

/** C = A·op(B) summed as a plain loop: k ascending from +0, each product rounded (types.ts). */
export function dgemmSeq(A: Float64Array, B: Float64Array, C: Float64Array, M: number, N: number, K: number, transB: boolean): void {
  C.fill(0, 0, M * N);
  for (let i = 0; i < M; i++) {
    const ci = i * N;
    if (transB) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0, b = j * K, a = i * K; k < K; k++) s += A[a + k]! * B[b + k]!;
        C[ci + j] = s;
      }
      continue;
    }
    // Row i accumulates k by k: the same per-element order as the loop above, read row-wise.
    for (let k = 0; k < K; k++) {
      const a = A[i * K + k]!, bk = k * N;
      for (let j = 0; j < N; j++) C[ci + j]! += a * B[bk + j]!;
    }
  }
}

function put(C: Float64Array, o: number, w: number, v0: number, v1: number, v2: number, v3: number): void {
  C[o] = v0;
  if (w > 1) C[o + 1] = v1;
  if (w > 2) C[o + 2] = v2;
  if (w > 3) C[o + 3] = v3;
}

/** Maximum and its first index. */
function argmax(x: Float32Array, o: number, V: number): [number, number] {
  let max = -Infinity, arg = 0;
  for (let i = 0; i < V; i++) if (x[o + i]! > max) { max = x[o + i]!; arg = i; }
  return [max, arg];
}

/** Per row r and stage s: (NLL of the target, KL(p_0 ‖ p_s), argmax agreement), see types.ts. */
export function fidelityRows(logits: readonly Float32Array[], rows: number, V: number, targets: Int32Array, out: Float64Array): void {
  const S = logits.length;
  const e0 = new Float64Array(V);
  for (let r = 0; r < rows; r++) {
    const o0 = r * V, t = targets[r]!;
    if (!(t >= 0 && t < V)) throw new RangeError(`fidelityRows: targets[${r}] = ${t} is outside the vocabulary of ${V}`);
    const x0 = logits[0]!;
    const [m0, a0] = argmax(x0, o0, V);
    let sum0 = 0;
    for (let v = 0; v < V; v++) sum0 += (e0[v] = Math.exp(x0[o0 + v]! - m0));
    const lse0 = m0 + Math.log(sum0);
    const o = r * S * 3;
    out[o] = lse0 - x0[o0 + t]!; out[o + 1] = 0; out[o + 2] = 1;
    for (let s = 1; s < S; s++) {
      const xs = logits[s]!;
      const [ms, as] = argmax(xs, o0, V);
      let sums = 0, d = 0;
      for (let v = 0; v < V; v++) {
        const x = xs[o0 + v]!;
        sums += Math.exp(x - ms);
        d += e0[v]! * (x0[o0 + v]! - x);
      }
      const lses = ms + Math.log(sums);
      out[o + s * 3] = lses - xs[o0 + t]!;
      out[o + s * 3 + 1] = d / sum0 - lse0 + lses;
      out[o + s * 3 + 2] = as === a0 ? 1 : 0;
    }
  }
}
