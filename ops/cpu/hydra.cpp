// Hydra attention on the CPU, parallel over (image, branch): a branch's channels of q, k, v
// and of the output never mix with another branch's, so each task owns a disjoint slice of
// kv, out and gqkv and needs no reduction across tasks.
//
// Backward of phi(x) = x / max(||x||, eps) for one token and branch, given g = d loss / d phi:
//   ||x|| >= eps: d/dx = (g - phi (g . phi)) / ||x||   (the projection off the unit vector)
//   ||x|| <  eps: d/dx = g / eps                       (the clamp is constant)
// and of o_t = phi(q_t) * kv, kv = sum_t phi(k_t) * v_t:
//   d/dphi(q_t) = g_t * kv,  d/dkv = sum_t g_t * phi(q_t),
//   d/dv_t = d/dkv * phi(k_t),  d/dphi(k_t) = d/dkv * v_t.
#include "ops/cpu/hydra.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "ops/dispatch.h"

namespace lvit::cpu {

namespace {

constexpr double kEps = 1e-6;  // the norm clamp of phi (DESIGN.md)

// 1 / max(||x||, eps) over C channels.
template <typename T>
T inv_clamped_norm(const T* x, int64_t C) {
  T s = 0;
  for (int64_t c = 0; c < C; ++c) s += x[c] * x[c];
  return T(1) / std::max(std::sqrt(s), T(kEps));
}

// gx = d loss / d x from g = d loss / d phi(x) (see the file comment).
template <typename T>
void normalize_bwd(const T* x, const T* g, T* gx, int64_t C) {
  T s = 0;
  for (int64_t c = 0; c < C; ++c) s += x[c] * x[c];
  const T norm = std::sqrt(s);
  if (norm >= T(kEps)) {
    const T inv = T(1) / norm;
    T dot = 0;  // g . phi
    for (int64_t c = 0; c < C; ++c) dot += g[c] * x[c] * inv;
    for (int64_t c = 0; c < C; ++c) gx[c] = (g[c] - x[c] * inv * dot) * inv;
  } else {
    const T inv = T(1 / kEps);
    for (int64_t c = 0; c < C; ++c) gx[c] = g[c] * inv;
  }
}

}  // namespace

void hydra_fwd(const Tensor& qkv, int64_t branches, Tensor& out, Tensor& kv) {
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3;
  const int64_t C = D / branches;
  LVIT_DISPATCH_FLOAT(qkv.dtype(), "hydra_fwd", [&] {
    using T = scalar_t;
    const T* pqkv = qkv.data<T>();
    T* pout = out.data<T>();
    T* pkv = kv.data<T>();
    parallel_for(B * branches, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t task = s0; task < s1; ++task) {
        const int64_t b = task / branches, c0 = (task % branches) * C;
        const T* img = pqkv + b * N * 3 * D;
        T* kvb = pkv + b * D + c0;  // [C]
        std::fill(kvb, kvb + C, T(0));
        for (int64_t t = 0; t < N; ++t) {
          const T* k = img + t * 3 * D + D + c0;
          const T* v = k + D;
          const T inv = inv_clamped_norm(k, C);
          for (int64_t c = 0; c < C; ++c) kvb[c] += k[c] * inv * v[c];
        }
        for (int64_t t = 0; t < N; ++t) {
          const T* q = img + t * 3 * D + c0;
          T* o = pout + (b * N + t) * D + c0;
          const T inv = inv_clamped_norm(q, C);
          for (int64_t c = 0; c < C; ++c) o[c] = q[c] * inv * kvb[c];
        }
      }
    });
  });
}

void hydra_bwd(const Tensor& gout, const Tensor& qkv, const Tensor& kv, int64_t branches,
               Tensor& gqkv) {
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3;
  const int64_t C = D / branches;
  LVIT_DISPATCH_FLOAT(qkv.dtype(), "hydra_bwd", [&] {
    using T = scalar_t;
    const T* pqkv = qkv.data<T>();
    const T* pgo = gout.data<T>();
    const T* pkv = kv.data<T>();
    T* pg = gqkv.data<T>();
    parallel_for(B * branches, 1, [&](int64_t s0, int64_t s1) {
      std::vector<T> gkv(C), gphi(C);
      for (int64_t task = s0; task < s1; ++task) {
        const int64_t b = task / branches, c0 = (task % branches) * C;
        const T* img = pqkv + b * N * 3 * D;
        const T* gimg = pgo + b * N * D;
        T* gx_img = pg + b * N * 3 * D;
        const T* kvb = pkv + b * D + c0;
        // d/dkv = sum_t g_t * phi(q_t); d/dq_t through phi(q_t)
        std::fill(gkv.begin(), gkv.end(), T(0));
        for (int64_t t = 0; t < N; ++t) {
          const T* q = img + t * 3 * D + c0;
          const T* g = gimg + t * D + c0;
          const T inv = inv_clamped_norm(q, C);
          for (int64_t c = 0; c < C; ++c) {
            gkv[c] += g[c] * q[c] * inv;
            gphi[c] = g[c] * kvb[c];
          }
          normalize_bwd(q, gphi.data(), gx_img + t * 3 * D + c0, C);
        }
        // d/dv_t and d/dk_t through phi(k_t)
        for (int64_t t = 0; t < N; ++t) {
          const T* k = img + t * 3 * D + D + c0;
          const T* v = k + D;
          T* gk = gx_img + t * 3 * D + D + c0;
          T* gv = gk + D;
          const T inv = inv_clamped_norm(k, C);
          for (int64_t c = 0; c < C; ++c) {
            gv[c] = gkv[c] * k[c] * inv;
            gphi[c] = gkv[c] * v[c];
          }
          normalize_bwd(k, gphi.data(), gk, C);
        }
      }
    });
  });
}

}  // namespace lvit::cpu
