// N-API glue: validates every argument (typed-array kinds, integer dimensions, buffer lengths,
// output/input overlap) before any kernel touches memory, so misuse from JS raises a
// TypeError/RangeError instead of corrupting memory or crashing.
#include <node_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "attention.h"
#include "common.h"
#include "convert.h"
#include "eigh.h"
#include "gemm.h"
#include "gram.h"

namespace transmla {
namespace {

enum class ErrKind { Type, Range, Generic };

struct JsError {
  ErrKind kind;
  std::string message;
};

[[noreturn]] void fail(ErrKind kind, const std::string& fn, const std::string& msg) {
  throw JsError{kind, "transmla native " + fn + ": " + msg};
}

void check(napi_env env, napi_status st, const char* what) {
  if (st != napi_ok) {
    const napi_extended_error_info* info = nullptr;
    napi_get_last_error_info(env, &info);
    throw JsError{ErrKind::Generic, std::string("transmla native: N-API call failed (") + what + "): " +
                                        (info && info->error_message ? info->error_message : "unknown")};
  }
}

struct Args {
  napi_env env;
  const char* fn;
  napi_value argv[16];
  size_t argc = 16;
};

Args get_args(napi_env env, napi_callback_info info, const char* fn, size_t min_argc) {
  Args a{env, fn, {}};
  check(env, napi_get_cb_info(env, info, &a.argc, a.argv, nullptr, nullptr), "get_cb_info");
  if (a.argc < min_argc) fail(ErrKind::Type, fn, "expected " + std::to_string(min_argc) + " arguments, got " + std::to_string(a.argc));
  return a;
}

struct View {
  void* data;
  size_t length;  // elements
  size_t bytes;
};

const char* typed_name(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_uint16_array: return "Uint16Array";
    default: return "another typed array";
  }
}

View get_typed(const Args& a, size_t idx, const char* name, napi_typedarray_type want) {
  bool is_typed = false;
  check(a.env, napi_is_typedarray(a.env, a.argv[idx], &is_typed), "is_typedarray");
  if (!is_typed) fail(ErrKind::Type, a.fn, std::string(name) + " must be a " + typed_name(want));
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t offset = 0;
  check(a.env, napi_get_typedarray_info(a.env, a.argv[idx], &type, &length, &data, &ab, &offset), "typedarray_info");
  if (type != want) fail(ErrKind::Type, a.fn, std::string(name) + " must be a " + typed_name(want) + ", got " + typed_name(type));
  const size_t el = want == napi_float64_array ? 8 : want == napi_float32_array ? 4 : 2;
  if (length > 0 && data == nullptr) fail(ErrKind::Generic, a.fn, std::string(name) + " has a detached buffer");
  return View{data, length, length * el};
}

// A non-negative integer (≤ 2^53) given as a JS number.
int64_t get_dim(const Args& a, size_t idx, const char* name) {
  napi_valuetype t;
  check(a.env, napi_typeof(a.env, a.argv[idx], &t), "typeof");
  if (t != napi_number) fail(ErrKind::Type, a.fn, std::string(name) + " must be a number");
  double v;
  check(a.env, napi_get_value_double(a.env, a.argv[idx], &v), "get_value_double");
  if (!std::isfinite(v) || v != std::floor(v) || v < 0 || v > 9007199254740992.0)
    fail(ErrKind::Range, a.fn, std::string(name) + " must be a non-negative integer, got " + std::to_string(v));
  return static_cast<int64_t>(v);
}

double get_number(const Args& a, size_t idx, const char* name) {
  napi_valuetype t;
  check(a.env, napi_typeof(a.env, a.argv[idx], &t), "typeof");
  if (t != napi_number) fail(ErrKind::Type, a.fn, std::string(name) + " must be a number");
  double v;
  check(a.env, napi_get_value_double(a.env, a.argv[idx], &v), "get_value_double");
  if (!std::isfinite(v)) fail(ErrKind::Range, a.fn, std::string(name) + " must be finite");
  return v;
}

// Booleans; an absent optional flag (undefined) counts as false.
bool get_flag(const Args& a, size_t idx, const char* name) {
  if (idx >= a.argc) return false;
  napi_valuetype t;
  check(a.env, napi_typeof(a.env, a.argv[idx], &t), "typeof");
  if (t == napi_undefined) return false;
  if (t != napi_boolean) fail(ErrKind::Type, a.fn, std::string(name) + " must be a boolean");
  bool b;
  check(a.env, napi_get_value_bool(a.env, a.argv[idx], &b), "get_value_bool");
  return b;
}

DType get_dtype(const Args& a, size_t idx, const char* name, bool allow_f32) {
  napi_valuetype t;
  check(a.env, napi_typeof(a.env, a.argv[idx], &t), "typeof");
  if (t == napi_string) {
    char buf[8] = {};
    size_t len = 0;
    check(a.env, napi_get_value_string_utf8(a.env, a.argv[idx], buf, sizeof buf, &len), "get_value_string");
    const std::string s(buf, len);
    if (s == "f32" && allow_f32) return DType::F32;
    if (s == "f16") return DType::F16;
    if (s == "bf16") return DType::BF16;
  }
  fail(ErrKind::Type, a.fn, std::string(name) + (allow_f32 ? " must be 'f32', 'f16' or 'bf16'" : " must be 'f16' or 'bf16'"));
}

// Lengths are compared in double: exact below 2^53, and anything larger cannot fit anyway.
void need_length(const Args& a, const View& v, double need, const char* name, const std::string& what) {
  if (double(v.length) < need)
    fail(ErrKind::Range, a.fn, std::string(name) + " is too short: need " + what + " = " + std::to_string(int64_t(need)) +
                                   " elements, got " + std::to_string(v.length));
}

void no_overlap(const Args& a, const View& out, const char* out_name, const View& in, const char* in_name) {
  const auto o0 = reinterpret_cast<uintptr_t>(out.data), i0 = reinterpret_cast<uintptr_t>(in.data);
  if (out.bytes > 0 && in.bytes > 0 && o0 < i0 + in.bytes && i0 < o0 + out.bytes)
    fail(ErrKind::Range, a.fn, std::string(out_name) + " must not overlap " + in_name);
}

napi_typedarray_type storage_of(DType t) { return t == DType::F32 ? napi_float32_array : napi_uint16_array; }

template <typename F>
napi_value guarded(napi_env env, F&& body) {
  try {
    return body();
  } catch (const JsError& e) {
    if (e.kind == ErrKind::Type) napi_throw_type_error(env, nullptr, e.message.c_str());
    else if (e.kind == ErrKind::Range) napi_throw_range_error(env, nullptr, e.message.c_str());
    else napi_throw_error(env, nullptr, e.message.c_str());
  } catch (const std::bad_alloc&) {
    napi_throw_error(env, nullptr, "transmla native: out of memory");
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, (std::string("transmla native ") + e.what()).c_str());
  }
  return nullptr;
}

napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// matmul(A, B, bType, C, M, N, K, transB, accumulate?)
napi_value Matmul(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "matmul", 8);
    const DType bt = get_dtype(a, 2, "bType", true);
    const View A = get_typed(a, 0, "A", napi_float32_array);
    const View B = get_typed(a, 1, "B", storage_of(bt));
    const View C = get_typed(a, 3, "C", napi_float32_array);
    const int64_t M = get_dim(a, 4, "M"), N = get_dim(a, 5, "N"), K = get_dim(a, 6, "K");
    const bool transB = get_flag(a, 7, "transB"), acc = get_flag(a, 8, "accumulate");
    need_length(a, A, double(M) * double(K), "A", "M*K");
    need_length(a, B, double(K) * double(N), "B", "K*N");
    need_length(a, C, double(M) * double(N), "C", "M*N");
    no_overlap(a, C, "C", A, "A");
    no_overlap(a, C, "C", B, "B");
    sgemm(static_cast<const float*>(A.data), K, false, B.data, bt, transB ? K : N, transB, static_cast<float*>(C.data), N, M,
          N, K, acc);
    return undefined(env);
  });
}

// matmulTN(A, B, C, M, N, K, accumulate?): C[M×N] (+)= A[K×M]ᵀ · B[K×N], all f32
napi_value MatmulTN(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "matmulTN", 6);
    const View A = get_typed(a, 0, "A", napi_float32_array);
    const View B = get_typed(a, 1, "B", napi_float32_array);
    const View C = get_typed(a, 2, "C", napi_float32_array);
    const int64_t M = get_dim(a, 3, "M"), N = get_dim(a, 4, "N"), K = get_dim(a, 5, "K");
    const bool acc = get_flag(a, 6, "accumulate");
    need_length(a, A, double(K) * double(M), "A", "K*M");
    need_length(a, B, double(K) * double(N), "B", "K*N");
    need_length(a, C, double(M) * double(N), "C", "M*N");
    no_overlap(a, C, "C", A, "A");
    no_overlap(a, C, "C", B, "B");
    sgemm(static_cast<const float*>(A.data), M, true, B.data, DType::F32, N, false, static_cast<float*>(C.data), N, M, N, K, acc);
    return undefined(env);
  });
}

