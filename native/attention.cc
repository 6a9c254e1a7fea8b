// Causal softmax attention, blocked like flash attention. A work unit is one KV head g with a
// block of consecutive queries: its rows are (query token, query head of g's group), so every
// key and value row is read once per group of query heads and reused from L1 by all rows of
// the block. Keys are processed in tiles of KT with an online softmax (running max m, sum l,
// output O rescaled by e^(m_old - m_new)). A decode step with fewer units than threads (MLA: a
// single latent head) splits the keys into ranges whose partial (m, l, O) are merged at the end.
// Scores are computed three rows × four keys at a time (each key vector loaded once per three
// rows), P·V two rows × 32 columns at a time. An f16/bf16 cache is widened in registers as
// each key or value vector is loaded (load8<T>), so it is read at half the bytes.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "common.h"

namespace transmla {
namespace {

constexpr int64_t KT = 64;           // keys per tile
constexpr int64_t kRowsTarget = 48;  // query rows (tokens × heads of a group) per prefill unit
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The element type of a cache stored as T.
template <DType T> using Elem = std::conditional_t<T == DType::F32, float, uint16_t>;

// [Σa0, Σa1, Σa2, Σa3]
inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

template <DType T>
inline float dot(const float* a, const Elem<T>* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= n; d += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), load8<T>(b, d), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), load8<T>(b, d + 8), acc1);
  }
  for (; d + 8 <= n; d += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), load8<T>(b, d), acc0);
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; d < n; ++d) s += a[d] * load1<T>(b, d);
  return s;
}

// Scores of 2 rows (or 1 when q1 is null) against 4 keys: s0[j] = scale·q0·k_j, s1[j] = scale·q1·k_j.
template <DType T, bool TWO>
inline void qk_x4(const float* q0, const float* q1, const Elem<T>* k, int64_t ks, int64_t dk, float scale, float* s0,
                  float* s1) {
  const Elem<T>* k0 = k;
  const Elem<T>* k1 = k + ks;
  const Elem<T>* k2 = k1 + ks;
  const Elem<T>* k3 = k2 + ks;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t d = 0;
  for (; d + 8 <= dk; d += 8) {
    const __m256 qa = _mm256_loadu_ps(q0 + d);
    const __m256 v0 = load8<T>(k0, d), v1 = load8<T>(k1, d);
    const __m256 v2 = load8<T>(k2, d), v3 = load8<T>(k3, d);
    a0 = _mm256_fmadd_ps(qa, v0, a0);
    a1 = _mm256_fmadd_ps(qa, v1, a1);
    a2 = _mm256_fmadd_ps(qa, v2, a2);
    a3 = _mm256_fmadd_ps(qa, v3, a3);
    if (TWO) {
      const __m256 qb = _mm256_loadu_ps(q1 + d);
      b0 = _mm256_fmadd_ps(qb, v0, b0);
      b1 = _mm256_fmadd_ps(qb, v1, b1);
      b2 = _mm256_fmadd_ps(qb, v2, b2);
      b3 = _mm256_fmadd_ps(qb, v3, b3);
    }
  }
  alignas(16) float r[4];
  _mm_store_ps(r, hsum4(a0, a1, a2, a3));
  for (int64_t e = d; e < dk; ++e) {
    r[0] += q0[e] * load1<T>(k0, e);
    r[1] += q0[e] * load1<T>(k1, e);
    r[2] += q0[e] * load1<T>(k2, e);
    r[3] += q0[e] * load1<T>(k3, e);
  }
  for (int j = 0; j < 4; ++j) s0[j] = r[j] * scale;
  if (TWO) {
    _mm_store_ps(r, hsum4(b0, b1, b2, b3));
    for (int64_t e = d; e < dk; ++e) {
      r[0] += q1[e] * load1<T>(k0, e);
      r[1] += q1[e] * load1<T>(k1, e);
      r[2] += q1[e] * load1<T>(k2, e);
      r[3] += q1[e] * load1<T>(k3, e);
    }
    for (int j = 0; j < 4; ++j) s1[j] = r[j] * scale;
  }
}

inline float row_max(const float* p, int64_t n) {
  int64_t j = 0;
  float mx = p[0];
  if (n >= 8) {
    __m256 m8 = _mm256_loadu_ps(p);
    for (j = 8; j + 8 <= n; j += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(p + j));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    mx = _mm_cvtss_f32(m4);
  }
  for (; j < n; ++j) mx = std::max(mx, p[j]);
  return mx;
}

