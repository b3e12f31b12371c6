#pragma once
#include "core/tensor.h"

namespace lvit::ops {

// LayerNorm over the last dimension: x [..., D], weight and bias [D]. Fused forward/backward.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-6);

}  // namespace lvit::ops
