#pragma once
#include "core/tensor.h"

namespace lvit::cpu {

// Per-row loss and softmax probabilities of logits [B, C]. Targets are either hard labels
// (labels defined, smoothing s) or soft rows (targets defined).
void cross_entropy_fwd(const Tensor& logits, const Tensor& labels, const Tensor& targets,
                       double smoothing, Tensor& row_loss, Tensor& probs);
// glogits = (probs - q) * gscale.
void cross_entropy_bwd(const Tensor& probs, const Tensor& labels, const Tensor& targets,
                       double smoothing, double gscale, Tensor& glogits);

}  // namespace lvit::cpu
