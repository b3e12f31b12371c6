// The two linear attentions as Attention modules: their qkv/proj parameters and forward are the
// base class's (timm names: qkv.weight, qkv.bias, proj.weight, proj.bias); only the token
// mixing differs. See ops/ripple.h, ops/hydra.h and docs/attention.md for the math.
#pragma once
#include "models/nn/attention.h"
#include "ops/ripple.h"

namespace lvit::nn {

// Ripple attention with S stages over a class token plus a power-of-two square patch grid.
// Registers "ripple_logits" [heads, S-1] (only when S > 1), initialised to beta_s = -log(S-1-s)
// so that every stage weight starts at 1/S.
class RippleAttention final : public Attention {
 public:
  RippleAttention(int64_t dim, int64_t heads, double dropout, Generator& init,
                  std::shared_ptr<Generator> gen, TokenLayout layout, int64_t stages);
  TokenLayout layout;
  int64_t stages;
  Tensor logits;  // undefined when stages == 1
  // The kernel that mixes the tokens; all give the same result (tests compare them). The
  // linear form costs O(S n d^2) instead of O(n^2 d): break-even near n = d for S <= 3, 2-3x
  // faster at 257 tokens, d = 64 (docs/attention.md). `automatic`: linear on the CPU; on CUDA
  // the dense form on tensor cores for bf16 activations of up to 128 tokens.
  ops::RippleImpl impl = ops::RippleImpl::automatic;

 protected:
  Tensor mix(const Tensor& qkv) const override;
};

// Hydra attention with `branches` channel groups (1 = Bolya et al.'s Hydra). No parameters
// beyond the base class's; `heads` only has to divide dim, as for every Attention.
class HydraAttention final : public Attention {
 public:
  HydraAttention(int64_t dim, int64_t heads, double dropout, Generator& init,
                 std::shared_ptr<Generator> gen, int64_t branches);
  int64_t branches;

 protected:
  Tensor mix(const Tensor& qkv) const override;
};

}  // namespace lvit::nn
