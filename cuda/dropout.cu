// Dropout / drop-path mask kernel and launcher (declared in cuda/dropout.cuh).
#include "core/rng.h"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/dropout.cuh"
#include "cuda/launch.cuh"

namespace lvit::cuda {
namespace {

// Dropout: one Philox block per thread gives the 4 words of elements 4t .. 4t+3 (the stream
// order of Philox::word), so each block of rounds is computed once.
template <typename T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, float p,
                               acc_t<T> scale, uint64_t seed, uint64_t offset,
                               const uint64_t* __restrict__ shift) {
  offset += *shift;
  const int64_t blocks = (n + 3) / 4;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < blocks;
       t += int64_t{gridDim.x} * blockDim.x) {
    uint32_t c[4] = {static_cast<uint32_t>(t),
                     static_cast<uint32_t>(static_cast<uint64_t>(t) >> 32),
                     static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)};
    Philox::block(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * t + k;
      if (i >= n) break;
      const float u = static_cast<float>(c[k] >> 8) * (1.0f / 16777216.0f);
      y[i] = st<T>(u >= p ? ld(x[i]) * scale : acc_t<T>(0));
    }
  }
}

// Drop-path: one uniform per sample of `group` elements.
template <typename T>
__global__ void drop_path_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                 int64_t group, float p, acc_t<T> scale, uint64_t seed,
                                 uint64_t offset, const uint64_t* __restrict__ shift) {
  offset += *shift;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const bool keep = Philox::uniform(seed, offset, static_cast<uint64_t>(i / group)) >= p;
    y[i] = st<T>(keep ? ld(x[i]) * scale : acc_t<T>(0));
  }
}

}  // namespace

void apply_mask(DType dtype, const void* x, void* y, int64_t n, double p, uint64_t seed,
                uint64_t offset, int64_t group, cudaStream_t stream) {
  if (n == 0) return;
  int device = 0;
  LVIT_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t* shift = context(device).philox_shift;
  dispatch_floating(dtype, "dropout", [&](auto zero) {
    using T = decltype(zero);
    const acc_t<T> scale = static_cast<acc_t<T>>(1.0 / (1.0 - p));
    const auto* px = static_cast<const T*>(x);
    auto* py = static_cast<T*>(y);
    if (group == 1)
      dropout_kernel<T><<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(
          px, py, n, static_cast<float>(p), scale, seed, offset, shift);
    else
      drop_path_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
          px, py, n, group, static_cast<float>(p), scale, seed, offset, shift);
  });
  after_launch("dropout", stream);
}

}  // namespace lvit::cuda
