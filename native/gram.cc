// Xᵀ·X through the fast f32 sgemm, tile by tile: each tile of at most 256 rows is summed in
// f32 (error ~ sqrt(256)·2^-24 of the tile's magnitude) and then added into the float64
// accumulator, so the error does not grow with the total token count. Only the lower triangle
// is computed (column blocks of 256) and mirrored while adding.
#include "gram.h"

#include <algorithm>

#include "common.h"
#include "gemm.h"

namespace transmla {
namespace {

constexpr int64_t kTileRows = 256;
constexpr int64_t kColBlock = 256;
constexpr int64_t kAddBlock = 64;

thread_local Scratch<float> tl_tile;

// acc += G on the lower triangle and acc += Gᵀ above it, in 64×64 blocks so the transposed
// writes stay in L1. Each acc element is owned by exactly one row block, so blocks run in parallel.
void add_lower_symmetric(const float* G, int64_t K, double* acc) {
  const int64_t nb = (K + kAddBlock - 1) / kAddBlock;
  const int nt = threads_for(double(K) * double(K) * 8);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1)
  for (int64_t bi = 0; bi < nb; ++bi) {
    const int64_t i0 = bi * kAddBlock, i1 = std::min(K, i0 + kAddBlock);
    for (int64_t bj = 0; bj <= bi; ++bj) {
      const int64_t j0 = bj * kAddBlock;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t j1 = std::min(i + 1, std::min(K, j0 + kAddBlock));
        const float* g = G + i * K;
        double* lower = acc + i * K;
        for (int64_t j = j0; j < j1; ++j) lower[j] += double(g[j]);
        for (int64_t j = j0; j < std::min(j1, i); ++j) acc[j * K + i] += double(g[j]);
      }
    }
  }
}

}  // namespace

void gram_accumulate(const float* X, int64_t T, int64_t K, double* acc) {
  if (T <= 0 || K <= 0) return;
  float* G = tl_tile.reserve(size_t(K) * size_t(K));
  for (int64_t t0 = 0; t0 < T; t0 += kTileRows) {
    const int64_t rows = std::min(kTileRows, T - t0);
    const float* Xt = X + t0 * K;
    for (int64_t j0 = 0; j0 < K; j0 += kColBlock) {
      const int64_t jb = std::min(kColBlock, K - j0);
      // G[j0.., j0..j0+jb) = Xt[:, j0..]ᵀ · Xt[:, j0..j0+jb): A is Xt read transposed.
      sgemm(Xt + j0, K, true, Xt + j0, DType::F32, K, false, G + j0 * K + j0, K, K - j0, jb, rows, false);
    }
    add_lower_symmetric(G, K, acc);
  }
}

}  // namespace transmla
