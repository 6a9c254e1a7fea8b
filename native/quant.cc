// Q8_0 / Q4_0 quantization and the quantized GEMV family.
//
// Quantizers follow ggml's reference code operation by operation (ggml-org/llama.cpp
// ggml/src/ggml-quants.c quantize_row_q8_0_ref / quantize_row_q4_0_ref at commit
// 01243c587feceaa5d6a6c2305535ef2f549c48b8; see src/kernels/ts/quant.ts for the arithmetic).
//
// Products: the activation row is rounded once per call to 16-bit integers per block of 32
// (d = max|x|/32767), so a block's contribution is an exact integer dot — vpmaddwd of the
// widened weight codes against the int16 activations — times d_w·d_x, accumulated in f32 FMAs.
// Measured against keeping x in f32 (int8→f32 conversion of every weight), this does half the
// vector work per block; the rounding adds at most max|x_block|/65534 per element (llama.cpp
// rounds x to 8 bits instead, 256× coarser). The integer lanes stay below 2^24 (4·128·32767),
// so converting them to f32 is exact; the single-row path sums a block's lanes first (see group8).
#include "quant.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace transmla {
namespace {

// Rounds v to f32 at this point. C++ compiles with -ffp-contract=fast, so under -mfma GCC would
// fuse x·id + 8.5 into one FMA (a single rounding), which can land on the other side of an
// integer than ggml's reference, where every operation is rounded.
inline float rounded(float v) {
  __asm__("" : "+x"(v));
  return v;
}

void quantize_q8_0_block(const float* x, uint8_t* y) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t h = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
  std::memcpy(y, &h, 2);
  for (int j = 0; j < 32; ++j) y[2 + j] = uint8_t(int8_t(std::round(rounded(x[j] * id))));
}

void quantize_q4_0_block(const float* x, uint8_t* y) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8.0f;  // -0 for an all-zero block: stored as f16 0x8000, as ggml does
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t h = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
  std::memcpy(y, &h, 2);
  for (int j = 0; j < 16; ++j) {
    const int a = std::min(15, int(rounded(rounded(x[j] * id) + 8.5f)));
    const int c = std::min(15, int(rounded(rounded(x[16 + j] * id) + 8.5f)));
    y[2 + j] = uint8_t(a | (c << 4));
  }
}

// One activation block: q = roundf(x·(1/d)), d = amax/32767; sum = Σq. Non-finite → d = NaN, q = 0.
// Vectorised: x·id is one multiply (rounded once, as in the reference), and roundf(t) =
// trunc(t + copysign(0.49999997, t)) exactly for |t| < 2^23 (the largest float below 0.5 keeps
// t = 0.49999997 from rounding up; the sum's own rounding carries exact halves away from zero).
inline void round_block16(const float* x, int16_t* q, float& d, int32_t& sum) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 v[4], m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    const __m256 a = _mm256_and_ps(v[i], absmask);
    m = _mm256_max_ps(m, a);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));  // max_ps drops NaNs: catch them apart
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
  sum = 0;
  if (_mm256_movemask_ps(bad) != 0 || !std::isfinite(amax)) {
    d = std::numeric_limits<float>::quiet_NaN();
    std::fill(q, q + 32, int16_t(0));
    return;
  }
  d = amax / 32767.0f;
  const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
  const __m256 half = _mm256_set1_ps(0.49999997f), sign = _mm256_set1_ps(-0.0f);
  __m256i qi[4], acc = _mm256_setzero_si256();
  for (int i = 0; i < 4; ++i) {
    const __m256 t = _mm256_mul_ps(v[i], id);
    const __m256 r = _mm256_round_ps(_mm256_add_ps(t, _mm256_or_ps(_mm256_and_ps(t, sign), half)), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    qi[i] = _mm256_cvttps_epi32(r);
    acc = _mm256_add_epi32(acc, qi[i]);
  }
  // packs interleaves 128-bit lanes; the permute restores element order.
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_permute4x64_epi64(_mm256_packs_epi32(qi[0], qi[1]), 0xD8));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 16), _mm256_permute4x64_epi64(_mm256_packs_epi32(qi[2], qi[3]), 0xD8));
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
  sum = _mm_cvtsi128_si32(s4);
}

// R rounded activation rows: q [R×K]; d and s [R×nbp] (nbp = nb rounded up to 8, zero padded):
// d the scales, s = 8·Σq of each block (subtracting it turns Σ nib·q into Σ (nib − 8)·q for
// Q4_0); c [R×nb×8], the same 8·Σq in lane 0 of a vector per block (the multi-row path).
struct Prepared {
  const int16_t* q;
  const float* d;
  const int32_t* s;
  const int32_t* c;
  int64_t nbp;
};

