// Mixed precision regions, in the role of torch.autocast: while an AutocastGuard(DType::bf16) is
// alive on this thread, the model's layers run their GEMMs, attention and activations on bf16
// copies of CUDA activations, with fp32 master parameters, fp32 LayerNorm statistics, an fp32
// residual stream and an fp32 loss. Outside a guard (and on the CPU) nothing changes.
#pragma once
#include "core/tensor.h"

namespace lvit::ops {

// The dtype GEMM operands are cast to: bf16 inside a bf16 guard, else f32 (no casting).
DType autocast_dtype();

// Whether a CUDA f32 tensor x would be computed in bf16 here.
bool autocast_applies(const Tensor& x);

// x cast (differentiably) to the autocast dtype when autocast_applies(x), else x itself.
Tensor autocast(const Tensor& x);

class AutocastGuard {
 public:
  explicit AutocastGuard(DType dtype);  // bf16 turns mixed precision on, f32 off
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DType previous_;
};

}  // namespace lvit::ops
