// Elementwise ops: forward and backward. Broadcasting backward reduces the gradient to each
// input's shape with sum_to.
#include "ops/elementwise.h"

#include "autograd/engine.h"
#include "ops/cpu/elementwise.h"
#include "ops/dispatch.h"
#include "ops/reduce.h"

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

Tensor binary_op(cpu::BinaryOp op, const Tensor& a, const Tensor& b) {
  check_same("binary op", {a, b});
  require_cpu("binary op", {a, b});
  Shape shape = broadcast_shapes(a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  cpu::binary(op, expand_view(a, shape), expand_view(b, shape), out);
  return out;
}

Tensor unary_op(cpu::UnaryOp op, const Tensor& x, double s) {
  require_cpu("unary op", {x});
  LVIT_CHECK(is_floating(x.dtype()), "unary op on {}", dtype_name(x.dtype()));
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  cpu::unary(op, x, s, out);
  return out;
}

Tensor reduce_like(const Tensor& g, const Shape& shape) {
  return g.shape() == shape ? g : sum_to(g, shape);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary_op(cpu::BinaryOp::add, a, b);
  autograd::record(y, {a, b}, "AddBackward",
                   [sa = a.shape(), sb = b.shape()](const Tensor& g, const autograd::Node& n) {
                     return std::vector<Tensor>{
                         n.needs_input_grad(0) ? reduce_like(g, sa) : Tensor(),
                         n.needs_input_grad(1) ? reduce_like(g, sb) : Tensor()};
                   });
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary_op(cpu::BinaryOp::sub, a, b);
  autograd::record(y, {a, b}, "SubBackward",
                   [sa = a.shape(), sb = b.shape()](const Tensor& g, const autograd::Node& n) {
                     return std::vector<Tensor>{
                         n.needs_input_grad(0) ? reduce_like(g, sa) : Tensor(),
                         n.needs_input_grad(1) ? reduce_like(neg(g), sb) : Tensor()};
                   });
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = binary_op(cpu::BinaryOp::mul, a, b);
  autograd::record(y, {a, b}, "MulBackward",
                   [a = a.detach(), b = b.detach()](const Tensor& g, const autograd::Node& n) {
                     return std::vector<Tensor>{
                         n.needs_input_grad(0) ? reduce_like(mul(g, b), a.shape()) : Tensor(),
                         n.needs_input_grad(1) ? reduce_like(mul(g, a), b.shape()) : Tensor()};
                   });
  return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = binary_op(cpu::BinaryOp::div, a, b);
  autograd::record(y, {a, b}, "DivBackward",
                   [a = a.detach(), b = b.detach()](const Tensor& g, const autograd::Node& n) {
                     Tensor ga, gb;
                     if (n.needs_input_grad(0)) ga = reduce_like(div(g, b), a.shape());
                     // d(a/b)/db = -a / b^2
                     if (n.needs_input_grad(1))
                       gb = reduce_like(neg(div(mul(g, a), square(b))), b.shape());
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

void axpy_(Tensor& dst, const Tensor& src, double alpha) {
  check_same("axpy_", {dst, src});
  require_cpu("axpy_", {dst, src});
  LVIT_CHECK(dst.shape() == src.shape(), "axpy_: {} += {}", shape_str(dst.shape()),
             shape_str(src.shape()));
  LVIT_CHECK(dst.is_contiguous(), "axpy_: destination must be contiguous");
  cpu::axpy(dst, src.contiguous(), alpha);
}

}  // namespace lvit::ops

namespace lvit::autograd {

Tensor grad_sum(const Tensor& a, const Tensor& b) { return ops::add(a, b); }

void grad_accumulate_(Tensor& dst, const Tensor& src) {
  ops::axpy_(dst, src.dtype() == dst.dtype() ? src : src.to(dst.dtype()), 1.0);
}

}  // namespace lvit::autograd
