#pragma once
#include "core/tensor.h"

namespace lvit::cpu {

// Exact GELU: y = x * Phi(x). All tensors contiguous, same shape.
void gelu_fwd(const Tensor& x, Tensor& y);
void gelu_bwd(const Tensor& g, const Tensor& x, Tensor& gx);
// Softmax over the last dimension of contiguous [M, N] tensors.
void softmax_fwd(const Tensor& x, Tensor& y);
void softmax_bwd(const Tensor& g, const Tensor& y, Tensor& gx);

}  // namespace lvit::cpu
