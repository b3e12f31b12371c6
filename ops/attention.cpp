#include "ops/attention.h"

#include "autograd/engine.h"
#include "ops/cpu/attention.h"
#include "ops/dispatch.h"

namespace lvit::ops {

namespace {
void check_qkv(const Tensor& qkv, int64_t heads, const char* op) {
  LVIT_CHECK(qkv.dim() == 3 && qkv.shape()[2] % 3 == 0, "{}: qkv {} must be [B, N, 3D]", op,
             shape_str(qkv.shape()));
  LVIT_CHECK(heads > 0 && (qkv.shape()[2] / 3) % heads == 0, "{}: {} heads do not divide D = {}",
             op, heads, qkv.shape()[2] / 3);
}
}  // namespace

Tensor softmax_attention(const Tensor& qkv_in, int64_t heads) {
  require_cpu("softmax_attention", {qkv_in});
  check_qkv(qkv_in, heads, "softmax_attention");
  Tensor qkv = qkv_in.contiguous();
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3;
  Tensor out = Tensor::empty({B, N, D}, qkv.dtype(), qkv.device());
  Tensor probs = Tensor::empty({B, heads, N, N}, qkv.dtype(), qkv.device());
  cpu::softmax_attention_fwd(qkv, heads, out, probs);
  autograd::record(out, {qkv_in}, "SoftmaxAttentionBackward",
                   [qkv = qkv.detach(), out = out.detach(), probs, heads](const Tensor& g,
                                                                          const autograd::Node&) {
                     Tensor gqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
                     cpu::softmax_attention_bwd(g.contiguous(), qkv, out, probs, heads, gqkv);
                     return std::vector<Tensor>{gqkv};
                   });
  return out;
}

}  // namespace lvit::ops
