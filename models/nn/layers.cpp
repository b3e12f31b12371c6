#include "models/nn/layers.h"

#include <cmath>

#include "ops/ops.h"

namespace lvit::nn {

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& init) {
  weight = register_parameter("weight", Tensor::empty({out, in}));
  trunc_normal_(weight, init, 0.02);
  if (has_bias) bias = register_parameter("bias", Tensor::zeros({out}));
}

Tensor Linear::forward(const Tensor& x) const {
  return ops::linear(ops::autocast(x), weight, bias);
}

LayerNorm::LayerNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones({dim}));
  bias = register_parameter("bias", Tensor::zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  return ops::layer_norm(x, weight, bias, eps, output_dtype(x));
}

std::optional<DType> LayerNorm::output_dtype(const Tensor& x) const {
  // Under mixed precision the f32 input is normalised straight into a bf16 output.
  return ops::autocast_applies(x) ? std::optional(DType::bf16) : std::nullopt;
}

Tensor Dropout::forward(const Tensor& x) const { return ops::dropout(x, p, is_training(), *gen_); }

Tensor Dropout::forward_linear_gelu(const Linear& fc, const Tensor& x) const {
  return ops::linear_gelu_dropout(ops::autocast(x), fc.weight, fc.bias, p, is_training(), *gen_);
}

ops::ResidualNorm Dropout::forward_linear_residual_norm(const Linear& fc, const Tensor& residual,
                                                        const Tensor& x,
                                                        const LayerNorm& norm) const {
  return ops::linear_add_dropout_norm(residual, ops::autocast(x), fc.weight, fc.bias, p,
                                      is_training(), *gen_, norm.weight, norm.bias, norm.eps,
                                      norm.output_dtype(residual));
}

Tensor DropPath::forward(const Tensor& x) const {
  return ops::drop_path(x, p, is_training(), *gen_);
}

MLP::MLP(int64_t dim, int64_t hidden, double dropout, Generator& init,
         std::shared_ptr<Generator> gen) {
  fc1 = register_module("fc1", std::make_shared<Linear>(dim, hidden, true, init));
  fc2 = register_module("fc2", std::make_shared<Linear>(hidden, dim, true, init));
  drop = std::make_shared<Dropout>(dropout, std::move(gen));
  register_module("drop", drop);
}

Tensor MLP::forward(const Tensor& x) const {
  return drop->forward(fc2->forward(drop->forward_linear_gelu(*fc1, x)));
}

ops::ResidualNorm MLP::forward_residual_norm(const Tensor& residual, const Tensor& x,
                                             const LayerNorm& norm) const {
  return drop->forward_linear_residual_norm(*fc2, residual, drop->forward_linear_gelu(*fc1, x),
                                            norm);
}

PatchEmbed::Proj::Proj(Tensor w, Tensor b) {
  weight = register_parameter("weight", std::move(w));
  bias = register_parameter("bias", std::move(b));
}

PatchEmbed::PatchEmbed(int64_t in_chans, int64_t dim, int64_t patch_, Generator& init)
    : patch(patch_) {
  // PyTorch's Conv2d default (kept by timm for the patch embedding): U(-1/sqrt(fan_in), ..).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_chans * patch * patch));
  Tensor w = Tensor::empty({dim, in_chans, patch, patch});
  uniform_(w, init, -bound, bound);
  Tensor b = Tensor::empty({dim});
  uniform_(b, init, -bound, bound);
  proj_ = register_module("proj", std::make_shared<Proj>(w, b));
}

Tensor PatchEmbed::forward(const Tensor& images) const {
  const Tensor& w = proj_->weight;
  return ops::linear(ops::autocast(ops::patchify(images, patch)),
                     ops::reshape(w, {w.shape()[0], -1}), proj_->bias);
}

}  // namespace lvit::nn
