// Ripple attention (RippleViT), after Zheng, Pan & Kong, "Ripple Attention for Visual
// Perception with Sub-quadratic Complexity" (ICML 2022); exact math in DESIGN.md and
// docs/attention.md.
//
// Tokens: a class token, then a g x g patch grid in row-major order (token 1 + r g + c is cell
// (r, c)); g must be a power of two. Per head, with phi(x) = elu(x) + 1:
//   o_i = sum_j alpha_{lambda(i,j)} phi(q_i).phi(k_j) v_j
//         / (sum_j alpha_{lambda(i,j)} phi(q_i).phi(k_j) + 1e-6),
// lambda(i, j) = min(level of the smallest dyadic block holding cells i and j, S-1), and S-1 for
// any pair with the class token. The stage weights alpha_{h,0..S-1} are stick-breaking weights
// of the logits beta_{h,0..S-2}: alpha_s = sigmoid(beta_s) prod_{s'<s} (1 - sigmoid(beta_s')),
// alpha_{S-1} = prod_{s'<S-1} (1 - sigmoid(beta_s')). S = 1 is plain linear attention.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace lvit::ops {

enum class RippleImpl {
  automatic,  // CPU: linear; CUDA, bf16: dense on tensor cores where those kernels apply
              // (N <= 128, head width 16, 32 or 64; cuda::ripple_small_supported), else linear
  linear,     // telescoped dyadic-block form: O(S n d^2) time, O(n d) extra memory per head;
              // on CUDA in bf16 on tensor cores where cuda::ripple_linear_mma_supported (head
              // width 32 or 64, 1-4 stages, grids 4x4 to 32x32), else in f32
  dense,      // n x n weighted kernel per head: O(n^2 d) time, O(n^2) memory; on the CPU the
              // reference, on CUDA the bf16 tensor-core kernels (only there: an error otherwise)
};

// qkv [B, N, 3D] (q, then k, then v; head h owns channels h*d .. h*d+d-1 of each, as timm),
// logits [heads, stages-1] (undefined when stages == 1), N = 1 + grid_h * grid_w -> [B, N, D].
// Fused forward and hand-written backward for qkv and logits; saves qkv, the output and the
// denominators [B, H, N]. f32 and f64 on the CPU. On CUDA, bf16 runs the tensor-core kernels
// (f32 logits; denominators saved in f32; the output is not saved) where they apply, and
// otherwise the f32 linear kernels on widened activations; all with the stage weights and the
// logits' gradient computed on the device.
Tensor ripple_attention(const Tensor& qkv, const Tensor& logits, int64_t heads, int64_t stages,
                        int64_t grid_h, int64_t grid_w, RippleImpl impl = RippleImpl::automatic);

// Throws lvit::UserError (one line) unless 1 <= stages <= 32 and the grid is a power-of-two
// square.
void check_ripple_geometry(int64_t stages, int64_t grid_h, int64_t grid_w);

// The stage weights alpha [heads * stages] (row h: alpha_{h,0..S-1}, summing to 1) of logits
// [heads, stages-1]; alpha = 1 when stages == 1 (logits undefined).
std::vector<double> ripple_stage_weights(const Tensor& logits, int64_t heads, int64_t stages);

// Logits [heads, stages-1] with beta_s = -log(S-1-s), so that every alpha_s = 1/S.
Tensor ripple_init_logits(int64_t heads, int64_t stages, DType dtype = DType::f32);

}  // namespace lvit::ops
