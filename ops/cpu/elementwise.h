// CPU kernels for elementwise ops. Inputs are views already broadcast to out's shape (stride 0
// on broadcast dimensions); out is contiguous.
#pragma once
#include "core/tensor.h"

namespace lvit::cpu {

enum class BinaryOp { add, sub, mul, div };
enum class UnaryOp { neg, exp, log, sqrt, square, add_scalar, mul_scalar };

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
void unary(UnaryOp op, const Tensor& x, double s, Tensor& out);
void axpy(Tensor& dst, const Tensor& src, double alpha);  // both contiguous, same shape
// out[j] = sum over the dims of x that are broadcast in `out_shape`; out contiguous with
// x's rank (size-1 dims where reduced).
void sum_to(const Tensor& x, Tensor& out);

}  // namespace lvit::cpu
