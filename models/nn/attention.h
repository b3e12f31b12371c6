// Attention modules: qkv projection -> token mixing -> output projection -> dropout.
// The token-mixing step is what differs between softmax, Ripple and Hydra attention.
#pragma once
#include <memory>

#include "models/nn/layers.h"

namespace lvit::nn {

// Where the tokens sit: `prefix` class tokens, then a grid_h x grid_w patch grid (row-major).
struct TokenLayout {
  int64_t prefix = 1;
  int64_t grid_h = 8, grid_w = 8;
  int64_t tokens() const { return prefix + grid_h * grid_w; }
};

class Attention : public Module {
 public:
  Attention(int64_t dim, int64_t heads, double dropout, Generator& init,
            std::shared_ptr<Generator> gen);
  // x [B, N, D] -> [B, N, D]
  Tensor forward(const Tensor& x) const;
  // h = residual + forward(x) and norm(h), the final dropout fused with the residual add, proj
  // and the norm (Dropout::forward_linear_residual_norm).
  ops::ResidualNorm forward_residual_norm(const Tensor& residual, const Tensor& x,
                                          const LayerNorm& norm) const;
  int64_t dim, heads;
  std::shared_ptr<Linear> qkv, proj;
  std::shared_ptr<Dropout> proj_drop;

 protected:
  // qkv [B, N, 3D] -> [B, N, D]
  virtual Tensor mix(const Tensor& qkv) const = 0;
};

class SoftmaxAttention final : public Attention {
 public:
  using Attention::Attention;

 protected:
  Tensor mix(const Tensor& qkv) const override;
};

}  // namespace lvit::nn
