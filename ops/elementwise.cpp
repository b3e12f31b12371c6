// Elementwise ops: forward and backward. Broadcasting backward reduces the gradient to each
// input's shape with sum_to.
#include "ops/elementwise.h"

#include "autograd/engine.h"
#include "ops/cpu/elementwise.h"
#include "ops/dispatch.h"
#include "ops/reduce.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/elementwise.cuh"
#endif

namespace lvit::ops {

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    LVIT_CHECK(da == db || da == 1 || db == 1, "shapes {} and {} do not broadcast", shape_str(a),
               shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

// A view of t expanded to `shape` (stride 0 on broadcast dims).
Tensor expand_view(const Tensor& t, const Shape& shape) {
  size_t n = shape.size(), off = n - t.shape().size();
  Shape strides(n, 0);
  for (size_t i = off; i < n; ++i)
    strides[i] = t.shape()[i - off] == 1 && shape[i] != 1 ? 0 : t.strides()[i - off];
  return t.as_strided(shape, strides, t.offset());
}

#ifdef LVIT_WITH_CUDA
// The launch layout of out = a op b for views already expanded to out's shape.
cuda::BroadcastLayout broadcast_layout(const Tensor& a, const Tensor& b) {
  cuda::BroadcastLayout l;
  LVIT_CHECK(a.dim() <= cuda::kMaxElementwiseRank, "binary op: rank {} above the CUDA limit {}",
             a.dim(), cuda::kMaxElementwiseRank);
  l.rank = static_cast<int>(a.dim());
  for (int k = 0; k < l.rank; ++k) {
    l.shape[k] = a.shape()[k];
    l.a_strides[k] = a.strides()[k];
    l.b_strides[k] = b.strides()[k];
  }
  l.contiguous = a.is_contiguous() && b.is_contiguous();
  return l;
}
#endif

// The result dtype: a's, or f32 for f32 with bf16 (mixed precision: a bf16 branch added to the
// f32 residual stream). Other mixes are errors.
DType result_dtype(const Tensor& a, const Tensor& b) {
  if (a.dtype() == b.dtype()) return a.dtype();
  const bool mixed = (a.dtype() == DType::f32 && b.dtype() == DType::bf16) ||
                     (a.dtype() == DType::bf16 && b.dtype() == DType::f32);
  LVIT_CHECK(mixed, "binary op: dtypes {} and {} (only f32 with bf16 mix)", dtype_name(a.dtype()),
             dtype_name(b.dtype()));
  return DType::f32;
}

Tensor binary_op(cpu::BinaryOp op, const Tensor& a, const Tensor& b) {
  LVIT_CHECK(a.device() == b.device(), "binary op: tensors on {} and {}", a.device().str(),
             b.device().str());
  const DType dt = result_dtype(a, b);
  Shape shape = broadcast_shapes(a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, dt, a.device());
  Tensor ea = expand_view(a, shape), eb = expand_view(b, shape);
  if (on_cuda("binary op", {a, b})) {
#ifdef LVIT_WITH_CUDA
    cuda::binary(static_cast<cuda::BinaryOp>(op), a.dtype(), b.dtype(), dt, ea.raw_data(),
                 eb.raw_data(), out.raw_data(), broadcast_layout(ea, eb), cuda_stream(out));
#endif
  } else {
    LVIT_CHECK(a.dtype() == b.dtype(), "binary op: mixed dtypes {} and {} on the CPU",
               dtype_name(a.dtype()), dtype_name(b.dtype()));
    cpu::binary(op, ea, eb, out);
  }
  return out;
}

Tensor unary_op(cpu::UnaryOp op, const Tensor& x_in, double s) {
  LVIT_CHECK(is_floating(x_in.dtype()), "unary op on {}", dtype_name(x_in.dtype()));
  Tensor out = Tensor::empty(x_in.shape(), x_in.dtype(), x_in.device());
  if (on_cuda("unary op", {x_in})) {
#ifdef LVIT_WITH_CUDA
    Tensor x = x_in.contiguous();
    cuda::unary(static_cast<cuda::UnaryOp>(op), x.dtype(), x.raw_data(), out.raw_data(), x.numel(),
                s, cuda_stream(x));
#endif
  } else {
    cpu::unary(op, x_in, s, out);
  }
  return out;
}

// The gradient of an input of `shape` and `dtype` from the output gradient g: summed over the
// broadcast dimensions, then cast when the op promoted the input (bf16 -> f32).
Tensor reduce_like(const Tensor& g, const Shape& shape, DType dtype) {
  Tensor r = g.shape() == shape ? g : sum_to(g, shape);
  return r.dtype() == dtype ? r : r.to(dtype);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary_op(cpu::BinaryOp::add, a, b);
  autograd::record(y, {a, b}, "AddBackward",
                   [sa = a.shape(), sb = b.shape(), da = a.dtype(), db = b.dtype()](
                       const Tensor& g, const autograd::Node& n) {
                     return std::vector<Tensor>{
                         n.needs_input_grad(0) ? reduce_like(g, sa, da) : Tensor(),
                         n.needs_input_grad(1) ? reduce_like(g, sb, db) : Tensor()};
                   });
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary_op(cpu::BinaryOp::sub, a, b);
  autograd::record(y, {a, b}, "SubBackward",
                   [sa = a.shape(), sb = b.shape(), da = a.dtype(), db = b.dtype()](
                       const Tensor& g, const autograd::Node& n) {
                     return std::vector<Tensor>{
                         n.needs_input_grad(0) ? reduce_like(g, sa, da) : Tensor(),
                         n.needs_input_grad(1) ? reduce_like(neg(g), sb, db) : Tensor()};
                   });
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = binary_op(cpu::BinaryOp::mul, a, b);
  autograd::record(
      y, {a, b}, "MulBackward",
      [a = a.detach(), b = b.detach()](const Tensor& g, const autograd::Node& n) {
        return std::vector<Tensor>{
            n.needs_input_grad(0) ? reduce_like(mul(g, b), a.shape(), a.dtype()) : Tensor(),
            n.needs_input_grad(1) ? reduce_like(mul(g, a), b.shape(), b.dtype()) : Tensor()};
      });
  return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = binary_op(cpu::BinaryOp::div, a, b);
  autograd::record(y, {a, b}, "DivBackward",
                   [a = a.detach(), b = b.detach()](const Tensor& g, const autograd::Node& n) {
                     Tensor ga, gb;
                     if (n.needs_input_grad(0)) ga = reduce_like(div(g, b), a.shape(), a.dtype());
                     // d(a/b)/db = -a / b^2
                     if (n.needs_input_grad(1))
                       gb = reduce_like(neg(div(mul(g, a), square(b))), b.shape(), b.dtype());
                     return std::vector<Tensor>{ga, gb};
                   });
  return y;
}

Tensor add_scalar(const Tensor& x, double s) {
  Tensor y = unary_op(cpu::UnaryOp::add_scalar, x, s);
  autograd::record(y, {x}, "AddScalarBackward",
                   [](const Tensor& g, const autograd::Node&) { return std::vector<Tensor>{g}; });
  return y;
}

Tensor mul_scalar(const Tensor& x, double s) {
  Tensor y = unary_op(cpu::UnaryOp::mul_scalar, x, s);
  autograd::record(y, {x}, "MulScalarBackward", [s](const Tensor& g, const autograd::Node&) {
    return std::vector<Tensor>{mul_scalar(g, s)};
  });
  return y;
}

Tensor neg(const Tensor& x) {
  Tensor y = unary_op(cpu::UnaryOp::neg, x, 0);
  autograd::record(y, {x}, "NegBackward", [](const Tensor& g, const autograd::Node&) {
    return std::vector<Tensor>{neg(g)};
  });
  return y;
}

Tensor exp(const Tensor& x) {
  Tensor y = unary_op(cpu::UnaryOp::exp, x, 0);
  autograd::record(y, {x}, "ExpBackward", [y = y.detach()](const Tensor& g, const autograd::Node&) {
    return std::vector<Tensor>{mul(g, y)};
  });
  return y;
}

Tensor log(const Tensor& x) {
  Tensor y = unary_op(cpu::UnaryOp::log, x, 0);
  autograd::record(y, {x}, "LogBackward", [x = x.detach()](const Tensor& g, const autograd::Node&) {
    return std::vector<Tensor>{div(g, x)};
  });
  return y;
}

Tensor sqrt(const Tensor& x) {
  Tensor y = unary_op(cpu::UnaryOp::sqrt, x, 0);
  autograd::record(y, {x}, "SqrtBackward",
                   [y = y.detach()](const Tensor& g, const autograd::Node&) {
                     return std::vector<Tensor>{div(mul_scalar(g, 0.5), y)};
                   });
  return y;
}

Tensor square(const Tensor& x) {
  Tensor y = unary_op(cpu::UnaryOp::square, x, 0);
  autograd::record(y, {x}, "SquareBackward",
                   [x = x.detach()](const Tensor& g, const autograd::Node&) {
                     return std::vector<Tensor>{mul(g, mul_scalar(x, 2.0))};
                   });
  return y;
}

Tensor cast(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  LVIT_CHECK(is_floating(x.dtype()) && is_floating(dtype), "cast: {} to {}", dtype_name(x.dtype()),
             dtype_name(dtype));
  Tensor y = x.to(dtype);
  autograd::record(y, {x}, "CastBackward",
                   [dt = x.dtype()](const Tensor& g, const autograd::Node&) {
                     return std::vector<Tensor>{g.to(dt)};
                   });
  return y;
}

void axpy_(Tensor& dst, const Tensor& src, double alpha) {
  check_same("axpy_", {dst, src});
  LVIT_CHECK(dst.shape() == src.shape(), "axpy_: {} += {}", shape_str(dst.shape()),
             shape_str(src.shape()));
  LVIT_CHECK(dst.is_contiguous(), "axpy_: destination must be contiguous");
  if (on_cuda("axpy_", {dst, src})) {
#ifdef LVIT_WITH_CUDA
    Tensor s = src.contiguous();
    cuda::axpy(dst.dtype(), dst.raw_data(), s.raw_data(), dst.numel(), alpha, cuda_stream(dst));
#endif
  } else {
    cpu::axpy(dst, src.contiguous(), alpha);
  }
}

}  // namespace lvit::ops

namespace lvit::autograd {

Tensor grad_sum(const Tensor& a, const Tensor& b) { return ops::add(a, b); }

void grad_accumulate_(Tensor& dst, const Tensor& src) {
  ops::axpy_(dst, src.dtype() == dst.dtype() ? src : src.to(dst.dtype()), 1.0);
}

}  // namespace lvit::autograd