thread_local Scratch<int16_t> tl_xq;
thread_local Scratch<float> tl_xd;
thread_local Scratch<int32_t> tl_xs;
thread_local Scratch<int32_t> tl_xc;

Prepared prepare(const float* X, int64_t ldx, int64_t R, int64_t K) {
  const int64_t nb = K / kQK, nbp = (nb + 7) / 8 * 8;
  int16_t* q = tl_xq.reserve(size_t(R * K) + 16);
  float* d = tl_xd.reserve(size_t(R * nbp) + 8);
  int32_t* s = tl_xs.reserve(size_t(R * nbp) + 8);
  int32_t* c = tl_xc.reserve(size_t(R * nb * 8) + 8);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t b = 0; b < nbp; ++b) {
      float* db = d + r * nbp + b;
      int32_t* sb = s + r * nbp + b;
      if (b >= nb) {
        *db = 0.0f;
        *sb = 0;
        continue;
      }
      int32_t sum;
      round_block16(X + r * ldx + b * kQK, q + r * K + b * kQK, *db, sum);
      *sb = 8 * sum;
      int32_t* cb = c + (r * nb + b) * 8;
      std::fill(cb, cb + 8, 0);
      cb[0] = 8 * sum;
    }
  }
  return {q, d, s, c, nbp};
}

// The integer dot of one weight block with one activation block, as 8 i32 lanes (for Q4_0 of
// the raw nibbles: the caller subtracts 8·Σq).
template <DType T> inline __m256i block_dot(const uint8_t* blk, const int16_t* xq);
template <> inline __m256i block_dot<DType::Q8_0>(const uint8_t* blk, const int16_t* xq) {
  const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
  const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18)));
  return _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq))),
                          _mm256_madd_epi16(w1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 16))));
}
template <> inline __m256i block_dot<DType::Q4_0>(const uint8_t* blk, const int16_t* xq) {
  // Byte j widened to a 16-bit lane holds both nibbles: & 15 gives element j, >> 4 element j+16.
  const __m256i z = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
  const __m256i lo = _mm256_and_si256(z, _mm256_set1_epi16(15)), hi = _mm256_srli_epi16(z, 4);
  return _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq))),
                          _mm256_madd_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 16))));
}

template <DType T> constexpr int64_t BB = T == DType::Q8_0 ? 34 : 18;

// The 8 lane sums of 8 vectors: [Σp0, Σp1, …, Σp7].
inline __m256i reduce8(const __m256i* p) {
  const __m256i t0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
  const __m256i t1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20), _mm256_permute2x128_si256(t0, t1, 0x31));
}

// acc += Σ over n ≤ 8 blocks of d_w·d_x·dot. The 8 blocks' integer dots are reduced to one
// vector and their f16 scales converted together, so the per-block cost is the integer work
// (measured ~30% faster for q4_0 than scaling every block's lanes separately). A block's dot
// (up to 32·128·32767 for q8_0) may exceed 2^24: converting it to f32 then rounds it like a float
// product would be rounded; q4_0's stays below 2^24 and is exact.
template <DType T, bool FULL>
inline __m256 group8(const uint8_t* r, const int16_t* xq, const float* xd, const int32_t* xs, int n, __m256 acc) {
  __m256i p[8];
  __m128i h;
  if (FULL) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) p[i] = block_dot<T>(r + i * BB<T>, xq + i * kQK);
    h = _mm_cvtsi32_si128(load_u16(r));
    h = _mm_insert_epi16(h, load_u16(r + BB<T>), 1);
    h = _mm_insert_epi16(h, load_u16(r + 2 * BB<T>), 2);
    h = _mm_insert_epi16(h, load_u16(r + 3 * BB<T>), 3);
    h = _mm_insert_epi16(h, load_u16(r + 4 * BB<T>), 4);
    h = _mm_insert_epi16(h, load_u16(r + 5 * BB<T>), 5);
    h = _mm_insert_epi16(h, load_u16(r + 6 * BB<T>), 6);
    h = _mm_insert_epi16(h, load_u16(r + 7 * BB<T>), 7);
  } else {
    alignas(16) uint16_t sc[8] = {};
    for (int i = 0; i < 8; ++i) {
      p[i] = i < n ? block_dot<T>(r + i * BB<T>, xq + i * kQK) : _mm256_setzero_si256();
      if (i < n) sc[i] = load_u16(r + i * BB<T>);
    }
    h = _mm_load_si128(reinterpret_cast<const __m128i*>(sc));
  }
  __m256i dots = reduce8(p);
  if (T == DType::Q4_0) dots = _mm256_sub_epi32(dots, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs)));
  const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(xd));
  return _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dots), acc);
}

