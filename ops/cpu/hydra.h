// Hydra attention CPU kernels (see ops/hydra.h for the math). Plain backend functions.
#pragma once
#include "core/tensor.h"

namespace lvit::cpu {

// qkv [B, N, 3D] contiguous; out [B, N, D]; kv [B, D] receives sum_t phi(k_t) * v_t, which
// backward reuses.
void hydra_fwd(const Tensor& qkv, int64_t branches, Tensor& out, Tensor& kv);
// gout [B, N, D]; gqkv [B, N, 3D] (fully written).
void hydra_bwd(const Tensor& gout, const Tensor& qkv, const Tensor& kv, int64_t branches,
               Tensor& gqkv);

}  // namespace lvit::cpu
