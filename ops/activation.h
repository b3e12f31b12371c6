#pragma once
#include "core/tensor.h"

namespace lvit::ops {

Tensor gelu(const Tensor& x);     // exact (erf) GELU, as timm's nn.GELU
Tensor softmax(const Tensor& x);  // over the last dimension

}  // namespace lvit::ops
