#include "ops/activation.h"

#include "autograd/engine.h"
#include "ops/cpu/activation.h"
#include "ops/dispatch.h"

namespace lvit::ops {

Tensor gelu(const Tensor& x_in) {
  require_cpu("gelu", {x_in});
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  cpu::gelu_fwd(x, y);
  autograd::record(y, {x_in}, "GeluBackward",
                   [x = x.detach()](const Tensor& g, const autograd::Node&) {
                     Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
                     cpu::gelu_bwd(g.contiguous(), x, gx);
                     return std::vector<Tensor>{gx};
                   });
  return y;
}

Tensor softmax(const Tensor& x_in) {
  require_cpu("softmax", {x_in});
  LVIT_CHECK(x_in.dim() >= 1, "softmax of a scalar");
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  cpu::softmax_fwd(x, y);
  autograd::record(y, {x_in}, "SoftmaxBackward",
                   [y = y.detach()](const Tensor& g, const autograd::Node&) {
                     Tensor gx = Tensor::empty(y.shape(), y.dtype(), y.device());
                     cpu::softmax_bwd(g.contiguous(), y, gx);
                     return std::vector<Tensor>{gx};
                   });
  return y;
}

}  // namespace lvit::ops
