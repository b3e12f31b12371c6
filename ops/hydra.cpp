// Hydra attention op: checks and the autograd node around ops/cpu/hydra.cpp.
#include "ops/hydra.h"

#include "autograd/engine.h"
#include "ops/cpu/hydra.h"
#include "ops/dispatch.h"

namespace lvit::ops {

Tensor hydra_attention(const Tensor& qkv_in, int64_t branches) {
  require_cpu("hydra_attention", {qkv_in});
  LVIT_CHECK(qkv_in.dim() == 3 && qkv_in.shape()[2] % 3 == 0,
             "hydra_attention: qkv {} must be [B, N, 3D]", shape_str(qkv_in.shape()));
  const int64_t B = qkv_in.shape()[0], N = qkv_in.shape()[1], D = qkv_in.shape()[2] / 3;
  LVIT_USER_CHECK(branches >= 1 && D % branches == 0,
                  "hydra attention: {} branches do not divide the width D = {}", branches, D);
  Tensor qkv = qkv_in.contiguous();
  Tensor out = Tensor::empty({B, N, D}, qkv.dtype(), qkv.device());
  Tensor kv = Tensor::empty({B, D}, qkv.dtype(), qkv.device());
  cpu::hydra_fwd(qkv, branches, out, kv);
  autograd::record(out, {qkv_in}, "HydraAttentionBackward",
                   [qkv = qkv.detach(), kv, branches](const Tensor& g, const autograd::Node&) {
                     Tensor gqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
                     cpu::hydra_bwd(g.contiguous(), qkv, kv, branches, gqkv);
                     return std::vector<Tensor>{gqkv};
                   });
  return out;
}

}  // namespace lvit::ops
