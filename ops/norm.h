#pragma once
#include <optional>

#include "core/tensor.h"

namespace lvit::ops {

// LayerNorm over the last dimension: x [..., D], weight and bias [D]. Fused forward/backward.
// `out_dtype` bf16 (GPU, f32 x) writes the output in bf16 with the statistics and the affine map
// in fp32: the mixed-precision LayerNorm that feeds a bf16 GEMM; the gradient of x stays f32.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-6,
                  std::optional<DType> out_dtype = std::nullopt);

namespace detail {
// Throws unless weight and bias are [D] for an input of shape xs (D = its last dimension).
void check_layer_norm_params(const Shape& xs, const Tensor& weight, const Tensor& bias);
// For ops that produce a LayerNorm's output in a fused pass (ops::linear_add_dropout_norm):
// records y = layer_norm(x, weight, bias) with the node layer_norm records, from its saved
// tensors: x2 = x as [M, D] contiguous, w = weight contiguous, mean and rstd [M].
void record_layer_norm(Tensor& y, const Tensor& x, const Tensor& x2, const Tensor& w,
                       const Tensor& mean, const Tensor& rstd, const Tensor& weight,
                       const Tensor& bias);
}  // namespace detail

}  // namespace lvit::ops
