// Single-precision matrix products: the packed sgemm and the memory-bound GEMV family.
#pragma once

#include <cstdint>

#include "common.h"

namespace transmla {

// C[M×N] (+)= op(A)[M×K] · op(B)[K×N], row-major with leading dimensions.
// transA: A is stored [K×M] (lda ≥ M); otherwise [M×K] (lda ≥ K).
// transB: B is stored [N×K] (a weight [out,in], ldb ≥ K); otherwise [K×N] (ldb ≥ N).
// B may be f32/f16/bf16 (widened while packing). Rows of C are independent of each other.
void sgemm(const float* A, int64_t lda, bool transA, const void* B, DType bType, int64_t ldb, bool transB,
           float* C, int64_t ldc, int64_t M, int64_t N, int64_t K, bool accumulate);

// Y[r][n] (+)= Σ_k W[n][k]·X[r][k]: R activation rows against a weight [N×K], read once per 8
// rows. This is the decode/small-batch path of an NT product.
void gemv_rows(const void* W, DType wType, int64_t ldw, const float* X, int64_t ldx, int64_t R, float* Y,
               int64_t ldy, int64_t N, int64_t K, bool accumulate);

// Y[r][n] (+)= Σ_k X[r][k]·B[k][n]: the small-M path of an NN product (B read once per 4 rows).
void gevm_rows(const void* B, DType bType, int64_t ldb, const float* X, int64_t ldx, int64_t R, float* Y,
               int64_t ldy, int64_t N, int64_t K, bool accumulate);

// One weight of a fused decode product: y[N] = W[N×K]·x.
struct GemvItem {
  const void* W;
  float* y;
  int64_t N;
};
constexpr int kMaxGemvItems = 8;

// y_i = W_i·x for every item (same K and dtype), all in one parallel region.
void gemv_multi(const GemvItem* items, int n, DType wType, const float* x, int64_t K);

// out[N] = silu(Wg·x) ⊙ (Wu·x): the SwiGLU front of a Llama MLP for one token, one region.
void gemv_swiglu(const void* Wg, const void* Wu, DType wType, const float* x, float* out, int64_t N, int64_t K);

// gate[i] <- silu(gate[i])·up[i] (vectorised; prefill's elementwise SwiGLU step).
void silu_mul(float* gate, const float* up, int64_t n);

// out[t] = x[t] / rms(x[t]) · w over T rows of width D, with the TypeScript reference's rounding
// (sum of squares in float64 in order, then (x·inv)·w in float64 rounded to f32): bit-identical
// to it. out may be x itself.
void rms_norm(const float* x, int64_t T, int64_t D, const float* w, double eps, float* out);

// x += y over n floats (each sum rounded to f32 once, as the double-then-f32 reference rounds).
void add_in_place(float* x, const float* y, int64_t n);

// Row counts up to these go to gemv_rows/gevm_rows instead of the packed kernel: below them,
// widening and packing all of B costs more than the packed kernel saves (measured crossover
// for a 2048×2048 bf16 weight on 2 threads: ~8 rows for NT).
constexpr int64_t kSmallMNT = 8;
constexpr int64_t kSmallMNN = 4;

}  // namespace transmla
