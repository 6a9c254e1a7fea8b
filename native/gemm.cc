// Packed single-precision GEMM: a 6×16 AVX2/FMA register tile over panels packed so the
// inner loop reads both operands contiguously. Blocking: KC=256 deep slices, MC≤192 rows of A
// per core (L2), NC=4096 columns of B shared by the cores (L3). B is widened from f16/bf16 and
// transposed (NT) while it is packed, so every B layout runs through the same inner kernel.
#include "gemm.h"

#include <algorithm>
#include <stdexcept>

#include "quant.h"

namespace transmla {
namespace {

constexpr int64_t MR = 6;
constexpr int64_t NR = 16;
constexpr int64_t KC = 256;
constexpr int64_t MC_MAX = 192;
constexpr int64_t NC = 4096;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// In-register transpose of an 8×8 block: r[i] holds row i on entry and column i on exit.
inline void transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// One B micro-panel: dst[p*NR + jj] = op(B)(pc + p, j + jj), zero-padded beyond nr columns.
template <DType T>
void pack_b_panel(const void* B, int64_t ldb, bool transB, int64_t pc, int64_t kc, int64_t j, int64_t nr, float* dst) {
  if (!transB) {
    if (nr == NR) {
      for (int64_t p = 0; p < kc; ++p) {
        const int64_t off = (pc + p) * ldb + j;
        _mm256_store_ps(dst + p * NR, load8<T>(B, off));
        _mm256_store_ps(dst + p * NR + 8, load8<T>(B, off + 8));
      }
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        const int64_t off = (pc + p) * ldb + j;
        for (int64_t jj = 0; jj < NR; ++jj) dst[p * NR + jj] = jj < nr ? load1<T>(B, off + jj) : 0.0f;
      }
    }
    return;
  }
  // NT: column j+jj of op(B) is row j+jj of the stored [N×K] matrix.
  if (nr == NR) {
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
      for (int64_t h = 0; h < 2; ++h) {
        __m256 r[8];
        for (int64_t q = 0; q < 8; ++q) r[q] = load8<T>(B, (j + h * 8 + q) * ldb + pc + p);
        transpose8(r);
        for (int64_t x = 0; x < 8; ++x) _mm256_store_ps(dst + (p + x) * NR + h * 8, r[x]);
      }
    }
    for (; p < kc; ++p)
      for (int64_t jj = 0; jj < NR; ++jj) dst[p * NR + jj] = load1<T>(B, (j + jj) * ldb + pc + p);
  } else {
    for (int64_t p = 0; p < kc; ++p)
      for (int64_t jj = 0; jj < NR; ++jj) dst[p * NR + jj] = jj < nr ? load1<T>(B, (j + jj) * ldb + pc + p) : 0.0f;
  }
}

// Panels q0..q1 of an NN block, filled row by row: dst panel q holds columns jc+16q.. of rows pc..pc+kc.
template <DType T>
void pack_b_rows_nn(const void* B, int64_t ldb, int64_t pc, int64_t kc, int64_t jc, int64_t nc, int64_t q0, int64_t q1,
                    float* bp) {
  const int64_t qfull = std::min(q1, nc / NR);
  for (int64_t p = 0; p < kc; ++p) {
    const int64_t row = (pc + p) * ldb + jc;
    for (int64_t q = q0; q < qfull; ++q) {
      float* d = bp + q * kc * NR + p * NR;
      _mm256_store_ps(d, load8<T>(B, row + q * NR));
      _mm256_store_ps(d + 8, load8<T>(B, row + q * NR + 8));
    }
  }
  for (int64_t q = std::max(q0, qfull); q < q1; ++q)
    pack_b_panel<T>(B, ldb, false, pc, kc, jc + q * NR, std::min(NR, nc - q * NR), bp + q * kc * NR);
}

