// Symmetric eigensolver: Householder reduction to tridiagonal form, implicit QL with
// Wilkinson shifts on the tridiagonal, then back-transformation by the reflectors.
//
// Layout choices that make it fast without LAPACK:
// - The reduction keeps the full symmetric matrix so every access is a contiguous row, and
//   each step fuses the rank-2 update with the next step's matrix-vector product (one pass
//   over the trailing block per step instead of two).
// - Eigenvectors are kept as rows (Zt). QL rotations are recorded and applied in batches to
//   column strips of Zt that stay in L2, with the row shared by consecutive rotations of a
//   sweep held in registers.
// - The back-transformation applies all reflectors to 4 eigenvector rows at a time, again
//   fusing each reflector's update with the next reflector's dot product.
// The matrix is scaled by its largest entry first so no intermediate can overflow.
#include "eigh.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"

namespace transmla {
namespace {

struct Rotation {
  double c, s;
  int64_t i;  // acts on rows i and i+1 of Zt
};

// Householder reflector for x[0..m): H·x = beta·e0 with H = I − tau·v·vᵀ, v[0] = 1.
// Writes v into v_out[0..m). tau = 0 when x is already a multiple of e0.
double householder(const double* x, int64_t m, double* v_out, double* beta_out) {
  const double alpha = x[0];
  double sigma = 0.0;
  for (int64_t i = 1; i < m; ++i) sigma += x[i] * x[i];
  v_out[0] = 1.0;
  if (sigma == 0.0) {
    for (int64_t i = 1; i < m; ++i) v_out[i] = 0.0;
    *beta_out = alpha;
    return 0.0;
  }
  const double mu = std::sqrt(alpha * alpha + sigma);
  // beta takes the sign opposite to alpha so alpha − beta never cancels.
  const double beta = alpha <= 0.0 ? mu : -mu;
  const double inv = 1.0 / (alpha - beta);
  for (int64_t i = 1; i < m; ++i) v_out[i] = x[i] * inv;
  *beta_out = beta;
  return (beta - alpha) / beta;
}

// row[j] −= vi·w[j] + wi·v[j] for j in [j0, n), then returns Σ row[j]·u[j] over the same range
// (the product for the next reflector u); u may be null when that product is not wanted.
inline double update_row_and_dot(double* row, const double* v, const double* w, double vi, double wi,
                                 const double* u, int64_t j0, int64_t n, bool update) {
  const __m256d vv = _mm256_set1_pd(vi), ww = _mm256_set1_pd(wi);
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  int64_t j = j0;
  if (update && u) {
    for (; j + 8 <= n; j += 8) {
      __m256d s0 = _mm256_loadu_pd(row + j), s1 = _mm256_loadu_pd(row + j + 4);
      s0 = _mm256_fnmadd_pd(vv, _mm256_loadu_pd(w + j), s0);
      s1 = _mm256_fnmadd_pd(vv, _mm256_loadu_pd(w + j + 4), s1);
      s0 = _mm256_fnmadd_pd(ww, _mm256_loadu_pd(v + j), s0);
      s1 = _mm256_fnmadd_pd(ww, _mm256_loadu_pd(v + j + 4), s1);
      _mm256_storeu_pd(row + j, s0);
      _mm256_storeu_pd(row + j + 4, s1);
      acc0 = _mm256_fmadd_pd(s0, _mm256_loadu_pd(u + j), acc0);
      acc1 = _mm256_fmadd_pd(s1, _mm256_loadu_pd(u + j + 4), acc1);
    }
  } else if (update) {
    for (; j + 4 <= n; j += 4) {
      __m256d s0 = _mm256_loadu_pd(row + j);
      s0 = _mm256_fnmadd_pd(vv, _mm256_loadu_pd(w + j), s0);
      s0 = _mm256_fnmadd_pd(ww, _mm256_loadu_pd(v + j), s0);
      _mm256_storeu_pd(row + j, s0);
    }
  } else if (u) {
    for (; j + 8 <= n; j += 8) {
      acc0 = _mm256_fmadd_pd(_mm256_loadu_pd(row + j), _mm256_loadu_pd(u + j), acc0);
      acc1 = _mm256_fmadd_pd(_mm256_loadu_pd(row + j + 4), _mm256_loadu_pd(u + j + 4), acc1);
    }
  }
  double dot = hsum(_mm256_add_pd(acc0, acc1));
  for (; j < n; ++j) {
    if (update) row[j] -= vi * w[j] + wi * v[j];
    if (u) dot += row[j] * u[j];
  }
  return dot;
}

// Reduces the full symmetric S (n ≥ 3) to tridiagonal (d, e). Reflector k is stored in row k
// of Vh at columns k+1..n-1 (Vh[k][k+1] = 1) with factor tau[k].
void tridiagonalize(double* S, int64_t n, double* d, double* e, double* tau, double* Vh) {
  std::vector<double> p(n, 0.0), w(n, 0.0);
  auto Srow = [&](int64_t i) { return S + i * n; };

  // Reflector 0 and its product p = tau·B·v over the trailing block (rows/cols ≥ 1).
  d[0] = Srow(0)[0];
  std::fill(Vh, Vh + n, 0.0);
  tau[0] = householder(Srow(0) + 1, n - 1, Vh + 1, &e[0]);
  {
    const double* v = Vh;
    const double t = tau[0];
    const int nt = threads_for(2.0 * double(n) * double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 1; i < n; ++i) p[i] = t == 0.0 ? 0.0 : t * update_row_and_dot(Srow(i), v, v, 0, 0, v, 1, n, false);
  }

  for (int64_t k = 0; k + 3 <= n; ++k) {
    const double* v = Vh + k * n;
    const double t = tau[k];
    const bool update = t != 0.0;
    if (update) {
      // w = p − (tau/2)(pᵀv)·v, so that B ← B − v·wᵀ − w·vᵀ equals H·B·H.
      double pv = 0.0;
      for (int64_t i = k + 1; i < n; ++i) pv += p[i] * v[i];
      const double half = 0.5 * t * pv;
      for (int64_t i = k + 1; i < n; ++i) w[i] = p[i] - half * v[i];
      update_row_and_dot(Srow(k + 1), v, w.data(), v[k + 1], w[k + 1], nullptr, k + 1, n, true);
    }
    d[k + 1] = Srow(k + 1)[k + 1];
    if (k + 1 + 3 <= n) {
      // Next reflector from the (already updated) row k+1; then one fused pass over rows ≥ k+2
      // finishes this step's update and computes the next step's p. Column k+1 of those rows
      // is never read again, so it is not updated.
      double* vn = Vh + (k + 1) * n;
      std::fill(vn, vn + n, 0.0);
      tau[k + 1] = householder(Srow(k + 1) + k + 2, n - k - 2, vn + k + 2, &e[k + 1]);
      const double tn = tau[k + 1];
      const int64_t m = n - k - 2;
      const int nt = threads_for(6.0 * double(m) * double(m));
      const double* wp = w.data();
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
      for (int64_t i = k + 2; i < n; ++i) {
        const double dot = update_row_and_dot(Srow(i), v, wp, v[i], wp[i], tn != 0.0 ? vn : nullptr, k + 2, n, update);
        p[i] = tn * dot;
      }
    } else {
      // Last step: only the 2×2 trailing block remains.
      if (update) update_row_and_dot(Srow(n - 1), v, w.data(), v[n - 1], w[n - 1], nullptr, n - 2, n, true);
      e[n - 2] = Srow(n - 2)[n - 1];
      d[n - 1] = Srow(n - 1)[n - 1];
    }
  }
  e[n - 1] = 0.0;
}

// Applies recorded rotations, in order, to all rows of Zt. Strips of 32 columns are
// independent, so they are spread over the threads; within a strip the row shared by
// consecutive rotations of a sweep stays in registers.
void apply_rotations(double* Zt, int64_t n, const std::vector<Rotation>& rots) {
  constexpr int64_t CW = 32;
  const int64_t nstrips = (n + CW - 1) / CW;
  const int64_t count = int64_t(rots.size());
  const int nt = threads_for(6.0 * double(count) * double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t st = 0; st < nstrips; ++st) {
    const int64_t k0 = st * CW;
    if (k0 + CW <= n) {
      __m256d h[CW / 4] = {};
      int64_t held = -1;
      for (int64_t r = 0; r < count; ++r) {
        const Rotation& q = rots[r];
        const __m256d c = _mm256_set1_pd(q.c), s = _mm256_set1_pd(q.s);
        double* ra = Zt + q.i * n + k0;
        double* rb = ra + n;
        if (held != q.i + 1) {
          if (held >= 0)
            for (int64_t x = 0; x < CW / 4; ++x) _mm256_storeu_pd(Zt + held * n + k0 + 4 * x, h[x]);
          for (int64_t x = 0; x < CW / 4; ++x) h[x] = _mm256_loadu_pd(rb + 4 * x);
        }
        for (int64_t x = 0; x < CW / 4; ++x) {
          const __m256d a = _mm256_loadu_pd(ra + 4 * x);
          _mm256_storeu_pd(rb + 4 * x, _mm256_fmadd_pd(s, a, _mm256_mul_pd(c, h[x])));
          h[x] = _mm256_fnmadd_pd(s, h[x], _mm256_mul_pd(c, a));
        }
        held = q.i;
      }
      if (held >= 0)
        for (int64_t x = 0; x < CW / 4; ++x) _mm256_storeu_pd(Zt + held * n + k0 + 4 * x, h[x]);
    } else {
      for (int64_t r = 0; r < count; ++r) {
        const Rotation& q = rots[r];
        double* ra = Zt + q.i * n;
        double* rb = ra + n;
        for (int64_t k = k0; k < n; ++k) {
          const double a = ra[k], b = rb[k];
          rb[k] = q.s * a + q.c * b;
          ra[k] = q.c * a - q.s * b;
        }
      }
    }
  }
}

// Implicit QL with Wilkinson shifts on (d, e); rotations are accumulated into the rows of Zt.
void tridiagonal_ql(double* d, double* e, int64_t n, double* Zt) {
  const int64_t max_sweeps = 30 * n;  // LAPACK's budget for the whole matrix
  const size_t flush_at = size_t(std::max<int64_t>(32 * n, 4096));
  std::vector<Rotation> rots;
  rots.reserve(flush_at + size_t(n));
  int64_t sweeps = 0;
  for (int64_t l = 0; l < n; ++l) {
    for (;;) {
      int64_t m = l;
      for (; m < n - 1; ++m) {
        const double dd = std::abs(d[m]) + std::abs(d[m + 1]);
        if (std::abs(e[m]) <= DBL_EPSILON * dd || std::abs(e[m]) <= DBL_MIN) break;
      }
      if (m == l) break;
      if (++sweeps > max_sweeps)
        throw std::runtime_error("eigh: QL iteration did not converge (eigenvalue " + std::to_string(l) + " of " +
                                 std::to_string(n) + " after " + std::to_string(max_sweeps) + " sweeps)");
      double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
      double r = std::hypot(g, 1.0);
      g = d[m] - d[l] + e[l] / (g + std::copysign(r, g));
      double s = 1.0, c = 1.0, p = 0.0;
      bool deflated = false;
      for (int64_t i = m - 1; i >= l; --i) {
        const double f = s * e[i], b = c * e[i];
        r = std::hypot(f, g);
        e[i + 1] = r;
        if (r == 0.0) {
          // Underflow split: the matrix decouples at i; restart the search for m.
          d[i + 1] -= p;
          e[m] = 0.0;
          deflated = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2.0 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        rots.push_back({c, s, i});
      }
      if (rots.size() >= flush_at) {
        apply_rotations(Zt, n, rots);
        rots.clear();
      }
      if (deflated) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0.0;
    }
  }
  if (!rots.empty()) apply_rotations(Zt, n, rots);
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(d[i])) throw std::runtime_error("eigh: QL iteration produced a non-finite eigenvalue");
}

// z ← z·H_{n-3}·…·H_0 for every row z of Zt, i.e. eigenvectors of T become eigenvectors of A.
void back_transform(double* Zt, int64_t n, const double* Vh, const double* tau) {
  constexpr int64_t R = 4;
  const int64_t nblocks = (n + R - 1) / R;
  const int nt = threads_for(2.0 * double(n) * double(n) * double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t r0 = blk * R, rn = std::min(R, n - r0);
    double* z[R];
    for (int64_t r = 0; r < R; ++r) z[r] = Zt + (r0 + std::min(r, rn - 1)) * n;  // duplicates are recomputed, never stored twice
    double dots[R];
    {
      const double* v = Vh + (n - 3) * n;
      for (int64_t r = 0; r < R; ++r) dots[r] = z[r][n - 2] * v[n - 2] + z[r][n - 1] * v[n - 1];
    }
    for (int64_t k = n - 3; k >= 0; --k) {
      const double* vk = Vh + k * n;
      const double* vp = k > 0 ? Vh + (k - 1) * n : nullptr;
      double t[R], next[R];
      for (int64_t r = 0; r < R; ++r) {
        t[r] = tau[k] * dots[r];
        next[r] = vp ? z[r][k] * vp[k] : 0.0;
      }
      __m256d tv[R], acc[R];
      for (int64_t r = 0; r < R; ++r) {
        tv[r] = _mm256_set1_pd(t[r]);
        acc[r] = _mm256_setzero_pd();
      }
      int64_t j = k + 1;
      if (vp) {
        for (; j + 4 <= n; j += 4) {
          const __m256d a = _mm256_loadu_pd(vk + j), b = _mm256_loadu_pd(vp + j);
          for (int64_t r = 0; r < R; ++r) {
            if (r >= rn) break;
            const __m256d zz = _mm256_fnmadd_pd(tv[r], a, _mm256_loadu_pd(z[r] + j));
            _mm256_storeu_pd(z[r] + j, zz);
            acc[r] = _mm256_fmadd_pd(zz, b, acc[r]);
          }
        }
        for (; j < n; ++j)
          for (int64_t r = 0; r < rn; ++r) {
            z[r][j] -= t[r] * vk[j];
            next[r] += z[r][j] * vp[j];
          }
        for (int64_t r = 0; r < rn; ++r) dots[r] = next[r] + hsum(acc[r]);
      } else {
        for (; j < n; ++j)
          for (int64_t r = 0; r < rn; ++r) z[r][j] -= t[r] * vk[j];
      }
    }
  }
}

}  // namespace

void eigh(const double* A, int64_t n, double* values, double* vectors) {
  if (n <= 0) return;
  double amax = 0.0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      const double a = A[i * n + j];
      if (!std::isfinite(a))
        throw std::runtime_error("eigh: matrix entry (" + std::to_string(i) + ", " + std::to_string(j) + ") is not finite");
      amax = std::max(amax, std::abs(a));
    }
  std::fill(vectors, vectors + n * n, 0.0);
  if (amax == 0.0 || n == 1) {
    for (int64_t i = 0; i < n; ++i) {
      values[i] = A[i * n + i];
      vectors[i * n + i] = 1.0;
    }
    return;
  }

