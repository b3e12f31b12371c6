#include "ops/cpu/linear.h"

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include <Eigen/Core>

#include "core/thread_pool.h"
#include "ops/cpu/sgemm_avx512.h"
#include "ops/dispatch.h"

namespace lvit::cpu {

namespace {

// Eigen sizes its GEMM blocks from the cache sizes cpuid reports. A cloud VM can report the
// whole host's L3 (300 MB on the development machine) and Eigen then plans blocks for a cache
// this process does not have to itself. Planning for half the L2 (the packed right-hand panel
// shares it with the left-hand block and C) and an L3 of at most two L2s measured 10-25% more
// GFLOP/s on the ViT-S training GEMMs there (docs/PERF.md). Done once, before any product.
bool tune_eigen_blocking() {
  const std::ptrdiff_t l1 = Eigen::l1CacheSize(), l2 = Eigen::l2CacheSize(),
                       l3 = Eigen::l3CacheSize();
  if (l1 > 0 && l2 > 0) Eigen::setCpuCacheSizes(l1, l2 / 2, std::min(std::max(l3, l2), 2 * l2));
  return true;
}
[[maybe_unused]] const bool kEigenBlockingTuned = tune_eigen_blocking();

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using CMap = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using MMap = Eigen::Map<RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// One block, single-threaded: rows [m0, m1) and columns [n0, n1) of C.
template <typename T>
void gemm_block(bool ta, bool tb, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
                const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc, T beta) {
  const int64_t m = m1 - m0, n = n1 - n0;
  MMap<T> c(C + m0 * ldc + n0, m, n, Eigen::OuterStride<>(ldc));
  // op(A) rows m0..m1: A stored [M,K] (row m at A + m*lda) or [K,M] (column m at A + m).
  auto run = [&](const auto& a, const auto& b) {
    if (beta == T(0))
      c.noalias() = a * b;
    else {
      if (beta != T(1)) c *= beta;
      c.noalias() += a * b;
    }
  };
  if (!ta && !tb) {
    run(CMap<T>(A + m0 * lda, m, K, Eigen::OuterStride<>(lda)),
        CMap<T>(B + n0, K, n, Eigen::OuterStride<>(ldb)));
  } else if (!ta && tb) {
    run(CMap<T>(A + m0 * lda, m, K, Eigen::OuterStride<>(lda)),
        CMap<T>(B + n0 * ldb, n, K, Eigen::OuterStride<>(ldb)).transpose());
  } else if (ta && !tb) {
    run(CMap<T>(A + m0, K, m, Eigen::OuterStride<>(lda)).transpose(),
        CMap<T>(B + n0, K, n, Eigen::OuterStride<>(ldb)));
  } else {
    run(CMap<T>(A + m0, K, m, Eigen::OuterStride<>(lda)).transpose(),
        CMap<T>(B + n0 * ldb, n, K, Eigen::OuterStride<>(ldb)).transpose());
  }
}

#if LVIT_HAVE_SGEMM_AVX512
// Whether an f32 product goes to sgemm_avx512 rather than Eigen. Measured on the development VM
// (1 and 2 threads, 2026-11-28): from about 128^3 multiply-adds up the AVX-512 kernel matches or
// beats Eigen (130x384x384: 105 vs 64 GFLOP/s on one thread); on attention-sized products
// (65x65x64) it was slower with A transposed and on two threads, where packing and the pool's
// hand-off are a large share of a 0.5 MFLOP product, so those stay on Eigen.
bool uses_own_sgemm(int64_t M, int64_t N, int64_t K) { return M * N * K >= 128 * 128 * 128; }
#endif

}  // namespace

template <typename T>
void gemm_eigen(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
                const T* B, int64_t ldb, T* C, int64_t ldc, T beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  const int threads = num_threads();
  const double flops = 2.0 * M * N * K;
  if (threads == 1 || flops < 2e5) {
    gemm_block<T>(ta, tb, 0, M, 0, N, K, A, lda, B, ldb, C, ldc, beta);
    return;
  }
  // Split the larger output dimension into one chunk per thread, rounded to 16 rows/columns.
  if (M >= N) {
    int64_t chunk = ((M + threads - 1) / threads + 15) / 16 * 16;
    parallel_for((M + chunk - 1) / chunk, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        gemm_block<T>(ta, tb, t * chunk, std::min(M, (t + 1) * chunk), 0, N, K, A, lda, B, ldb, C,
                      ldc, beta);
    });
  } else {
    int64_t chunk = ((N + threads - 1) / threads + 15) / 16 * 16;
    parallel_for((N + chunk - 1) / chunk, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        gemm_block<T>(ta, tb, 0, M, t * chunk, std::min(N, (t + 1) * chunk), K, A, lda, B, ldb, C,
                      ldc, beta);
    });
  }
}

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
          int64_t ldb, T* C, int64_t ldc, T beta) {
#if LVIT_HAVE_SGEMM_AVX512
  if constexpr (std::is_same_v<T, float>) {
    if (K > 0 && uses_own_sgemm(M, N, K)) {
      sgemm_avx512(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, beta);
      return;
    }
  }
#endif
  gemm_eigen<T>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, beta);
}

