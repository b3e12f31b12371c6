#include "ops/cpu/norm.h"

#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "ops/cpu/lanes.h"
#include "ops/dispatch.h"

namespace lvit::cpu {

void layernorm_fwd(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y,
                   Tensor& mean, Tensor& rstd) {
  const int64_t M = x.shape()[0], D = x.shape()[1];
  LVIT_DISPATCH_FLOAT(x.dtype(), "layernorm", [&] {
    using T = scalar_t;
    const T *px = x.data<T>(), *pw = w.data<T>(), *pb = b.data<T>();
    T *py = y.data<T>(), *pm = mean.data<T>(), *pr = rstd.data<T>();
    parallel_for(M, 64, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const T* r = px + i * D;
        // Two passes (mean, then centred variance): stable without Welford's bookkeeping.
        T sum[kLanes] = {}, sq[kLanes] = {};
        for_lanes(D, [&](int64_t j, int l) { sum[l] += r[j]; });
        const T mu = lanes_total(sum) / D;
        for_lanes(D, [&](int64_t j, int l) { sq[l] += (r[j] - mu) * (r[j] - mu); });
        const T rs = T(1) / std::sqrt(lanes_total(sq) / D + static_cast<T>(eps));
        pm[i] = mu;
        pr[i] = rs;
        T* o = py + i * D;
        for (int64_t j = 0; j < D; ++j) o[j] = (r[j] - mu) * rs * pw[j] + pb[j];
      }
    });
  });
}

void layernorm_bwd(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& mean,
                   const Tensor& rstd, Tensor& gx, Tensor& gw, Tensor& gb, bool accumulate) {
  const int64_t M = x.shape()[0], D = x.shape()[1];
  const int64_t chunks = num_threads();
  LVIT_DISPATCH_FLOAT(x.dtype(), "layernorm_bwd", [&] {
    using T = scalar_t;
    const T *pg = g.data<T>(), *px = x.data<T>(), *pw = w.data<T>();
    const T *pm = mean.data<T>(), *pr = rstd.data<T>();
    T* pgx = gx.defined() ? gx.data<T>() : nullptr;
    // Per-chunk partial sums of gw, gb, added in chunk order afterwards.
    std::vector<T> part_w(chunks * D, T(0)), part_b(chunks * D, T(0));
    parallel_chunks(M, chunks, [&](int64_t k, int64_t s, int64_t e) {
      T* pw_acc = part_w.data() + k * D;
      T* pb_acc = part_b.data() + k * D;
      for (int64_t i = s; i < e; ++i) {
        const T *gr = pg + i * D, *xr = px + i * D;
        const T mu = pm[i], rs = pr[i];
        T sum_gw[kLanes] = {}, sum_gw_xhat[kLanes] = {};
        for_lanes(D, [&](int64_t j, int l) {
          const T xhat = (xr[j] - mu) * rs;
          const T gwj = gr[j] * pw[j];
          sum_gw[l] += gwj;
          sum_gw_xhat[l] += gwj * xhat;
          pw_acc[j] += gr[j] * xhat;
          pb_acc[j] += gr[j];
        });
        if (pgx) {
          const T a = lanes_total(sum_gw) / D, c = lanes_total(sum_gw_xhat) / D;
          T* o = pgx + i * D;
          for (int64_t j = 0; j < D; ++j)
            o[j] = (accumulate ? o[j] : T(0)) + rs * (gr[j] * pw[j] - a - (xr[j] - mu) * rs * c);
        }
      }
    });
    if (gw.defined() || gb.defined()) {
      T* ow = gw.defined() ? gw.data<T>() : nullptr;
      T* ob = gb.defined() ? gb.data<T>() : nullptr;
      for (int64_t j = 0; j < D; ++j) {
        T sw = 0, sb = 0;
        for (int64_t k = 0; k < chunks; ++k) {
          sw += part_w[k * D + j];
          sb += part_b[k * D + j];
        }
        if (ow) ow[j] = sw;
        if (ob) ob[j] = sb;
      }
    }
  });
}

}  // namespace lvit::cpu
