// N-API glue for conversions, quantization, the Gram/eigh kernels, attention and the thread
// controls (see napi-args.h for the validation helpers).
#include <node_api.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "attention.h"
#include "bindings.h"
#include "common.h"
#include "convert.h"
#include "eigh.h"
#include "gram.h"
#include "napi-args.h"
#include "quant.h"

namespace transmla {
namespace napi {
namespace {

// n f32 values against `bytes` bytes of type-t blocks: n a whole number of blocks, bytes exactly theirs.
void check_blocks(const Args& a, size_t n, size_t bytes, DType t, const char* fname, const char* bname) {
  if (n % kQK != 0)
    fail(ErrKind::Range, a.fn, std::string(fname) + " holds " + std::to_string(n) + " values, not a whole number of blocks of " + std::to_string(kQK));
  const size_t need = n / kQK * size_t(quant_block_bytes(t));
  if (bytes != need)
    fail(ErrKind::Range, a.fn, std::string(bname) + " must hold " + std::to_string(need) + " bytes (" + std::to_string(n / kQK) +
                                   " blocks), got " + std::to_string(bytes));
}

}  // namespace

napi_value ToF32(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "toF32", 3);
    const DType t = get_dtype(a, 1, "type", kHalf | kQuant);
    const View src = get_typed(a, 0, "src", storage_of(t));
    const View dst = get_typed(a, 2, "dst", napi_float32_array);
    if (is_quant(t)) {
      check_blocks(a, dst.length, src.length, t, "dst", "src");
      no_overlap(a, dst, "dst", src, "src");
      dequantize_blocks(static_cast<const uint8_t*>(src.data), t, static_cast<float*>(dst.data), int64_t(dst.length));
      return undefined(env);
    }
    if (src.length != dst.length)
      fail(ErrKind::Range, a.fn, "src and dst must have the same length (" + std::to_string(src.length) + " vs " + std::to_string(dst.length) + ")");
    no_overlap(a, dst, "dst", src, "src");
    to_f32(static_cast<const uint16_t*>(src.data), t, static_cast<float*>(dst.data), int64_t(src.length));
    return undefined(env);
  });
}

// fromF32(src: Float32Array, type, dst: Uint16Array)
napi_value FromF32(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "fromF32", 3);
    const DType t = get_dtype(a, 1, "type", kHalf | kQuant);
    const View src = get_typed(a, 0, "src", napi_float32_array);
    const View dst = get_typed(a, 2, "dst", storage_of(t));
    if (is_quant(t)) {
      check_blocks(a, src.length, dst.length, t, "src", "dst");
      no_overlap(a, dst, "dst", src, "src");
      const int64_t bad = first_nonfinite(static_cast<const float*>(src.data), int64_t(src.length));
      if (bad >= 0) fail(ErrKind::Range, a.fn, "src[" + std::to_string(bad) + "] is not finite; only finite values can be quantized");
      quantize_blocks(static_cast<const float*>(src.data), t, static_cast<uint8_t*>(dst.data), int64_t(src.length));
      return undefined(env);
    }
    if (src.length != dst.length)
      fail(ErrKind::Range, a.fn, "src and dst must have the same length (" + std::to_string(src.length) + " vs " + std::to_string(dst.length) + ")");
    no_overlap(a, dst, "dst", src, "src");
    from_f32(static_cast<const float*>(src.data), t, static_cast<uint16_t*>(dst.data), int64_t(src.length));
    return undefined(env);
  });
}

// gramAccumulate(X, T, K, acc)
napi_value GramAccumulate(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "gramAccumulate", 4);
    const View X = get_typed(a, 0, "X", napi_float32_array);
    const int64_t T = get_dim(a, 1, "T"), K = get_dim(a, 2, "K");
    const View acc = get_typed(a, 3, "acc", napi_float64_array);
    need_length(a, X, double(T) * double(K), "X", "T*K");
    need_length(a, acc, double(K) * double(K), "acc", "K*K");
    no_overlap(a, acc, "acc", X, "X");
    gram_accumulate(static_cast<const float*>(X.data), T, K, static_cast<double*>(acc.data));
    return undefined(env);
  });
}

napi_value new_f64(napi_env env, size_t n, double** data) {
  napi_value ab, arr;
  void* p = nullptr;
  check(env, napi_create_arraybuffer(env, n * 8, &p, &ab), "create_arraybuffer");
  check(env, napi_create_typedarray(env, napi_float64_array, n, ab, 0, &arr), "create_typedarray");
  *data = static_cast<double*>(p);
  return arr;
}

