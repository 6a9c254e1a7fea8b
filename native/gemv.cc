// Memory-bound products with few activation rows (decoding, small batches). Each weight
// element is loaded once, widened in registers, and used against up to 8 activation rows;
// threads split the weight into contiguous row (NT) or column (NN) ranges.
#include <algorithm>
#include <cmath>

#include "gemm.h"
#include "quant.h"

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
template <DType T> inline const void* row_ptr(const void* W, int64_t idx) {
  if (T == DType::F32) return static_cast<const float*>(W) + idx;
  return static_cast<const uint16_t*>(W) + idx;
}

// Elements of T per 64-byte cache line.
template <DType T> constexpr int64_t per_line() { return T == DType::F32 ? 16 : 32; }

// RW rows read side by side defeat the hardware prefetchers when rows are short (K = 384:
// 768 bytes of bf16): a 32000×384 bf16 GEMV ran at 13-17 GB/s on one thread, against 25-27 GB/s
// reading one row after the other (dot1; measured). Single rows (decode) therefore use dot1;
// these tiles serve several activation rows at once and prefetch the rows of the tile two
// ahead (pf: its first row, or null near the end), one line per row per 64 bytes consumed.
// One row · x with four accumulator pairs: the row is read strictly sequentially, which the
// hardware prefetchers follow (short rows read side by side defeat them, see below).
template <DType T>
inline float dot1(const void* row, const float* xp, const float* x, int64_t K) {
  const int64_t K16 = K / 16 * 16;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t k = 0;
  for (; k + 64 <= K16; k += 64) {
    __m256 lo, hi;
    load16<T>(row, k, lo, hi);
    a0 = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xp + k), a0);
    b0 = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xp + k + 8), b0);
    load16<T>(row, k + 16, lo, hi);
    a1 = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xp + k + 16), a1);
    b1 = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xp + k + 24), b1);
    load16<T>(row, k + 32, lo, hi);
    a2 = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xp + k + 32), a2);
    b2 = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xp + k + 40), b2);
    load16<T>(row, k + 48, lo, hi);
    a3 = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xp + k + 48), a3);
    b3 = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xp + k + 56), b3);
  }
  for (; k < K16; k += 16) {
    __m256 lo, hi;
    load16<T>(row, k, lo, hi);
    a0 = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xp + k), a0);
    b0 = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xp + k + 8), b0);
  }
  float t = hsum(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1)),
                               _mm256_add_ps(_mm256_add_ps(a2, b2), _mm256_add_ps(a3, b3))));
  for (; k < K; ++k) t += load1<T>(row, k) * x[k];
  return t;
}

template <DType T, int R, int RW>
inline void gemv_tile(const void* W, int64_t ldw, const float* xp, const float* X, int64_t ldx, float* Y, int64_t ldy,
                      int64_t n0, int64_t K, bool accumulate, const void* pf = nullptr) {
  const int64_t K16 = K / 16 * 16;
  __m256 s[R][RW];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int w = 0; w < RW; ++w) s[r][w] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K16; k += 16) {
    if (pf && k % per_line<T>() == 0) {
#pragma GCC unroll 8
      for (int w = 0; w < RW; ++w)
        _mm_prefetch(static_cast<const char*>(pf) + (w * ldw + k) * (T == DType::F32 ? 4 : 2), _MM_HINT_T0);
    }
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
  if (R == 1 && !accumulate) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t n = 0; n < N; ++n) Y[n] = dot1<T>(row_ptr<T>(W, n * ldw), xp, X, K);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t b = 0; b < nblocks; ++b) {
    const void* pf = b + 2 < nblocks ? row_ptr<T>(W, (b + 2) * RW * ldw) : nullptr;
    gemv_tile<T, R, RW>(W, ldw, xp, X, ldx, Y, ldy, b * RW, K, accumulate, pf);
  }
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


// ---- Fused single-row products for the decode step: several weights that share x are read in
// ---- one parallel region (one fork/join instead of one per matrix), each row by dot1.

constexpr int kMultiRows = 8;  // weight rows per work block

template <DType T>
void gemv_multi_t(const GemvItem* items, int n, const float* x, int64_t K) {
  float* xp = tl_xprep.reserve(size_t(K / 16 * 16) + 1);
  prepare_x<T>(x, K, 1, K, xp);
  int64_t start[kMaxGemvItems + 1];
  start[0] = 0;
  double work = 0;
  for (int i = 0; i < n; ++i) {
    start[i + 1] = start[i] + (items[i].N + kMultiRows - 1) / kMultiRows;
    work += 2.0 * double(items[i].N) * double(K);
  }
  const int64_t blocks = start[n];
  const int nt = threads_for(work);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    int i = 0;
    while (b >= start[i + 1]) ++i;
    const GemvItem& it = items[i];
    const int64_t n0 = (b - start[i]) * kMultiRows;
    const int64_t cnt = std::min<int64_t>(kMultiRows, it.N - n0);
    for (int64_t w = 0; w < cnt; ++w) it.y[n0 + w] = dot1<T>(row_ptr<T>(it.W, (n0 + w) * K), xp, x, K);
  }
}

// silu(g)·u with the same expression as the TypeScript reference: g / (1 + e^-g) · u.
inline float silu_mul1(float g, float u) { return g / (1.0f + std::exp(-g)) * u; }

