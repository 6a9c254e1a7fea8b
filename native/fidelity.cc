// The KL/top-1 accumulator's per-row work (fidelity.h). Everything after the f32 logits is
// float64: e^x by a degree-12 polynomial (relative error ~2e-16 on the reduced range), sums
// in four lanes per stage; one row is a few passes over V values per stage.
#include "fidelity.h"

#include <cmath>

#include "common.h"

namespace transmla {
namespace {

// e^x for x ≤ 0 in four doubles: x = n·ln2 + r, |r| ≤ ln2/2, e^r by its Taylor polynomial to
// degree 12 (truncation < 2e-16 relative), 2^n through the exponent bits. x < −708 gives 0
// (e^−708 ≈ 3e−308: nothing such a term adds to a sum that contains e^0 = 1).
inline __m256d exp4_nonpositive(__m256d x) {
  const __m256d lo = _mm256_set1_pd(-708.0);
  const __m256d keep = _mm256_cmp_pd(x, lo, _CMP_GE_OQ);
  x = _mm256_max_pd(x, lo);
  const __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93147180369123816490e-01), x);  // ln2 split: exact high part
  r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.90821492927058770002e-10), r);
  static const double inv_fact[13] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
                                      1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600};
  __m256d p = _mm256_set1_pd(inv_fact[12]);
  for (int k = 11; k >= 0; --k) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(inv_fact[k]));
  const __m128i ni = _mm256_cvtpd_epi32(n);
  const __m256i bits = _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(ni), _mm256_set1_epi64x(1023)), 52);
  return _mm256_and_pd(_mm256_mul_pd(p, _mm256_castsi256_pd(bits)), keep);
}


inline double exp_scalar(double x) { return x < -708.0 ? 0.0 : std::exp(x); }

// Maximum and the first index holding it.
void argmax(const float* x, int64_t V, float* max, int64_t* arg) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= V; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float best = -INFINITY;
  for (float v : lanes) best = std::max(best, v);
  for (; i < V; ++i) best = std::max(best, x[i]);
  int64_t a = 0;
  while (a < V && !(x[a] == best)) ++a;
  *max = best;
  *arg = a < V ? a : 0;
}

thread_local Scratch<double> tl_e0;

}  // namespace

void fidelity_rows(const float* const* L, int64_t S, int64_t rows, int64_t V, const int32_t* targets, double* out) {
  if (rows <= 0 || S <= 0) return;
  const int nt = threads_for(double(rows) * double(V) * double(S) * 40.0);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t r = 0; r < rows; ++r) {
    double* e0 = tl_e0.reserve(size_t(V));
    const float* x0 = L[0] + r * V;
    const int64_t t = targets[r];
    float m0f;
    int64_t a0;
    argmax(x0, V, &m0f, &a0);
    const double m0 = m0f;
    // Stage 0: e0 = e^(x0 − max), its sum, the log-sum-exp.
    __m256d acc = _mm256_setzero_pd();
    int64_t v = 0;
    for (; v + 4 <= V; v += 4) {
      const __m256d e = exp4_nonpositive(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x0 + v)), _mm256_set1_pd(m0)));
      _mm256_storeu_pd(e0 + v, e);
      acc = _mm256_add_pd(acc, e);
    }
    double sum0 = hsum(acc);
    for (; v < V; ++v) sum0 += (e0[v] = exp_scalar(double(x0[v]) - m0));
    const double lse0 = m0 + std::log(sum0);
    double* o = out + r * S * 3;
    o[0] = lse0 - double(x0[t]);
    o[1] = 0.0;
    o[2] = 1.0;
    for (int64_t s = 1; s < S; ++s) {
      const float* xs = L[s] + r * V;
      float msf;
      int64_t as;
      argmax(xs, V, &msf, &as);
      const double ms = msf;
      __m256d se = _mm256_setzero_pd(), dot = _mm256_setzero_pd();
      v = 0;
      for (; v + 4 <= V; v += 4) {
        const __m256d xd = _mm256_cvtps_pd(_mm_loadu_ps(xs + v));
        se = _mm256_add_pd(se, exp4_nonpositive(_mm256_sub_pd(xd, _mm256_set1_pd(ms))));
        dot = _mm256_fmadd_pd(_mm256_loadu_pd(e0 + v), _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x0 + v)), xd), dot);
      }
      double sums = hsum(se), d = hsum(dot);
      for (; v < V; ++v) {
        sums += exp_scalar(double(xs[v]) - ms);
        d += e0[v] * (double(x0[v]) - double(xs[v]));
      }
      const double lses = ms + std::log(sums);
      double* os = o + s * 3;
      os[0] = lses - double(xs[t]);
      os[1] = d / sum0 - lse0 + lses;
      os[2] = as == a0 ? 1.0 : 0.0;
    }
  }
}

}  // namespace transmla
