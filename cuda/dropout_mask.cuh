// The dropout keep bits on the device, shared by the mask kernels (cuda/dropout.cu) and the
// column sums that apply a mask on the way (cuda/column_sums.cu). Device code: include from .cu
// files only.
#pragma once
#include <cstdint>

#include "core/rng.h"
#include "cuda/context.cuh"

namespace lvit::cuda {

// The current device's Philox offset shift (a device word that graph replays move on; kernels
// add it to their offset).
inline const uint64_t* current_philox_shift() { return context(current_device()).philox_shift; }

// The keep bits of elements 8t .. 8t+7: bit e set iff uniform(word of element 8t + e) >= p.
// Element i takes word i % 4 of Philox block i / 4 (the order of Philox::word and of the CPU
// kernel), so a seed gives the same mask on either device; the test is Philox::keep_threshold's.
__device__ __forceinline__ unsigned keep_bits8(int64_t t, float p, uint64_t seed, uint64_t offset) {
  const uint32_t threshold = Philox::keep_threshold(p);  // loop-invariant in the callers' loops
  unsigned bits = 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    uint32_t c[4];
    Philox::words(seed, offset, static_cast<uint64_t>(2 * t + h), c);
#pragma unroll
    for (int k = 0; k < 4; ++k) bits |= (c[k] >= threshold ? 1u : 0u) << (4 * h + k);
  }
  return bits;
}

}  // namespace lvit::cuda