// One weight row · one prepared activation row (xd, xs padded to a multiple of 8 blocks).
template <DType T>
inline float row_dot(const uint8_t* row, const int16_t* xq, const float* xd, const int32_t* xs, int64_t nb) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  int64_t b = 0;
  for (; b + 16 <= nb; b += 16) {
    a0 = group8<T, true>(row + b * BB<T>, xq + b * kQK, xd + b, xs + b, 8, a0);
    a1 = group8<T, true>(row + (b + 8) * BB<T>, xq + (b + 8) * kQK, xd + b + 8, xs + b + 8, 8, a1);
  }
  for (; b + 8 <= nb; b += 8) a0 = group8<T, true>(row + b * BB<T>, xq + b * kQK, xd + b, xs + b, 8, a0);
  if (b < nb) a1 = group8<T, false>(row + b * BB<T>, xq + b * kQK, xd + b, xs + b, int(nb - b), a1);
  return hsum(_mm256_add_ps(a0, a1));
}

// One weight row against R prepared rows at once (each weight block is read once for all R).
template <DType T, int R>
inline void row_dot_multi(const uint8_t* row, const Prepared& x, int64_t K, float* out) {
  const int64_t nb = K / kQK;
  __m256 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + b * BB<T>;
    const float dw = _cvtsh_ss(load_u16(blk));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m256i p = block_dot<T>(blk, x.q + r * K + b * kQK);
      if (T == DType::Q4_0) p = _mm256_sub_epi32(p, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.c + (r * nb + b) * 8)));
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[r * x.nbp + b]), _mm256_cvtepi32_ps(p), acc[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

template <DType T, int R>
void qgemv_rows_t(const uint8_t* W, const Prepared& x, float* Y, int64_t ldy, int64_t N, int64_t K, bool accumulate) {
  const int64_t rb = quant_row_bytes(T, K), nb = K / kQK;
  const int nt = threads_for(2.0 * R * double(N) * double(K));
  if (R == 1 && !accumulate) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t n = 0; n < N; ++n) Y[n] = row_dot<T>(W + n * rb, x.q, x.d, x.s, nb);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t n = 0; n < N; ++n) {
    float v[R];
    if (R == 1) v[0] = row_dot<T>(W + n * rb, x.q, x.d, x.s, nb);
    else row_dot_multi<T, R>(W + n * rb, x, K, v);
    for (int r = 0; r < R; ++r) {
      float& y = Y[r * ldy + n];
      y = accumulate ? y + v[r] : v[r];
    }
  }
}

template <DType T>
void qgemv_rows_typed(const uint8_t* W, const Prepared& x, int64_t R, float* Y, int64_t ldy, int64_t N, int64_t K,
                      bool accumulate) {
  switch (R) {
    case 1: qgemv_rows_t<T, 1>(W, x, Y, ldy, N, K, accumulate); break;
    case 2: qgemv_rows_t<T, 2>(W, x, Y, ldy, N, K, accumulate); break;
    case 3: qgemv_rows_t<T, 3>(W, x, Y, ldy, N, K, accumulate); break;
    case 4: qgemv_rows_t<T, 4>(W, x, Y, ldy, N, K, accumulate); break;
    case 5: qgemv_rows_t<T, 5>(W, x, Y, ldy, N, K, accumulate); break;
    case 6: qgemv_rows_t<T, 6>(W, x, Y, ldy, N, K, accumulate); break;
    case 7: qgemv_rows_t<T, 7>(W, x, Y, ldy, N, K, accumulate); break;
    default: qgemv_rows_t<T, 8>(W, x, Y, ldy, N, K, accumulate); break;
  }
}

constexpr int kMultiRows = 8;  // weight rows per work block of the fused products

template <DType T>
void qgemv_multi_t(const GemvItem* items, int n, const Prepared& x, int64_t K) {
  const int64_t rb = quant_row_bytes(T, K), nb = K / kQK;
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
    const uint8_t* W = static_cast<const uint8_t*>(it.W);
    for (int64_t w = 0; w < cnt; ++w) it.y[n0 + w] = row_dot<T>(W + (n0 + w) * rb, x.q, x.d, x.s, nb);
  }
}

inline float silu_mul1(float g, float u) { return g / (1.0f + std::exp(-g)) * u; }