// eigh(A: Float64Array, n) → { values, vectors }
napi_value Eigh(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "eigh", 2);
    const View A = get_typed(a, 0, "A", napi_float64_array);
    const int64_t n = get_dim(a, 1, "n");
    need_length(a, A, double(n) * double(n), "A", "n*n");
    double *values, *vectors;
    napi_value jv = new_f64(env, size_t(n), &values);
    napi_value jz = new_f64(env, size_t(n) * size_t(n), &vectors);
    eigh(static_cast<const double*>(A.data), n, values, vectors);
    napi_value res;
    check(env, napi_create_object(env, &res), "create_object");
    check(env, napi_set_named_property(env, res, "values", jv), "set values");
    check(env, napi_set_named_property(env, res, "vectors", jz), "set vectors");
    return res;
  });
}

// attention(q, tq, nHeads, nKvHeads, headDimK, headDimV, k, kTokenStride, v, vTokenStride, pos0, scale, out, kvDType?)
napi_value Attention(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "attention", 13);
    AttentionParams p{};
    const View q = get_typed(a, 0, "q", napi_float32_array);
    p.tq = get_dim(a, 1, "tq");
    p.nHeads = get_dim(a, 2, "nHeads");
    p.nKvHeads = get_dim(a, 3, "nKvHeads");
    p.headDimK = get_dim(a, 4, "headDimK");
    p.headDimV = get_dim(a, 5, "headDimV");
    // kvDType (optional, argument 13): storage of k and v.
    p.kv = a.argc > 13 ? get_dtype(a, 13, "kvDType", kF32 | kHalf) : DType::F32;
    const View k = get_typed(a, 6, "k", storage_of(p.kv));
    p.kTokenStride = get_dim(a, 7, "kTokenStride");
    const View v = get_typed(a, 8, "v", storage_of(p.kv));
    p.vTokenStride = get_dim(a, 9, "vTokenStride");
    p.pos0 = get_dim(a, 10, "pos0");
    p.scale = float(get_number(a, 11, "scale"));
    const View out = get_typed(a, 12, "out", napi_float32_array);
    if (p.nHeads < 1 || p.nKvHeads < 1 || p.nHeads % p.nKvHeads != 0)
      fail(ErrKind::Range, a.fn, "nHeads (" + std::to_string(p.nHeads) + ") must be a positive multiple of nKvHeads (" +
                                     std::to_string(p.nKvHeads) + ")");
    if (p.headDimK < 1 || p.headDimV < 1) fail(ErrKind::Range, a.fn, "headDimK and headDimV must be at least 1");
    const double rows = double(p.tq) * double(p.nHeads);
    need_length(a, q, rows * double(p.headDimK), "q", "tq*nHeads*headDimK");
    need_length(a, out, rows * double(p.headDimV), "out", "tq*nHeads*headDimV");
    if (p.tq > 0) {
      const double last = double(p.pos0 + p.tq - 1);
      need_length(a, k, last * double(p.kTokenStride) + double(p.nKvHeads) * double(p.headDimK), "k",
                  "(pos0+tq-1)*kTokenStride + nKvHeads*headDimK");
      need_length(a, v, last * double(p.vTokenStride) + double(p.nKvHeads) * double(p.headDimV), "v",
                  "(pos0+tq-1)*vTokenStride + nKvHeads*headDimV");
    }
    no_overlap(a, out, "out", q, "q");
    no_overlap(a, out, "out", k, "k");
    no_overlap(a, out, "out", v, "v");
    p.q = static_cast<const float*>(q.data);
    p.k = k.data;
    p.v = v.data;
    p.out = static_cast<float*>(out.data);
    attention(p);
    return undefined(env);
  });
}

napi_value Threads(napi_env env, napi_callback_info) {
  napi_value r;
  napi_create_int32(env, max_threads(), &r);
  return r;
}

// effectiveThreads(): the team size parallel kernels use now (the configured count, reduced
// while other processes occupy cores; see available_threads in common.h).
napi_value EffectiveThreads(napi_env env, napi_callback_info) {
  napi_value r;
  napi_create_int32(env, last_available_threads(), &r);
  return r;
}

// setThreads(n): OpenMP team size for later calls (benchmarks compare 1 and 2 threads).
napi_value SetThreads(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "setThreads", 1);
    const int64_t n = get_dim(a, 0, "n");
    if (n < 1 || n > 1024) fail(ErrKind::Range, a.fn, "n must be between 1 and 1024");
    omp_set_num_threads(int(n));
    return undefined(env);
  });
}

}  // namespace napi
}  // namespace transmla
