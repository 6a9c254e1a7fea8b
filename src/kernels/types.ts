// The kernel interface: every numeric hot spot of transmla goes through one of these.
// Two implementations exist behind it: the native addon (native/, fast) and the
// pure-TypeScript reference (src/kernels/ts.ts: fallback and test oracle).
//
// Conventions (all row-major, like PyTorch/safetensors):
// - A weight matrix is stored [out, in]. f16/bf16 weights live in Uint16Array and are
//   widened to f32 inside the kernel; they are never expanded in memory.
// - Matrices are passed as flat typed arrays plus their dimensions. Subarray views are fine.

export type FloatDType = 'f32' | 'f16' | 'bf16';
/** Storage for a float tensor of the given dtype: f32 → Float32Array, f16/bf16 → Uint16Array (raw bits). */
export type FloatData = Float32Array | Uint16Array;

export interface EighResult {
  /** Eigenvalues sorted descending. */
  values: Float64Array;
  /** n×n row-major; column j (vectors[i*n + j]) is the unit eigenvector of values[j]. */
  vectors: Float64Array;
}

export interface AttentionArgs {
  /** Queries [tq, nHeads, headDimK] (token-major). */
  q: Float32Array;
  tq: number;
  nHeads: number;
  /** KV heads; query head h reads KV head floor(h / (nHeads / nKvHeads)). */
  nKvHeads: number;
  headDimK: number;
  headDimV: number;
  /** Keys: head g of token t starts at k[t * kTokenStride + g * headDimK]. */
  k: Float32Array;
  kTokenStride: number;
  /** Values: head g of token t starts at v[t * vTokenStride + g * headDimV]. May alias k (MLA latent cache). */
  v: Float32Array;
  vTokenStride: number;
  /** Position of the first query; query i attends keys 0..pos0+i (causal). Keys held: at least pos0 + tq. */
  pos0: number;
  scale: number;
  /** Output [tq, nHeads, headDimV]. */
  out: Float32Array;
}

export interface Kernels {
  readonly backend: 'native' | 'ts';

  /**
   * C[M×N] = A[M×K] · op(B)   (or C += … when accumulate).
   * transB = false: B is [K×N].  transB = true: B is [N×K] (a weight stored [out,in]), C = A·Bᵀ.
   * B may be f32, f16 or bf16; A and C are f32.
   */
  matmul(A: Float32Array, B: FloatData, bType: FloatDType, C: Float32Array, M: number, N: number, K: number, transB: boolean, accumulate?: boolean): void;

  /**
   * C[M×N] = A[K×M]ᵀ · B[K×N]  (or C += … when accumulate), all f32: the weight-gradient
   * layout of training (dW = dYᵀ·X) without transposing A first.
   */
  matmulTN(A: Float32Array, B: Float32Array, C: Float32Array, M: number, N: number, K: number, accumulate?: boolean): void;

  /** y[N] = W[N×K] · x[K], W in f32/f16/bf16 (the decode path: memory-bound on W). */
  gemv(W: FloatData, wType: FloatDType, x: Float32Array, y: Float32Array, N: number, K: number): void;

  /**
   * y_i[N_i] = W_i[N_i×K] · x[K] for every i (same K and dtype), in one pass: the decode step's
   * projections that read the same activation (q/k/v) cost one parallel region, not one each.
   * At most 8 weights per call; the outputs must not overlap each other, x or any W.
   */
  gemvMulti(Ws: readonly FloatData[], wType: FloatDType, x: Float32Array, ys: readonly Float32Array[], Ns: readonly number[], K: number): void;

  /** out[N] = silu(Wg·x) ⊙ (Wu·x), silu(g) = g/(1+e^−g): a Llama MLP's gate/up for one token. */
  gemvSwiGlu(Wg: FloatData, Wu: FloatData, wType: FloatDType, x: Float32Array, out: Float32Array, N: number, K: number): void;

  /** gate[i] ← silu(gate[i]) · up[i] for i < n (SwiGLU over many rows, e.g. prefill). */
  siluMul(gate: Float32Array, up: Float32Array, n: number): void;

  /** Widen f16/bf16 bits to f32. */
  toF32(src: Uint16Array, type: 'f16' | 'bf16', dst: Float32Array): void;
  /**
   * Narrow f32 to f16/bf16 bits, round to nearest even; overflow → ±Inf. NaN follows x86 (F16C):
   * sign and top payload bits kept, quiet bit set — both backends are bit-identical, tested.
   */
  fromF32(src: Float32Array, type: 'f16' | 'bf16', dst: Uint16Array): void;

  /** acc[K×K] += Xᵀ·X for X [T×K] f32; acc is float64, full (both triangles) row-major. */
  gramAccumulate(X: Float32Array, T: number, K: number, acc: Float64Array): void;

  /**
   * Symmetric eigendecomposition of A [n×n] float64 (only the lower triangle need be valid; A is not modified).
   * Throws an Error if the iteration does not converge.
   */
  eigh(A: Float64Array, n: number): EighResult;

  /** Causal softmax attention of tq queries against a cache (tq = 1 is the decode step). */
  attention(args: AttentionArgs): void;
}
