#include "ops/norm.h"

#include "autograd/engine.h"
#include "ops/cpu/norm.h"
#include "ops/dispatch.h"

namespace lvit::ops {

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_same("layer_norm", {x, weight, bias});
  require_cpu("layer_norm", {x, weight, bias});
  const int64_t D = x.shape().back();
  LVIT_CHECK(weight.shape() == Shape{D} && bias.shape() == Shape{D},
             "layer_norm: input {} with weight {} and bias {}", shape_str(x.shape()),
             shape_str(weight.shape()), shape_str(bias.shape()));
  Tensor x2 = x.contiguous().view({-1, D});
  const int64_t M = x2.shape()[0];
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({M}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({M}, x.dtype(), x.device());
  Tensor y2 = y.view({M, D});
  Tensor w = weight.contiguous(), b = bias.contiguous();
  cpu::layernorm_fwd(x2, w, b, eps, y2, mean, rstd);
  autograd::record(y, {x, weight, bias}, "LayerNormBackward",
                   [x2 = x2.detach(), w = w.detach(), mean, rstd, xs = x.shape()](
                       const Tensor& g, const autograd::Node& n) {
                     const int64_t D = w.shape()[0];
                     Tensor g2 = g.contiguous().view({-1, D});
                     Tensor gx, gw, gb;
                     if (n.needs_input_grad(0)) gx = Tensor::empty(xs, g.dtype(), g.device());
                     if (n.needs_input_grad(1)) gw = Tensor::empty({D}, g.dtype(), g.device());
                     if (n.needs_input_grad(2)) gb = Tensor::empty({D}, g.dtype(), g.device());
                     Tensor gx2 = gx.defined() ? gx.view({-1, D}) : Tensor();
                     cpu::layernorm_bwd(g2, x2, w, mean, rstd, gx2, gw, gb);
                     return std::vector<Tensor>{gx, gw, gb};
                   });
  return y;
}

}  // namespace lvit::ops
