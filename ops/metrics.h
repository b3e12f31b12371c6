#pragma once
#include <vector>

#include "core/tensor.h"

namespace lvit::ops {

// For logits [B, C] and labels [B]: number of samples whose label is among the top-k logits.
int64_t topk_correct(const Tensor& logits, const Tensor& labels, int64_t k);
// count (an i64 scalar on the logits' device) += topk_correct(logits, labels, 1), without a
// round trip to the host on a GPU: training steps keep their accuracy on the device and read it
// once per epoch.
void add_top1_correct_(const Tensor& logits, const Tensor& labels, Tensor& count);
// Top-1 predictions [B] (argmax, first index on ties).
std::vector<int64_t> argmax_rows(const Tensor& logits);

}  // namespace lvit::ops
