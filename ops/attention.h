// Multi-head attention mixing (the part between the qkv projection and the output projection).
// Input: the fused qkv projection output [B, N, 3D] (q, then k, then v; head h owns channels
// h*d .. h*d+d-1 of each, as timm). Output: [B, N, D] with heads in the same channel layout.
#pragma once
#include "core/tensor.h"

namespace lvit::ops {

// Softmax attention: o_i = sum_j softmax_j(q_i . k_j / sqrt(d)) v_j, per head. Fused forward
// and backward. On the CPU (f32, f64) it saves the attention probabilities [B, H, N, N]; on CUDA
// (f32, bf16; head dim 8, 16, 32, 64 or 128) flash-style kernels save only the per-row
// logsumexp [B, H, N] (cuda/attention.cuh).
Tensor softmax_attention(const Tensor& qkv, int64_t heads);

}  // namespace lvit::ops
