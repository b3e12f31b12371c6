#include "models/nn/linear_attention.h"

#include "ops/hydra.h"

namespace lvit::nn {

RippleAttention::RippleAttention(int64_t dim_, int64_t heads_, double dropout, Generator& init,
                                 std::shared_ptr<Generator> gen, TokenLayout layout_,
                                 int64_t stages_)
    : Attention(dim_, heads_, dropout, init, std::move(gen)), layout(layout_), stages(stages_) {
  LVIT_USER_CHECK(layout.prefix == 1, "ripple attention needs exactly one class token, got {}",
                  layout.prefix);
  ops::check_ripple_geometry(stages, layout.grid_h, layout.grid_w);
  // Deterministic init (no draw from `init`), so the other parameters of a Ripple model get
  // the same values as those of the softmax model of the same seed.
  if (stages > 1)
    logits = register_parameter("ripple_logits", ops::ripple_init_logits(heads, stages));
}

Tensor RippleAttention::mix(const Tensor& qkv_out) const {
  return ops::ripple_attention(qkv_out, logits, heads, stages, layout.grid_h, layout.grid_w, impl);
}

HydraAttention::HydraAttention(int64_t dim_, int64_t heads_, double dropout, Generator& init,
                               std::shared_ptr<Generator> gen, int64_t branches_)
    : Attention(dim_, heads_, dropout, init, std::move(gen)), branches(branches_) {
  LVIT_USER_CHECK(branches >= 1 && dim % branches == 0,
                  "--hydra-branches {} does not divide --dim {}", branches, dim);
}

Tensor HydraAttention::mix(const Tensor& qkv_out) const {
  return ops::hydra_attention(qkv_out, branches);
}

}  // namespace lvit::nn