// One A micro-panel: dst[p*MR + ii] = op(A)(i + ii, pc + p), zero-padded beyond mr rows.
void pack_a_panel(const float* A, int64_t lda, bool transA, int64_t i, int64_t mr, int64_t pc, int64_t kc, float* dst) {
  if (transA) {
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = A + (pc + p) * lda + i;
      for (int64_t ii = 0; ii < MR; ++ii) dst[p * MR + ii] = ii < mr ? src[ii] : 0.0f;
    }
    return;
  }
  int64_t p = 0;
  if (mr == MR) {
    // Six rows transposed 8 columns at a time; the masked store writes only the 6 valid lanes.
    const __m256i mask = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
    for (; p + 8 <= kc; p += 8) {
      __m256 r[8];
      for (int64_t q = 0; q < MR; ++q) r[q] = _mm256_loadu_ps(A + (i + q) * lda + pc + p);
      r[6] = r[7] = _mm256_setzero_ps();
      transpose8(r);
      for (int64_t x = 0; x < 8; ++x) _mm256_maskstore_ps(dst + (p + x) * MR, mask, r[x]);
    }
  }
  for (; p < kc; ++p)
    for (int64_t ii = 0; ii < MR; ++ii) dst[p * MR + ii] = ii < mr ? A[(i + ii) * lda + pc + p] : 0.0f;
}

// C[mr×nr] (+)= a-panel · b-panel over kc, with 12 accumulators held in registers.
inline void micro_6x16(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool add, int64_t mr, int64_t nr) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t r = 0; r < mr; ++r) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    __m256 av = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(av, b0, c00); c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(av, b0, c10); c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(av, b0, c20); c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(av, b0, c30); c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(av, b0, c40); c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(av, b0, c50); c51 = _mm256_fmadd_ps(av, b1, c51);
    a += MR;
    b += NR;
  }
  const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == MR && nr == NR) {
    for (int64_t r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      if (add) {
        _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), acc[r][0]));
        _mm256_storeu_ps(cr + 8, _mm256_add_ps(_mm256_loadu_ps(cr + 8), acc[r][1]));
      } else {
        _mm256_storeu_ps(cr, acc[r][0]);
        _mm256_storeu_ps(cr + 8, acc[r][1]);
      }
    }
    return;
  }
  alignas(32) float tmp[MR * NR];
  for (int64_t r = 0; r < MR; ++r) {
    _mm256_store_ps(tmp + r * NR, acc[r][0]);
    _mm256_store_ps(tmp + r * NR + 8, acc[r][1]);
  }
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t jj = 0; jj < nr; ++jj) c[r * ldc + jj] = add ? c[r * ldc + jj] + tmp[r * NR + jj] : tmp[r * NR + jj];
}

// Per calling thread: packing buffers are reused across calls (no page faults per call).
thread_local Scratch<float> tl_packed_b;
thread_local Scratch<float> tl_packed_a;
thread_local Scratch<float> tl_rounded_a;

