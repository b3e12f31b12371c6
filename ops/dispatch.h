// Helpers shared by the op files: dtype dispatch and device checks.
#pragma once
#include "core/error.h"
#include "core/tensor.h"

#ifdef LVIT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

// Runs the body with `scalar_t` bound to float or double according to `dtype`.
#define LVIT_DISPATCH_FLOAT(dtype, NAME, ...)                                            \
  [&] {                                                                                  \
    switch (dtype) {                                                                     \
      case ::lvit::DType::f32: {                                                         \
        using scalar_t = float;                                                          \
        return __VA_ARGS__();                                                            \
      }                                                                                  \
      case ::lvit::DType::f64: {                                                         \
        using scalar_t = double;                                                         \
        return __VA_ARGS__();                                                            \
      }                                                                                  \
      default:                                                                           \
        throw ::lvit::Error(                                                             \
            ::fmt::format("{}: unsupported dtype {}", NAME, ::lvit::dtype_name(dtype))); \
    }                                                                                    \
  }()

namespace lvit::ops {

// All tensors on one device and of one floating dtype; returns that device.
Device check_same(const char* op, std::initializer_list<Tensor> ts);

// The op runs on the CPU backend only so far: throws for tensors on a GPU ("lvit was built
// without CUDA" in a CPU-only build).
void require_cpu(const char* op, std::initializer_list<Tensor> ts);

// Whether the op's (defined) tensors live on a GPU; throws "lvit was built without CUDA" for
// GPU tensors in a CPU-only build, so the CUDA branch after it is only reached with a backend:
//   if (on_cuda("layer_norm", {x})) {
//   #ifdef LVIT_WITH_CUDA
//     cuda::layernorm_fwd(..., cuda_stream(x));
//   #endif
//   } else { cpu::layernorm_fwd(...); }
bool on_cuda(const char* op, std::initializer_list<Tensor> ts);

#ifdef LVIT_WITH_CUDA
// The context stream of t's device, with that device made current for the calling thread (the
// launchers run on the current device).
cudaStream_t cuda_stream(const Tensor& t);
#endif

}  // namespace lvit::ops
