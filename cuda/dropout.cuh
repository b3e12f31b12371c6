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

// Fused GELU + dropout (exact GELU, same mask as apply_mask with group 1), forward only:
// y = keep ? gelu(x) / (1 - p) : 0 and, unless dydx is null, dydx = keep ? gelu'(x) / (1 - p) : 0
// (the local derivative, saved instead of x so that the backward is one multiply, g * dydx,
// with no Philox or erf to recompute). f32, f64, bf16; y and dydx in x's dtype.
void gelu_dropout_fwd(DType dtype, const void* x, void* y, void* dydx, int64_t n, double p,
                      uint64_t seed, uint64_t offset, cudaStream_t stream);

// The residual add fused with the dropout of its branch (ops::add_dropout), over n contiguous
// elements with apply_mask's mask (group 1). Forward: out = x + d with d = keep ? y / (1 - p) : 0
// rounded to y's dtype first (the value the separate dropout would store). Backward:
// gy = keep ? g / (1 - p) : 0 in y's dtype (x's gradient is g itself). `rdtype` is that of the
// residual x, out and g; `ydtype` that of the branch y and gy: equal (f32 or f64), or f32 with
// a bf16 branch (mixed precision).
void add_dropout_fwd(DType rdtype, const void* x, DType ydtype, const void* y, void* out, int64_t n,
                     double p, uint64_t seed, uint64_t offset, cudaStream_t stream);
void add_dropout_bwd(DType rdtype, const void* g, DType ydtype, void* gy, int64_t n, double p,
                     uint64_t seed, uint64_t offset, cudaStream_t stream);

}  // namespace lvit::cuda
