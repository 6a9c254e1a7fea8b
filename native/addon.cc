// N-API glue for the matrix products (argument validation helpers in napi-args.h; the other
// bindings in addon-misc.cc) and the module's export table.
#include <node_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "bindings.h"
#include "common.h"
#include "gemm.h"
#include "napi-args.h"

namespace transmla {
namespace napi {

// matmul(A, B, bType, C, M, N, K, transB, accumulate?)
napi_value Matmul(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "matmul", 8);
    const DType bt = get_dtype(a, 2, "bType", kF32 | kHalf | kQuant);
    const View A = get_typed(a, 0, "A", napi_float32_array);
    const View B = get_typed(a, 1, "B", storage_of(bt));
    const View C = get_typed(a, 3, "C", napi_float32_array);
    const int64_t M = get_dim(a, 4, "M"), N = get_dim(a, 5, "N"), K = get_dim(a, 6, "K");
    const bool transB = get_flag(a, 7, "transB"), acc = get_flag(a, 8, "accumulate");
    need_length(a, A, double(M) * double(K), "A", "M*K");
    if (is_quant(bt) && !transB) fail(ErrKind::Range, a.fn, "a quantized B must be a weight [N×K] (transB = true): its blocks run along K");
    need_weight(a, B, bt, N, K, "B");
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
    const DType wt = get_dtype(a, 1, "wType", kF32 | kHalf | kQuant);
    const View W = get_typed(a, 0, "W", storage_of(wt));
    const View x = get_typed(a, 2, "x", napi_float32_array);
    const View y = get_typed(a, 3, "y", napi_float32_array);
    const int64_t N = get_dim(a, 4, "N"), K = get_dim(a, 5, "K");
    need_weight(a, W, wt, N, K, "W");
    need_length(a, x, double(K), "x", "K");
    need_length(a, y, double(N), "y", "N");
    no_overlap(a, y, "y", W, "W");
    no_overlap(a, y, "y", x, "x");
    if (N > 0 && K == 0) std::fill(static_cast<float*>(y.data), static_cast<float*>(y.data) + N, 0.0f);
    else if (N > 0) gemv_rows(W.data, wt, K, static_cast<const float*>(x.data), K, 1, static_cast<float*>(y.data), N, N, K, false);
    return undefined(env);
  });
}


// gemvMulti(Ws: FloatData[], wType, x, ys: Float32Array[], Ns: number[], K)
napi_value GemvMulti(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "gemvMulti", 6);
    const DType wt = get_dtype(a, 1, "wType", kF32 | kHalf | kQuant);
    const View x = get_typed(a, 2, "x", napi_float32_array);
    const int64_t K = get_dim(a, 5, "K");
    if (is_quant(wt) && K % kQK != 0)
      fail(ErrKind::Range, a.fn, "K = " + std::to_string(K) + " is not a multiple of " + std::to_string(kQK) + ", the block size of quantized weights");
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
      const double need = is_quant(wt) ? double(N) * double(quant_row_bytes(wt, K)) : double(N) * double(K);
      if (double(ws[i].length) < need) fail(ErrKind::Range, a.fn, "Ws" + si + " is too short: need " + std::to_string(int64_t(need)) + (is_quant(wt) ? " bytes" : " elements"));
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
    const DType wt = get_dtype(a, 2, "wType", kF32 | kHalf | kQuant);
    const View Wg = get_typed(a, 0, "Wg", storage_of(wt));
    const View Wu = get_typed(a, 1, "Wu", storage_of(wt));
    const View x = get_typed(a, 3, "x", napi_float32_array);
    const View out = get_typed(a, 4, "out", napi_float32_array);
    const int64_t N = get_dim(a, 5, "N"), K = get_dim(a, 6, "K");
    need_weight(a, Wg, wt, N, K, "Wg");
    need_weight(a, Wu, wt, N, K, "Wu");
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

// rmsNorm(x, T, D, w, eps, out): out may be x itself, or disjoint from it
napi_value RmsNorm(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "rmsNorm", 6);
    const View x = get_typed(a, 0, "x", napi_float32_array);
    const int64_t T = get_dim(a, 1, "T"), D = get_dim(a, 2, "D");
    const View w = get_typed(a, 3, "w", napi_float32_array);
    double eps = 0;
    if (napi_get_value_double(env, a.argv[4], &eps) != napi_ok) fail(ErrKind::Type, a.fn, "eps must be a number");
    const View out = get_typed(a, 5, "out", napi_float32_array);
    need_length(a, x, double(T) * double(D), "x", "T*D");
    need_length(a, w, double(D), "w", "D");
    need_length(a, out, double(T) * double(D), "out", "T*D");
    if (out.data != x.data) no_overlap(a, out, "out", x, "x");
    no_overlap(a, out, "out", w, "w");
    rms_norm(static_cast<const float*>(x.data), T, D, static_cast<const float*>(w.data), eps, static_cast<float*>(out.data));
    return undefined(env);
  });
}

// addInPlace(x, y, n): x += y
napi_value AddInPlace(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "addInPlace", 3);
    const View x = get_typed(a, 0, "x", napi_float32_array);
    const View y = get_typed(a, 1, "y", napi_float32_array);
    const int64_t n = get_dim(a, 2, "n");
    need_length(a, x, double(n), "x", "n");
    need_length(a, y, double(n), "y", "n");
    no_overlap(a, x, "x", y, "y");
    add_in_place(static_cast<float*>(x.data), static_cast<const float*>(y.data), n);
    return undefined(env);
  });
}

// toF32(src: Uint16Array, type, dst: Float32Array)

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"matmul", nullptr, Matmul, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"matmulTN", nullptr, MatmulTN, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"gemv", nullptr, Gemv, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"gemvMulti", nullptr, GemvMulti, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"gemvSwiGlu", nullptr, GemvSwiGlu, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"siluMul", nullptr, SiluMul, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"rmsNorm", nullptr, RmsNorm, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"addInPlace", nullptr, AddInPlace, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"toF32", nullptr, ToF32, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"fromF32", nullptr, FromF32, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"gramAccumulate", nullptr, GramAccumulate, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"eigh", nullptr, Eigh, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"attention", nullptr, Attention, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"threads", nullptr, Threads, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"effectiveThreads", nullptr, EffectiveThreads, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"dgemm", nullptr, Dgemm, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"dgemmSeq", nullptr, DgemmSeq, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"fidelityRows", nullptr, FidelityRows, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}


}  // namespace napi
}  // namespace transmla

NAPI_MODULE(NODE_GYP_MODULE_NAME, transmla::napi::Init)
