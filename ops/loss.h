#pragma once
#include "core/tensor.h"

namespace lvit::ops {

// Mean softmax cross-entropy with label smoothing, fused and numerically stable (log-sum-exp):
// logits [B, C], labels i32/i64 [B]; target q = (1 - s) onehot(y) + s / C. Returns a scalar.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing = 0.0);
// Same with soft targets [B, C] (rows summing to 1; mixup/cutmix).
Tensor cross_entropy_soft(const Tensor& logits, const Tensor& targets);

}  // namespace lvit::ops
