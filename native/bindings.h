// The N-API functions defined in addon-misc.cc and addon-f64.cc, registered by Init in addon.cc.
#pragma once

#include <node_api.h>

namespace transmla {
namespace napi {

napi_value ToF32(napi_env env, napi_callback_info info);
napi_value FromF32(napi_env env, napi_callback_info info);
napi_value GramAccumulate(napi_env env, napi_callback_info info);
napi_value Eigh(napi_env env, napi_callback_info info);
napi_value Attention(napi_env env, napi_callback_info info);
napi_value Threads(napi_env env, napi_callback_info info);
napi_value EffectiveThreads(napi_env env, napi_callback_info info);
napi_value SetThreads(napi_env env, napi_callback_info info);
// addon-f64.cc
napi_value Dgemm(napi_env env, napi_callback_info info);
napi_value DgemmSeq(napi_env env, napi_callback_info info);
napi_value FidelityRows(napi_env env, napi_callback_info info);

}  // namespace napi
}  // namespace transmla
