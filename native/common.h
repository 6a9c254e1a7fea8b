// Shared helpers of the native kernels: storage dtypes, widening loads, reductions,
// aligned scratch buffers and the OpenMP thread count.
#pragma once

#include <immintrin.h>
#include <omp.h>

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace transmla {

// Storage dtypes. Q8_0 / Q4_0 are ggml's 32-element blocks (see quant.h); a quantized matrix is
// addressed by element index like the others: rows hold whole blocks, so element i of the
// flattened matrix lives in block i / 32.
enum class DType { F32, F16, BF16, Q8_0, Q4_0 };

inline bool is_quant(DType t) { return t == DType::Q8_0 || t == DType::Q4_0; }

constexpr int64_t kQK = 32;  // elements per quantized block
inline int64_t quant_block_bytes(DType t) { return t == DType::Q8_0 ? 34 : 18; }
inline int64_t quant_row_bytes(DType t, int64_t K) { return K / kQK * quant_block_bytes(t); }

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

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

// Quantized loads (used while packing GEMM panels): i is a multiple of 8, so the 8 elements lie
// in one block. The values are exactly ggml's dequantize_row_* (q·d is exact in f32).
template <> inline __m256 load8<DType::Q8_0>(const void* p, int64_t i) {
  const uint8_t* blk = static_cast<const uint8_t*>(p) + (i >> 5) * 34;
  const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + (i & 31)));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(_cvtsh_ss(load_u16(blk))));
}
template <> inline __m256 load8<DType::Q4_0>(const void* p, int64_t i) {
  const uint8_t* blk = static_cast<const uint8_t*>(p) + (i >> 5) * 18;
  const int64_t o = i & 31;  // elements 0..15 are the low nibbles of bytes 0..15, 16..31 the high ones
  __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + (o & 15)));
  if (o >= 16) q = _mm_srli_epi16(q, 4);
  q = _mm_and_si128(q, _mm_set1_epi8(15));
  const __m256i v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(q), _mm256_set1_epi32(8));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(_cvtsh_ss(load_u16(blk))));
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
template <> inline float load1<DType::Q8_0>(const void* p, int64_t i) {
  const uint8_t* blk = static_cast<const uint8_t*>(p) + (i >> 5) * 34;
  return float(int8_t(blk[2 + (i & 31)])) * f16_to_f32(load_u16(blk));
}
template <> inline float load1<DType::Q4_0>(const void* p, int64_t i) {
  const uint8_t* blk = static_cast<const uint8_t*>(p) + (i >> 5) * 18;
  const int64_t o = i & 31;
  const int nib = o < 16 ? blk[2 + o] & 15 : blk[2 + o - 16] >> 4;
  return float(nib - 8) * f16_to_f32(load_u16(blk));
}

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

// Below this many flops a kernel stays on the calling thread. With spinning OpenMP workers
// (libgomp's default) starting a team costs a few microseconds, so 2e5 flops is enough to
// pay for it. With OMP_WAIT_POLICY=PASSIVE (src/kernels/native.ts sets it when the machine is
// busy at start-up) every region has to wake a sleeping thread (~20-50 us, more when the
// other core is taken), so only products that take well over that on one core are split.
inline double parallel_min_work() {
  static const double w = [] {
    const char* p = std::getenv("OMP_WAIT_POLICY");
    const bool passive = p && (std::strcmp(p, "PASSIVE") == 0 || std::strcmp(p, "passive") == 0);
    return passive ? 2e6 : 2e5;
  }();
  return w;
}

inline double monotonic_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Busy CPU seconds of the whole machine (/proc/stat's first line) and the number of CPUs it
// covers (its cpuN lines); false if unreadable.
inline bool machine_cpu_seconds(double& busy, int& cpus) {
  FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return false;
  unsigned long long v[8] = {};
  const int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                            &v[6], &v[7]);
  cpus = 0;
  char line[512];
  while (std::fgets(line, sizeof line, f))
    if (line[0] == 'c' && line[1] == 'p' && line[2] == 'u' && line[3] >= '0' && line[3] <= '9') ++cpus;
  std::fclose(f);
  if (n < 4 || cpus < 1) return false;
  static const double tick = double(sysconf(_SC_CLK_TCK));
  // user nice system [idle iowait] irq softirq steal: steal is time the hypervisor gave away.
  busy = double(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / tick;
  return true;
}

// Threads a parallel kernel should use now. A fine-grained team (decode runs ~25 regions per
// token) is only fast when every thread has a core: when other processes occupy one, each
// barrier waits for a descheduled thread and a 2-thread decode became 20x slower (measured).
// So every 200 ms the machine's busy CPU time minus our own (/proc/stat vs this process's CPU
// clock) estimates how many cores other processes use, and the team shrinks to the cores left
// (at least 1). TRANSMLA_ADAPTIVE_THREADS=0 turns this off (always the configured count).
inline std::atomic<int>& available_threads_state() {
  static std::atomic<int> avail{1 << 20};
  return avail;
}

inline int available_threads() {
  const int maxT = omp_get_max_threads();
  if (maxT <= 1) return 1;
  static const bool adaptive = [] {
    const char* e = std::getenv("TRANSMLA_ADAPTIVE_THREADS");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  if (!adaptive) return maxT;
  std::atomic<int>& avail = available_threads_state();
  static std::atomic<bool> sampling{false};
  static double last_wall = 0, last_busy = 0, last_own = 0;
  const double now = monotonic_seconds();
  bool expected = false;
  if (now - last_wall >= 0.2 && !omp_in_parallel() && sampling.compare_exchange_strong(expected, true)) {
    double busy;
    int cpus;
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    const double own = double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
    if (machine_cpu_seconds(busy, cpus)) {
      if (last_wall > 0) {
        // Other processes' use, in cores; when /proc/stat covers more CPUs than we may run on
        // (a container pinned to part of a host), count their share of our CPUs only.
        const int procs = omp_get_num_procs();
        double others = ((busy - last_busy) - (own - last_own)) / (now - last_wall);
        if (cpus > procs) others *= double(procs) / double(cpus);
        const double free_cores = double(procs) - std::max(0.0, others);
        avail.store(std::max(1, int(free_cores + 0.5)));
      }
      last_wall = now;
      last_busy = busy;
      last_own = own;
    } else {
      last_wall = now;
    }
    sampling.store(false);
  }
  return std::max(1, std::min(maxT, avail.load()));
}

// The team size the last load sample allowed (takes no new sample).
inline int last_available_threads() { return std::max(1, std::min(omp_get_max_threads(), available_threads_state().load())); }

// Threads worth using for `work` flops: forking a team costs time, so small problems stay
// on the calling thread.
inline int threads_for(double work) { return work < parallel_min_work() ? 1 : available_threads(); }

// e^x for x <= 0 (scores minus their maximum, -|g| in SiLU). x = n*ln2 + r with |r| <= ln2/2;
// e^r by its degree-6 Taylor polynomial (truncation < 1.3e-7 relative), 2^n through the
// exponent bits. Inputs below -87 are clamped so 2^n stays a normal float (e^-87 ~ 1.6e-38).
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);  // ln2 split: exact high part
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.4286068203094172e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

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
