// Top-1 correct count on the device (declared in cuda/metrics.cuh).
//
// One warp per row: each lane keeps the best (value, index) of its columns lane, lane + 32, ...,
// the warp reduces them with the lower index winning ties, and lane 0 adds 1 to the count when
// that index is the label. B atomics on one integer per step: negligible next to the step.
#include <cuda_bf16.h>

#include "cuda/check.cuh"
#include "cuda/launch.cuh"
#include "cuda/metrics.cuh"

namespace lvit::cuda {
namespace {

constexpr int kRowsPerBlock = kThreads / 32;

template <typename T, typename L>
__global__ void top1_correct_kernel(const T* __restrict__ logits, const L* __restrict__ labels,
                                    int64_t B, int64_t C, unsigned long long* count) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * kRowsPerBlock;
  for (int64_t r = int64_t{blockIdx.x} * kRowsPerBlock + (threadIdx.x >> 5); r < B; r += warps) {
    const T* row = logits + r * C;
    float best = -INFINITY;
    int64_t idx = C;  // no column yet (NaN rows keep it and count as wrong)
    for (int64_t j = lane; j < C; j += 32) {
      const float v = ld(row[j]);
      if (v > best) best = v, idx = j;  // ascending j per lane: the first maximum stays
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, idx, o);
      if (ob > best || (ob == best && oi < idx)) best = ob, idx = oi;
    }
    if (lane == 0 && idx == static_cast<int64_t>(labels[r])) atomicAdd(count, 1ull);
  }
}

}  // namespace

void add_top1_correct(DType dtype, const void* logits, const void* labels, DType label_dtype,
                      int64_t B, int64_t C, int64_t* count, cudaStream_t stream) {
  if (B <= 0 || C <= 0) return;
  if (label_dtype != DType::i32 && label_dtype != DType::i64)
    unsupported_dtype("add_top1_correct labels", label_dtype);
  auto* n = reinterpret_cast<unsigned long long*>(count);
  const unsigned blocks = grid_for(B, kRowsPerBlock);
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    const T* z = static_cast<const T*>(logits);
    if (label_dtype == DType::i32)
      top1_correct_kernel<<<blocks, kThreads, 0, stream>>>(z, static_cast<const int32_t*>(labels),
                                                           B, C, n);
    else
      top1_correct_kernel<<<blocks, kThreads, 0, stream>>>(z, static_cast<const int64_t*>(labels),
                                                           B, C, n);
  };
  if (dtype == DType::f32)
    launch(float{});
  else if (dtype == DType::bf16)
    launch(__nv_bfloat16{});
  else
    unsupported_dtype("add_top1_correct", dtype);
  after_launch("top1_correct", stream);
}

}  // namespace lvit::cuda
