// Dropout and drop-path (stochastic depth). Masks come from Philox: element i of a call keeps
// its value iff uniform(seed, offset, i) >= p, so the backward regenerates the mask from
// (seed, offset) instead of storing it, and the GPU draws the same mask for the same seed.
#pragma once
#include "core/rng.h"
#include "core/tensor.h"

namespace lvit::ops {

// Throws (naming the op) unless 0 <= p < 1, in fp32 too: the masks compare against p as a float
// (Philox::uniform, Philox::keep_threshold), and a double within 2^-25 of 1 rounds to 1 there.
// Every dropout-like op checks with it.
void check_probability(const char* op, double p);

// Zeroes each element with probability p and scales the rest by 1/(1-p). Identity when !training
// or p == 0. Reserves one offset of `gen`.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
// dropout(gelu(x), p): the same values, mask and generator offset as the two ops; on the GPU
// one fused pass each way (the MLP's hidden layer: no intermediate GELU output in memory).
Tensor gelu_dropout(const Tensor& x, double p, bool training, Generator& gen);
// gelu_dropout's GPU pass without an autograd node, for ops that fuse more around it
// (linear_gelu_dropout): y = dropout(gelu(x), p) for x on a CUDA device, drawing one offset of
// `gen` as gelu_dropout does, and with `with_grad` dydx = d y / d x (keep ? gelu'(x) / (1 - p) :
// 0), which the backward multiplies its gradient by.
struct GeluDropoutPass {
  Tensor y, dydx;
};
GeluDropoutPass gelu_dropout_cuda_pass(const Tensor& x, double p, Generator& gen, bool with_grad);
// x + dropout(y, p): a residual add with its branch's dropout, the same values, mask and
// generator offset as the two ops (add's mixed f32 + bf16 included); on the GPU one pass each
// way (no dropped copy of y in memory, and y's gradient comes out in y's dtype directly).
Tensor add_dropout(const Tensor& x, const Tensor& y, double p, bool training, Generator& gen);
// add_dropout's GPU passes without an autograd node, for ops that fuse more around it
// (linear_add_dropout). Forward: out = x + dropout(y, p) for x and y of one shape on a CUDA
// device, drawing one offset of `gen` as add_dropout does; the mask is that of (seed, offset).
// Backward: y's gradient keep ? g / (1 - p) : 0 in `ydtype` for the mask of (seed, offset).
struct AddDropoutPass {
  Tensor out;
  uint64_t seed, offset;
};
AddDropoutPass add_dropout_cuda_pass(const Tensor& x, const Tensor& y, double p, Generator& gen);
Tensor add_dropout_cuda_grad(const Tensor& g, DType ydtype, double p, uint64_t seed,
                             uint64_t offset);
// Zeroes whole samples (dimension 0) with probability p, scaling kept ones by 1/(1-p).
Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen);

}  // namespace lvit::ops
