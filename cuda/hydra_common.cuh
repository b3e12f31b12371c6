// Shared by the Hydra kernel files (cuda/hydra.cu: the generic kernels and the public entry
// points; cuda/hydra_fast.cu: the register-resident fast path). Kernel-side only: included by
// .cu files, never by plain C++.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/check.cuh"

namespace lvit::cuda::hydra_detail {

constexpr int kWarps = 8;
constexpr int kCtaThreads = kWarps * 32;
constexpr int kChunkRows = 32;   // token rows per CTA (at most)
constexpr float kEps = 1e-6f;    // the norm clamp of phi (DESIGN.md)
constexpr float kInvEps = 1e6f;  // the CPU's T(1 / kEps)

// d loss / d x of phi(x) = x / max(||x||, eps), given gphi = d loss / d phi(x), the norm and
// dot = gphi . x (ops/cpu/hydra.cpp: the projection off the unit vector, or g / eps when the
// clamp is active).
__device__ __forceinline__ float normalize_bwd(float x, float gphi, float norm, float dot) {
  if (norm >= kEps) {
    const float inv = 1.f / norm;
    return (gphi - x * inv * (dot * inv)) * inv;
  }
  return gphi * kInvEps;
}

inline size_t floats_to_bytes(int64_t n) { return static_cast<size_t>(n) * sizeof(float); }

// fn(float{}) or fn(__nv_bfloat16{}): the storage types of qkv, out, gout and gqkv (the
// arithmetic, kv and the workspace are f32 either way).
template <typename Fn>
void dispatch_storage(DType dtype, const char* what, Fn&& fn) {
  if (dtype == DType::f32)
    fn(float{});
  else if (dtype == DType::bf16)
    fn(__nv_bfloat16{});
  else
    unsupported_dtype(what, dtype);
}

// The fast path (cuda/hydra_fast.cu): runs the step and returns true where it applies (the
// branch width and alignment, see there), else returns false having done nothing.
bool hydra_fwd_fast(DType dtype, const void* qkv, int64_t B, int64_t N, int64_t D, int64_t branches,
                    void* out, float* kv, float* workspace, cudaStream_t stream);
bool hydra_bwd_fast(DType dtype, const void* gout, const void* qkv, const float* kv, int64_t B,
                    int64_t N, int64_t D, int64_t branches, void* gqkv, float* workspace,
                    cudaStream_t stream);

}  // namespace lvit::cuda::hydra_detail
