// Reductions and their adjoint, broadcasting.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace lvit::ops {

// Sum/mean over `axes` (negative counts from the back; empty = all axes).
Tensor sum(const Tensor& x, std::vector<int64_t> axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int64_t> axes = {}, bool keepdim = false);
// Sums x down to `shape` (which broadcasts to x's shape): the backward of broadcasting.
Tensor sum_to(const Tensor& x, const Shape& shape);
// Materialises x broadcast to `shape`: the backward of sum_to.
Tensor broadcast_to(const Tensor& x, const Shape& shape);

}  // namespace lvit::ops
