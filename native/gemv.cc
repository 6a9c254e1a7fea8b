// Memory-bound products with few activation rows (decoding, small batches). Each weight
// element is loaded once, widened in registers, and used against up to 8 activation rows;
// threads split the weight into contiguous row (NT) or column (NN) ranges.
#include <algorithm>

#include "gemm.h"

namespace transmla {
namespace {

// 16 weights widened into two vectors. bf16 uses the cheapest widening (interleave with zero
// words), which leaves lo = elements {0-3, 8-11} and hi = {4-7, 12-15}; the activations are
// permuted the same way once per call (prepare_x), so the dot products are unchanged.
template <DType T> inline void load16(const void* p, int64_t i, __m256& lo, __m256& hi) {
  lo = load8<T>(p, i);
  hi = load8<T>(p, i + 8);
}
template <> inline void load16<DType::BF16>(const void* p, int64_t i, __m256& lo, __m256& hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
  const __m256i z = _mm256_setzero_si256();
  lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v));
  hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v));
}

// Copies R rows of X (first K/16·16 columns) into xp in the element order load16<T> produces.
template <DType T>
void prepare_x(const float* X, int64_t ldx, int64_t R, int64_t K, float* xp) {
  const int64_t K16 = K / 16 * 16;
  for (int64_t r = 0; r < R; ++r) {
    const float* x = X + r * ldx;
    float* o = xp + r * K16;
    if (T != DType::BF16) {
      std::copy(x, x + K16, o);
      continue;
    }
    for (int64_t k = 0; k < K16; k += 16) {
      std::copy(x + k, x + k + 4, o + k);
      std::copy(x + k + 8, x + k + 12, o + k + 4);
      std::copy(x + k + 4, x + k + 8, o + k + 8);
      std::copy(x + k + 12, x + k + 16, o + k + 12);
    }
  }
}

// Y[r][n0 .. n0+RW) for R activation rows: RW weight rows stream in parallel so that R·RW
// independent FMA chains hide the FMA latency. xp holds the prepared rows (stride K16).
template <DType T, int R, int RW>
inline void gemv_tile(const void* W, int64_t ldw, const float* xp, const float* X, int64_t ldx, float* Y, int64_t ldy,
                      int64_t n0, int64_t K, bool accumulate) {
  const int64_t K16 = K / 16 * 16;
  __m256 s[R][RW];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int w = 0; w < RW; ++w) s[r][w] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K16; k += 16) {
#pragma GCC unroll 8
    for (int w = 0; w < RW; ++w) {
      __m256 lo, hi;
      load16<T>(W, (n0 + w) * ldw + k, lo, hi);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        s[r][w] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xp + r * K16 + k), s[r][w]);
        s[r][w] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xp + r * K16 + k + 8), s[r][w]);
      }
    }
  }
  float tail[R][RW] = {};
  for (int64_t k = K16; k < K; ++k)
    for (int w = 0; w < RW; ++w) {
      const float wk = load1<T>(W, (n0 + w) * ldw + k);
      for (int r = 0; r < R; ++r) tail[r][w] += wk * X[r * ldx + k];
    }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < RW; ++w) {
      const float v = hsum(s[r][w]) + tail[r][w];
      float& y = Y[r * ldy + n0 + w];
      y = accumulate ? y + v : v;
    }
}

thread_local Scratch<float> tl_xprep;

template <DType T, int R, int RW>
void gemv_rows_t(const void* W, int64_t ldw, const float* X, int64_t ldx, float* Y, int64_t ldy, int64_t N, int64_t K,
                 bool accumulate) {
  float* xp = tl_xprep.reserve(size_t(R) * size_t(K / 16 * 16) + 1);
  prepare_x<T>(X, ldx, R, K, xp);
  const int64_t nblocks = N / RW;
  const int nt = threads_for(2.0 * R * double(N) * double(K));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t b = 0; b < nblocks; ++b) gemv_tile<T, R, RW>(W, ldw, xp, X, ldx, Y, ldy, b * RW, K, accumulate);
  for (int64_t n = nblocks * RW; n < N; ++n) gemv_tile<T, R, 1>(W, ldw, xp, X, ldx, Y, ldy, n, K, accumulate);
}

