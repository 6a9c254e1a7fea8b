// Packed double-precision GEMM for the conversion's linear algebra (covariances, projections,
// refits): C[M×N] = A[M×K] · op(B), op(B) = B [K×N] or Bᵀ with B stored [N×K].
#pragma once

#include <cstdint>

namespace transmla {

// Row-major, contiguous (lda = K, ldb = transB ? K : N, ldc = N); C is overwritten. Every C
// element is summed by one thread in a fixed order (K in blocks of 256, in order), so the result
// does not depend on the thread count.
void dgemm(const double* A, const double* B, bool transB, double* C, int64_t M, int64_t N, int64_t K);

}  // namespace transmla
