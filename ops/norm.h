#pragma once
#include <optional>

#include "core/tensor.h"

namespace lvit::ops {

// LayerNorm over the last dimension: x [..., D], weight and bias [D]. Fused forward/backward.
// `out_dtype` bf16 (GPU, f32 x) writes the output in bf16 with the statistics and the affine map
// in fp32: the mixed-precision LayerNorm that feeds a bf16 GEMM; the gradient of x stays f32.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-6,
                  std::optional<DType> out_dtype = std::nullopt);

}  // namespace lvit::ops
