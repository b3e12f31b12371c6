// Softmax attention on the CPU: per (image, head), Q K^T, row softmax and P V on Eigen maps
// that read q, k, v straight out of the fused qkv rows (row stride 3D), so no head split copy.
#include "ops/cpu/attention.h"

#include <Eigen/Core>
#include <cmath>

#include "core/thread_pool.h"
#include "ops/dispatch.h"

namespace lvit::cpu {

namespace {
template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using CMap = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using MMap = Eigen::Map<RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
}  // namespace

void softmax_attention_fwd(const Tensor& qkv, int64_t H, Tensor& out, Tensor& probs) {
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3, d = D / H;
  LVIT_DISPATCH_FLOAT(qkv.dtype(), "softmax_attention", [&] {
    using T = scalar_t;
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
    const T* base = qkv.data<T>();
    T* po = out.data<T>();
    T* pp = probs.data<T>();
    parallel_for(B * H, 1, [&](int64_t s, int64_t e) {
      for (int64_t bh = s; bh < e; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const T* row0 = base + b * N * 3 * D;
        CMap<T> q(row0 + h * d, N, d, Eigen::OuterStride<>(3 * D));
        CMap<T> k(row0 + D + h * d, N, d, Eigen::OuterStride<>(3 * D));
        CMap<T> v(row0 + 2 * D + h * d, N, d, Eigen::OuterStride<>(3 * D));
        MMap<T> p(pp + bh * N * N, N, N, Eigen::OuterStride<>(N));
        p.noalias() = (q * k.transpose()) * scale;
        for (int64_t i = 0; i < N; ++i) {
          // Row softmax on an Eigen array: its exp is vectorised (libm's is not).
          Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> r(p.data() + i * N, N);
          r = (r - r.maxCoeff()).exp();
          r *= T(1) / r.sum();
        }
        MMap<T> o(po + b * N * D + h * d, N, d, Eigen::OuterStride<>(D));
        o.noalias() = p * v;
      }
    });
  });
}

void softmax_attention_bwd(const Tensor& gout, const Tensor& qkv, const Tensor& out,
                           const Tensor& probs, int64_t H, Tensor& gqkv) {
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3, d = D / H;
  LVIT_DISPATCH_FLOAT(qkv.dtype(), "softmax_attention_bwd", [&] {
    using T = scalar_t;
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
    const T* base = qkv.data<T>();
    const T* pgo = gout.data<T>();
    const T* pout = out.data<T>();
    const T* pp = probs.data<T>();
    T* pg = gqkv.data<T>();
    parallel_for(B * H, 1, [&](int64_t s, int64_t e) {
      RowMat<T> ds(N, N);
      for (int64_t bh = s; bh < e; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const T* row0 = base + b * N * 3 * D;
        CMap<T> q(row0 + h * d, N, d, Eigen::OuterStride<>(3 * D));
        CMap<T> k(row0 + D + h * d, N, d, Eigen::OuterStride<>(3 * D));
        CMap<T> v(row0 + 2 * D + h * d, N, d, Eigen::OuterStride<>(3 * D));
        CMap<T> go(pgo + b * N * D + h * d, N, d, Eigen::OuterStride<>(D));
        CMap<T> o(pout + b * N * D + h * d, N, d, Eigen::OuterStride<>(D));
        CMap<T> p(pp + bh * N * N, N, N, Eigen::OuterStride<>(N));
        T* grow0 = pg + b * N * 3 * D;
        MMap<T> gq(grow0 + h * d, N, d, Eigen::OuterStride<>(3 * D));
        MMap<T> gk(grow0 + D + h * d, N, d, Eigen::OuterStride<>(3 * D));
        MMap<T> gv(grow0 + 2 * D + h * d, N, d, Eigen::OuterStride<>(3 * D));
        gv.noalias() = p.transpose() * go;
        ds.noalias() = go * v.transpose();  // dP
        // dS = P * (dP - rowsum(dP * P)); rowsum(dP * P)_i = dO_i . O_i
        for (int64_t i = 0; i < N; ++i) {
          const T dot = go.row(i).dot(o.row(i));
          for (int64_t j = 0; j < N; ++j) ds(i, j) = p(i, j) * (ds(i, j) - dot) * scale;
        }
        gq.noalias() = ds * k;
        gk.noalias() = ds.transpose() * q;
      }
    });
  });
}

}  // namespace lvit::cpu
