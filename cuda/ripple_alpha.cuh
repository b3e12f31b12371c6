// The stick-breaking stage weights of Ripple attention on the device (kernel files only), as
// ops/ripple.cpp computes them on the host: alpha_s = sigmoid(beta_s) prod_{s'<s} (1 -
// sigmoid(beta_s')) for s < S-1, alpha_{S-1} = prod_{s'<S-1} (1 - sigmoid(beta_s')). Shared by
// the linear-form kernels (cuda/ripple.cu) and the dense tensor-core ones (cuda/ripple_small.cu),
// so that both read the same f64 weights out of the f32 logits.
#pragma once
#include <cuda_runtime.h>

namespace lvit::cuda::ripple_detail {

// sigmoid(x) in f64, without overflow for either sign.
__device__ __forceinline__ double sigmoid_f64(double x) {
  return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
}

// fn(s, alpha_s) for s = 0 .. S-1 in order, beta_s = logit(s) (s < S-1; not called when
// S == 1: alpha = {1}). The one f64 stick-breaking every kernel uses.
template <typename Logit, typename Fn>
__device__ __forceinline__ void for_stage_weights(int S, Logit&& logit, Fn&& fn) {
  double rem = 1.0;  // prod_{s' < s} (1 - sigmoid(beta_s'))
  for (int s = 0; s + 1 < S; ++s) {
    const double sg = sigmoid_f64(logit(s));
    fn(s, sg * rem);
    rem *= 1 - sg;
  }
  fn(S - 1, rem);
}

// alpha[0 .. S-1] of head h from logits [H, S-1].
__device__ inline void stage_weights(const float* logits, int h, int S, double* alpha) {
  for_stage_weights(
      S, [&](int s) { return static_cast<double>(logits[h * (S - 1) + s]); },
      [&](int s, double a) { alpha[s] = a; });
}

}  // namespace lvit::cuda::ripple_detail
