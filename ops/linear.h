// Matrix products.
#pragma once
#include <optional>

#include "core/rng.h"
#include "core/tensor.h"

namespace lvit::ops {

// Batched matmul: a [..., M, K] (or [..., K, M] with trans_a), b [..., K, N] (or [..., N, K]
// with trans_b) with equal leading dims, or b 2-D and shared across the batch (then trans_a must
// be false). Returns [..., M, N].
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// y = x w^T + b: x [..., in], w [out, in], b [out] or undefined. Bias add fused into the GEMM.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

// gelu_dropout(linear(x, w, b), p, training, gen) (the same values and mask). On the GPU in
// training it is one autograd node whose backward makes the GELU + dropout product and the
// bias gradient (its column sums) in one pass, instead of a multiply and then column sums that
// read the product back. Elsewhere it is the two ops.
Tensor linear_gelu_dropout(const Tensor& x, const Tensor& w, const Tensor& b, double p,
                           bool training, Generator& gen);

// add_dropout(residual, linear(x, w, b), p, training, gen) (the same values and mask): a
// residual branch that ends in a linear layer and dropout. On the GPU in training it is one
// autograd node whose backward makes the branch gradient (the dropout's) and the bias gradient
// (its column sums) in one pass, instead of the mask pass and then column sums that read the
// gradient back. Elsewhere it is the two ops.
Tensor linear_add_dropout(const Tensor& residual, const Tensor& x, const Tensor& w, const Tensor& b,
                          double p, bool training, Generator& gen);

// The residual stream after a block's branch (h) and its LayerNorm (y).
struct ResidualNorm {
  Tensor h, y;
};

// A pre-norm block's residual branch and the next LayerNorm: h = linear_add_dropout(residual,
// x, w, b, p, training, gen) and y = layer_norm(h, norm_weight, norm_bias, eps, out_dtype), the
// same values, masks and autograd nodes as those two ops. On the GPU in training, for the
// mixed-precision stream (f32 residual, bf16 x and y, rows of a multiple of 128 up to 1024),
// the residual pass and the norm's forward are one kernel: h is written once and not read
// back.
ResidualNorm linear_add_dropout_norm(const Tensor& residual, const Tensor& x, const Tensor& w,
                                     const Tensor& b, double p, bool training, Generator& gen,
                                     const Tensor& norm_weight, const Tensor& norm_bias, double eps,
                                     std::optional<DType> out_dtype);

}  // namespace lvit::ops
