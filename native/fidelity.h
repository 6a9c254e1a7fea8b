// Per-position scores of S logit rows against the first (the reference): the NLL of the target,
// KL(p_0 ‖ p_s) and argmax agreement, in float64 (docs/methods.md#kl-top1).
#pragma once

#include <cstdint>

namespace transmla {

// L[s] points at stage s's logits [rows × V] (f32). out[(r·S + s)·3 + {0,1,2}] =
// (log-sum-exp(x_s) − x_s[target_r], KL(p_0 ‖ p_s), argmax x_s == argmax x_0 ? 1 : 0), with
// KL = Σ_v p_0(v)·(x_0(v) − x_s(v)) − lse_0 + lse_s (stage 0's KL is 0, its agreement 1).
// The argmax is the first index of the maximum. Rows run in parallel; each output value is
// computed by one thread in a fixed order, so results do not depend on the thread count.
void fidelity_rows(const float* const* L, int64_t S, int64_t rows, int64_t V, const int32_t* targets, double* out);

}  // namespace transmla