// Y[r][j0 .. j0+8·NV) = Σ_k X[r][k]·B[k][·]: a strip of B columns kept in registers over all k.
template <DType T, int R, int NV>
inline void gevm_strip(const void* B, int64_t ldb, const float* X, int64_t ldx, float* Y, int64_t ldy, int64_t j0,
                       int64_t K, bool accumulate) {
  __m256 s[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) s[r][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m256 xb[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) xb[r] = _mm256_broadcast_ss(X + r * ldx + k);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __m256 bv = load8<T>(B, k * ldb + j0 + 8 * v);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) s[r][v] = _mm256_fmadd_ps(xb[r], bv, s[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* y = Y + r * ldy + j0 + 8 * v;
      _mm256_storeu_ps(y, accumulate ? _mm256_add_ps(_mm256_loadu_ps(y), s[r][v]) : s[r][v]);
    }
}

template <DType T, int R, int NV>
void gevm_rows_t(const void* B, int64_t ldb, const float* X, int64_t ldx, float* Y, int64_t ldy, int64_t N, int64_t K,
                 bool accumulate) {
  constexpr int64_t W = 8 * NV;
  const int64_t nstrips = N / W;
  const int nt = threads_for(2.0 * R * double(N) * double(K));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t s = 0; s < nstrips; ++s) gevm_strip<T, R, NV>(B, ldb, X, ldx, Y, ldy, s * W, K, accumulate);
  int64_t j = nstrips * W;
  for (; j + 8 <= N; j += 8) gevm_strip<T, R, 1>(B, ldb, X, ldx, Y, ldy, j, K, accumulate);
  for (; j < N; ++j)
    for (int r = 0; r < R; ++r) {
      float v = 0.0f;
      for (int64_t k = 0; k < K; ++k) v += X[r * ldx + k] * load1<T>(B, k * ldb + j);
      float& y = Y[r * ldy + j];
      y = accumulate ? y + v : v;
    }
}

template <DType T>
void gemv_rows_typed(const void* W, int64_t ldw, const float* X, int64_t ldx, int64_t R, float* Y, int64_t ldy,
                     int64_t N, int64_t K, bool accumulate) {
  switch (R) {
    case 1: gemv_rows_t<T, 1, 8>(W, ldw, X, ldx, Y, ldy, N, K, accumulate); break;
    case 2: gemv_rows_t<T, 2, 4>(W, ldw, X, ldx, Y, ldy, N, K, accumulate); break;
    case 3: gemv_rows_t<T, 3, 2>(W, ldw, X, ldx, Y, ldy, N, K, accumulate); break;
    case 4: gemv_rows_t<T, 4, 2>(W, ldw, X, ldx, Y, ldy, N, K, accumulate); break;
    case 5: gemv_rows_t<T, 5, 1>(W, ldw, X, ldx, Y, ldy, N, K, accumulate); break;
    case 6: gemv_rows_t<T, 6, 1>(W, ldw, X, ldx, Y, ldy, N, K, accumulate); break;
    case 7: gemv_rows_t<T, 7, 1>(W, ldw, X, ldx, Y, ldy, N, K, accumulate); break;
    default: gemv_rows_t<T, 8, 1>(W, ldw, X, ldx, Y, ldy, N, K, accumulate); break;
  }
}

template <DType T>
void gevm_rows_typed(const void* B, int64_t ldb, const float* X, int64_t ldx, int64_t R, float* Y, int64_t ldy,
                     int64_t N, int64_t K, bool accumulate) {
  switch (R) {
    case 1: gevm_rows_t<T, 1, 8>(B, ldb, X, ldx, Y, ldy, N, K, accumulate); break;
    case 2: gevm_rows_t<T, 2, 4>(B, ldb, X, ldx, Y, ldy, N, K, accumulate); break;
    case 3: gevm_rows_t<T, 3, 2>(B, ldb, X, ldx, Y, ldy, N, K, accumulate); break;
    default: gevm_rows_t<T, 4, 2>(B, ldb, X, ldx, Y, ldy, N, K, accumulate); break;
  }
}

}  // namespace

void gemv_rows(const void* W, DType wType, int64_t ldw, const float* X, int64_t ldx, int64_t R, float* Y, int64_t ldy,
               int64_t N, int64_t K, bool accumulate) {
  // Up to 8 rows share one pass over W; more rows take several passes.
  for (int64_t r0 = 0; r0 < R; r0 += 8) {
    const int64_t rr = std::min<int64_t>(8, R - r0);
    const float* x = X + r0 * ldx;
    float* y = Y + r0 * ldy;
    switch (wType) {
      case DType::F32: gemv_rows_typed<DType::F32>(W, ldw, x, ldx, rr, y, ldy, N, K, accumulate); break;
      case DType::BF16: gemv_rows_typed<DType::BF16>(W, ldw, x, ldx, rr, y, ldy, N, K, accumulate); break;
      case DType::F16: gemv_rows_typed<DType::F16>(W, ldw, x, ldx, rr, y, ldy, N, K, accumulate); break;
    }
  }
}

void gevm_rows(const void* B, DType bType, int64_t ldb, const float* X, int64_t ldx, int64_t R, float* Y, int64_t ldy,
               int64_t N, int64_t K, bool accumulate) {
  for (int64_t r0 = 0; r0 < R; r0 += 4) {
    const int64_t rr = std::min<int64_t>(4, R - r0);
    const float* x = X + r0 * ldx;
    float* y = Y + r0 * ldy;
    switch (bType) {
      case DType::F32: gevm_rows_typed<DType::F32>(B, ldb, x, ldx, rr, y, ldy, N, K, accumulate); break;
      case DType::BF16: gevm_rows_typed<DType::BF16>(B, ldb, x, ldx, rr, y, ldy, N, K, accumulate); break;
      case DType::F16: gevm_rows_typed<DType::F16>(B, ldb, x, ldx, rr, y, ldy, N, K, accumulate); break;
    }
  }
}

}  // namespace transmla
