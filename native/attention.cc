// Two-pass softmax per (query, head): scores for all visible keys into a per-thread buffer,
// exp/sum with an AVX2 exp, then the probability-weighted sum of values with the output
// columns held in registers. Work items (query, head) are spread over threads dynamically
// because causal rows have different lengths.
#include "attention.h"

#include <algorithm>

#include "common.h"

namespace transmla {
namespace {

// e^x for x ≤ 0 (scores minus their maximum). x = n·ln2 + r with |r| ≤ ln2/2; e^r by its
// degree-6 Taylor polynomial (truncation < 1.3e-7 relative), 2^n through the exponent bits.
// Inputs below −87 are clamped so 2^n stays a normal float; such terms are < 1e-37 of the sum.
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

inline float dot(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= n; d += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), acc1);
  }
  for (; d + 8 <= n; d += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc0);
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

// s[t] = scale · q·k_t for t < T; four keys share each load of q.
void scores(const float* q, const float* k, int64_t stride, int64_t dk, int64_t T, float scale, float* s) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) {
    const float* k0 = k + t * stride;
    const float* k1 = k0 + stride;
    const float* k2 = k1 + stride;
    const float* k3 = k2 + stride;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= dk; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
    }
    float r0 = hsum(a0), r1 = hsum(a1), r2 = hsum(a2), r3 = hsum(a3);
    for (; d < dk; ++d) {
      r0 += q[d] * k0[d];
      r1 += q[d] * k1[d];
      r2 += q[d] * k2[d];
      r3 += q[d] * k3[d];
    }
    s[t] = r0 * scale;
    s[t + 1] = r1 * scale;
    s[t + 2] = r2 * scale;
    s[t + 3] = r3 * scale;
  }
  for (; t < T; ++t) s[t] = dot(q, k + t * stride, dk) * scale;
}

// s ← exp(s − max s) in place; returns the sum.
float softmax_numerators(float* s, int64_t T) {
  float mx = s[0];
  for (int64_t t = 1; t < T; ++t) mx = std::max(mx, s[t]);
  const __m256 m = _mm256_set1_ps(mx);
  __m256 sum8 = _mm256_setzero_ps();
  int64_t t = 0;
  for (; t + 8 <= T; t += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + t), m));
    _mm256_storeu_ps(s + t, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  float sum = hsum(sum8);
  if (t < T) {
    alignas(32) float buf[8];
    for (int64_t x = 0; x < 8; ++x) buf[x] = t + x < T ? s[t + x] - mx : -100.0f;
    _mm256_store_ps(buf, exp_nonpositive(_mm256_load_ps(buf)));
    for (int64_t x = 0; t + x < T; ++x) {
      s[t + x] = buf[x];
      sum += buf[x];
    }
  }
  return sum;
}

// out[0..dv) = inv · Σ_t p[t]·v_t, NV·8 output columns at a time kept in registers.
template <int NV>
inline void weighted_sum_cols(const float* p, const float* v, int64_t stride, int64_t T, float inv, float* out) {
  __m256 acc[NV];
  for (int x = 0; x < NV; ++x) acc[x] = _mm256_setzero_ps();
  for (int64_t t = 0; t < T; ++t) {
    const __m256 pt = _mm256_broadcast_ss(p + t);
    const float* vt = v + t * stride;
#pragma GCC unroll 8
    for (int x = 0; x < NV; ++x) acc[x] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vt + 8 * x), acc[x]);
  }
  const __m256 iv = _mm256_set1_ps(inv);
  for (int x = 0; x < NV; ++x) _mm256_storeu_ps(out + 8 * x, _mm256_mul_ps(acc[x], iv));
}

void weighted_sum(const float* p, const float* v, int64_t stride, int64_t dv, int64_t T, float inv, float* out) {
  int64_t c = 0;
  for (; c + 64 <= dv; c += 64) weighted_sum_cols<8>(p, v + c, stride, T, inv, out + c);
  for (; c + 8 <= dv; c += 8) weighted_sum_cols<1>(p, v + c, stride, T, inv, out + c);
  for (; c < dv; ++c) {
    float acc = 0.0f;
    for (int64_t t = 0; t < T; ++t) acc += p[t] * v[t * stride + c];
    out[c] = acc * inv;
  }
}

}  // namespace

void attention(const AttentionParams& a) {
  if (a.tq <= 0 || a.nHeads <= 0) return;
  const int64_t group = a.nHeads / a.nKvHeads;
  const int64_t tmax = a.pos0 + a.tq;
  const int64_t items = a.tq * a.nHeads;
  const double work = 2.0 * double(a.headDimK + a.headDimV) * double(items) * double(a.pos0 + (a.tq + 1) / 2);
  const int nt = threads_for(work);
  Scratch<float> buf(size_t(nt) * size_t(tmax));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float* s = buf.data() + size_t(omp_get_thread_num()) * size_t(tmax);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t i = item / a.nHeads, h = item % a.nHeads, g = h / group;
      const int64_t T = a.pos0 + i + 1;
      const float* q = a.q + item * a.headDimK;
      scores(q, a.k + g * a.headDimK, a.kTokenStride, a.headDimK, T, a.scale, s);
      const float sum = softmax_numerators(s, T);
      weighted_sum(s, a.v + g * a.headDimV, a.vTokenStride, a.headDimV, T, 1.0f / sum, a.out + item * a.headDimV);
    }
  }
}

}  // namespace transmla
