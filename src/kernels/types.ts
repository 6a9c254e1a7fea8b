// The kernel interface: every numeric hot spot of transmla goes through one of these.
// Two implementations exist behind it: the native addon (native/, fast) and the
// pure-TypeScript reference (src/kernels/ts.ts: fallback and test oracle).
//
// Conventions (all row-major, like PyTorch/safetensors):
// - A weight matrix is stored [out, in]. f16/bf16 weights live in Uint16Array and are
//   widened to f32 inside the kernel; they are never expanded in memory.
// - Matrices are passed as flat typed arrays plus their dimensions. Subarray views are fine.
// - A quantized weight (q8_0, q4_0: ggml's block formats, see ./ts/quant.ts) is a Uint8Array of
//   raw blocks, row after row; K (the row length) must be a multiple of 32. Products with one
//   round the activation rows to 16-bit integers per block of 32 first (see gemv below).

export type FloatDType = 'f32' | 'f16' | 'bf16';
export type HalfDType = 'f16' | 'bf16';
/** ggml block formats: 32 elements per block; q8_0 = f16 scale + 32 int8 (34 bytes), q4_0 = f16 scale + 16 bytes of nibbles (18). */
export type QuantDType = 'q8_0' | 'q4_0';
/** What a weight matrix may be stored as. */
export type WeightDType = FloatDType | QuantDType;
/** Storage for a float tensor of the given dtype: f32 → Float32Array, f16/bf16 → Uint16Array (raw bits). */
export type FloatData = Float32Array | Uint16Array;
/** Storage for a weight: FloatData, or a Uint8Array of raw blocks for q8_0/q4_0. */
export type WeightData = FloatData | Uint8Array;

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
  k: FloatData;
  kTokenStride: number;
  /** Values: head g of token t starts at v[t * vTokenStride + g * headDimV]. May alias k (MLA latent cache). */
  v: FloatData;
  vTokenStride: number;
  /**
   * Storage of k and v (default 'f32'): 'f16'/'bf16' caches are Uint16Array bits, widened inside
   * the dot products (the cache is read at half the bytes).
   */
  kvDType?: FloatDType;
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
   * B may be f32, f16 or bf16, or q8_0/q4_0 with transB (blocks run along K); A and C are f32.
   */
  matmul(A: Float32Array, B: WeightData, bType: WeightDType, C: Float32Array, M: number, N: number, K: number, transB: boolean, accumulate?: boolean): void;

  /**
   * C[M×N] = A[K×M]ᵀ · B[K×N]  (or C += … when accumulate), all f32: the weight-gradient
   * layout of training (dW = dYᵀ·X) without transposing A first.
   */
  matmulTN(A: Float32Array, B: Float32Array, C: Float32Array, M: number, N: number, K: number, accumulate?: boolean): void;

  /**
   * y[N] = W[N×K] · x[K] (the decode path: memory-bound on W). W in f32/f16/bf16, or q8_0/q4_0:
   * then x is first rounded per block of 32 to x̂ = d·q with q a 16-bit integer, d = max|x|/32767
   * (|x − x̂| ≤ max|x|/65534 in each block), and y = Ŵ·x̂ — a block's product is an exact integer
   * dot times the two scales, so the 8/4-bit weights are never widened to floats.
   */
  gemv(W: WeightData, wType: WeightDType, x: Float32Array, y: Float32Array, N: number, K: number): void;

  /**
   * y_i[N_i] = W_i[N_i×K] · x[K] for every i (same K and dtype), in one pass: the decode step's
   * projections that read the same activation (q/k/v) cost one parallel region, not one each.
   * At most 8 weights per call; the outputs must not overlap each other, x or any W.
   */
  gemvMulti(Ws: readonly WeightData[], wType: WeightDType, x: Float32Array, ys: readonly Float32Array[], Ns: readonly number[], K: number): void;

  /** out[N] = silu(Wg·x) ⊙ (Wu·x), silu(g) = g/(1+e^−g): a Llama MLP's gate/up for one token. */
  gemvSwiGlu(Wg: WeightData, Wu: WeightData, wType: WeightDType, x: Float32Array, out: Float32Array, N: number, K: number): void;

  /** gate[i] ← silu(gate[i]) · up[i] for i < n (SwiGLU over many rows, e.g. prefill). */
  siluMul(gate: Float32Array, up: Float32Array, n: number): void;

  /**
   * out[t] = x[t] / rms(x[t]) · w over T rows of width D: Σx² in float64 in order, inv =
   * 1/√(Σx²/D + eps), out = f32((x·inv)·w). Both backends give the same bits; out may be x.
   */
  rmsNorm(x: Float32Array, T: number, D: number, w: Float32Array, eps: number, out: Float32Array): void;

  /** x[i] += y[i] for i < n (f32 sums; the same bits in both backends). */
  addInPlace(x: Float32Array, y: Float32Array, n: number): void;

  /**
   * Widen f16/bf16 bits (src Uint16Array, same length as dst) to f32, or dequantize q8_0/q4_0
   * blocks (src Uint8Array of whole blocks, dst.length = 32 per block): ggml's dequantize_row_*.
   */
  toF32(src: Uint16Array | Uint8Array, type: HalfDType | QuantDType, dst: Float32Array): void;
  /**
   * Narrow f32 to f16/bf16 bits, round to nearest even; overflow → ±Inf. NaN follows x86 (F16C):
   * sign and top payload bits kept, quiet bit set — both backends are bit-identical, tested.
   * Or quantize to q8_0/q4_0 blocks (src.length a multiple of 32, dst Uint8Array of 34 or 18 bytes
   * per block), bit-identical to ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref; a
   * non-finite value is refused.
   */
  fromF32(src: Float32Array, type: HalfDType | QuantDType, dst: Uint16Array | Uint8Array): void;

  /** acc[K×K] += Xᵀ·X for X [T×K] f32; acc is float64, full (both triangles) row-major. */
  gramAccumulate(X: Float32Array, T: number, K: number, acc: Float64Array): void;

  /**
   * Symmetric eigendecomposition of A [n×n] float64 (only the lower triangle need be valid; A is not modified).
   * Throws an Error if the iteration does not converge.
   */
  eigh(A: Float64Array, n: number): EighResult;

  /** Causal softmax attention of tq queries against a cache (tq = 1 is the decode step). */
  attention(args: AttentionArgs): void;

  /**
   * C[M×N] = A[M×K]·op(B) in float64, C overwritten; op(B) = B [K×N], or Bᵀ with B stored [N×K]
   * when transB. The native kernel sums K in fixed blocks, so results do not depend on threads.
   */
  dgemm(A: Float64Array, B: Float64Array, C: Float64Array, M: number, N: number, K: number, transB: boolean): void;

  /**
   * The same product with a plain loop's rounding: C[i][j] = Σ_k A[i][k]·op(B)[k][j], k ascending
   * from +0, each product rounded before its add (no FMA). Bit-identical between backends (finite
   * inputs): the conversion steps whose outputs are locked byte for byte use it.
   */
  dgemmSeq(A: Float64Array, B: Float64Array, C: Float64Array, M: number, N: number, K: number, transB: boolean): void;

  /**
   * The KL/top-1 accumulator's rows: logits[s] holds stage s's rows [rows×V] (stage 0 the
   * reference), targets[r] the next token of row r. out[(r·S + s)·3 + {0,1,2}] = (NLL of the
   * target, KL(p_0 ‖ p_s) = Σ_v p_0(v)·(x_0(v) − x_s(v)) − lse_0 + lse_s, argmax agreement 1/0),
   * in float64. Rows are independent, so the native kernel's result does not depend on threads.
   */
  fidelityRows(logits: readonly Float32Array[], rows: number, V: number, targets: Int32Array, out: Float64Array): void;
}
