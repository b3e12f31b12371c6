#include "ops/metrics.h"

#include "ops/dispatch.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/metrics.cuh"
#endif

namespace lvit::ops {

void add_top1_correct_(const Tensor& logits, const Tensor& labels, Tensor& count) {
  LVIT_CHECK(logits.dim() == 2 && labels.dim() == 1 && labels.shape()[0] == logits.shape()[0],
             "add_top1_correct_: logits {} labels {}", shape_str(logits.shape()),
             shape_str(labels.shape()));
  LVIT_CHECK(count.dtype() == DType::i64 && count.numel() == 1 &&
                 count.device() == logits.device() && labels.device() == logits.device(),
             "add_top1_correct_: count must be one i64 beside the logits and labels");
  if (on_cuda("add_top1_correct_", {logits, labels})) {
#ifdef LVIT_WITH_CUDA
    const Tensor z = logits.contiguous(), y = labels.contiguous();
    cuda::add_top1_correct(z.dtype(), z.raw_data(), y.raw_data(), y.dtype(), z.shape()[0],
                           z.shape()[1], count.data<int64_t>(), cuda_stream(z));
#endif
    return;
  }
  count.data<int64_t>()[0] += topk_correct(logits, labels, 1);
}

int64_t topk_correct(const Tensor& logits, const Tensor& labels, int64_t k) {
  LVIT_CHECK(logits.dim() == 2 && labels.dim() == 1 && labels.shape()[0] == logits.shape()[0],
             "topk_correct: logits {} labels {}", shape_str(logits.shape()),
             shape_str(labels.shape()));
  const int64_t B = logits.shape()[0], C = logits.shape()[1];
  std::vector<double> z = logits.to_vector<double>();
  std::vector<int64_t> y = labels.to_vector<int64_t>();
  int64_t correct = 0;
  for (int64_t i = 0; i < B; ++i) {
    const double* r = z.data() + i * C;
    const double zy = r[y[i]];
    // The label is in the top k iff fewer than k classes beat it (ties go to the lower index).
    int64_t better = 0;
    for (int64_t j = 0; j < C; ++j) better += r[j] > zy || (r[j] == zy && j < y[i]);
    correct += better < k;
  }
  return correct;
}

std::vector<int64_t> argmax_rows(const Tensor& logits) {
  const int64_t B = logits.shape()[0], C = logits.shape()[1];
  std::vector<double> z = logits.to_vector<double>();
  std::vector<int64_t> out(B);
  for (int64_t i = 0; i < B; ++i) {
    int64_t best = 0;
    for (int64_t j = 1; j < C; ++j)
      if (z[i * C + j] > z[i * C + best]) best = j;
    out[i] = best;
  }
  return out;
}

}  // namespace lvit::ops
