// See dgemm-seq.h. A 4×8 register tile (8 accumulators of 4 doubles) over 8-column panels of
// op(B) packed for the whole K; the products pass through an empty asm barrier so GCC
// (-ffp-contract=fast under -mfma) cannot fuse them into the adds.
#include "dgemm-seq.h"

#include <algorithm>

#include "common.h"

namespace transmla {
namespace {

constexpr int64_t MR = 4;
constexpr int64_t NR = 8;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline void no_fuse(__m256d& a, __m256d& b) { __asm__("" : "+x"(a), "+x"(b)); }

void tile(const double* A, int64_t K, int64_t mr, const double* bp, double* C, int64_t ldc, int64_t nr) {
  __m256d c[MR][2];
  for (int64_t r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm256_setzero_pd();
  const double* a[MR];
  for (int64_t r = 0; r < MR; ++r) a[r] = A + std::min(r, mr - 1) * K;  // rows beyond mr repeat the last one, never stored
  for (int64_t k = 0; k < K; ++k) {
    const __m256d b0 = _mm256_load_pd(bp + k * NR), b1 = _mm256_load_pd(bp + k * NR + 4);
    for (int64_t r = 0; r < MR; ++r) {
      const __m256d av = _mm256_broadcast_sd(a[r] + k);
      __m256d p0 = _mm256_mul_pd(av, b0), p1 = _mm256_mul_pd(av, b1);
      no_fuse(p0, p1);
      c[r][0] = _mm256_add_pd(c[r][0], p0);
      c[r][1] = _mm256_add_pd(c[r][1], p1);
    }
  }
  alignas(32) double tmp[NR];
  for (int64_t r = 0; r < mr; ++r) {
    double* cr = C + r * ldc;
    if (nr == NR) {
      _mm256_storeu_pd(cr, c[r][0]);
      _mm256_storeu_pd(cr + 4, c[r][1]);
    } else {
      _mm256_store_pd(tmp, c[r][0]);
      _mm256_store_pd(tmp + 4, c[r][1]);
      for (int64_t jj = 0; jj < nr; ++jj) cr[jj] = tmp[jj];
    }
  }
}

}  // namespace

void dgemm_seq(const double* A, const double* B, bool transB, double* C, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    std::fill(C, C + M * N, 0.0);
    return;
  }
  const int nt = threads_for(2.0 * double(M) * double(N) * double(K));
  const int64_t panels = ceil_div(N, NR), mtiles = ceil_div(M, MR);
  // Local, not thread_local: op(B) may be as large as a layer's projection and is needed once.
  Scratch<double> packed(size_t(K) * size_t(panels * NR));
  double* bp = packed.data();
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#pragma omp for schedule(static)
    for (int64_t q = 0; q < panels; ++q) {
      const int64_t j = q * NR, nr = std::min(NR, N - j);
      double* dst = bp + q * K * NR;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t jj = 0; jj < NR; ++jj)
          dst[k * NR + jj] = jj < nr ? (transB ? B[(j + jj) * K + k] : B[k * N + j + jj]) : 0.0;
    }
    // Panel-major so a thread keeps one packed panel in cache across its row tiles.
#pragma omp for schedule(static)
    for (int64_t item = 0; item < panels * mtiles; ++item) {
      const int64_t q = item / mtiles, t = item % mtiles;
      const int64_t i = t * MR, j = q * NR;
      tile(A + i * K, K, std::min(MR, M - i), bp + q * K * NR, C + i * N + j, N, std::min(NR, N - j));
    }
  }
}

}  // namespace transmla
