// Reverse-mode engine: an iterative topological sweep (no recursion, so deep graphs are safe).
#pragma once
#include "autograd/node.h"

namespace lvit::autograd {

// Backpropagates `grad` (default: ones for a one-element root) through root's graph and adds
// the results into the .grad of every leaf that requires grad. Saved tensors are released as
// nodes run unless retain_graph.
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);

// Gradient arithmetic used by the engine, implemented in ops/elementwise.cpp for every device:
// a + b (same shape, new tensor) and dst += src (in place, dst contiguous).
Tensor grad_sum(const Tensor& a, const Tensor& b);
void grad_accumulate_(Tensor& dst, const Tensor& src);

}  // namespace lvit::autograd
