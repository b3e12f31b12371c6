// Column sums on the device: the bias gradients of linear layers, alone or made in the same pass
// as the gradient they sum. Host-only header.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace lvit::cuda {

// out[j] = sum_i x[i, j] for a contiguous row-major x [M, N] (the bias gradient of a linear
// layer), accumulated in fp32 (f64 for f64) in a fixed order: deterministic. out is of x's
// dtype, or f32 for bf16 x.
void column_sums(DType dtype, DType out_dtype, const void* x, int64_t M, int64_t N, void* out,
                 cudaStream_t stream);

// prod [M, N] = x * d elementwise (rounded to dtype, as ops::mul writes it) and out = the column
// sums of prod, as column_sums computes them (the same values bit for bit), in one pass: a
// linear layer's output gradient that is a product (GELU + dropout's backward) and its bias
// gradient without reading the product back.
void column_sums_of_product(DType dtype, DType out_dtype, const void* x, const void* d, int64_t M,
                            int64_t N, void* prod, void* out, cudaStream_t stream);

// gy [M, N] = add_dropout_bwd's branch gradient of g [M, N] (keep ? g / (1 - p) : 0 with the
// mask of seed and offset, in ydtype; see cuda/dropout.cuh) and out = the column sums of gy as
// column_sums computes them (bit for bit): the gradient of a linear layer whose output is a
// residual branch's dropout, with its bias gradient. One pass for an f32 g, a bf16 gy and
// N % 8 == 0 (mixed precision), else add_dropout_bwd and column_sums.
void dropout_grad_column_sums(DType gdtype, const void* g, DType ydtype, void* gy, int64_t M,
                              int64_t N, double p, uint64_t seed, uint64_t offset, DType out_dtype,
                              void* out, cudaStream_t stream);

}  // namespace lvit::cuda
