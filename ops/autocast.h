// Mixed precision regions, in the role of torch.autocast: while an AutocastGuard(DType::bf16) is
// alive on this thread, the model's layers run their GEMMs, attention and activations on bf16
// copies of CUDA activations, with fp32 master parameters, fp32 LayerNorm statistics, an fp32
// residual stream and an fp32 loss. Outside a guard (and on the CPU) nothing changes.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace lvit::ops {

// The dtype GEMM operands are cast to: bf16 inside a bf16 guard, else f32 (no casting).
DType autocast_dtype();

// Whether a CUDA f32 tensor x would be computed in bf16 here.
bool autocast_applies(const Tensor& x);

// x cast (differentiably) to the autocast dtype when autocast_applies(x), else x itself.
Tensor autocast(const Tensor& x);

// While alive (and only under a bf16 guard), autocast_param(w) of any of `params` (CUDA f32)
// returns its bf16 copy, made for all of them by one multi-tensor cast when the object is built:
// a mixed-precision forward then casts its weights once instead of once per layer.
// ViT::forward makes one; nesting keeps the outer copies.
class AutocastParamCopies {
 public:
  explicit AutocastParamCopies(const std::vector<Tensor>& params);
  ~AutocastParamCopies();
  AutocastParamCopies(const AutocastParamCopies&) = delete;
  AutocastParamCopies& operator=(const AutocastParamCopies&) = delete;

 private:
  bool owner_ = false;
};

// The bf16 GEMM operand for parameter w: its AutocastParamCopies copy when there is one, else
// w.to(dtype) (a fresh copy, outside autograd: the caller computes w's gradient itself).
Tensor autocast_param(const Tensor& w, DType dtype);

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
