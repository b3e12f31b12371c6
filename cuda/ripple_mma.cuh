// Building blocks shared by the Ripple tensor-core kernels (cuda/ripple_small.cu: the dense form
// for N <= 128; cuda/ripple_linear_mma.cu: the linear form for longer grids): phi = elu + 1 on
// bf16 pairs, in place over shared tiles, the chain through phi' on the way out, storing an
// A fragment, and the deterministic block sums of d loss / d alpha. Kernel files only; fragment
// layouts in cuda/attention_mma.cuh.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#include "cuda/attention_mma.cuh"

namespace lvit::cuda::tc {

// phi(x) = elu(x) + 1 of both bf16 halves of v, rounded to bf16, as max(x, 0) + exp(min(x, 0)):
// for x > 0 that is x + 1 (one bf16 add, which rounds the exact sum once, as the fp32 sum
// rounded to bf16 does), for x <= 0 it is 0 + exp(x) (fp32 with the hardware exp2, rounded
// once). Packed min/max/add, no branch and no select per element. phi'(x) = min(phi(x), 1).
__device__ __forceinline__ uint32_t phi2(uint32_t v) {
  __nv_bfloat162 x;
  memcpy(&x, &v, sizeof x);
  const __nv_bfloat162 zero2 = __float2bfloat162_rn(0.f);
  const float2 f = __bfloat1622float2(__hmin2(x, zero2));
  const uint32_t e = pack_bf16(__expf(f.x), __expf(f.y));
  __nv_bfloat162 eh;
  memcpy(&eh, &e, sizeof eh);
  const __nv_bfloat162 p = __hadd2(__hmax2(x, zero2), eh);
  uint32_t r;
  memcpy(&r, &p, sizeof r);
  return r;
}

// x = phi(x) in place for rows 0 .. N-1 of a bf16 tile of D columns and row stride ld
// (rounded to bf16: the mma operand). Padded rows stay zero (phi(0) = 1 would give them
// weight). Every thread of the block takes part.
template <int D>
__device__ void phi_rows(bf16* x, int N, int ld = D + 8) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < N * kChunks; i += blockDim.x) {
    uint4* p = reinterpret_cast<uint4*>(x + (i / kChunks) * ld + (i % kChunks) * 8);
    uint32_t v[4];
    memcpy(v, p, sizeof v);
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = phi2(v[k]);
    memcpy(p, v, sizeof v);
  }
}

// stage_acc (cuda/attention_mma.cuh) with the chain through phi: dst = acc * min(phi, 1)
// elementwise, phi being the warp's [16][D+8] rows of phi(x) (bf16; may be dst itself: each
// lane reads its elements before writing them).
template <int D>
__device__ __forceinline__ void stage_chain(bf16* dst, const float (&acc)[D / 8][4],
                                            const bf16* phis, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const int o0 = g * (D + 8) + n * 8 + 2 * t, o1 = o0 + 8 * (D + 8);
    const float2 p0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(phis + o0));
    const float2 p1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(phis + o1));
    *reinterpret_cast<__nv_bfloat162*>(dst + o0) =
        __floats2bfloat162_rn(acc[n][0] * fminf(p0.x, 1.f), acc[n][1] * fminf(p0.y, 1.f));
    *reinterpret_cast<__nv_bfloat162*>(dst + o1) =
        __floats2bfloat162_rn(acc[n][2] * fminf(p1.x, 1.f), acc[n][3] * fminf(p1.y, 1.f));
  }
}

// Stores a 16x16 block held as an A fragment (cuda/attention_mma.cuh) into rows r0.., cols c0..
// of a row-major bf16 tile with row stride ld.
__device__ __forceinline__ void store_a(bf16* base, int ld, int r0, int c0, const uint32_t (&a)[4],
                                        int lane) {
  bf16* p = base + (r0 + lane / 4) * ld + c0 + 2 * (lane % 4);
  *reinterpret_cast<uint32_t*>(p) = a[0];
  *reinterpret_cast<uint32_t*>(p + 8 * ld) = a[1];
  *reinterpret_cast<uint32_t*>(p + 8) = a[2];
  *reinterpret_cast<uint32_t*>(p + 8 * ld + 8) = a[3];
}

// tot[k] (in thread 0) = the sum over the block's threads of v[k], k < K, in f64: warp
// shuffles, then a fixed-order sum over the warps, so the result is deterministic. red is
// shared scratch of K doubles per warp. Contains a barrier: every thread must call it.
template <int K>
__device__ __forceinline__ void block_sums(const double (&v)[K], double* red, double (&tot)[K]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    double x = v[k];
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    if (lane == 0) red[warp * K + k] = x;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int k = 0; k < K; ++k) tot[k] = 0.0;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w)
      for (int k = 0; k < K; ++k) tot[k] += red[w * K + k];
  }
}

}  // namespace lvit::cuda::tc
