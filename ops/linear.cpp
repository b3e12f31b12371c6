#include "ops/linear.h"

#include "autograd/engine.h"
#include "ops/autocast.h"
#include "ops/cpu/linear.h"
#include "ops/dispatch.h"
#include "ops/dropout.h"
#include "ops/elementwise.h"
#include "ops/norm.h"
#include "ops/shape.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/column_sums.cuh"
#include "cuda/gemm.cuh"
#include "cuda/norm.cuh"
#endif

namespace lvit::ops {

#ifdef LVIT_WITH_CUDA
namespace {
// g [M, N], x [M, K], w [N, K] contiguous, all of one dtype (w is the bf16 copy of an f32
// weight under mixed precision): gx [M, K] = g w, gw [N, K] = g^T x, gb [N] = column sums of g
// (undefined outputs skipped), each in its own tensor's dtype.
void linear_bwd_cuda(const Tensor& g, const Tensor& x, const Tensor& w, Tensor& gx, Tensor& gw,
                     Tensor& gb) {
  cudaStream_t stream = cuda_stream(g);
  const int64_t M = g.shape()[0], N = w.shape()[0], K = w.shape()[1];
  if (gx.defined())
    cuda::gemm(g.dtype(), gx.dtype(), false, false, M, K, N, g.raw_data(), N, 0, w.raw_data(), K, 0,
               gx.raw_data(), K, 0, 1);
  if (gw.defined())
    cuda::gemm(g.dtype(), gw.dtype(), true, false, N, K, M, g.raw_data(), N, 0, x.raw_data(), K, 0,
               gw.raw_data(), K, 0, 1);
  if (gb.defined())
    cuda::column_sums(g.dtype(), gb.dtype(), g.raw_data(), M, N, gb.raw_data(), stream);
}
}  // namespace
#endif

Tensor matmul(const Tensor& a_in, const Tensor& b_in, bool ta, bool tb) {
  check_same("matmul", {a_in, b_in});
  LVIT_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "matmul needs rank >= 2, got {} and {}",
             shape_str(a_in.shape()), shape_str(b_in.shape()));
  if (b_in.dim() == 2 && a_in.dim() > 2) {
    // Shared 2-D right operand: fold the batch into the rows.
    LVIT_CHECK(!ta, "matmul: trans_a with a shared 2-D right operand");
    Shape out_shape = a_in.shape();
    Tensor y2 = matmul(reshape(a_in, {-1, a_in.shape().back()}), b_in, false, tb);
    out_shape.back() = y2.shape()[1];
    return reshape(y2, out_shape);
  }
  LVIT_CHECK(a_in.dim() == b_in.dim(), "matmul: ranks {} and {}", a_in.dim(), b_in.dim());
  const int64_t nd = a_in.dim();
  for (int64_t i = 0; i < nd - 2; ++i)
    LVIT_CHECK(a_in.shape()[i] == b_in.shape()[i], "matmul: batch dims of {} and {} differ",
               shape_str(a_in.shape()), shape_str(b_in.shape()));
  Tensor a = a_in.contiguous(), b = b_in.contiguous();
  const int64_t ar = a.shape()[nd - 2], ac = a.shape()[nd - 1];
  const int64_t br = b.shape()[nd - 2], bc = b.shape()[nd - 1];
  const int64_t M = ta ? ac : ar, K = ta ? ar : ac;
  const int64_t Kb = tb ? bc : br, N = tb ? br : bc;
  LVIT_CHECK(K == Kb, "matmul: inner dimensions {} and {} ({} x {}, trans {} {})", K, Kb,
             shape_str(a.shape()), shape_str(b.shape()), ta, tb);
  Shape out_shape(a.shape().begin(), a.shape().end() - 2);
  const int64_t batch = shape_numel(out_shape);
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor y = Tensor::empty(out_shape, a.dtype(), a.device());
  if (on_cuda("matmul", {a, b})) {
#ifdef LVIT_WITH_CUDA
    cuda_stream(a);  // makes a's device current for the GEMM
    cuda::gemm(a.dtype(), a.dtype(), ta, tb, M, N, K, a.raw_data(), ac, ar * ac, b.raw_data(), bc,
               br * bc, y.raw_data(), N, M * N, batch);
#endif
  } else {
    LVIT_DISPATCH_FLOAT(a.dtype(), "matmul", [&] {
      using T = scalar_t;
      cpu::gemm_batched<T>(ta, tb, batch, M, N, K, a.data<T>(), ac, ar * ac, b.data<T>(), bc,
                           br * bc, y.data<T>(), N, M * N);
    });
  }
  autograd::record(
      y, {a_in, b_in}, "MatmulBackward",
      [a = a.detach(), b = b.detach(), ta, tb](const Tensor& g, const autograd::Node& n) {
        Tensor ga, gb;
        if (n.needs_input_grad(0)) ga = ta ? matmul(b, g, tb, true) : matmul(g, b, false, !tb);
        if (n.needs_input_grad(1)) gb = tb ? matmul(g, a, true, ta) : matmul(a, g, !ta, false);
        return std::vector<Tensor>{ga, gb};
      });
  return y;
}

