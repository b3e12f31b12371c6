// Optimizer steps and gradient-norm clipping over many parameter tensors at once (the CUDA half
// of models/optim/optimizer.cpp), and the per-step bf16 copies of the parameters for mixed
// precision (ops/autocast.h). Host-only header; f32 parameters, gradients and state.
//
// Multi-tensor: the launchers take the whole parameter list and pack it into kernel-argument
// tables of up to kTensorsPerLaunch tensors and kBlocksPerLaunch blocks, so a step over a ViT's
// ~150 tensors is a handful of launches instead of ~150 (PyTorch's multi_tensor_apply scheme).
// The tables travel by value in the kernel arguments: no host-to-device copy, nothing to keep
// alive, and a CUDA graph capture records them as they are.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace lvit::cuda {

struct AdamWParam {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t numel;
  bool decay;  // weight decay applies
};

// The per-step scalars, read from device memory so that a captured step replays with new ones.
struct AdamWScalars {
  float step_size;     // lr / (1 - b1^t)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - b2^t)
  float decay;         // 1 - lr * weight_decay: the multiplier of decayed parameters
};

// torch.optim.AdamW per element: p *= decay (decayed tensors); m = b1 m + (1-b1) g;
// v = b2 v + (1-b2) g^2; p -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps). With grad_scale
// (a device f32, or null) g is each gradient times *grad_scale: a gradient clip folded in
// (clip_grad_norm's coef_out), the same value as scaling the gradient in place first.
void adamw_step(const std::vector<AdamWParam>& params, float beta1, float beta2, float eps,
                const AdamWScalars* scalars, const float* grad_scale, cudaStream_t stream);

struct SGDParam {
  float* param;
  const float* grad;
  float* momentum_buffer;
  int64_t numel;
  float weight_decay;  // L2 added to the gradient (0 for undecayed parameters)
};

// torch.optim.SGD (no dampening): g += wd p; buf = first ? g : mom buf + g;
// p -= lr (nesterov ? g + mom buf : buf), lr read from the device scalar `lr`.
void sgd_step(const std::vector<SGDParam>& params, const float* lr, float momentum, bool nesterov,
              bool first_step, cudaStream_t stream);

// Global L2 norm of the gradients, and the clip: every gradient is scaled by
// coef = min(1, max_norm / (norm + 1e-6)). The norm is written to the device scalar `norm_out`
// (f64); the partial sums are in double and added in a fixed order (deterministic). No host
// sync. With `coef_out` (a device f32) coef is written there instead, and the gradients are
// left for the update to scale (adamw_step's grad_scale).
void clip_grad_norm(const std::vector<float*>& grads, const std::vector<int64_t>& numels,
                    double max_norm, double* norm_out, float* coef_out, cudaStream_t stream);

// dst = src rounded to bf16 (nearest even) for every pair: the parameters' bf16 GEMM operands
// of a mixed-precision step in a few launches instead of one per tensor.
struct CastPair {
  const float* src;
  void* dst_bf16;
  int64_t numel;
};
void cast_to_bf16_many(const std::vector<CastPair>& pairs, cudaStream_t stream);

inline constexpr int kTensorsPerLaunch = 64;
inline constexpr int kBlocksPerLaunch = 1536;

}  // namespace lvit::cuda