// Scores of NR rows against 4 keys: s_r[j] = scale·q_r·k_j (NR·4 accumulators, keys loaded once
// per 8 dimensions and shared by the rows).
template <DType T, int NR>
inline void qk_rows4(const float* const* q, const Elem<T>* k, int64_t ks, int64_t dk, float scale, float* const* s) {
  const Elem<T>* kp[4] = {k, k + ks, k + 2 * ks, k + 3 * ks};
  __m256 acc[NR][4];
#pragma GCC unroll 4
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= dk; d += 8) {
    __m256 qv[NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) qv[r] = _mm256_loadu_ps(q[r] + d);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256 kv = load8<T>(kp[j], d);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) acc[r][j] = _mm256_fmadd_ps(qv[r], kv, acc[r][j]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    alignas(16) float t[4];
    _mm_store_ps(t, hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
    for (int64_t e = d; e < dk; ++e)
      for (int j = 0; j < 4; ++j) t[j] += q[r][e] * load1<T>(kp[j], e);
    for (int j = 0; j < 4; ++j) s[r][j] = t[j] * scale;
  }
}

// p[0..n) <- e^(p - mx); returns the sum.
float exp_shifted(float* p, int64_t n, float mx) {
  const __m256 m = _mm256_set1_ps(mx);
  __m256 sum8 = _mm256_setzero_ps();
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(p + t), m));
    _mm256_storeu_ps(p + t, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  float sum = hsum(sum8);
  if (t < n) {
    alignas(32) float buf[8];
    for (int64_t x = 0; x < 8; ++x) buf[x] = t + x < n ? p[t + x] - mx : -100.0f;
    _mm256_store_ps(buf, exp_nonpositive(_mm256_load_ps(buf)));
    for (int64_t x = 0; t + x < n; ++x) {
      p[t + x] = buf[x];
      sum += buf[x];
    }
  }
  return sum;
}

// o_r[c .. c+8·NV) <- corr_r·o_r + Σ_j p_r[j]·v_j for 2 rows (or 1 when TWO is false).
template <DType T, bool TWO, int NV>
inline void pv_cols(const float* p0, const float* p1, const Elem<T>* v, int64_t vs, int64_t tn, float c0, float c1,
                    float* o0, float* o1) {
  __m256 a[NV], b[NV];
  const __m256 cv0 = _mm256_set1_ps(c0), cv1 = _mm256_set1_ps(c1);
#pragma GCC unroll 8
  for (int x = 0; x < NV; ++x) {
    a[x] = _mm256_mul_ps(_mm256_loadu_ps(o0 + 8 * x), cv0);
    if (TWO) b[x] = _mm256_mul_ps(_mm256_loadu_ps(o1 + 8 * x), cv1);
  }
  for (int64_t j = 0; j < tn; ++j) {
    const Elem<T>* vj = v + j * vs;
    const __m256 w0 = _mm256_broadcast_ss(p0 + j);
    const __m256 w1 = TWO ? _mm256_broadcast_ss(p1 + j) : w0;
#pragma GCC unroll 8
    for (int x = 0; x < NV; ++x) {
      const __m256 vv = load8<T>(vj, 8 * x);
      a[x] = _mm256_fmadd_ps(w0, vv, a[x]);
      if (TWO) b[x] = _mm256_fmadd_ps(w1, vv, b[x]);
    }
  }
#pragma GCC unroll 8
  for (int x = 0; x < NV; ++x) {
    _mm256_storeu_ps(o0 + 8 * x, a[x]);
    if (TWO) _mm256_storeu_ps(o1 + 8 * x, b[x]);
  }
}

template <DType T, bool TWO>
void pv_rows(const float* p0, const float* p1, const Elem<T>* v, int64_t vs, int64_t dv, int64_t tn, float c0, float c1,
             float* o0, float* o1) {
  int64_t c = 0;
  for (; c + 32 <= dv; c += 32) pv_cols<T, TWO, 4>(p0, p1, v + c, vs, tn, c0, c1, o0 + c, o1 + c);
  for (; c + 8 <= dv; c += 8) pv_cols<T, TWO, 1>(p0, p1, v + c, vs, tn, c0, c1, o0 + c, o1 + c);
  for (; c < dv; ++c) {
    float x0 = o0[c] * c0, x1 = TWO ? o1[c] * c1 : 0.0f;
    for (int64_t j = 0; j < tn; ++j) {
      x0 += p0[j] * load1<T>(v, j * vs + c);
      if (TWO) x1 += p1[j] * load1<T>(v, j * vs + c);
    }
    o0[c] = x0;
    if (TWO) o1[c] = x1;
  }
}

struct ThreadScratch {
  std::vector<float> s, o, m, l, corr;
  std::vector<const float*> q;
  std::vector<int64_t> last;
  void reserve(int64_t R, int64_t dv) {  // grows only
    if (s.size() < size_t(R * KT)) s.resize(size_t(R * KT));
    if (o.size() < size_t(R * dv)) o.resize(size_t(R * dv));
    if (m.size() < size_t(R)) {
      m.resize(size_t(R));
      l.resize(size_t(R));
      corr.resize(size_t(R));
      q.resize(size_t(R));
      last.resize(size_t(R));
    }
  }
};

