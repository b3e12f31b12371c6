// GELU and softmax on the device (the CUDA half of ops/activation.cpp). Host-only header;
// contiguous device tensors of the current device, f32 or f64.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace lvit::cuda {

// Exact GELU y = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2 over n elements, and its backward
// gx = g (Phi(x) + x phi(x)).
void gelu_fwd(DType dtype, const void* x, void* y, int64_t n, cudaStream_t stream);
void gelu_bwd(DType dtype, const void* g, const void* x, void* gx, int64_t n, cudaStream_t stream);

// Softmax over the last dimension of [M, N]; backward gx = y (g - sum_j g_j y_j).
void softmax_fwd(DType dtype, const void* x, void* y, int64_t M, int64_t N, cudaStream_t stream);
void softmax_bwd(DType dtype, const void* g, const void* y, void* gx, int64_t M, int64_t N,
                 cudaStream_t stream);

}  // namespace lvit::cuda
