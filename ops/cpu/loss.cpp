#include "ops/cpu/loss.h"

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "ops/dispatch.h"

namespace lvit::cpu {

namespace {
int64_t label_at(const Tensor& labels, int64_t i) {
  return labels.dtype() == DType::i64 ? labels.data<int64_t>()[i] : labels.data<int32_t>()[i];
}
}  // namespace

void cross_entropy_fwd(const Tensor& logits, const Tensor& labels, const Tensor& targets,
                       double smoothing, Tensor& row_loss, Tensor& probs) {
  const int64_t B = logits.shape()[0], C = logits.shape()[1];
  LVIT_DISPATCH_FLOAT(logits.dtype(), "cross_entropy", [&] {
    using T = scalar_t;
    const T* pz = logits.data<T>();
    T *pl = row_loss.data<T>(), *pp = probs.data<T>();
    const T* pt = targets.defined() ? targets.data<T>() : nullptr;
    parallel_for(B, 8, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const T* z = pz + i * C;
        T* p = pp + i * C;
        const T mx = *std::max_element(z, z + C);
        T sum = 0;
        for (int64_t j = 0; j < C; ++j) sum += (p[j] = std::exp(z[j] - mx));
        const T lse = mx + std::log(sum);
        for (int64_t j = 0; j < C; ++j) p[j] /= sum;
        // loss = sum_j q_j (lse - z_j) = lse - sum_j q_j z_j  (sum_j q_j = 1)
        T qz = 0;
        if (pt) {
          const T* q = pt + i * C;
          for (int64_t j = 0; j < C; ++j) qz += q[j] * z[j];
        } else {
          const int64_t y = label_at(labels, i);
          T zsum = 0;
          for (int64_t j = 0; j < C; ++j) zsum += z[j];
          qz = static_cast<T>(1 - smoothing) * z[y] + static_cast<T>(smoothing / C) * zsum;
        }
        pl[i] = lse - qz;
      }
    });
  });
}

void cross_entropy_bwd(const Tensor& probs, const Tensor& labels, const Tensor& targets,
                       double smoothing, double gscale, Tensor& glogits) {
  const int64_t B = probs.shape()[0], C = probs.shape()[1];
  LVIT_DISPATCH_FLOAT(probs.dtype(), "cross_entropy_bwd", [&] {
    using T = scalar_t;
    const T* pp = probs.data<T>();
    const T* pt = targets.defined() ? targets.data<T>() : nullptr;
    T* pg = glogits.data<T>();
    const T gs = static_cast<T>(gscale), off = static_cast<T>(smoothing / C);
    parallel_for(B, 8, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const T* p = pp + i * C;
        T* g = pg + i * C;
        if (pt) {
          const T* q = pt + i * C;
          for (int64_t j = 0; j < C; ++j) g[j] = (p[j] - q[j]) * gs;
        } else {
          for (int64_t j = 0; j < C; ++j) g[j] = (p[j] - off) * gs;
          g[label_at(labels, i)] -= static_cast<T>(1 - smoothing) * gs;
        }
      }
    });
  });
}

}  // namespace lvit::cpu
