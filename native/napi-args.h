// N-API argument helpers shared by the binding files: every argument is validated (typed-array
// kinds, integer dimensions, buffer lengths, output/input overlap) before a kernel touches
// memory, so misuse from JS raises a TypeError/RangeError instead of corrupting memory.
#pragma once

#include <node_api.h>

#include <cmath>
#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "common.h"

namespace transmla {
namespace napi {
enum class ErrKind { Type, Range, Generic };

struct JsError {
  ErrKind kind;
  std::string message;
};

[[noreturn]] inline void fail(ErrKind kind, const std::string& fn, const std::string& msg) {
  throw JsError{kind, "transmla native " + fn + ": " + msg};
}

inline void check(napi_env env, napi_status st, const char* what) {
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

inline Args get_args(napi_env env, napi_callback_info info, const char* fn, size_t min_argc) {
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

inline const char* typed_name(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_int32_array: return "Int32Array";
    default: return "another typed array";
  }
}

inline size_t element_size(napi_typedarray_type t) {
  return t == napi_float64_array ? 8 : t == napi_float32_array || t == napi_int32_array ? 4 : t == napi_uint16_array ? 2 : 1;
}

inline View get_typed(const Args& a, size_t idx, const char* name, napi_typedarray_type want) {
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
  if (length > 0 && data == nullptr) fail(ErrKind::Generic, a.fn, std::string(name) + " has a detached buffer");
  return View{data, length, length * element_size(want)};
}

// A non-negative integer (≤ 2^53) given as a JS number.
inline int64_t get_dim(const Args& a, size_t idx, const char* name) {
  napi_valuetype t;
  check(a.env, napi_typeof(a.env, a.argv[idx], &t), "typeof");
  if (t != napi_number) fail(ErrKind::Type, a.fn, std::string(name) + " must be a number");
  double v;
  check(a.env, napi_get_value_double(a.env, a.argv[idx], &v), "get_value_double");
  if (!std::isfinite(v) || v != std::floor(v) || v < 0 || v > 9007199254740992.0)
    fail(ErrKind::Range, a.fn, std::string(name) + " must be a non-negative integer, got " + std::to_string(v));
  return static_cast<int64_t>(v);
}

inline double get_number(const Args& a, size_t idx, const char* name) {
  napi_valuetype t;
  check(a.env, napi_typeof(a.env, a.argv[idx], &t), "typeof");
  if (t != napi_number) fail(ErrKind::Type, a.fn, std::string(name) + " must be a number");
  double v;
  check(a.env, napi_get_value_double(a.env, a.argv[idx], &v), "get_value_double");
  if (!std::isfinite(v)) fail(ErrKind::Range, a.fn, std::string(name) + " must be finite");
  return v;
}

// Booleans; an absent optional flag (undefined) counts as false.
inline bool get_flag(const Args& a, size_t idx, const char* name) {
  if (idx >= a.argc) return false;
  napi_valuetype t;
  check(a.env, napi_typeof(a.env, a.argv[idx], &t), "typeof");
  if (t == napi_undefined) return false;
  if (t != napi_boolean) fail(ErrKind::Type, a.fn, std::string(name) + " must be a boolean");
  bool b;
  check(a.env, napi_get_value_bool(a.env, a.argv[idx], &b), "get_value_bool");
  return b;
}

// Which dtype names an argument accepts.
enum DTypeSet : unsigned { kF32 = 1, kHalf = 2, kQuant = 4 };

inline DType get_dtype(const Args& a, size_t idx, const char* name, unsigned allowed) {
  napi_valuetype t;
  check(a.env, napi_typeof(a.env, a.argv[idx], &t), "typeof");
  if (t == napi_string) {
    char buf[8] = {};
    size_t len = 0;
    check(a.env, napi_get_value_string_utf8(a.env, a.argv[idx], buf, sizeof buf, &len), "get_value_string");
    const std::string s(buf, len);
    if (s == "f32" && (allowed & kF32)) return DType::F32;
    if (s == "f16" && (allowed & kHalf)) return DType::F16;
    if (s == "bf16" && (allowed & kHalf)) return DType::BF16;
    if (s == "q8_0" && (allowed & kQuant)) return DType::Q8_0;
    if (s == "q4_0" && (allowed & kQuant)) return DType::Q4_0;
  }
  std::string names;
  if (allowed & kF32) names += "'f32', ";
  if (allowed & kHalf) names += "'f16', 'bf16', ";
  if (allowed & kQuant) names += "'q8_0', 'q4_0', ";
  fail(ErrKind::Type, a.fn, std::string(name) + " must be one of " + names.substr(0, names.size() - 2));
}

// Lengths are compared in double: exact below 2^53, and anything larger cannot fit anyway.
inline void need_length(const Args& a, const View& v, double need, const char* name, const std::string& what) {
  if (double(v.length) < need)
    fail(ErrKind::Range, a.fn, std::string(name) + " is too short: need " + what + " = " + std::to_string(int64_t(need)) +
                                   " elements, got " + std::to_string(v.length));
}

inline void no_overlap(const Args& a, const View& out, const char* out_name, const View& in, const char* in_name) {
  const auto o0 = reinterpret_cast<uintptr_t>(out.data), i0 = reinterpret_cast<uintptr_t>(in.data);
  if (out.bytes > 0 && in.bytes > 0 && o0 < i0 + in.bytes && i0 < o0 + out.bytes)
    fail(ErrKind::Range, a.fn, std::string(out_name) + " must not overlap " + in_name);
}

inline napi_typedarray_type storage_of(DType t) {
  return t == DType::F32 ? napi_float32_array : is_quant(t) ? napi_uint8_array : napi_uint16_array;
}

// Checks that a weight of N rows × K of dtype t fits in w (elements for floats, bytes of whole
// blocks for quantized types, whose K must be a multiple of 32).
inline void need_weight(const Args& a, const View& w, DType t, int64_t N, int64_t K, const char* name) {
  if (!is_quant(t)) {
    need_length(a, w, double(N) * double(K), name, "N*K");
    return;
  }
  const char* tn = t == DType::Q8_0 ? "q8_0" : "q4_0";
  if (K % kQK != 0)
    fail(ErrKind::Range, a.fn, std::string(name) + ": K = " + std::to_string(K) + " is not a multiple of " + std::to_string(kQK) +
                                   ", the " + tn + " block size");
  need_length(a, w, double(N) * double(quant_row_bytes(t, K)), name, std::string("bytes of N×K ") + tn);
}

template <typename F>
inline napi_value guarded(napi_env env, F&& body) {
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

inline napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

inline View typed_value(const Args& a, napi_value val, const std::string& name, napi_typedarray_type want) {
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
  if (length > 0 && data == nullptr) fail(ErrKind::Generic, a.fn, name + " has a detached buffer");
  return View{data, length, length * element_size(want)};
}

inline uint32_t array_length(const Args& a, size_t idx, const char* name) {
  bool is_array = false;
  check(a.env, napi_is_array(a.env, a.argv[idx], &is_array), "is_array");
  if (!is_array) fail(ErrKind::Type, a.fn, std::string(name) + " must be an array");
  uint32_t n = 0;
  check(a.env, napi_get_array_length(a.env, a.argv[idx], &n), "array_length");
  return n;
}

inline napi_value element(const Args& a, size_t idx, uint32_t i) {
  napi_value v;
  check(a.env, napi_get_element(a.env, a.argv[idx], i, &v), "get_element");
  return v;
}

}  // namespace napi
}  // namespace transmla
