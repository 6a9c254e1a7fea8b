// A 6×8 AVX2/FMA register tile (12 accumulators of 4 doubles) over packed panels, the float64
// sibling of gemm.cc's sgemm: KC=256 deep slices, MC=96 rows of A per work item (L2), NC=1024
// columns of B packed once per slice and shared by the threads.
#include "dgemm.h"

#include <algorithm>

#include "common.h"

namespace transmla {
namespace {

constexpr int64_t MR = 6;
constexpr int64_t NR = 8;
constexpr int64_t KC = 256;
constexpr int64_t MC = 96;
constexpr int64_t NC = 1024;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Panel q of the slice: dst[p*NR + jj] = op(B)(pc + p, j + jj), zero beyond N.
void pack_b(const double* B, bool transB, int64_t N, int64_t K, int64_t pc, int64_t kc, int64_t j, double* dst) {
  const int64_t nr = std::min(NR, N - j);
  if (!transB) {
    for (int64_t p = 0; p < kc; ++p) {
      const double* src = B + (pc + p) * N + j;
      for (int64_t jj = 0; jj < NR; ++jj) dst[p * NR + jj] = jj < nr ? src[jj] : 0.0;
    }
    return;
  }
  for (int64_t jj = 0; jj < NR; ++jj) {
    if (jj < nr) {
      const double* src = B + (j + jj) * K + pc;
      for (int64_t p = 0; p < kc; ++p) dst[p * NR + jj] = src[p];
    } else {
      for (int64_t p = 0; p < kc; ++p) dst[p * NR + jj] = 0.0;
    }
  }
}

// Rows i..i+mr of A over the slice: dst[p*MR + ii], zero beyond mr.
void pack_a(const double* A, int64_t K, int64_t i, int64_t mr, int64_t pc, int64_t kc, double* dst) {
  for (int64_t ii = 0; ii < MR; ++ii) {
    if (ii < mr) {
      const double* src = A + (i + ii) * K + pc;
      for (int64_t p = 0; p < kc; ++p) dst[p * MR + ii] = src[p];
    } else {
      for (int64_t p = 0; p < kc; ++p) dst[p * MR + ii] = 0.0;
    }
  }
}

inline void micro_6x8(int64_t kc, const double* a, const double* b, double* c, int64_t ldc, bool add, int64_t mr, int64_t nr) {
  __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
  __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
  __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();
  __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();
  __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();
  __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const __m256d b0 = _mm256_load_pd(b), b1 = _mm256_load_pd(b + 4);
    __m256d av = _mm256_broadcast_sd(a);
    c00 = _mm256_fmadd_pd(av, b0, c00); c01 = _mm256_fmadd_pd(av, b1, c01);
    av = _mm256_broadcast_sd(a + 1);
    c10 = _mm256_fmadd_pd(av, b0, c10); c11 = _mm256_fmadd_pd(av, b1, c11);
    av = _mm256_broadcast_sd(a + 2);
    c20 = _mm256_fmadd_pd(av, b0, c20); c21 = _mm256_fmadd_pd(av, b1, c21);
    av = _mm256_broadcast_sd(a + 3);
    c30 = _mm256_fmadd_pd(av, b0, c30); c31 = _mm256_fmadd_pd(av, b1, c31);
    av = _mm256_broadcast_sd(a + 4);
    c40 = _mm256_fmadd_pd(av, b0, c40); c41 = _mm256_fmadd_pd(av, b1, c41);
    av = _mm256_broadcast_sd(a + 5);
    c50 = _mm256_fmadd_pd(av, b0, c50); c51 = _mm256_fmadd_pd(av, b1, c51);
    a += MR;
    b += NR;
  }
  const __m256d acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == MR && nr == NR) {
    for (int64_t r = 0; r < MR; ++r) {
      double* cr = c + r * ldc;
      if (add) {
        _mm256_storeu_pd(cr, _mm256_add_pd(_mm256_loadu_pd(cr), acc[r][0]));
        _mm256_storeu_pd(cr + 4, _mm256_add_pd(_mm256_loadu_pd(cr + 4), acc[r][1]));
      } else {
        _mm256_storeu_pd(cr, acc[r][0]);
        _mm256_storeu_pd(cr + 4, acc[r][1]);
      }
    }
    return;
  }
  alignas(32) double tmp[MR * NR];
  for (int64_t r = 0; r < MR; ++r) {
    _mm256_store_pd(tmp + r * NR, acc[r][0]);
    _mm256_store_pd(tmp + r * NR + 4, acc[r][1]);
  }
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t jj = 0; jj < nr; ++jj) c[r * ldc + jj] = add ? c[r * ldc + jj] + tmp[r * NR + jj] : tmp[r * NR + jj];
}

thread_local Scratch<double> tl_bp;
thread_local Scratch<double> tl_ap;

}  // namespace

void dgemm(const double* A, const double* B, bool transB, double* C, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    std::fill(C, C + M * N, 0.0);
    return;
  }
  const int nt = threads_for(2.0 * double(M) * double(N) * double(K));
  const int64_t mblocks = ceil_div(M, MC);
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc), panels = ceil_div(nc, NR);
    // Few row blocks: split the panels between the threads as well.
    const int64_t chunks = mblocks >= nt ? 1 : std::min<int64_t>(nt, panels);
    double* bp = tl_bp.reserve(size_t(KC) * size_t(panels * NR));
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const bool add = pc > 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
      {
#pragma omp for schedule(static)
        for (int64_t q = 0; q < panels; ++q) pack_b(B, transB, N, K, pc, kc, jc + q * NR, bp + q * kc * NR);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < mblocks * chunks; ++item) {
          const int64_t ib = item / chunks, ch = item % chunks;
          const int64_t i0 = ib * MC, mc = std::min(MC, M - i0);
          const int64_t q0 = panels * ch / chunks, q1 = panels * (ch + 1) / chunks;
          double* ap = tl_ap.reserve(size_t(KC) * size_t(MC));
          for (int64_t i = 0; i < mc; i += MR) pack_a(A, K, i0 + i, std::min(MR, mc - i), pc, kc, ap + i * kc);
          for (int64_t q = q0; q < q1; ++q) {
            const int64_t j = jc + q * NR, nr = std::min(NR, N - j);
            for (int64_t i = 0; i < mc; i += MR)
              micro_6x8(kc, ap + i * kc, bp + q * kc * NR, C + (i0 + i) * N + j, N, add, std::min(MR, mc - i), nr);
          }
        }
      }
    }
  }
}

}  // namespace transmla
