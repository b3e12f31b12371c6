// GEMMs through cuBLASLt, row-major like the CPU backend (ops/cpu/linear.h). Host-only header;
// the bias gradients' column sums are in cuda/column_sums.cuh.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace lvit::cuda {

// How f32 GEMMs multiply: exact fp32, or TF32 tensor cores (10-bit mantissa operands, fp32
// accumulation; about 8x the fp32 throughput on Hopper). bf16 and f64 GEMMs ignore it.
enum class MathMode { fp32, tf32 };
void set_math_mode(MathMode mode);
MathMode math_mode();

// GEMM tuning, off by default. On, a GEMM's first eager call of a new problem (shape, layout,
// dtypes, epilogue) times up to 8 of cuBLASLt's heuristic algorithms on its operands (into scratch
// outputs) and keeps the fastest for the process; calls inside a CUDA graph capture wait for the
// next eager call. About 1% faster training steps at batch 512 on an H200 (docs/PERF.md), but
// the choice follows timings, so two runs of one seed may round differently: off unless asked
// (lvit-train / lvit-bench --gemm-tune, or LVIT_GEMM_TUNE=1 at start-up; =2 also prints each
// choice to stderr). Plans made while it is off keep the heuristic's first choice.
void set_gemm_tuning(bool on);
bool gemm_tuning();
int64_t gemm_tuned_plans();  // plans tuned so far in this process

// Row-major, batched: for i < batch,
//   C_i[M, N] = op(A_i) op(B_i) (+ bias[N] on every row when bias is not null) + beta C_i
// op(A) = A ([M, K], row stride lda) or A^T (A stored [K, M]); likewise B ([K, N] or [N, K]).
// Matrices of one batch are stride_* elements apart (0 shares the operand). Operands of
// `ab_dtype` (f32, f64 or bf16), result and bias of `c_dtype`: the same, or f32 for bf16
// operands (fp32 accumulation either way; the weight gradient of a bf16 layer comes out f32).
// Runs on the current device's context stream, with the context's workspace.
void gemm(DType ab_dtype, DType c_dtype, bool trans_a, bool trans_b, int64_t M, int64_t N,
          int64_t K, const void* A, int64_t lda, int64_t stride_a, const void* B, int64_t ldb,
          int64_t stride_b, void* C, int64_t ldc, int64_t stride_c, int64_t batch,
          const void* bias = nullptr, float beta = 0.0f);

// The weight gradient of a linear layer with its bias gradient from the same GEMM's epilogue
// (cuBLASLt BGRADB): C = op(A) op(B) as gemm, and bias_grad[M] (of c_dtype) = the sums of op(A)
// over the reduction dimension K, i.e. for gw = g^T x (trans_a) the column sums of g. Returns
// false, doing nothing, when cuBLASLt has no such algorithm for the problem (the caller then
// computes the sums itself).
bool gemm_bias_grad(DType ab_dtype, DType c_dtype, bool trans_a, bool trans_b, int64_t M, int64_t N,
                    int64_t K, const void* A, int64_t lda, const void* B, int64_t ldb, void* C,
                    int64_t ldc, void* bias_grad);

}  // namespace lvit::cuda
