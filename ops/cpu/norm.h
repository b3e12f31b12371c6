#pragma once
#include "core/tensor.h"

namespace lvit::cpu {

// x, y [M, D]; w, b [D]; mean, rstd [M] (saved for backward).
void layernorm_fwd(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y,
                   Tensor& mean, Tensor& rstd);
// gx [M, D]; gw, gb [D] (undefined ones are skipped). With accumulate, x's gradient is added
// to what gx holds instead of written over it.
void layernorm_bwd(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& mean,
                   const Tensor& rstd, Tensor& gx, Tensor& gw, Tensor& gb, bool accumulate = false);

}  // namespace lvit::cpu