template <typename T>
void gemm_batched(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, const T* A,
                  int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T* C,
                  int64_t ldc, int64_t stride_c) {
  if (batch == 1) {
    gemm<T>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    return;
  }
  parallel_for(batch, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      gemm_block<T>(ta, tb, 0, M, 0, N, K, A + i * stride_a, lda, B + i * stride_b, ldb,
                    C + i * stride_c, ldc, T(0));
  });
}

template void gemm_eigen<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t,
                                const float*, int64_t, float*, int64_t, float);
template void gemm_eigen<double>(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t,
                                 const double*, int64_t, double*, int64_t, double);
template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t,
                          const float*, int64_t, float*, int64_t, float);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t,
                           const double*, int64_t, double*, int64_t, double);
template void gemm_batched<float>(bool, bool, int64_t, int64_t, int64_t, int64_t, const float*,
                                  int64_t, int64_t, const float*, int64_t, int64_t, float*, int64_t,
                                  int64_t);
template void gemm_batched<double>(bool, bool, int64_t, int64_t, int64_t, int64_t, const double*,
                                   int64_t, int64_t, const double*, int64_t, int64_t, double*,
                                   int64_t, int64_t);

namespace {

// y [M,N] = x [M,K] w^T (+ bias [N]) on sgemm_avx512, where it takes the product (f32, big
// enough), with the bias added as the results are stored rather than copied into y first;
// false where it does not (the caller runs the generic path).
template <typename T>
bool linear_fwd_own_sgemm(int64_t, int64_t, int64_t, const T*, const T*, const T*, T*) {
  return false;
}
#if LVIT_HAVE_SGEMM_AVX512
template <>
bool linear_fwd_own_sgemm<float>(int64_t M, int64_t N, int64_t K, const float* x, const float* w,
                                 const float* bias, float* y) {
  if (K == 0 || !uses_own_sgemm(M, N, K)) return false;
  sgemm_avx512(false, true, M, N, K, x, K, w, K, y, N, 0.f, bias);
  return true;
}
#endif

}  // namespace

void linear_fwd(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  const int64_t M = x.shape()[0], K = x.shape()[1], N = w.shape()[0];
  LVIT_DISPATCH_FLOAT(x.dtype(), "linear", [&] {
    using T = scalar_t;
    T* py = y.data<T>();
    if (linear_fwd_own_sgemm(M, N, K, x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr,
                             py))
      return;
    if (b.defined()) {
      // Start from the bias so the GEMM accumulates onto it (beta = 1): no extra pass over y.
      const T* pb = b.data<T>();
      parallel_for(M, 256, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) std::copy(pb, pb + N, py + i * N);
      });
    }
    gemm<T>(false, true, M, N, K, x.data<T>(), K, w.data<T>(), K, py, N, b.defined() ? T(1) : T(0));
  });
}

void linear_bwd(const Tensor& g, const Tensor& x, const Tensor& w, Tensor& gx, Tensor& gw,
                Tensor& gb) {
  const int64_t M = x.shape()[0], K = x.shape()[1], N = w.shape()[0];
  LVIT_DISPATCH_FLOAT(x.dtype(), "linear_bwd", [&] {
    using T = scalar_t;
    const T* pg = g.data<T>();
    if (gx.defined()) gemm<T>(false, false, M, K, N, pg, N, w.data<T>(), K, gx.data<T>(), K);
    if (gw.defined()) gemm<T>(true, false, N, K, M, pg, N, x.data<T>(), K, gw.data<T>(), K);
    if (gb.defined()) {
      T* pb = gb.data<T>();
      parallel_for(N, 64, [&](int64_t s, int64_t e) {
        std::fill(pb + s, pb + e, T(0));
        for (int64_t i = 0; i < M; ++i) {
          const T* row = pg + i * N;
          for (int64_t j = s; j < e; ++j) pb[j] += row[j];
        }
      });
    }
  });
}

}  // namespace lvit::cpu
