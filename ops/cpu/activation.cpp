#include "ops/cpu/activation.h"

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "ops/dispatch.h"

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

namespace lvit::cpu {

namespace {
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
}  // namespace

// GELU on Eigen arrays: Eigen's erf and exp are vectorised (libm's are scalar and dominated
// the MLP's time).
void gelu_fwd(const Tensor& x, Tensor& y) {
  LVIT_DISPATCH_FLOAT(x.dtype(), "gelu", [&] {
    using T = scalar_t;
    using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
    const T* px = x.data<T>();
    T* py = y.data<T>();
    parallel_for(x.numel(), 1 << 14, [&](int64_t s, int64_t e) {
      Eigen::Map<const Arr> xv(px + s, e - s);
      Eigen::Map<Arr> yv(py + s, e - s);
      yv = T(0.5) * xv * (T(1) + (xv * static_cast<T>(kInvSqrt2)).erf());
    });
  });
}

void gelu_bwd(const Tensor& g, const Tensor& x, Tensor& gx) {
  LVIT_DISPATCH_FLOAT(x.dtype(), "gelu_bwd", [&] {
    using T = scalar_t;
    using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
    const T *pg = g.data<T>(), *px = x.data<T>();
    T* po = gx.data<T>();
    parallel_for(x.numel(), 1 << 14, [&](int64_t s, int64_t e) {
      Eigen::Map<const Arr> xv(px + s, e - s), gv(pg + s, e - s);
      Eigen::Map<Arr> ov(po + s, e - s);
      // d/dx [x Phi(x)] = Phi(x) + x phi(x)
      ov = gv * (T(0.5) * (T(1) + (xv * static_cast<T>(kInvSqrt2)).erf()) +
                 xv * static_cast<T>(kInvSqrt2Pi) * (T(-0.5) * xv.square()).exp());
    });
  });
}

void softmax_fwd(const Tensor& x, Tensor& y) {
  const int64_t N = x.shape().back(), M = x.numel() / std::max<int64_t>(N, 1);
  LVIT_DISPATCH_FLOAT(x.dtype(), "softmax", [&] {
    using T = scalar_t;
    const T* px = x.data<T>();
    T* py = y.data<T>();
    parallel_for(M, 16, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const T* r = px + i * N;
        T* o = py + i * N;
        const T mx = *std::max_element(r, r + N);
        T sum = 0;
        for (int64_t j = 0; j < N; ++j) sum += (o[j] = std::exp(r[j] - mx));
        const T inv = T(1) / sum;
        for (int64_t j = 0; j < N; ++j) o[j] *= inv;
      }
    });
  });
}

void softmax_bwd(const Tensor& g, const Tensor& y, Tensor& gx) {
  const int64_t N = y.shape().back(), M = y.numel() / std::max<int64_t>(N, 1);
  LVIT_DISPATCH_FLOAT(y.dtype(), "softmax_bwd", [&] {
    using T = scalar_t;
    const T *pg = g.data<T>(), *py = y.data<T>();
    T* po = gx.data<T>();
    parallel_for(M, 16, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const T *gr = pg + i * N, *yr = py + i * N;
        T dot = 0;
        for (int64_t j = 0; j < N; ++j) dot += gr[j] * yr[j];
        T* o = po + i * N;
        for (int64_t j = 0; j < N; ++j) o[j] = yr[j] * (gr[j] - dot);
      }
    });
  });
}

}  // namespace lvit::cpu
