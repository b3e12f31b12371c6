// Elementwise arithmetic with NumPy broadcasting, and scalar/unary ops. Binary ops take equal
// dtypes, or f32 with bf16 (on the GPU), which gives f32: the mixed-precision residual add.
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

// x converted to `dtype` (floating dtypes; bf16 rounds to nearest even); the gradient is cast
// back. Returns x itself when the dtype already matches.
Tensor cast(const Tensor& x, DType dtype);

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
