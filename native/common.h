// Shared helpers of the native kernels: storage dtypes, widening loads, reductions,
// aligned scratch buffers and the OpenMP thread count.
#pragma once

#include <immintrin.h>
#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace transmla {

enum class DType { F32, F16, BF16 };

// Widen 8 consecutive elements starting at p[i] to f32. bf16 is the top half of an f32,
// so a zero-extend and a 16-bit shift is exact; f16 goes through the F16C unit.
template <DType T> inline __m256 load8(const void* p, int64_t i);
template <> inline __m256 load8<DType::F32>(const void* p, int64_t i) {
  return _mm256_loadu_ps(static_cast<const float*>(p) + i);
}
template <> inline __m256 load8<DType::BF16>(const void* p, int64_t i) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
template <> inline __m256 load8<DType::F16>(const void* p, int64_t i) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }

template <DType T> inline float load1(const void* p, int64_t i);
template <> inline float load1<DType::F32>(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
template <> inline float load1<DType::BF16>(const void* p, int64_t i) { return bf16_to_f32(static_cast<const uint16_t*>(p)[i]); }
template <> inline float load1<DType::F16>(const void* p, int64_t i) { return f16_to_f32(static_cast<const uint16_t*>(p)[i]); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline double hsum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

inline int max_threads() { return omp_get_max_threads(); }

// Threads worth using for `work` flops: forking a team costs a few microseconds, so tiny
// problems stay on the calling thread.
inline int threads_for(double work) { return work < 2e5 ? 1 : max_threads(); }

// 64-byte aligned, uninitialised scratch. Allocation failure throws std::bad_alloc, which the
// N-API glue turns into a JS error; nothing allocates inside parallel regions.
template <typename T> class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(size_t n) { reserve(n); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(ptr_); }
  // Grows (never shrinks) so repeated calls reuse the same memory without page faults.
  T* reserve(size_t n) {
    if (n > cap_) {
      size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
      void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
      if (!p) throw std::bad_alloc();
      std::free(ptr_);
      ptr_ = static_cast<T*>(p);
      cap_ = n;
    }
    return ptr_;
  }
  T* data() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace transmla
