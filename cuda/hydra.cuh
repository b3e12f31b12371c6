// Hydra attention kernels (math in ops/hydra.h and DESIGN.md): f32 or bf16 storage, f32
// arithmetic. Host-only header.
//
// Per image b, with phi(x) = x / max(||x||, 1e-6) over each branch's D / branches channels:
//   kv[b] = sum_t phi(k_t) * v_t  (a D-vector),   out_t = phi(q_t) * kv[b].
// Each direction is two kernels over (image, chunk of tokens): the first reads its chunk's rows
// once (branch norms, products, the chunk's token sum), the second sums the chunks' partial
// D-vectors in a fixed order (deterministic, no atomics) and finishes the rows that need the
// whole sum. The partial sums live in a caller-provided workspace.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace lvit::cuda {

// Whether hydra_fwd / hydra_bwd run the vectorised kernels for width D and `branches` (when,
// in addition, qkv, out, gout and gqkv are 16-byte aligned); the generic kernels otherwise.
// For the tests.
bool hydra_fast_shape(int64_t D, int64_t branches);

// Floats of workspace hydra_fwd / hydra_bwd need for B images of N tokens and width D.
int64_t hydra_workspace_floats(int64_t B, int64_t N, int64_t D);

// qkv [B, N, 3D] contiguous (q, then k, then v) -> out [B, N, D] and kv [B, D] (f32, saved for
// backward). qkv and out are of `dtype` (f32 or bf16; bf16 values are widened on load and the
// results rounded once on store). `branches` divides D. All pointers are device memory of the
// current device.
void hydra_fwd(DType dtype, const void* qkv, int64_t B, int64_t N, int64_t D, int64_t branches,
               void* out, float* kv, float* workspace, cudaStream_t stream);

// gout [B, N, D], qkv [B, N, 3D] (of `dtype`), kv [B, D] (f32) from hydra_fwd -> gqkv [B, N, 3D]
// of `dtype` (fully written).
void hydra_bwd(DType dtype, const void* gout, const void* qkv, const float* kv, int64_t B,
               int64_t N, int64_t D, int64_t branches, void* gqkv, float* workspace,
               cudaStream_t stream);

}  // namespace lvit::cuda
