// Differentiable shape ops. reshape/permute/transpose/slice return views that share storage
// where the layout allows; concat copies.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace lvit::ops {

Tensor reshape(const Tensor& x, const Shape& shape);  // one -1 allowed; copies if not viewable
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
// Elements [start, end) along `dim` (a view).
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// Splits along `dim` into pieces of the given sizes (views).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// A contiguous copy when needed; gradient passes through.
Tensor contiguous(const Tensor& x);

}  // namespace lvit::ops
