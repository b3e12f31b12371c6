#include "ops/metrics.h"

namespace lvit::ops {

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
