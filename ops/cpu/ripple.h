// Ripple attention CPU kernels (see ops/ripple.h for the math). Plain backend functions: they
// know nothing of autograd; the stage logits -> weights map and its Jacobian live in the op.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace lvit::cpu {

// What one ripple call needs besides the tensors.
struct RippleArgs {
  int64_t heads = 1;
  int64_t stages = 1;
  int64_t grid = 1;           // side of the square, power-of-two patch grid; N = 1 + grid^2
  std::vector<double> alpha;  // [heads * stages] stage weights alpha_{h,s} (stick-breaking)
};

// Dense O(n^2 d) reference. qkv [B, N, 3D] contiguous; out [B, N, D]; den [B, H, N] receives
// the denominators sum_j alpha phi(q_i).phi(k_j) (without eps), which backward reuses.
void ripple_dense_fwd(const Tensor& qkv, const RippleArgs& a, Tensor& out, Tensor& den);
// gout [B, N, D]; gqkv [B, N, 3D] (fully written); galpha [heads * stages], d loss / d alpha
// summed over the batch (overwritten).
void ripple_dense_bwd(const Tensor& gout, const Tensor& qkv, const Tensor& out, const Tensor& den,
                      const RippleArgs& a, Tensor& gqkv, std::vector<double>& galpha);

// Linear-time telescoped form, O(S n d^2) time and O(n d) scratch per (image, head); same
// contract as the dense pair.
void ripple_linear_fwd(const Tensor& qkv, const RippleArgs& a, Tensor& out, Tensor& den);
void ripple_linear_bwd(const Tensor& gout, const Tensor& qkv, const Tensor& out, const Tensor& den,
                       const RippleArgs& a, Tensor& gqkv, std::vector<double>& galpha);

}  // namespace lvit::cpu