// gemv(W, wType, x, y, N, K)
napi_value Gemv(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "gemv", 6);
    const DType wt = get_dtype(a, 1, "wType", true);
    const View W = get_typed(a, 0, "W", storage_of(wt));
    const View x = get_typed(a, 2, "x", napi_float32_array);
    const View y = get_typed(a, 3, "y", napi_float32_array);
    const int64_t N = get_dim(a, 4, "N"), K = get_dim(a, 5, "K");
    need_length(a, W, double(N) * double(K), "W", "N*K");
    need_length(a, x, double(K), "x", "K");
    need_length(a, y, double(N), "y", "N");
    no_overlap(a, y, "y", W, "W");
    no_overlap(a, y, "y", x, "x");
    if (N > 0 && K == 0) std::fill(static_cast<float*>(y.data), static_cast<float*>(y.data) + N, 0.0f);
    else if (N > 0) gemv_rows(W.data, wt, K, static_cast<const float*>(x.data), K, 1, static_cast<float*>(y.data), N, N, K, false);
    return undefined(env);
  });
}

View typed_value(const Args& a, napi_value val, const std::string& name, napi_typedarray_type want) {
  bool is_typed = false;
  check(a.env, napi_is_typedarray(a.env, val, &is_typed), "is_typedarray");
  if (!is_typed) fail(ErrKind::Type, a.fn, name + " must be a " + typed_name(want));
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t offset = 0;
  check(a.env, napi_get_typedarray_info(a.env, val, &type, &length, &data, &ab, &offset), "typedarray_info");
  if (type != want) fail(ErrKind::Type, a.fn, name + " must be a " + typed_name(want) + ", got " + typed_name(type));
  const size_t el = want == napi_float64_array ? 8 : want == napi_float32_array ? 4 : 2;
  if (length > 0 && data == nullptr) fail(ErrKind::Generic, a.fn, name + " has a detached buffer");
  return View{data, length, length * el};
}

uint32_t array_length(const Args& a, size_t idx, const char* name) {
  bool is_array = false;
  check(a.env, napi_is_array(a.env, a.argv[idx], &is_array), "is_array");
  if (!is_array) fail(ErrKind::Type, a.fn, std::string(name) + " must be an array");
  uint32_t n = 0;
  check(a.env, napi_get_array_length(a.env, a.argv[idx], &n), "array_length");
  return n;
}

napi_value element(const Args& a, size_t idx, uint32_t i) {
  napi_value v;
  check(a.env, napi_get_element(a.env, a.argv[idx], i, &v), "get_element");
  return v;
}

// gemvMulti(Ws: FloatData[], wType, x, ys: Float32Array[], Ns: number[], K)
napi_value GemvMulti(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "gemvMulti", 6);
    const DType wt = get_dtype(a, 1, "wType", true);
    const View x = get_typed(a, 2, "x", napi_float32_array);
    const int64_t K = get_dim(a, 5, "K");
    const uint32_t n = array_length(a, 0, "Ws");
    if (array_length(a, 3, "ys") != n || array_length(a, 4, "Ns") != n)
      fail(ErrKind::Range, a.fn, "Ws, ys and Ns must have the same length");
    if (n > uint32_t(kMaxGemvItems)) fail(ErrKind::Range, a.fn, "at most " + std::to_string(kMaxGemvItems) + " weights per call");
    need_length(a, x, double(K), "x", "K");
    GemvItem items[kMaxGemvItems];
    View ys[kMaxGemvItems], ws[kMaxGemvItems];
    for (uint32_t i = 0; i < n; ++i) {
      const std::string si = "[" + std::to_string(i) + "]";
      ws[i] = typed_value(a, element(a, 0, i), "Ws" + si, storage_of(wt));
      ys[i] = typed_value(a, element(a, 3, i), "ys" + si, napi_float32_array);
      napi_value nv = element(a, 4, i);
      napi_valuetype t;
      check(env, napi_typeof(env, nv, &t), "typeof");
      double d = -1;
      if (t == napi_number) check(env, napi_get_value_double(env, nv, &d), "get_value_double");
      if (!(d >= 0 && d == std::floor(d) && d <= 9007199254740992.0))
        fail(ErrKind::Range, a.fn, "Ns" + si + " must be a non-negative integer");
      const int64_t N = int64_t(d);
      if (double(ws[i].length) < double(N) * double(K)) fail(ErrKind::Range, a.fn, "Ws" + si + " is too short: need N*K");
      if (double(ys[i].length) < double(N)) fail(ErrKind::Range, a.fn, "ys" + si + " is too short: need N");
      items[i] = GemvItem{ws[i].data, static_cast<float*>(ys[i].data), N};
    }
    for (uint32_t i = 0; i < n; ++i) {
      const View yi{ys[i].data, size_t(items[i].N), size_t(items[i].N) * 4};
      no_overlap(a, yi, "ys[i]", x, "x");
      for (uint32_t j = 0; j < n; ++j) {
        no_overlap(a, yi, "ys[i]", ws[j], "Ws[j]");
        if (j != i) no_overlap(a, yi, "ys[i]", View{ys[j].data, size_t(items[j].N), size_t(items[j].N) * 4}, "ys[j]");
      }
    }
    gemv_multi(items, int(n), wt, static_cast<const float*>(x.data), K);
    return undefined(env);
  });
}

