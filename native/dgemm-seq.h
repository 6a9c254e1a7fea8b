// Float64 GEMM with the summation order of a plain loop: C[i][j] = Σ_k A[i][k]·op(B)[k][j], k
// ascending from +0, every product rounded before it is added (no FMA). The conversion's
// TypeScript steps (RoRoPE's rotation, the MLA assembly, the covariance rotation) were written as
// such loops and their outputs are locked byte for byte; this kernel gives them native speed
// without changing a bit.
#pragma once

#include <cstdint>

namespace transmla {

// Row-major, contiguous (lda = K, ldb = transB ? K : N, ldc = N); C is overwritten. Each element
// is computed by one thread in k order, so the result does not depend on the thread count.
void dgemm_seq(const double* A, const double* B, bool transB, double* C, int64_t M, int64_t N, int64_t K);

}  // namespace transmla
