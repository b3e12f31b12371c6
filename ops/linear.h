// Matrix products.
#pragma once
#include "core/tensor.h"

namespace lvit::ops {

// Batched matmul: a [..., M, K] (or [..., K, M] with trans_a), b [..., K, N] (or [..., N, K]
// with trans_b) with equal leading dims, or b 2-D and shared across the batch (then trans_a must
// be false). Returns [..., M, N].
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// y = x w^T + b: x [..., in], w [out, in], b [out] or undefined. Bias add fused into the GEMM.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

}  // namespace lvit::ops
