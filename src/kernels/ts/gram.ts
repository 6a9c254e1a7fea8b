// acc[K×K] += XᵀX in float64 (products of f32 values are exact in a double).
// X is walked in chunks of rows transposed into a float64 buffer, so each 4×4 tile of the
// result reads 8 contiguous streams; off-diagonal tiles are computed once and mirrored.

/** Rows of X per chunk: the transposed chunk (K × CHUNK doubles) should stay in L2. */
const CHUNK = 64;

export function gramAccumulate(X: Float32Array, T: number, K: number, acc: Float64Array): void {
  for (const [name, x] of Object.entries({ T, K })) {
    if (!Number.isInteger(x) || x < 0) throw new Error(`gramAccumulate: ${name} must be a non-negative integer, got ${x}`);
  }
  if (X.length < T * K) throw new Error(`gramAccumulate: X holds ${X.length} values, needs T*K = ${T * K}`);
  if (acc.length < K * K) throw new Error(`gramAccumulate: acc holds ${acc.length} values, needs K*K = ${K * K}`);
  if (T === 0 || K === 0) return;
  const Kp = (K + 3) & ~3; // padded with zero features so tiles never need a tail
  const Xt = new Float64Array(Kp * CHUNK);
  for (let t0 = 0; t0 < T; t0 += CHUNK) {
    const tc = Math.min(CHUNK, T - t0);
    if (tc < CHUNK) Xt.fill(0);
    for (let t = 0; t < tc; t++) {
      const row = (t0 + t) * K;
      for (let a = 0; a < K; a++) Xt[a * CHUNK + t] = X[row + a];
    }
    for (let a = 0; a < Kp; a += 4) {
      const a0 = a * CHUNK, a1 = a0 + CHUNK, a2 = a1 + CHUNK, a3 = a2 + CHUNK;
      for (let b = 0; b <= a; b += 4) {
        const b0 = b * CHUNK, b1 = b0 + CHUNK, b2 = b1 + CHUNK, b3 = b2 + CHUNK;
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
        let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
        for (let t = 0; t < tc; t++) {
          const x0 = Xt[a0 + t], x1 = Xt[a1 + t], x2 = Xt[a2 + t], x3 = Xt[a3 + t];
          const y0 = Xt[b0 + t], y1 = Xt[b1 + t], y2 = Xt[b2 + t], y3 = Xt[b3 + t];
          s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
          s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
          s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
          s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3;
        }
        const tile = [s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33];
        for (let i = 0; i < 4; i++) {
          const r = a + i;
          if (r >= K) break;
          for (let j = 0; j < 4; j++) {
            const c = b + j;
            if (c >= K) break;
            // Diagonal tiles are full (both triangles); off-diagonal ones are mirrored.
            acc[r * K + c] += tile[i * 4 + j];
            if (b !== a) acc[c * K + r] += tile[i * 4 + j];
          }
        }
      }
    }
  }
}