namespace {

// linear()'s forward without its autograd node: y [M, out] (2-D), and what a backward needs.
struct LinearForward {
  Tensor y;           // [M, out], x's dtype
  Tensor x2;          // x as [M, in], contiguous
  Tensor w;           // the weight as multiplied (its bf16 copy under mixed precision)
  Shape out_shape;    // x's shape with the last dimension `out`
  DType param_dtype;  // the parameters' dtype (that of their gradients)
};

LinearForward linear_forward(const Tensor& x, const Tensor& w, const Tensor& b) {
  LVIT_CHECK(x.device() == w.device() && (!b.defined() || b.device() == w.device()),
             "linear: tensors on different devices");
  // Equal dtypes, or bf16 activations with f32 parameters (mixed precision, GPU).
  LVIT_CHECK((x.dtype() == w.dtype() ||
              (x.dtype() == DType::bf16 && w.dtype() == DType::f32 && x.device().is_cuda())) &&
                 (!b.defined() || b.dtype() == w.dtype()),
             "linear: input {} with weight {}{}", dtype_name(x.dtype()), dtype_name(w.dtype()),
             b.defined() ? fmt::format(" and bias {}", dtype_name(b.dtype())) : "");
  LVIT_CHECK(w.dim() == 2 && x.dim() >= 1 && x.shape().back() == w.shape()[1],
             "linear: input {} with weight {}", shape_str(x.shape()), shape_str(w.shape()));
  LVIT_CHECK(!b.defined() || (b.dim() == 1 && b.shape()[0] == w.shape()[0]),
             "linear: bias {} for weight {}", shape_str(b.shape()), shape_str(w.shape()));
  const int64_t in = w.shape()[1], out = w.shape()[0];
  LinearForward f{Tensor(), x.contiguous().view({-1, in}), w.contiguous(), x.shape(), w.dtype()};
  f.out_shape.back() = out;
  f.y = Tensor::empty({f.x2.shape()[0], out}, x.dtype(), x.device());
  if (on_cuda("linear", {x, w, b})) {
#ifdef LVIT_WITH_CUDA
    cuda_stream(x);  // makes x's device current for the GEMM
    // Mixed precision: bf16 activations with f32 parameters multiply bf16 copies of the
    // parameters (fp32 accumulation); the parameter gradients come back f32.
    f.w = autocast_param(f.w, x.dtype());
    Tensor bc = b.defined() ? autocast_param(b.contiguous(), x.dtype()) : Tensor();
    cuda::gemm(x.dtype(), x.dtype(), false, true, f.x2.shape()[0], out, in, f.x2.raw_data(), in, 0,
               f.w.raw_data(), in, 0, f.y.raw_data(), out, 0, 1,
               bc.defined() ? bc.raw_data() : nullptr);
#endif
  } else {
    cpu::linear_fwd(f.x2, f.w, b.defined() ? b.contiguous() : Tensor(), f.y);
  }
  return f;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  LinearForward f = linear_forward(x, w, b);
  Tensor y = f.y.view(f.out_shape);
  autograd::record(y, {x, w, b}, "LinearBackward",
                   [x2 = f.x2.detach(), w = f.w.detach(), xs = x.shape(),
                    param_dtype = f.param_dtype](const Tensor& g, const autograd::Node& n) {
                     Tensor g2 = g.contiguous().view({-1, w.shape()[0]});
                     Tensor gx, gw, gb;
                     if (n.needs_input_grad(0))
                       gx = Tensor::empty(x2.shape(), g.dtype(), g.device());
                     if (n.needs_input_grad(1))
                       gw = Tensor::empty(w.shape(), param_dtype, g.device());
                     if (n.needs_input_grad(2))
                       gb = Tensor::empty({w.shape()[0]}, param_dtype, g.device());
                     if (on_cuda("linear backward", {g2})) {
#ifdef LVIT_WITH_CUDA
                       linear_bwd_cuda(g2, x2, w, gx, gw, gb);
#endif
                     } else {
                       cpu::linear_bwd(g2, x2, w, gx, gw, gb);
                     }
                     return std::vector<Tensor>{gx.defined() ? gx.view(xs) : gx, gw, gb};
                   });
  return y;
}

Tensor linear_gelu_dropout(const Tensor& x, const Tensor& w, const Tensor& b, double p,
                           bool training, Generator& gen) {
  check_probability("linear_gelu_dropout", p);
  if (!training || p == 0 || !b.defined() || !on_cuda("linear_gelu_dropout", {x, w, b}))
    return gelu_dropout(linear(x, w, b), p, training, gen);
#ifdef LVIT_WITH_CUDA
  LinearForward f = linear_forward(x, w, b);
  // gelu_dropout's pass (the same seed and offset drawn, so the same mask), with d h / d y
  // saved for the backward.
  const bool grad = autograd::needs_grad({x, w, b});
  GeluDropoutPass gd = gelu_dropout_cuda_pass(f.y, p, gen, grad);
  Tensor h = gd.y.view(f.out_shape), dhdy = gd.dydx;
  if (grad)
    autograd::record(
        h, {x, w, b}, "LinearGeluDropoutBackward",
        [x2 = f.x2.detach(), w = f.w.detach(), dhdy, xs = x.shape(), param_dtype = f.param_dtype](
            const Tensor& g_in, const autograd::Node& n) {
          const Tensor g = (g_in.dtype() == dhdy.dtype() ? g_in : g_in.to(dhdy.dtype()))
                               .contiguous()
                               .view(dhdy.shape());
          const int64_t M = dhdy.shape()[0], N = dhdy.shape()[1];
          // gy = g * dh/dy (as gelu_dropout's backward) and the bias gradient, its column sums,
          // in one pass: the sums do not read gy back.
          Tensor gy, gx, gw, gb;
          if (n.needs_input_grad(2)) {
            gy = Tensor::empty(dhdy.shape(), dhdy.dtype(), dhdy.device());
            gb = Tensor::empty({N}, param_dtype, g.device());
            cuda::column_sums_of_product(g.dtype(), gb.dtype(), g.raw_data(), dhdy.raw_data(), M, N,
                                         gy.raw_data(), gb.raw_data(), cuda_stream(g));
          } else {
            gy = mul(g, dhdy);
          }
          if (n.needs_input_grad(0)) gx = Tensor::empty(x2.shape(), g.dtype(), g.device());
          if (n.needs_input_grad(1)) gw = Tensor::empty(w.shape(), param_dtype, g.device());
          Tensor no_bias;
          linear_bwd_cuda(gy, x2, w, gx, gw, no_bias);
          return std::vector<Tensor>{gx.defined() ? gx.view(xs) : gx, gw, gb};
        });
  return h;
#else
  return Tensor();
#endif
}

#ifdef LVIT_WITH_CUDA
namespace {
// Records out = add_dropout(residual, linear(x, w, b), p) (f: the linear layer's forward; the
// mask that of (seed, offset)) as one node whose backward makes the branch gradient (the
// dropout's) and the bias gradient (its column sums) in one pass.
Tensor record_linear_add_dropout(Tensor& out, const Tensor& residual, const Tensor& x,
                                 const Tensor& w, const Tensor& b, const LinearForward& f, double p,
                                 uint64_t seed, uint64_t offset) {
  autograd::record(
      out, {residual, x, w, b}, "LinearAddDropoutBackward",
      [x2 = f.x2.detach(), w = f.w.detach(), xs = x.shape(), ydt = f.y.dtype(),
       param_dtype = f.param_dtype, p, seed, offset](const Tensor& g_in, const autograd::Node& n) {
        Tensor gx, gw, gb;
        if (n.needs_input_grad(1) || n.needs_input_grad(2) || n.needs_input_grad(3)) {
          const int64_t M = x2.shape()[0], N = w.shape()[0];
          // The branch gradient gy [M, N] and the bias gradient, its column sums, in one pass.
          Tensor gy;
          if (n.needs_input_grad(3)) {
            const Tensor g = g_in.contiguous();
            gy = Tensor::empty({M, N}, ydt, g.device());
            gb = Tensor::empty({N}, param_dtype, g.device());
            cuda::dropout_grad_column_sums(g.dtype(), g.raw_data(), ydt, gy.raw_data(), M, N, p,
                                           seed, offset, gb.dtype(), gb.raw_data(), cuda_stream(g));
          } else {
            gy = add_dropout_cuda_grad(g_in, ydt, p, seed, offset).view({M, N});
          }
          if (n.needs_input_grad(1)) gx = Tensor::empty(x2.shape(), ydt, gy.device());
          if (n.needs_input_grad(2)) gw = Tensor::empty(w.shape(), param_dtype, gy.device());
          Tensor no_bias;
          linear_bwd_cuda(gy, x2, w, gx, gw, no_bias);
        }
        return std::vector<Tensor>{n.needs_input_grad(0) ? g_in : Tensor(),
                                   gx.defined() ? gx.view(xs) : gx, gw, gb};
      });
  return out;
}

// The residual pass of linear_add_dropout on the GPU, recorded: add_dropout's kernel, so the
// same offset drawn and the same mask.
Tensor linear_add_dropout_pass(const Tensor& residual, const Tensor& x, const Tensor& w,
                               const Tensor& b, const LinearForward& f, double p, Generator& gen) {
  AddDropoutPass ad = add_dropout_cuda_pass(residual, f.y.view(f.out_shape), p, gen);
  return record_linear_add_dropout(ad.out, residual, x, w, b, f, p, ad.seed, ad.offset);
}

// The linear layer's output shape, for the residual's check.
Shape linear_out_shape(const Tensor& x, const Tensor& w) {
  Shape ys = x.shape();
  if (!ys.empty() && w.dim() == 2) ys.back() = w.shape()[0];
  return ys;
}
}  // namespace
#endif

Tensor linear_add_dropout(const Tensor& residual, const Tensor& x, const Tensor& w, const Tensor& b,
                          double p, bool training, Generator& gen) {
  check_probability("linear_add_dropout", p);
  LVIT_CHECK(residual.device() == x.device(), "linear_add_dropout: residual on {}, input on {}",
             residual.device().str(), x.device().str());
  if (!training || p == 0 || !b.defined() || !on_cuda("linear_add_dropout", {residual, x, w, b}))
    return add_dropout(residual, linear(x, w, b), p, training, gen);
#ifdef LVIT_WITH_CUDA
  if (residual.shape() != linear_out_shape(x, w))  // a broadcast residual: two ops
    return add_dropout(residual, linear(x, w, b), p, training, gen);
  return linear_add_dropout_pass(residual, x, w, b, linear_forward(x, w, b), p, gen);
#else
  return Tensor();
#endif
}

ResidualNorm linear_add_dropout_norm(const Tensor& residual, const Tensor& x, const Tensor& w,
                                     const Tensor& b, double p, bool training, Generator& gen,
                                     const Tensor& norm_weight, const Tensor& norm_bias, double eps,
                                     std::optional<DType> out_dtype) {
  check_probability("linear_add_dropout_norm", p);
  auto norm = [&](const Tensor& h) {
    return ResidualNorm{h, layer_norm(h, norm_weight, norm_bias, eps, out_dtype)};
  };
  const bool fusable =
      training && p > 0 && b.defined() && residual.dtype() == DType::f32 &&
      x.dtype() == DType::bf16 && out_dtype == DType::bf16 && norm_weight.dtype() == DType::f32 &&
      norm_bias.dtype() == DType::f32 && residual.device() == x.device() &&
      norm_weight.device() == x.device() && norm_bias.device() == x.device() &&
      on_cuda("linear_add_dropout_norm", {residual, x, w, b, norm_weight, norm_bias});
  if (!fusable) return norm(linear_add_dropout(residual, x, w, b, p, training, gen));
#ifdef LVIT_WITH_CUDA
  const Shape hs = linear_out_shape(x, w);
  if (residual.shape() != hs) return norm(linear_add_dropout(residual, x, w, b, p, training, gen));
  detail::check_layer_norm_params(hs, norm_weight, norm_bias);
  const int64_t D = hs.back();
  const LinearForward f = linear_forward(x, w, b);
  const Tensor res = residual.contiguous(), nw = norm_weight.contiguous(),
               nb = norm_bias.contiguous();
  if (!cuda::add_dropout_layernorm_supported(
          D, {res.raw_data(), f.y.raw_data(), nw.raw_data(), nb.raw_data()}))
    return norm(linear_add_dropout_pass(residual, x, w, b, f, p, gen));
  // One pass for the residual (add_dropout's values, and its mask: the same offset drawn) and
  // the norm's forward (layer_norm's saved tensors); the nodes are those of the two ops.
  const int64_t M = f.y.shape()[0];
  const uint64_t seed = gen.seed(), offset = gen.next_offset();
  Tensor h = Tensor::empty(hs, DType::f32, x.device());
  Tensor y = Tensor::empty(hs, DType::bf16, x.device());
  Tensor mean = Tensor::empty({M}, DType::f32, x.device());
  Tensor rstd = Tensor::empty({M}, DType::f32, x.device());
  cuda::add_dropout_layernorm_fwd(
      res.data<float>(), f.y.raw_data(), p, seed, offset, nw.data<float>(), nb.data<float>(), eps,
      M, D, h.data<float>(), y.raw_data(), mean.data<float>(), rstd.data<float>(), cuda_stream(x));
  record_linear_add_dropout(h, residual, x, w, b, f, p, seed, offset);
  detail::record_layer_norm(y, h, h.view({M, D}), nw, mean, rstd, norm_weight, norm_bias);
  return {h, y};
#else
  return {};
#endif
}

}  // namespace lvit::ops
