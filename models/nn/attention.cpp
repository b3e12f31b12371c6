#include "models/nn/attention.h"

#include "ops/ops.h"

namespace lvit::nn {

Attention::Attention(int64_t dim_, int64_t heads_, double dropout, Generator& init,
                     std::shared_ptr<Generator> gen)
    : dim(dim_), heads(heads_) {
  LVIT_USER_CHECK(heads > 0 && dim % heads == 0, "--heads {} does not divide --dim {}", heads, dim);
  qkv = register_module("qkv", std::make_shared<Linear>(dim, 3 * dim, true, init));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim, true, init));
  proj_drop = std::make_shared<Dropout>(dropout, std::move(gen));
  register_module("proj_drop", proj_drop);
}

Tensor Attention::forward(const Tensor& x) const {
  return proj_drop->forward(proj->forward(mix(qkv->forward(x))));
}

ops::ResidualNorm Attention::forward_residual_norm(const Tensor& residual, const Tensor& x,
                                                   const LayerNorm& norm) const {
  return proj_drop->forward_linear_residual_norm(*proj, residual, mix(qkv->forward(x)), norm);
}

Tensor SoftmaxAttention::mix(const Tensor& qkv_out) const {
  return ops::softmax_attention(qkv_out, heads);
}

}  // namespace lvit::nn
