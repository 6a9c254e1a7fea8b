// Bulk conversions between f32 and the 16-bit storage formats.
#pragma once

#include <cstdint>

#include "common.h"

namespace transmla {

// dst[i] = widen(src[i]) for f16 or bf16 bits.
void to_f32(const uint16_t* src, DType type, float* dst, int64_t n);
// dst[i] = narrow(src[i]) with round-to-nearest-even; NaN stays NaN, overflow becomes ±Inf.
void from_f32(const float* src, DType type, uint16_t* dst, int64_t n);

}  // namespace transmla
