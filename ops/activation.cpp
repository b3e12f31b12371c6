#include "ops/activation.h"

#include "autograd/engine.h"
#include "ops/cpu/activation.h"
#include "ops/dispatch.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/activation.cuh"
#endif

namespace lvit::ops {

Tensor gelu(const Tensor& x_in) {
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (on_cuda("gelu", {x})) {
#ifdef LVIT_WITH_CUDA
    cuda::gelu_fwd(x.dtype(), x.raw_data(), y.raw_data(), x.numel(), cuda_stream(x));
#endif
  } else {
    cpu::gelu_fwd(x, y);
  }
  autograd::record(y, {x_in}, "GeluBackward",
                   [x = x.detach()](const Tensor& g_in, const autograd::Node&) {
                     Tensor g = g_in.contiguous();
                     Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
                     if (on_cuda("gelu backward", {g})) {
#ifdef LVIT_WITH_CUDA
                       cuda::gelu_bwd(g.dtype(), g.raw_data(), x.raw_data(), gx.raw_data(),
                                      g.numel(), cuda_stream(g));
#endif
                     } else {
                       cpu::gelu_bwd(g, x, gx);
                     }
                     return std::vector<Tensor>{gx};
                   });
  return y;
}

Tensor softmax(const Tensor& x_in) {
  LVIT_CHECK(x_in.dim() >= 1, "softmax of a scalar");
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t N = x.shape().back(), M = N ? x.numel() / N : 0;
  if (on_cuda("softmax", {x})) {
#ifdef LVIT_WITH_CUDA
    cuda::softmax_fwd(x.dtype(), x.raw_data(), y.raw_data(), M, N, cuda_stream(x));
#endif
  } else {
    cpu::softmax_fwd(x, y);
  }
  autograd::record(y, {x_in}, "SoftmaxBackward",
                   [y = y.detach(), M, N](const Tensor& g_in, const autograd::Node&) {
                     Tensor g = g_in.contiguous();
                     Tensor gx = Tensor::empty(y.shape(), y.dtype(), y.device());
                     if (on_cuda("softmax backward", {g})) {
#ifdef LVIT_WITH_CUDA
                       cuda::softmax_bwd(g.dtype(), g.raw_data(), y.raw_data(), gx.raw_data(), M, N,
                                         cuda_stream(g));
#endif
                     } else {
                       cpu::softmax_bwd(g, y, gx);
                     }
                     return std::vector<Tensor>{gx};
                   });
  return y;
}

}  // namespace lvit::ops
