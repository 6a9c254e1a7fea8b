// N-API glue for the float64 kernels of conversion and evaluation: dgemm (dgemm.h), dgemmSeq
// (dgemm-seq.h) and the KL/top-1 accumulator's rows (fidelity.h).
#include <node_api.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "dgemm-seq.h"
#include "dgemm.h"
#include "fidelity.h"
#include "napi-args.h"

namespace transmla {
namespace napi {

// dgemm / dgemmSeq(A: Float64Array, B: Float64Array, C: Float64Array, M, N, K, transB): one
// argument check for both products (dgemm.h, dgemm-seq.h).
using DgemmFn = void (*)(const double*, const double*, bool, double*, int64_t, int64_t, int64_t);

napi_value dgemm_call(napi_env env, napi_callback_info info, const char* name, DgemmFn fn) {
  return guarded(env, [&] {
    Args a = get_args(env, info, name, 7);
    const View A = get_typed(a, 0, "A", napi_float64_array);
    const View B = get_typed(a, 1, "B", napi_float64_array);
    const View C = get_typed(a, 2, "C", napi_float64_array);
    const int64_t M = get_dim(a, 3, "M"), N = get_dim(a, 4, "N"), K = get_dim(a, 5, "K");
    const bool transB = get_flag(a, 6, "transB");
    need_length(a, A, double(M) * double(K), "A", "M*K");
    need_length(a, B, double(K) * double(N), "B", "K*N");
    need_length(a, C, double(M) * double(N), "C", "M*N");
    no_overlap(a, C, "C", A, "A");
    no_overlap(a, C, "C", B, "B");
    fn(static_cast<const double*>(A.data), static_cast<const double*>(B.data), transB, static_cast<double*>(C.data), M, N, K);
    return undefined(env);
  });
}

napi_value Dgemm(napi_env env, napi_callback_info info) { return dgemm_call(env, info, "dgemm", dgemm); }
napi_value DgemmSeq(napi_env env, napi_callback_info info) { return dgemm_call(env, info, "dgemmSeq", dgemm_seq); }

// fidelityRows(logits: Float32Array[], rows, V, targets: Int32Array, out: Float64Array)
napi_value FidelityRows(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    Args a = get_args(env, info, "fidelityRows", 5);
    const uint32_t S = array_length(a, 0, "logits");
    if (S < 1) fail(ErrKind::Range, a.fn, "logits must hold the reference's rows at least");
    const int64_t rows = get_dim(a, 1, "rows"), V = get_dim(a, 2, "V");
    if (V < 1) fail(ErrKind::Range, a.fn, "V must be at least 1");
    const View targets = get_typed(a, 3, "targets", napi_int32_array);
    const View out = get_typed(a, 4, "out", napi_float64_array);
    need_length(a, targets, double(rows), "targets", "rows");
    need_length(a, out, double(rows) * double(S) * 3.0, "out", "rows*S*3");
    std::vector<const float*> L(S);
    for (uint32_t s = 0; s < S; ++s) {
      const View x = typed_value(a, element(a, 0, s), "logits[" + std::to_string(s) + "]", napi_float32_array);
      need_length(a, x, double(rows) * double(V), ("logits[" + std::to_string(s) + "]").c_str(), "rows*V");
      no_overlap(a, out, "out", x, "logits");
      L[s] = static_cast<const float*>(x.data);
    }
    const int32_t* t = static_cast<const int32_t*>(targets.data);
    for (int64_t r = 0; r < rows; ++r)
      if (t[r] < 0 || t[r] >= V) fail(ErrKind::Range, a.fn, "targets[" + std::to_string(r) + "] = " + std::to_string(t[r]) + " is outside the vocabulary of " + std::to_string(V));
    fidelity_rows(L.data(), S, rows, V, t, static_cast<double*>(out.data));
    return undefined(env);
  });
}

}  // namespace napi
}  // namespace transmla
