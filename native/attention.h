// Causal softmax attention against a (possibly latent, possibly shared K/V) cache.
#pragma once

#include <cstdint>

#include "common.h"

namespace transmla {

struct AttentionParams {
  const float* q;  // [tq, nHeads, headDimK]
  int64_t tq, nHeads, nKvHeads, headDimK, headDimV;
  const void* k;  // head g of token t at k[t*kTokenStride + g*headDimK] (elements of kv)
  int64_t kTokenStride;
  const void* v;  // head g of token t at v[t*vTokenStride + g*headDimV]; may alias k
  int64_t vTokenStride;
  DType kv;  // F32, F16 or BF16 storage of k and v
  int64_t pos0;  // query i attends keys 0..pos0+i
  float scale;
  float* out;  // [tq, nHeads, headDimV]
};

// Caller guarantees nHeads % nKvHeads == 0 and that every indexed element exists.
void attention(const AttentionParams& a);

}  // namespace transmla
