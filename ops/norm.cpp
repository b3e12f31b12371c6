#include "ops/norm.h"

#include "autograd/engine.h"
#include "ops/cpu/norm.h"
#include "ops/dispatch.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/norm.cuh"
#endif

namespace lvit::ops {

namespace detail {

void check_layer_norm_params(const Shape& xs, const Tensor& weight, const Tensor& bias) {
  const int64_t D = xs.back();
  LVIT_CHECK(weight.shape() == Shape{D} && bias.shape() == Shape{D},
             "layer_norm: input {} with weight {} and bias {}", shape_str(xs),
             shape_str(weight.shape()), shape_str(bias.shape()));
}

void record_layer_norm(Tensor& y, const Tensor& x, const Tensor& x2, const Tensor& w,
                       const Tensor& mean, const Tensor& rstd, const Tensor& weight,
                       const Tensor& bias) {
  autograd::record(
      y, {x, weight, bias}, "LayerNormBackward",
      [x2 = x2.detach(), w = w.detach(), mean, rstd, xs = x.shape()](const Tensor& g,
                                                                     const autograd::Node& n) {
        const int64_t D = w.shape()[0];
        Tensor g2 = g.contiguous().view({-1, D});
        Tensor gx, gw, gb;
        const DType dt = x2.dtype();  // g may be bf16; the gradients are x's dtype
        const bool gpu = on_cuda("layer_norm backward", {g2});
        // x's gradient from its other consumer (a pre-norm block's residual connection), when
        // the engine lends it, is added into in place by the kernel: one read-modify-write
        // instead of a write here and a three-pass sum in the engine.
        const Tensor& part = n.partial_grad(0);
        const bool accumulate = n.needs_input_grad(0) && part.defined() && part.dtype() == dt &&
                                part.shape() == xs && part.device() == g.device() &&
                                part.is_contiguous();
        if (accumulate)
          gx = part;
        else if (n.needs_input_grad(0))
          gx = Tensor::empty(xs, dt, g.device());
        if (n.needs_input_grad(1)) gw = Tensor::empty({D}, dt, g.device());
        if (n.needs_input_grad(2)) gb = Tensor::empty({D}, dt, g.device());
        Tensor gx2 = gx.defined() ? gx.view({-1, D}) : Tensor();
        if (gpu) {
#ifdef LVIT_WITH_CUDA
          auto ptr = [](const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; };
          cuda::layernorm_bwd(x2.dtype(), g2.dtype(), g2.raw_data(), x2.raw_data(), w.raw_data(),
                              mean.raw_data(), rstd.raw_data(), g2.shape()[0], D, ptr(gx2), ptr(gw),
                              ptr(gb), accumulate, cuda_stream(g2));
#endif
        } else {
          cpu::layernorm_bwd(g2, x2, w, mean, rstd, gx2, gw, gb, accumulate);
        }
        return std::vector<Tensor>{gx, gw, gb};
      });
}

}  // namespace detail

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                  std::optional<DType> out_dtype) {
  const DType ydt = out_dtype.value_or(x.dtype());
  check_same("layer_norm", {x, weight, bias});
  detail::check_layer_norm_params(x.shape(), weight, bias);
  const int64_t D = x.shape().back();
  Tensor x2 = x.contiguous().view({-1, D});
  const int64_t M = x2.shape()[0];
  Tensor y = Tensor::empty(x.shape(), ydt, x.device());
  Tensor mean = Tensor::empty({M}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({M}, x.dtype(), x.device());
  Tensor y2 = y.view({M, D});
  Tensor w = weight.contiguous(), b = bias.contiguous();
  if (on_cuda("layer_norm", {x, weight, bias})) {
#ifdef LVIT_WITH_CUDA
    cuda::layernorm_fwd(x.dtype(), ydt, x2.raw_data(), w.raw_data(), b.raw_data(), eps, M, D,
                        y2.raw_data(), mean.raw_data(), rstd.raw_data(), cuda_stream(x));
#endif
  } else {
    LVIT_CHECK(ydt == x.dtype(), "layer_norm: output dtype {} for {} input on the CPU",
               dtype_name(ydt), dtype_name(x.dtype()));
    cpu::layernorm_fwd(x2, w, b, eps, y2, mean, rstd);
  }
  detail::record_layer_norm(y, x, x2, w, mean, rstd, weight, bias);
  return y;
}

}  // namespace lvit::ops
