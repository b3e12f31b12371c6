// Fused softmax attention on the device, forward and backward: the CUDA half of
// ops/attention.cpp. Host-only header; raw pointers to device memory of the current device,
// launched on `stream`.
//
// Layouts (all contiguous, row-major, as ops/attention.h):
//   qkv  [B, N, 3*H*d]  q, then k, then v; head h owns channels h*d .. h*d+d-1 of each
//   out  [B, N, H*d]    heads in the same channel layout
//   lse  [B, H, N]      f32: natural-log logsumexp of each row of scaled scores, the only thing
//                       the forward keeps for the backward besides qkv and out
//   gqkv [B, N, 3*H*d]  the gradient, fully written (dq, dk, dv in the layout of qkv)
//   delta [B, H, N]     f32 scratch of the backward: rowsum(dO * O) per head
// The N x N scores never reach global memory. Three kernel families:
//  - small (bf16, d in {16, 32, 64}, N <= 128; cuda/attention_small.cu): one block per
//    (image, head) keeps the head's Q, K, V (O, dO) in shared memory; the forward computes the
//    whole score rows on chip, the backward is one kernel writing dq, dk and dv once each.
//  - tiled (bf16, d >= 16, any N; cuda/attention_mma.cu): the forward streams key tiles through
//    an online softmax (FlashAttention), the backward recomputes the probabilities from lse
//    (FlashAttention-2): one kernel per query tile for dq (which also computes delta), one per
//    key tile for dk and dv, so every gradient element has exactly one writer, no atomics.
//  - simt (f32, and bf16 with d = 8; cuda/attention.cu): the tiled structure on CUDA cores,
//    after a separate delta pass.
//
// Element types: f32 (SIMT kernels, fp32 throughout) and bf16 (fp32 accumulation, softmax and
// lse; tensor-core mma.sync kernels for d >= 16, the SIMT kernels on bf16 storage for d = 8).
// Head dims: 8, 16, 32, 64, 128. Any N >= 1 (partial tiles are masked).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace lvit::cuda {

struct AttentionDims {
  int64_t batch = 0;     // B
  int64_t tokens = 0;    // N
  int64_t heads = 0;     // H
  int64_t head_dim = 0;  // d
};

// Which kernel family runs: `automatic` is what the op uses (tensor cores for bf16 with
// d >= 16, SIMT otherwise; among the tensor-core kernels `small` where it applies, else
// `tiled`); the others force a family, for tests and benchmarks. `mma` is the tensor cores with
// the automatic choice between small and tiled; `mma` and `mma_tiled` need bf16 and d >= 16,
// `mma_small` bf16, d in {16, 32, 64} and N <= 128.
enum class AttentionKernel { automatic, simt, mma, mma_tiled, mma_small };

inline bool attention_head_dim_supported(int64_t d) {
  return d == 8 || d == 16 || d == 32 || d == 64 || d == 128;
}
inline bool attention_dtype_supported(DType t) { return t == DType::f32 || t == DType::bf16; }

// out, lse = softmax attention of qkv. `dtype` is that of qkv and out (f32 or bf16). qkv, out
// must be 16-byte aligned for bf16 (the tensor-core kernels move 16-byte vectors). Throws
// lvit::Error for an unsupported dtype or head dim.
void attention_fwd(DType dtype, const void* qkv, void* out, float* lse, const AttentionDims& dims,
                   cudaStream_t stream, AttentionKernel kernel = AttentionKernel::automatic);

// gqkv = d(loss)/d(qkv) from gout = d(loss)/d(out) and what the forward saved (qkv, out, lse).
// `delta` is scratch of B*H*N floats (the small kernels leave it untouched: see
// attention_bwd_needs_delta). gout, qkv, out, gqkv
// are of `dtype` and, for bf16, 16-byte aligned.
void attention_bwd(DType dtype, const void* gout, const void* qkv, const void* out,
                   const float* lse, float* delta, void* gqkv, const AttentionDims& dims,
                   cudaStream_t stream, AttentionKernel kernel = AttentionKernel::automatic);

// Whether attention_bwd with the automatic kernel choice uses its `delta` scratch (false for the
// one-block-per-head kernels, which may then be given nullptr).
bool attention_bwd_needs_delta(DType dtype, const AttentionDims& dims);

namespace detail {
// The tensor-core (bf16, mma.sync) launchers, called by the two above.
// cuda/attention_mma.cu, d in {16, 32, 64, 128}, any N; bwd writes delta (B*H*N floats) itself.
void attention_fwd_mma(const void* qkv, void* out, float* lse, const AttentionDims& dims,
                       cudaStream_t stream);
void attention_bwd_mma(const void* gout, const void* qkv, const void* out, const float* lse,
                       float* delta, void* gqkv, const AttentionDims& dims, cudaStream_t stream);
// cuda/attention_small.cu, where attention_small_supported: d in {16, 32, 64}, N <= 128 (the
// launchers need N >= 1).
bool attention_small_supported(const AttentionDims& dims);
void attention_fwd_small(const void* qkv, void* out, float* lse, const AttentionDims& dims,
                         cudaStream_t stream);
void attention_bwd_small(const void* gout, const void* qkv, const void* out, const float* lse,
                         void* gqkv, const AttentionDims& dims, cudaStream_t stream);
}  // namespace detail

}  // namespace lvit::cuda
