// Elementwise arithmetic with NumPy broadcasting, and scalar/unary ops.
#pragma once
#include "core/tensor.h"

namespace lvit::ops {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);

Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor square(const Tensor& x);

// The broadcast shape of a and b (throws if incompatible).
Shape broadcast_shapes(const Shape& a, const Shape& b);

// In-place, no autograd (optimizers, gradient accumulation): dst += alpha * src (same shape).
void axpy_(Tensor& dst, const Tensor& src, double alpha = 1.0);

}  // namespace lvit::ops

inline lvit::Tensor operator+(const lvit::Tensor& a, const lvit::Tensor& b) {
  return lvit::ops::add(a, b);
}
inline lvit::Tensor operator-(const lvit::Tensor& a, const lvit::Tensor& b) {
  return lvit::ops::sub(a, b);
}
inline lvit::Tensor operator*(const lvit::Tensor& a, const lvit::Tensor& b) {
  return lvit::ops::mul(a, b);
}
inline lvit::Tensor operator/(const lvit::Tensor& a, const lvit::Tensor& b) {
  return lvit::ops::div(a, b);
}
inline lvit::Tensor operator*(const lvit::Tensor& a, double s) {
  return lvit::ops::mul_scalar(a, s);
}
inline lvit::Tensor operator+(const lvit::Tensor& a, double s) {
  return lvit::ops::add_scalar(a, s);
}
inline lvit::Tensor operator-(const lvit::Tensor& a) { return lvit::ops::neg(a); }
