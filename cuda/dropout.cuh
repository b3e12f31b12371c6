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

}  // namespace lvit::cuda
