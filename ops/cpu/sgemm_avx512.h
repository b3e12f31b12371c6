// lvit's own fp32 GEMM for AVX-512 CPUs (Goto/BLIS-style packing plus a register-blocked
// micro-kernel). Compiled only where the build targets AVX-512 (-march=native on such a machine,
// or LVIT_CPU_ARCH); elsewhere LVIT_HAVE_SGEMM_AVX512 stays undefined and Eigen does all GEMMs.
#pragma once
#include <cstdint>

#if defined(__AVX512F__)
#define LVIT_HAVE_SGEMM_AVX512 1

namespace lvit::cpu {

// C[M,N] = op(A) op(B) + beta * C (+ bias[j] in every row i, where bias [N] is given: a linear
// layer's bias, added as the first K slice's results are stored, without a pass of its own),
// row-major; op(A) = A (stored [M,K]) or A^T (stored [K,M]), op(B) = B ([K,N]) or B^T ([N,K]);
// K >= 1. beta == 0 never reads C (NaN there is fine). Hands
// blocks of output rows to lvit's thread pool (M <= 14 runs on one thread; the ViT GEMMs have
// hundreds to thousands of rows), never splits K, so the result is bitwise the same
// run to run and for any thread count.
void sgemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, float beta,
                  const float* bias = nullptr);

}  // namespace lvit::cpu

#endif
