#pragma once
#include "core/tensor.h"

namespace lvit::ops {

// Image to patch tokens: images [B, C, H, W] -> [B, (H/p)(W/p), C*p*p]. Token r*(W/p)+c holds
// the patch at grid row r, column c (row-major); features are ordered (channel, py, px), the
// flattening of a conv weight [D, C, p, p], so patch embedding is linear(patchify(x),
// W.view(D,-1)).
Tensor patchify(const Tensor& images, int64_t patch);

}  // namespace lvit::ops