// Rows [i0, i1) × heads of KV head g against keys [kb, ke). Leaves m, l and the unnormalised
// O in the scratch.
template <DType T>
void run_unit(const AttentionParams& a, int64_t group, int64_t g, int64_t i0, int64_t i1, int64_t kb, int64_t ke,
              ThreadScratch& w) {
  const int64_t dk = a.headDimK, dv = a.headDimV;
  const int64_t R = (i1 - i0) * group;
  for (int64_t r = 0; r < R; ++r) {
    const int64_t i = i0 + r / group, h = g * group + r % group;
    w.q[r] = a.q + (i * a.nHeads + h) * dk;
    w.last[r] = a.pos0 + i;
    w.m[r] = kNegInf;
    w.l[r] = 0.0f;
  }
  std::fill(w.o.begin(), w.o.begin() + R * dv, 0.0f);
  const Elem<T>* K = static_cast<const Elem<T>*>(a.k) + g * dk;
  const Elem<T>* V = static_cast<const Elem<T>*>(a.v) + g * dv;
  float* S = w.s.data();
  for (int64_t t0 = kb; t0 < ke; t0 += KT) {
    const int64_t tn = std::min(KT, ke - t0);
    const Elem<T>* kt = K + t0 * a.kTokenStride;
    // Scores, three (or two) rows at a time, four keys at a time.
    int64_t r3 = 0;
    {
      for (; r3 + 3 <= R; r3 += 3) {
        const float* qs[3] = {w.q[r3], w.q[r3 + 1], w.q[r3 + 2]};
        float* ss[3] = {S + r3 * KT, S + (r3 + 1) * KT, S + (r3 + 2) * KT};
        int64_t j = 0;
        for (; j + 4 <= tn; j += 4) {
          float* sj[3] = {ss[0] + j, ss[1] + j, ss[2] + j};
          qk_rows4<T, 3>(qs, kt + j * a.kTokenStride, a.kTokenStride, dk, a.scale, sj);
        }
        for (; j < tn; ++j)
          for (int x = 0; x < 3; ++x) ss[x][j] = dot<T>(qs[x], kt + j * a.kTokenStride, dk) * a.scale;
      }
    }
    for (int64_t r = r3; r < R; r += 2) {
      const bool two = r + 1 < R;
      float* s0 = S + r * KT;
      float* s1 = s0 + KT;
      int64_t j = 0;
      if (two) {
        for (; j + 4 <= tn; j += 4) qk_x4<T, true>(w.q[r], w.q[r + 1], kt + j * a.kTokenStride, a.kTokenStride, dk, a.scale, s0 + j, s1 + j);
        for (; j < tn; ++j) {
          s0[j] = dot<T>(w.q[r], kt + j * a.kTokenStride, dk) * a.scale;
          s1[j] = dot<T>(w.q[r + 1], kt + j * a.kTokenStride, dk) * a.scale;
        }
      } else {
        for (; j + 4 <= tn; j += 4) qk_x4<T, false>(w.q[r], nullptr, kt + j * a.kTokenStride, a.kTokenStride, dk, a.scale, s0 + j, nullptr);
        for (; j < tn; ++j) s0[j] = dot<T>(w.q[r], kt + j * a.kTokenStride, dk) * a.scale;
      }
    }
    // Online softmax: masked (future) keys get weight 0.
    for (int64_t r = 0; r < R; ++r) {
      float* p = S + r * KT;
      const int64_t vis = std::min(tn, w.last[r] - t0 + 1);
      if (vis <= 0) {
        std::fill(p, p + tn, 0.0f);
        w.corr[r] = 1.0f;
        continue;
      }
      float mx = row_max(p, vis);
      const float mnew = std::max(w.m[r], mx);
      w.corr[r] = w.m[r] == kNegInf ? 0.0f : std::exp(w.m[r] - mnew);
      const float sum = exp_shifted(p, vis, mnew);
      std::fill(p + vis, p + tn, 0.0f);
      w.l[r] = w.l[r] * w.corr[r] + sum;
      w.m[r] = mnew;
    }
    // O <- corr·O + P·V
    const Elem<T>* vt = V + t0 * a.vTokenStride;
    float* O = w.o.data();
    for (int64_t r = 0; r < R; r += 2) {
      if (r + 1 < R)
        pv_rows<T, true>(S + r * KT, S + (r + 1) * KT, vt, a.vTokenStride, dv, tn, w.corr[r], w.corr[r + 1], O + r * dv, O + (r + 1) * dv);
      else
        pv_rows<T, false>(S + r * KT, nullptr, vt, a.vTokenStride, dv, tn, w.corr[r], 1.0f, O + r * dv, nullptr);
    }
  }
}

}  // namespace

