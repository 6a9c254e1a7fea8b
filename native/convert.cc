// f32 <-> bf16 by integer rounding on the bit pattern, f32 <-> f16 through F16C (which rounds
// to nearest even, keeps NaN and produces subnormals/±Inf as IEEE requires).
#include "convert.h"

namespace transmla {
namespace {

// Round-to-nearest-even to the upper 16 bits: add 0x7FFF plus the lowest kept bit, then shift.
// A NaN could round into Inf that way, so NaNs keep their top bits with the quiet bit forced.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline __m128i f32x8_to_bf16(__m256 f) {
  const __m256i u = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
  // Signed compare is fine: abs is non-negative as an int32.
  const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F800000));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet, is_nan);
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

constexpr int64_t kParallelMin = 1 << 16;

}  // namespace

void to_f32(const uint16_t* src, DType type, float* dst, int64_t n) {
  const int64_t n8 = n / 8 * 8;
  const int nt = n >= kParallelMin ? max_threads() : 1;
  if (type == DType::BF16) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < n8; i += 8) _mm256_storeu_ps(dst + i, load8<DType::BF16>(src, i));
    for (int64_t i = n8; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
  } else {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < n8; i += 8) _mm256_storeu_ps(dst + i, load8<DType::F16>(src, i));
    for (int64_t i = n8; i < n; ++i) dst[i] = f16_to_f32(src[i]);
  }
}

void from_f32(const float* src, DType type, uint16_t* dst, int64_t n) {
  const int64_t n8 = n / 8 * 8;
  const int nt = n >= kParallelMin ? max_threads() : 1;
  if (type == DType::BF16) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < n8; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), f32x8_to_bf16(_mm256_loadu_ps(src + i)));
    for (int64_t i = n8; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
  } else {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < n8; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (int64_t i = n8; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
}

}  // namespace transmla
