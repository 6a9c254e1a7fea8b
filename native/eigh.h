// Dense symmetric eigendecomposition in float64.
#pragma once

#include <cstdint>

namespace transmla {

// A [n×n] row-major, only the lower triangle is read. values: n, sorted descending.
// vectors [n×n] row-major, column j = unit eigenvector of values[j].
// Throws std::runtime_error on non-finite input or when the QL iteration does not converge.
void eigh(const double* A, int64_t n, double* values, double* vectors);

}  // namespace transmla