template <DType T>
void sgemm_packed(const float* A, int64_t lda, bool transA, const void* B, int64_t ldb, bool transB, float* C,
                  int64_t ldc, int64_t M, int64_t N, int64_t K, bool accumulate) {
  const int nt = threads_for(2.0 * double(M) * double(N) * double(K));
  // Work items are (row block, column chunk) pairs, dealt out contiguously so a thread reuses
  // its packed A block across consecutive items. Row blocks come in multiples of the thread
  // count when M is large; otherwise the columns are split instead.
  int64_t mblocks, nchunks;
  if (nt == 1) {
    mblocks = ceil_div(M, MC_MAX);
    nchunks = 1;
  } else if (M >= 16 * MR * nt) {
    mblocks = round_up(ceil_div(M, MC_MAX), nt);
    nchunks = 1;
  } else {
    mblocks = ceil_div(M, MC_MAX);
    nchunks = nt;
  }
  const int64_t mc = round_up(ceil_div(M, mblocks), MR);
  mblocks = ceil_div(M, mc);

  float* bp = tl_packed_b.reserve(size_t(KC) * size_t(round_up(std::min(N, NC), NR)));
  float* ap_all = tl_packed_a.reserve(size_t(nt) * size_t(mc) * size_t(KC));

  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    const int64_t npanels = ceil_div(nc, NR);
    const int64_t nchunk_eff = std::min(nchunks, npanels);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const bool add = accumulate || pc > 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
      {
        if (transB) {
#pragma omp for schedule(static)
          for (int64_t q = 0; q < npanels; ++q)
            pack_b_panel<T>(B, ldb, transB, pc, kc, jc + q * NR, std::min(NR, nc - q * NR), bp + q * kc * NR);
        } else {
          // NN: each thread owns a range of whole panels but walks it row by row, so the reads
          // are long contiguous runs instead of one 64-byte line per row of B.
          const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
          const int64_t q0 = npanels * tid / nth, q1 = npanels * (tid + 1) / nth;
          pack_b_rows_nn<T>(B, ldb, pc, kc, jc, nc, q0, q1, bp);
#pragma omp barrier
        }

        float* ap = ap_all + size_t(omp_get_thread_num()) * size_t(mc) * size_t(KC);
        int64_t packed_block = -1;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < mblocks * nchunk_eff; ++item) {
          const int64_t ib = item / nchunk_eff, ch = item % nchunk_eff;
          const int64_t i0 = ib * mc, mcur = std::min(mc, M - i0);
          if (ib != packed_block) {
            for (int64_t ir = 0; ir < mcur; ir += MR)
              pack_a_panel(A, lda, transA, i0 + ir, std::min(MR, mcur - ir), pc, kc, ap + ir * kc);
            packed_block = ib;
          }
          const int64_t q0 = ch * npanels / nchunk_eff, q1 = (ch + 1) * npanels / nchunk_eff;
          for (int64_t q = q0; q < q1; ++q) {
            const int64_t j = q * NR, nr = std::min(NR, nc - j);
            const float* bq = bp + q * kc * NR;
            for (int64_t ir = 0; ir < mcur; ir += MR)
              micro_6x16(kc, ap + ir * kc, bq, C + (i0 + ir) * ldc + jc + j, ldc, add, std::min(MR, mcur - ir), nr);
          }
        }
      }
    }
  }
}

}  // namespace

void sgemm(const float* A, int64_t lda, bool transA, const void* B, DType bType, int64_t ldb, bool transB, float* C,
           int64_t ldc, int64_t M, int64_t N, int64_t K, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  if (is_quant(bType)) {
    // Blocks run along K, so only the weight layout (NT) exists; A is rounded like the GEMV's x
    // (quant.h) so that every row count multiplies the same numbers.
    if (!transB || transA) throw std::invalid_argument("a quantized B needs transB and a plain A");
    if (M <= kSmallMNT) {
      qgemv_rows(static_cast<const uint8_t*>(B), bType, A, lda, M, C, ldc, N, K, accumulate);
      return;
    }
    float* ar = tl_rounded_a.reserve(size_t(M) * size_t(K));
    round_rows_f32(A, lda, M, K, ar);
    if (bType == DType::Q8_0) sgemm_packed<DType::Q8_0>(ar, K, false, B, ldb, true, C, ldc, M, N, K, accumulate);
    else sgemm_packed<DType::Q4_0>(ar, K, false, B, ldb, true, C, ldc, M, N, K, accumulate);
    return;
  }
  if (!transA && M <= (transB ? kSmallMNT : kSmallMNN)) {
    if (transB) gemv_rows(B, bType, ldb, A, lda, M, C, ldc, N, K, accumulate);
    else gevm_rows(B, bType, ldb, A, lda, M, C, ldc, N, K, accumulate);
    return;
  }
  switch (bType) {
    case DType::F32: sgemm_packed<DType::F32>(A, lda, transA, B, ldb, transB, C, ldc, M, N, K, accumulate); break;
    case DType::BF16: sgemm_packed<DType::BF16>(A, lda, transA, B, ldb, transB, C, ldc, M, N, K, accumulate); break;
    case DType::F16: sgemm_packed<DType::F16>(A, lda, transA, B, ldb, transB, C, ldc, M, N, K, accumulate); break;
    default: break;
  }
}

}  // namespace transmla
