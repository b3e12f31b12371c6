// Ripple attention kernels (math in ops/ripple.h, DESIGN.md "Linear-time form" and
// docs/attention.md): the linear form in f32 for any size, and on tensor cores in bf16 the
// dense form for short sequences and the linear form for longer grids (below). Host-only
// header.
//
// One CTA per (image, head) computes the linear-time telescoped form in shared memory:
//   num_i = alpha_{S-1} phi(q_i)^T [KV_all, z_all]  +  sum_j W(i, j) (phi(q_i).phi(k_j)) [v_j, 1]
// where the second sum runs over the cells j of i's level-(S-2) dyadic block, W(i, j) =
// alpha_{level(i,j)} - alpha_{S-1} (the telescoped level coefficients summed), and out =
// num[:d] / (num[d] + 1e-6). When that block is larger than a 64-cell tile (S >= 6 on a 16x16
// grid and up; S >= 5 on 8x8 and up for head widths above 64), the levels beyond the tile run as
// extra passes of block-local linear attention over the same outputs. The stage weights alpha
// are computed from the logits on the device, and the logits' gradient is reduced over the
// batch on the device: no host synchronisation, so a CUDA graph can capture the whole step.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace lvit::cuda {

// Largest head width D / heads the kernels support.
inline constexpr int64_t kRippleMaxHeadDim = 128;

// Rows of d loss / d alpha [heads, stages] in a backward's workspace: up to this many per image
// (the dense kernels write one per warp), then up to kRippleLogitsPartialRows rows of
// ripple_logits_grad's partial sums after them (ripple_bwd_workspace_doubles counts both).
inline constexpr int64_t kRippleGalphaRowsPerImage = 8;
inline constexpr int64_t kRippleLogitsPartialRows = 64;

// qkv [B, N, 3D] contiguous (q, then k, then v; head h owns channels h d .. h d + d - 1 of
// each), logits [heads, stages - 1] (nullptr when stages == 1), N = 1 + grid^2 with grid a power
// of two -> out [B, N, D] and den [B, heads, N] (the denominators without eps, which backward
// reads). 1 <= stages <= 32. All pointers are device memory of the current device.
void ripple_fwd(const float* qkv, const float* logits, int64_t B, int64_t N, int64_t D,
                int64_t heads, int64_t stages, int64_t grid, float* out, float* den,
                cudaStream_t stream);

// Doubles of workspace ripple_bwd and the tensor-core backwards need (the stage weights'
// gradients: kRippleGalphaRowsPerImage rows per image and kRippleLogitsPartialRows more).
int64_t ripple_bwd_workspace_doubles(int64_t B, int64_t heads, int64_t stages);

// gout [B, N, D] and qkv, logits, out, den as in and from ripple_fwd -> gqkv [B, N, 3D] (fully
// written) and, unless glogits is nullptr (stages > 1 only), glogits [heads, stages - 1] =
// d loss / d logits summed over the batch.
void ripple_bwd(const float* gout, const float* qkv, const float* logits, const float* out,
                const float* den, int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages,
                int64_t grid, float* gqkv, float* glogits, double* workspace, cudaStream_t stream);

// ---- the dense form on tensor cores (cuda/ripple_small.cu) ----
// For short sequences the N x N weights fit on chip: one CTA of ceil(N/16) warps per (image,
// head) computes s = phi(Q) phi(K)^T, the weighted P and O = P V with bf16 mma.sync (fp32
// accumulation), like the softmax kernels of cuda/attention_small.cu. Same contract as
// ripple_fwd / ripple_bwd (logits, den, glogits f32; the workspace of
// ripple_bwd_workspace_doubles), but qkv, out, gout and gqkv are bf16 and 16-byte aligned, and
// the backward does not read the output (it recomputes g_i . o_i in fp32, see the kernel).
// ops/ripple.cpp runs them for bf16 where ripple_small_supported (RippleImpl::automatic) or when
// asked to (RippleImpl::dense); everything else takes the linear kernels.

// Whether the dense tensor-core kernels take N tokens of head width head_dim: N <= 128 (grids
// up to 8x8) and head_dim 16, 32 or 64.
bool ripple_small_supported(int64_t N, int64_t head_dim);

void ripple_small_fwd(const void* qkv, const float* logits, int64_t B, int64_t N, int64_t D,
                      int64_t heads, int64_t stages, int64_t grid, void* out, float* den,
                      cudaStream_t stream);
void ripple_small_bwd(const void* gout, const void* qkv, const float* logits, const float* den,
                      int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages, int64_t grid,
                      void* gqkv, float* glogits, double* workspace, cudaStream_t stream);

// ---- the linear form on tensor cores (cuda/ripple_linear_mma.cu) ----
// For longer grids: one CTA of 4 warps per (image, head) streams tiles of 64 tokens, keeps the
// d x d sums (KV, z; backward also GQ = phi(Q)^T U) in fp32 registers, then bf16 in shared
// memory, and computes the local levels as one 16x16 block per aligned 4x4 block of cells, all
// with bf16 mma.sync (fp32 accumulation). Same contract as ripple_small_fwd / ripple_small_bwd.
// ops/ripple.cpp runs them for bf16 where ripple_linear_mma_supported and the dense kernels do
// not apply (RippleImpl::automatic), or for bf16 with RippleImpl::linear.

// Whether the linear tensor-core kernels take N tokens of head width head_dim with `stages`
// stages: N = 1 + g^2 for g = 4, 8, 16 or 32, head_dim 32 or 64, 1 <= stages <= 4 (every local
// level inside a 4x4 block of cells).
bool ripple_linear_mma_supported(int64_t N, int64_t head_dim, int64_t stages);

void ripple_linear_mma_fwd(const void* qkv, const float* logits, int64_t B, int64_t N, int64_t D,
                           int64_t heads, int64_t stages, int64_t grid, void* out, float* den,
                           cudaStream_t stream);
void ripple_linear_mma_bwd(const void* gout, const void* qkv, const float* logits, const float* den,
                           int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages,
                           int64_t grid, void* gqkv, float* glogits, double* workspace,
                           cudaStream_t stream);

// glogits [heads, stages - 1] = d loss / d logits from galpha [rows, heads, stages], d loss /
// d alpha per image (or per warp of an image) and head, what the backwards leave in their
// workspace: the sum over the rows, then the stick-breaking Jacobian, in f64, deterministic.
// Past 1,024 rows the sum takes two levels, whose partial sums go to the workspace after the rows
// (room for kRippleLogitsPartialRows more rows: ripple_bwd_workspace_doubles). 2 <= stages <= 32.
// The backwards call it.
void ripple_logits_grad(double* galpha, const float* logits, int64_t rows, int64_t heads,
                        int64_t stages, float* glogits, cudaStream_t stream);

}  // namespace lvit::cuda
