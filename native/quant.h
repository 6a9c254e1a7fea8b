// ggml's Q8_0 / Q4_0 weight blocks: quantizers (bit-identical to ggml's quantize_row_*_ref),
// dequantizers, and the GEMV family for quantized weights. Layouts and rounding are described
// in src/kernels/ts/quant.ts, the reference these are tested against.
#pragma once

#include <cstdint>

#include "common.h"
#include "gemm.h"

namespace transmla {

// Index of the first non-finite value of x[0..n), or -1 (quantizing refuses those).
int64_t first_nonfinite(const float* x, int64_t n);

// x[0..n) (n a multiple of 32, all finite) → blocks of type t in dst.
void quantize_blocks(const float* x, DType t, uint8_t* dst, int64_t n);

// Blocks of type t → dst[0..n) (n a multiple of 32).
void dequantize_blocks(const uint8_t* src, DType t, float* dst, int64_t n);

// Y[r][n] (+)= Ŵ[n]·x̂_r for R activation rows (K a multiple of 32): x̂ is x rounded to 16-bit
// integers per block of 32, and each block's product is an integer dot times d_w·d_x.
void qgemv_rows(const uint8_t* W, DType t, const float* X, int64_t ldx, int64_t R, float* Y, int64_t ldy, int64_t N,
                int64_t K, bool accumulate);

// y_i = Ŵ_i·x̂ for every item (same K and dtype), one parallel region.
void qgemv_multi(const GemvItem* items, int n, DType t, const float* x, int64_t K);

// out = silu(Ŵg·x̂) ⊙ (Ŵu·x̂).
void qgemv_swiglu(const uint8_t* Wg, const uint8_t* Wu, DType t, const float* x, float* out, int64_t N, int64_t K);

// out[i][k] = x̂_i[k] as f32 (M rows of A rounded like the GEMV's x̂), for the packed GEMM.
void round_rows_f32(const float* A, int64_t lda, int64_t M, int64_t K, float* out);

}  // namespace transmla