  const double scale = 1.0 / amax;
  Scratch<double> S_buf(size_t(n) * size_t(n)), Zt_buf(size_t(n) * size_t(n));
  double* S = S_buf.data();
  double* Zt = Zt_buf.data();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) S[i * n + j] = S[j * n + i] = A[i * n + j] * scale;

  std::vector<double> d(n), e(n), tau(n, 0.0);
  Scratch<double> Vh_buf;
  if (n == 2) {
    d[0] = S[0];
    e[0] = S[1];
    d[1] = S[3];
    e[1] = 0.0;
  } else {
    Vh_buf.reserve(size_t(n) * size_t(n));
    tridiagonalize(S, n, d.data(), e.data(), tau.data(), Vh_buf.data());
  }

  std::fill(Zt, Zt + n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) Zt[i * n + i] = 1.0;
  tridiagonal_ql(d.data(), e.data(), n, Zt);
  if (n > 2) back_transform(Zt, n, Vh_buf.data(), tau.data());

  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return d[a] > d[b]; });
  for (int64_t j = 0; j < n; ++j) values[j] = d[order[j]] * amax;

  // vectors[i][j] = Zt[order[j]][i], transposed in 32×32 blocks to stay in cache.
  constexpr int64_t TB = 32;
  const int64_t nb = (n + TB - 1) / TB;
  const int nt = threads_for(double(n) * double(n) * 4);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t bj = 0; bj < nb; ++bj)
    for (int64_t bi = 0; bi < nb; ++bi)
      for (int64_t j = bj * TB; j < std::min(n, bj * TB + TB); ++j) {
        const double* src = Zt + order[j] * n;
        for (int64_t i = bi * TB; i < std::min(n, bi * TB + TB); ++i) vectors[i * n + j] = src[i];
      }
}

}  // namespace transmla
