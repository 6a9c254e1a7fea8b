// Covariance accumulation for calibration statistics.
#pragma once

#include <cstdint>

namespace transmla {

// acc[K×K] += Xᵀ·X for X [T×K] f32; acc is float64, both triangles, row-major.
void gram_accumulate(const float* X, int64_t T, int64_t K, double* acc);

}  // namespace transmla