template <DType T>
void qgemv_swiglu_t(const uint8_t* Wg, const uint8_t* Wu, const Prepared& x, float* out, int64_t N, int64_t K) {
  const int64_t rb = quant_row_bytes(T, K), nb = K / kQK;
  constexpr int H = kMultiRows / 2;
  const int64_t blocks = (N + H - 1) / H;
  const int nt = threads_for(4.0 * double(N) * double(K));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t n0 = b * H;
    const int64_t cnt = std::min<int64_t>(H, N - n0);
    float res[2 * H];
    for (int64_t w = 0; w < cnt; ++w) {
      res[w] = row_dot<T>(Wg + (n0 + w) * rb, x.q, x.d, x.s, nb);
      res[H + w] = row_dot<T>(Wu + (n0 + w) * rb, x.q, x.d, x.s, nb);
    }
    for (int64_t w = 0; w < cnt; ++w) out[n0 + w] = silu_mul1(res[w], res[H + w]);
  }
}

}  // namespace

int64_t first_nonfinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return -1;
}

void quantize_blocks(const float* x, DType t, uint8_t* dst, int64_t n) {
  const int64_t nb = n / kQK, bb = quant_block_bytes(t);
  const int nt = threads_for(100.0 * double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t b = 0; b < nb; ++b) {
    if (t == DType::Q8_0) quantize_q8_0_block(x + b * kQK, dst + b * bb);
    else quantize_q4_0_block(x + b * kQK, dst + b * bb);
  }
}

void dequantize_blocks(const uint8_t* src, DType t, float* dst, int64_t n) {
  const int64_t nb = n / kQK;
  const int nt = threads_for(20.0 * double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < kQK; j += 8) {
      const __m256 v = t == DType::Q8_0 ? load8<DType::Q8_0>(src, b * kQK + j) : load8<DType::Q4_0>(src, b * kQK + j);
      _mm256_storeu_ps(dst + b * kQK + j, v);
    }
}

void qgemv_rows(const uint8_t* W, DType t, const float* X, int64_t ldx, int64_t R, float* Y, int64_t ldy, int64_t N,
                int64_t K, bool accumulate) {
  if (N <= 0) return;
  if (K == 0) {
    for (int64_t r = 0; r < R; ++r)
      if (!accumulate) std::fill(Y + r * ldy, Y + r * ldy + N, 0.0f);
    return;
  }
  for (int64_t r0 = 0; r0 < R; r0 += 8) {
    const int64_t rr = std::min<int64_t>(8, R - r0);
    const Prepared x = prepare(X + r0 * ldx, ldx, rr, K);
    if (t == DType::Q8_0) qgemv_rows_typed<DType::Q8_0>(W, x, rr, Y + r0 * ldy, ldy, N, K, accumulate);
    else qgemv_rows_typed<DType::Q4_0>(W, x, rr, Y + r0 * ldy, ldy, N, K, accumulate);
  }
}

void qgemv_multi(const GemvItem* items, int n, DType t, const float* x, int64_t K) {
  if (n <= 0) return;
  if (K == 0) {
    for (int i = 0; i < n; ++i) std::fill(items[i].y, items[i].y + items[i].N, 0.0f);
    return;
  }
  const Prepared p = prepare(x, K, 1, K);
  if (t == DType::Q8_0) qgemv_multi_t<DType::Q8_0>(items, n, p, K);
  else qgemv_multi_t<DType::Q4_0>(items, n, p, K);
}

void qgemv_swiglu(const uint8_t* Wg, const uint8_t* Wu, DType t, const float* x, float* out, int64_t N, int64_t K) {
  if (N <= 0) return;
  if (K == 0) {
    std::fill(out, out + N, 0.0f);
    return;
  }
  const Prepared p = prepare(x, K, 1, K);
  if (t == DType::Q8_0) qgemv_swiglu_t<DType::Q8_0>(Wg, Wu, p, out, N, K);
  else qgemv_swiglu_t<DType::Q4_0>(Wg, Wu, p, out, N, K);
}

void round_rows_f32(const float* A, int64_t lda, int64_t M, int64_t K, float* out) {
  const int64_t nb = K / kQK;
  const int nt = threads_for(40.0 * double(M) * double(K));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t i = 0; i < M; ++i) {
    alignas(32) int16_t q[32];
    for (int64_t b = 0; b < nb; ++b) {
      float d;
      int32_t sum;
      round_block16(A + i * lda + b * kQK, q, d, sum);
      float* o = out + i * K + b * kQK;
      for (int j = 0; j < 32; ++j) o[j] = float(q[j]) * d;
    }
  }
}

}  // namespace transmla
