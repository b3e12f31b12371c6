// CPU GEMM: f32 products on lvit's AVX-512 kernel (ops/cpu/sgemm_avx512.h) where the build has
// AVX-512 and the product is large enough for it to win; everything else on Eigen, split over
// threads by output rows (or columns when rows are few), each thread running Eigen's
// single-threaded kernel on its block.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace lvit::cpu {

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major; op(A) = A or A^T (A stored [K,M]).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
          const T* B, int64_t ldb, T* C, int64_t ldc, T beta = T(0));

// The Eigen path alone (f64, small f32 products, builds without AVX-512); the benchmark compares
// it with gemm().
template <typename T>
void gemm_eigen(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A,
                int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc, T beta = T(0));

// Batched: C_i = op(A_i) op(B_i) for i < batch with element strides between matrices
// (stride_b = 0 shares B). Parallel over the batch, each product on Eigen's single-threaded
// kernel (batch 1 goes to gemm()): the batched products are attention-sized, where the AVX-512
// kernel does not win.
template <typename T>
void gemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                  const T* A, int64_t lda, int64_t stride_a, const T* B, int64_t ldb,
                  int64_t stride_b, T* C, int64_t ldc, int64_t stride_c);

// y[M,N] = x[M,K] w[N,K]^T + b[N] (b may be null).
void linear_fwd(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y);
// gx[M,K] = g w; gw[N,K] = g^T x; gb[N] = column sums of g. Undefined outputs are skipped.
void linear_bwd(const Tensor& g, const Tensor& x, const Tensor& w, Tensor& gx, Tensor& gw,
                Tensor& gb);

}  // namespace lvit::cpu
