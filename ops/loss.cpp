#include "ops/loss.h"

#include "autograd/engine.h"
#include "ops/cpu/loss.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/loss.cuh"
#endif

namespace lvit::ops {

namespace {

Tensor cross_entropy_impl(const Tensor& logits_in, const Tensor& labels_in,
                          const Tensor& targets_in, double smoothing) {
  const bool gpu = on_cuda("cross_entropy", {logits_in, labels_in, targets_in});
  if (gpu)
    for (const Tensor& t : {labels_in, targets_in})
      LVIT_CHECK(!t.defined() || t.device() == logits_in.device(),
                 "cross_entropy: logits on {}, targets on {}", logits_in.device().str(),
                 t.device().str());
  LVIT_CHECK(logits_in.dim() == 2, "cross_entropy: logits {} must be [B, C]",
             shape_str(logits_in.shape()));
  LVIT_CHECK(smoothing >= 0 && smoothing < 1, "cross_entropy: label smoothing {} not in [0, 1)",
             smoothing);
  const int64_t B = logits_in.shape()[0], C = logits_in.shape()[1];
  Tensor logits = logits_in.contiguous();
  Tensor labels, targets;
  if (labels_in.defined()) {
    LVIT_CHECK((labels_in.dtype() == DType::i64 || labels_in.dtype() == DType::i32) &&
                   labels_in.shape() == Shape{B},
               "cross_entropy: labels must be i32/i64 [{}], got {} {}", B,
               dtype_name(labels_in.dtype()), shape_str(labels_in.shape()));
    labels = labels_in.contiguous();
    for (int64_t i = 0; i < B && !gpu; ++i) {  // on the GPU a bad label gives a NaN loss
      int64_t y =
          labels.dtype() == DType::i64 ? labels.data<int64_t>()[i] : labels.data<int32_t>()[i];
      LVIT_CHECK(y >= 0 && y < C, "cross_entropy: label {} of sample {} outside [0, {})", y, i, C);
    }
  } else {
    LVIT_CHECK(targets_in.shape() == logits.shape() && targets_in.dtype() == logits.dtype(),
               "cross_entropy_soft: targets {} for logits {}", shape_str(targets_in.shape()),
               shape_str(logits.shape()));
    targets = targets_in.contiguous();
  }
  Tensor probs = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  Tensor loss;
  if (gpu) {
#ifdef LVIT_WITH_CUDA
    // The loss stays on the device (no synchronisation); the host reads it with item().
    loss = Tensor::empty({}, logits.dtype(), logits.device());
    cuda::cross_entropy_fwd(logits.dtype(), logits.raw_data(),
                            labels.defined() ? labels.raw_data() : nullptr,
                            labels.defined() ? labels.dtype() : DType::i64,
                            targets.defined() ? targets.raw_data() : nullptr, smoothing, B, C,
                            probs.raw_data(), loss.raw_data(), cuda_stream(logits));
#endif
  } else {
    Tensor row_loss = Tensor::empty({B}, logits.dtype(), logits.device());
    cpu::cross_entropy_fwd(logits, labels, targets, smoothing, row_loss, probs);
    double total = 0;
    for (double x : row_loss.to_vector<double>()) total += x;
    loss = Tensor::full({}, total / static_cast<double>(B), logits.dtype(), logits.device());
  }
  autograd::record(
      loss, {logits_in, targets_in}, "CrossEntropyBackward",
      [probs, labels, targets = targets.detach(), smoothing, B, C](const Tensor& g_in,
                                                                   const autograd::Node&) {
        Tensor gl = Tensor::empty(probs.shape(), probs.dtype(), probs.device());
        if (on_cuda("cross_entropy backward", {probs})) {
#ifdef LVIT_WITH_CUDA
          Tensor g = g_in.to(probs.dtype());
          cuda::cross_entropy_bwd(probs.dtype(), probs.raw_data(),
                                  labels.defined() ? labels.raw_data() : nullptr,
                                  labels.defined() ? labels.dtype() : DType::i64,
                                  targets.defined() ? targets.raw_data() : nullptr, smoothing,
                                  g.raw_data(), B, C, gl.raw_data(), cuda_stream(probs));
#endif
        } else {
          cpu::cross_entropy_bwd(probs, labels, targets, smoothing, g_in.item() / B, gl);
        }
        return std::vector<Tensor>{gl, Tensor()};
      });
  return loss;
}

}  // namespace

// bf16 logits (mixed precision) are cast to f32 first: the loss is always computed in fp32.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing) {
  return cross_entropy_impl(logits.dtype() == DType::bf16 ? cast(logits, DType::f32) : logits,
                            labels, Tensor(), label_smoothing);
}

Tensor cross_entropy_soft(const Tensor& logits, const Tensor& targets) {
  return cross_entropy_impl(logits.dtype() == DType::bf16 ? cast(logits, DType::f32) : logits,
                            Tensor(), targets, 0.0);
}

}  // namespace lvit::ops
