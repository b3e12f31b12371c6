// Hydra attention (HydraViT), after Bolya et al., "Hydra Attention: Efficient Attention with
// Many Heads" (2022): as many heads as features with a cosine-similarity kernel, O(N D).
//
// The D channels are split into `branches` groups of D / branches channels; per token and
// branch, phi(x) = x / max(||x||_2, 1e-6) over the branch's channels (for q and k). Per image:
//   kv = sum_t phi(k_t) * v_t   (elementwise, a D-vector),   o_t = phi(q_t) * kv.
// branches = 1 is exactly Bolya et al.'s Hydra. No softmax, no denominator.
#pragma once
#include "core/tensor.h"

namespace lvit::ops {

// qkv [B, N, 3D] (q, then k, then v) -> [B, N, D]. Fused forward and hand-written backward
// (through the max(norm, eps) clamp); saves qkv and kv [B, D]. f32 and f64 on the CPU, f32 on
// CUDA.
// Throws lvit::UserError when `branches` does not divide D.
Tensor hydra_attention(const Tensor& qkv, int64_t branches);

}  // namespace lvit::ops