// gemvSwiGlu(Wg, Wu, wType, x, out, N, K)
napi_value GemvSwiGlu(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "gemvSwiGlu", 7);
    const DType wt = get_dtype(a, 2, "wType", true);
    const View Wg = get_typed(a, 0, "Wg", storage_of(wt));
    const View Wu = get_typed(a, 1, "Wu", storage_of(wt));
    const View x = get_typed(a, 3, "x", napi_float32_array);
    const View out = get_typed(a, 4, "out", napi_float32_array);
    const int64_t N = get_dim(a, 5, "N"), K = get_dim(a, 6, "K");
    need_length(a, Wg, double(N) * double(K), "Wg", "N*K");
    need_length(a, Wu, double(N) * double(K), "Wu", "N*K");
    need_length(a, x, double(K), "x", "K");
    need_length(a, out, double(N), "out", "N");
    no_overlap(a, out, "out", Wg, "Wg");
    no_overlap(a, out, "out", Wu, "Wu");
    no_overlap(a, out, "out", x, "x");
    gemv_swiglu(Wg.data, Wu.data, wt, static_cast<const float*>(x.data), static_cast<float*>(out.data), N, K);
    return undefined(env);
  });
}

// siluMul(gate, up, n): gate <- silu(gate)·up
napi_value SiluMul(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "siluMul", 3);
    const View g = get_typed(a, 0, "gate", napi_float32_array);
    const View u = get_typed(a, 1, "up", napi_float32_array);
    const int64_t n = get_dim(a, 2, "n");
    need_length(a, g, double(n), "gate", "n");
    need_length(a, u, double(n), "up", "n");
    no_overlap(a, g, "gate", u, "up");
    silu_mul(static_cast<float*>(g.data), static_cast<const float*>(u.data), n);
    return undefined(env);
  });
}

// toF32(src: Uint16Array, type, dst: Float32Array)
napi_value ToF32(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "toF32", 3);
    const DType t = get_dtype(a, 1, "type", false);
    const View src = get_typed(a, 0, "src", napi_uint16_array);
    const View dst = get_typed(a, 2, "dst", napi_float32_array);
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
    const DType t = get_dtype(a, 1, "type", false);
    const View src = get_typed(a, 0, "src", napi_float32_array);
    const View dst = get_typed(a, 2, "dst", napi_uint16_array);
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

// attention(q, tq, nHeads, nKvHeads, headDimK, headDimV, k, kTokenStride, v, vTokenStride, pos0, scale, out)
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
    const View k = get_typed(a, 6, "k", napi_float32_array);
    p.kTokenStride = get_dim(a, 7, "kTokenStride");
    const View v = get_typed(a, 8, "v", napi_float32_array);
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
    p.k = static_cast<const float*>(k.data);
    p.v = static_cast<const float*>(v.data);
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

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"matmul", nullptr, Matmul, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"matmulTN", nullptr, MatmulTN, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"gemv", nullptr, Gemv, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"gemvMulti", nullptr, GemvMulti, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"gemvSwiGlu", nullptr, GemvSwiGlu, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"siluMul", nullptr, SiluMul, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"toF32", nullptr, ToF32, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"fromF32", nullptr, FromF32, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"gramAccumulate", nullptr, GramAccumulate, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"eigh", nullptr, Eigh, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"attention", nullptr, Attention, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"threads", nullptr, Threads, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"effectiveThreads", nullptr, EffectiveThreads, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

}  // namespace
}  // namespace transmla

NAPI_MODULE(NODE_GYP_MODULE_NAME, transmla::Init)
