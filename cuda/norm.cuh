// LayerNorm over the last dimension on the device (the CUDA half of ops/norm.cpp). Host-only
// header; device pointers of the current device. x, w, b, mean, rstd and the gradients of x, w
// and b are f32 or f64 (`dtype`); y and its gradient g are of `dtype` too, or bf16 for an f32
// input (mixed precision: the f32 residual stream normalised straight into a bf16 GEMM operand).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>

#include "core/dtype.h"

namespace lvit::cuda {

// x, y [M, D]; w, b [D]; mean, rstd [M] saved for the backward. y = (x - mean) rstd w + b with
// rstd = 1 / sqrt(var + eps), var the biased variance (two passes: mean, then centred squares).
void layernorm_fwd(DType dtype, DType y_dtype, const void* x, const void* w, const void* b,
                   double eps, int64_t M, int64_t D, void* y, void* mean, void* rstd,
                   cudaStream_t stream);

// g, x [M, D]: gx [M, D] (may be null), gw and gb [D] (each may be null). With accumulate, x's
// gradient is added to what gx holds (gx += ...) instead of written over it.
void layernorm_bwd(DType dtype, DType g_dtype, const void* g, const void* x, const void* w,
                   const void* mean, const void* rstd, int64_t M, int64_t D, void* gx, void* gw,
                   void* gb, bool accumulate, cudaStream_t stream);

// The residual pass of a pre-norm block fused with the next LayerNorm's forward, for the
// mixed-precision stream (ops::linear_add_dropout_norm): a, h [M, D] f32, b and y [M, D] bf16,
// w, bias [D] f32, mean, rstd [M] f32. h = a + dropout(b, p) with the values and the mask of
// add_dropout_fwd for (seed, offset), and y, mean, rstd = layernorm_fwd(h) into bf16 (bit for
// bit those of the two kernels), in one pass. For D a multiple of 128 up to 1024 and 16-byte
// aligned pointers (add_dropout_layernorm_supported); anything else is an error.
bool add_dropout_layernorm_supported(int64_t D, std::initializer_list<const void*> ptrs);
void add_dropout_layernorm_fwd(const float* a, const void* b, double p, uint64_t seed,
                               uint64_t offset, const float* w, const float* bias, double eps,
                               int64_t M, int64_t D, float* h, void* y, float* mean, float* rstd,
                               cudaStream_t stream);

}  // namespace lvit::cuda