template <DType T>
void gemv_swiglu_t(const void* Wg, const void* Wu, const float* x, float* out, int64_t N, int64_t K) {
  float* xp = tl_xprep.reserve(size_t(K / 16 * 16) + 1);
  prepare_x<T>(x, K, 1, K, xp);
  constexpr int H = kMultiRows / 2;  // gate rows and up rows per block
  const int64_t blocks = (N + H - 1) / H;
  const int nt = threads_for(4.0 * double(N) * double(K));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t n0 = b * H;
    const int64_t cnt = std::min<int64_t>(H, N - n0);
    float res[2 * H];
    for (int64_t w = 0; w < cnt; ++w) {
      res[w] = dot1<T>(row_ptr<T>(Wg, (n0 + w) * K), xp, x, K);
      res[H + w] = dot1<T>(row_ptr<T>(Wu, (n0 + w) * K), xp, x, K);
    }
    for (int64_t w = 0; w < cnt; ++w) out[n0 + w] = silu_mul1(res[w], res[H + w]);
  }
}

}  // namespace

void gemv_rows(const void* W, DType wType, int64_t ldw, const float* X, int64_t ldx, int64_t R, float* Y, int64_t ldy,
               int64_t N, int64_t K, bool accumulate) {
  if (is_quant(wType)) {
    qgemv_rows(static_cast<const uint8_t*>(W), wType, X, ldx, R, Y, ldy, N, K, accumulate);
    return;
  }
  // Up to 8 rows share one pass over W; more rows take several passes.
  for (int64_t r0 = 0; r0 < R; r0 += 8) {
    const int64_t rr = std::min<int64_t>(8, R - r0);
    const float* x = X + r0 * ldx;
    float* y = Y + r0 * ldy;
    switch (wType) {
      case DType::F32: gemv_rows_typed<DType::F32>(W, ldw, x, ldx, rr, y, ldy, N, K, accumulate); break;
      case DType::BF16: gemv_rows_typed<DType::BF16>(W, ldw, x, ldx, rr, y, ldy, N, K, accumulate); break;
      case DType::F16: gemv_rows_typed<DType::F16>(W, ldw, x, ldx, rr, y, ldy, N, K, accumulate); break;
      default: break;  // quantized weights went to qgemv_rows above
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
      default: break;  // quantized B has no NN layout (the addon refuses it)
    }
  }
}

}  // namespace transmla

namespace transmla {

void gemv_multi(const GemvItem* items, int n, DType wType, const float* x, int64_t K) {
  if (is_quant(wType)) {
    qgemv_multi(items, n, wType, x, K);
    return;
  }
  if (n <= 0) return;
  if (K == 0) {
    for (int i = 0; i < n; ++i) std::fill(items[i].y, items[i].y + items[i].N, 0.0f);
    return;
  }
  switch (wType) {
    case DType::F32: gemv_multi_t<DType::F32>(items, n, x, K); break;
    case DType::BF16: gemv_multi_t<DType::BF16>(items, n, x, K); break;
    case DType::F16: gemv_multi_t<DType::F16>(items, n, x, K); break;
    default: break;
  }
}

void gemv_swiglu(const void* Wg, const void* Wu, DType wType, const float* x, float* out, int64_t N, int64_t K) {
  if (is_quant(wType)) {
    qgemv_swiglu(static_cast<const uint8_t*>(Wg), static_cast<const uint8_t*>(Wu), wType, x, out, N, K);
    return;
  }
  if (N <= 0) return;
  if (K == 0) {
    std::fill(out, out + N, 0.0f);
    return;
  }
  switch (wType) {
    case DType::F32: gemv_swiglu_t<DType::F32>(Wg, Wu, x, out, N, K); break;
    case DType::BF16: gemv_swiglu_t<DType::BF16>(Wg, Wu, x, out, N, K); break;
    case DType::F16: gemv_swiglu_t<DType::F16>(Wg, Wu, x, out, N, K); break;
    default: break;
  }
}

// gate <- silu(gate)·up. silu(g) = g·σ(g) with σ from e = e^-|g| <= 1: σ = 1/(1+e) for g >= 0,
// e/(1+e) otherwise, so the exponential never overflows.
void silu_mul(float* gate, const float* up, int64_t n) {
  const int nt = threads_for(20.0 * double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t c = 0; c < (n + 1023) / 1024; ++c) {
    const int64_t i0 = c * 1024, i1 = std::min<int64_t>(n, i0 + 1024);
    int64_t i = i0;
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= i1; i += 8) {
      const __m256 g = _mm256_loadu_ps(gate + i);
      const __m256 e = exp_nonpositive(_mm256_or_ps(g, sign));  // e^-|g|
      const __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, e));
      const __m256 neg = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_LT_OQ);
      const __m256 sig = _mm256_blendv_ps(r, _mm256_mul_ps(e, r), neg);
      _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), _mm256_loadu_ps(up + i)));
    }
    for (; i < i1; ++i) gate[i] = silu_mul1(gate[i], up[i]);
  }
}

void rms_norm(const float* x, int64_t T, int64_t D, const float* w, double eps, float* out) {
  const int nt = threads_for(4.0 * double(T) * double(D));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * D;
    float* o = out + t * D;
    // v·v is exact in double (24-bit significands), so an FMA here rounds as mul-then-add does;
    // the adds stay in order (no -ffast-math).
    double ss = 0.0;
    for (int64_t i = 0; i < D; ++i) {
      const double v = xr[i];
      ss += v * v;
    }
    const double inv = 1.0 / std::sqrt(ss / double(D) + eps);
    for (int64_t i = 0; i < D; ++i) o[i] = float(double(xr[i]) * inv * double(w[i]));
  }
}

void add_in_place(float* x, const float* y, int64_t n) {
  const int nt = threads_for(double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t c = 0; c < (n + 4095) / 4096; ++c) {
    const int64_t i1 = std::min<int64_t>(n, c * 4096 + 4096);
    for (int64_t i = c * 4096; i < i1; ++i) x[i] += y[i];
  }
}

}  // namespace transmla