void attention(const AttentionParams& a) {
  if (a.tq <= 0 || a.nHeads <= 0) return;
  const int64_t group = a.nHeads / a.nKvHeads, G = a.nKvHeads, dv = a.headDimV;
  const int64_t QB = a.tq == 1 ? 1 : std::min(a.tq, std::max<int64_t>(1, kRowsTarget / group));
  const int64_t nQB = (a.tq + QB - 1) / QB;
  const int64_t R = QB * group;
  const double work = 2.0 * double(a.headDimK + dv) * double(a.tq * a.nHeads) * double(a.pos0 + (a.tq + 1) / 2);
  const int ntMax = threads_for(work);
  const int64_t base = G * nQB;
  // Split the keys of each unit when there are fewer units than threads (decode, MLA's single head).
  const int64_t nKeys = a.pos0 + a.tq;
  int64_t nsplit = 1;
  if (base < ntMax) nsplit = std::max<int64_t>(1, std::min<int64_t>((ntMax + base - 1) / base, nKeys / 256));
  const int64_t units = base * nsplit;
  const int nt = int(std::min<int64_t>(ntMax, units));
  // Split partials: per unit, R rows of [m, l, O(dv)].
  // Scratch kept by the calling thread across calls (decode calls this once per layer and token);
  // it is sized here, before the region: nothing allocates inside it.
  thread_local std::vector<float> part;
  thread_local std::vector<ThreadScratch> scratch;
  if (nsplit > 1) part.resize(size_t(units * R * (dv + 2)));
  if (scratch.size() < size_t(std::max(nt, 1))) scratch.resize(size_t(std::max(nt, 1)));
  for (ThreadScratch& w : scratch) w.reserve(R, dv);
  // Inside the region the thread_local names would denote each worker's own (empty) copies.
  ThreadScratch* const sc = scratch.data();
  float* const partp = part.data();
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    ThreadScratch& w = sc[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      // Longest units (latest query blocks) first.
      const int64_t s = u % nsplit, g = (u / nsplit) % G, b = nQB - 1 - u / (nsplit * G);
      const int64_t i0 = b * QB, i1 = std::min(a.tq, i0 + QB);
      const int64_t ke = a.pos0 + i1;
      const int64_t chunk = (ke + nsplit - 1) / nsplit;
      const int64_t kb = std::min(ke, s * chunk), kend = std::min(ke, kb + chunk);
      if (a.kv == DType::F16) run_unit<DType::F16>(a, group, g, i0, i1, kb, kend, w);
      else if (a.kv == DType::BF16) run_unit<DType::BF16>(a, group, g, i0, i1, kb, kend, w);
      else run_unit<DType::F32>(a, group, g, i0, i1, kb, kend, w);
      const int64_t rows = (i1 - i0) * group;
      if (nsplit == 1) {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r / group, h = g * group + r % group;
          float* out = a.out + (i * a.nHeads + h) * dv;
          const float inv = 1.0f / w.l[r];
          const float* o = w.o.data() + r * dv;
          for (int64_t c = 0; c < dv; ++c) out[c] = o[c] * inv;
        }
      } else {
        float* pu = partp + size_t(u * R * (dv + 2));
        for (int64_t r = 0; r < rows; ++r) {
          float* pr = pu + r * (dv + 2);
          pr[0] = w.m[r];
          pr[1] = w.l[r];
          std::copy(w.o.data() + r * dv, w.o.data() + (r + 1) * dv, pr + 2);
        }
      }
    }
  }
  if (nsplit == 1) return;
  // Merge the key ranges: O = Σ_s e^(m_s − M)·O_s / Σ_s e^(m_s − M)·l_s.
  for (int64_t ub = 0; ub < base; ++ub) {
    const int64_t g = ub % G, b = nQB - 1 - ub / G;
    const int64_t i0 = b * QB, i1 = std::min(a.tq, i0 + QB);
    const int64_t rows = (i1 - i0) * group;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r / group, h = g * group + r % group;
      float* out = a.out + (i * a.nHeads + h) * dv;
      float M = kNegInf;
      for (int64_t s = 0; s < nsplit; ++s) M = std::max(M, partp[size_t(((ub * nsplit + s) * R + r) * (dv + 2))]);
      std::fill(out, out + dv, 0.0f);
      float L = 0.0f;
      for (int64_t s = 0; s < nsplit; ++s) {
        const float* pr = partp + size_t(((ub * nsplit + s) * R + r) * (dv + 2));
        if (pr[0] == kNegInf) continue;
        const float f = std::exp(pr[0] - M);
        L += f * pr[1];
        for (int64_t c = 0; c < dv; ++c) out[c] += f * pr[2 + c];
      }
      const float inv = 1.0f / L;
      for (int64_t c = 0; c < dv; ++c) out[c] *= inv;
    }
  }
}

}  // namespace transmla
