#pragma once
#include "core/tensor.h"

namespace lvit::cpu {

// qkv [B, N, 3D] contiguous; out [B, N, D]; probs [B, H, N, N].
void softmax_attention_fwd(const Tensor& qkv, int64_t heads, Tensor& out, Tensor& probs);
// gout [B, N, D]; gqkv [B, N, 3D] (fully written).
void softmax_attention_bwd(const Tensor& gout, const Tensor& qkv, const Tensor& out,
                           const Tensor& probs, int64_t heads, Tensor& gqkv);

}  // namespace lvit::cpu
