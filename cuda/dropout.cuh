// Dropout and drop-path masks on the device (the CUDA half of ops/dropout.cpp). Host-only
// header.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace lvit::cuda {

// y[i] = keep(i) ? x[i] / (1 - p) : 0 over n contiguous elements, keep(i) =
// Philox::uniform(seed, offset, i / group) >= p: the same numbers as the CPU kernel, so a seed
// gives the same mask on either device. group = 1 for dropout, the per-sample size for
// drop-path. f32 or f64.
void apply_mask(DType dtype, const void* x, void* y, int64_t n, double p, uint64_t seed,
                uint64_t offset, int64_t group, cudaStream_t stream);

// Fused GELU + dropout (exact GELU, same mask as apply_mask with group 1):
// y = keep ? gelu(x) / (1 - p) : 0 and gx = keep ? g gelu'(x) / (1 - p) : 0. f32, f64, bf16.
void gelu_dropout_fwd(DType dtype, const void* x, void* y, int64_t n, double p, uint64_t seed,
                      uint64_t offset, cudaStream_t stream);
void gelu_dropout_bwd(DType dtype, const void* g, const void* x, void* gx, int64_t n, double p,
                      uint64_t seed, uint64_t offset, cudaStream_t stream);

}  // namespace lvit::cuda
