// Building blocks of the tensor-core attention kernels (cuda/attention_mma.cu: the streaming
// kernels for any N; cuda/attention_small.cu: one block per head for N <= 128). Kernel files
// only.
//
// Every product is a warp-level mma.sync.m16n8k16 (bf16 x bf16 -> f32). Operands are read out
// of shared memory with ldmatrix (x4: four 8x8 matrices per instruction; .trans where the
// operand is stored with the reduction index as its row). Shared rows are padded by 8 elements
// (16 bytes) to an odd multiple of 16 bytes, which puts the eight 16-byte rows of every 8x8
// ldmatrix in distinct bank quads.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16", bf16), with g = lane/4 and
// t = lane%4:
//   A (16x16, 4 regs of 2 bf16): a0 (row g, cols 2t, 2t+1), a1 (row g+8, same cols),
//                                 a2 (row g, cols 2t+8, 2t+9), a3 (row g+8, cols 2t+8, 2t+9)
//   B (16x8, 2 regs):            b0 (rows 2t, 2t+1, col g), b1 (rows 2t+8, 2t+9, col g)
//   C (16x8, 4 f32):             c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g+8, same cols)
// The lower-indexed element of each pair sits in the low 16 bits. So the C fragments of two
// adjacent 16x8 score blocks are exactly the A fragment of the 16x16 block they form, which is
// how probabilities go from the QK^T product into the PV product without leaving registers.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#include "cuda/attention_ptx.cuh"

namespace lvit::cuda::tc {

using bf16 = __nv_bfloat16;

// The (image, head) of a kernel with one CTA per (image, head), blockIdx.x = b H + h, and the
// strides around it: qkv is [B, N, 3 H D] (row stride ld = 3 HD; q, k, v of head h at columns
// h D, HD + h D, 2 HD + h D), out and gout are [B, N, H D] (row stride HD).
struct HeadSlice {
  int64_t bh, b;
  int h;
  int64_t HD, ld;
};
template <int D>
__device__ __forceinline__ HeadSlice head_slice(int H) {
  const int64_t bh = blockIdx.x, HD = int64_t{H} * D;
  return {bh, bh / H, static_cast<int>(bh % H), HD, 3 * HD};
}
using ptx::cp_async16;
using ptx::cp_async_commit;
using ptx::cp_async_wait;
using ptx::ldsm_x4;
using ptx::ldsm_x4_trans;
using ptx::mma;

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // lo -> .x, the low 16 bits
  uint32_t r;
  memcpy(&r, &v, sizeof r);
  return r;
}

// ---- fragment loads from shared memory (row stride `ld` elements) -----------------------------
// In each ldmatrix.x4, lanes 8i..8i+7 give the row addresses of matrix i, and register i of
// every lane receives its fragment of matrix i.

// A fragment of the 16x16 block at rows m0.., cols k0.. of a row-major [m][k] tile: matrices
// (rows +0, cols +0), (+8, +0), (+0, +8), (+8, +8) -> a0..a3.
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* base, int ld, int m0, int k0,
                                       int lane) {
  ldsm_x4(a, base + (m0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * ld + k0 + 8 * (lane >> 4));
}

// The same A fragment (rows m0.., reduction index k0..) from a tile stored transposed, [k][m]
// (dS^T in dQ = dS K): transposing loads of the stored blocks (k +0, m +0), (k +0, m +8),
// (k +8, m +0), (k +8, m +8). With .trans, lane l receives stored elements (rows 2t, 2t+1;
// col g) = A(row g; cols 2t, 2t+1) of each block, which is the a0..a3 layout.
__device__ __forceinline__ void load_a_trans(uint32_t (&a)[4], const bf16* base, int ld, int m0,
                                             int k0, int lane) {
  ldsm_x4_trans(a, base + (k0 + (lane & 7) + 8 * (lane >> 4)) * ld + m0 + 8 * ((lane >> 3) & 1));
}

// B fragments for output columns n0..n0+7 (b[0], b[1]) and n0+8..n0+15 (b[2], b[3]) over the
// reduction index k0..k0+15, from a tile stored [n][k] (K in S = Q K^T): matrices
// (n +0, k +0), (n +0, k +8), (n +8, k +0), (n +8, k +8).
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const bf16* base, int ld, int n0,
                                          int k0, int lane) {
  ldsm_x4(b, base + (n0 + (lane & 7) + 8 * (lane >> 4)) * ld + k0 + 8 * ((lane >> 3) & 1));
}

// The same fragments from a tile stored [k][n] (V in O = P V): transposing loads of matrices
// (k +0, n +0), (k +8, n +0), (k +0, n +8), (k +8, n +8). With .trans, lane l receives elements
// (rows 2t, 2t+1; col g) of each stored 8x8 matrix, which is the b0/b1 layout.
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const bf16* base, int ld, int k0,
                                          int n0, int lane) {
  ldsm_x4_trans(b, base + (k0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * ld + n0 + 8 * (lane >> 4));
}

// A fragment of the 16x16 block formed by two 16x8 accumulator blocks (see the file comment).
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&lo)[4],
                                         const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

// ---- warp products ------------------------------------------------------------------------------

// acc (16 x D, D/8 accumulator blocks of 16x8) += A times rows k0 .. k0+15 of the [k][D+8] tile
// b (O += P V, dq += dS K, dv += P^T dO, ...), A a 16x16 fragment.
template <int D>
__device__ __forceinline__ void mma_a_rows(float (&acc)[D / 8][4], const uint32_t (&a)[4],
                                           const bf16* b, int ld, int k0, int lane) {
#pragma unroll
  for (int np = 0; np < D / 16; ++np) {
    uint32_t bb[4];
    load_b_kn(bb, b, ld, k0, np * 16, lane);
    mma(acc[2 * np], a, bb[0], bb[1]);
    mma(acc[2 * np + 1], a, bb[2], bb[3]);
  }
}

// s (16 x 16NB, 2NB accumulator blocks of 16x8) += rows r0 .. r0+15 of the tile a (row stride
// lda) times rows 0 .. 16NB-1 of the tile b (row stride ldb), transposed (S = Q K^T), over
// D columns.
template <int D, int NB>
__device__ __forceinline__ void mma_rows_bt(float (&s)[2 * NB][4], const bf16* a, int lda,
                                            const bf16* b, int ldb, int r0, int lane) {
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
    uint32_t fa[4];
    load_a(fa, a, lda, r0, kd * 16, lane);
#pragma unroll
    for (int np = 0; np < NB; ++np) {
      uint32_t fb[4];
      load_b_nk(fb, b, ldb, np * 16, kd * 16, lane);
      mma(s[2 * np], fa, fb[0], fb[1]);
      mma(s[2 * np + 1], fa, fb[2], fb[3]);
    }
  }
}
// Both tiles with row stride ld ([.][D+8]).
template <int D, int NB>
__device__ __forceinline__ void mma_rows_bt(float (&s)[2 * NB][4], const bf16* a, const bf16* b,
                                            int ld, int r0, int lane) {
  mma_rows_bt<D, NB>(s, a, ld, b, ld, r0, lane);
}

// ---- global <-> shared tiles -------------------------------------------------------------------

// Asynchronously: dst[r][0..D) = src[(first + r) * ld + 0..D) for r < rows, zero rows past N.
// dst has row stride D+8. Every thread of the block takes part.
template <int D>
__device__ __forceinline__ void load_rows(bf16* dst, const bf16* __restrict__ src, int64_t ld,
                                          int first, int rows, int N) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < rows * kChunks; i += blockDim.x) {
    const int r = i / kChunks, c = (i % kChunks) * 8, tok = first + r;
    const int64_t src_row = tok < N ? tok : N - 1;  // a valid address even when zero-filling
    cp_async16(dst + r * (D + 8) + c, src + src_row * ld + c, tok < N);
  }
}

// One warp: dst[(first + r) * ld + 0..D) = src[r][0..D) for the rows r < 16 with first + r < N,
// in 16-byte stores; src is this warp's [16][D+8] staging area.
template <int D>
__device__ __forceinline__ void store_rows(bf16* __restrict__ dst, int64_t ld, const bf16* src,
                                           int first, int N, int lane) {
  constexpr int kChunks = D / 8;
  for (int i = lane; i < 16 * kChunks; i += 32) {
    const int r = i / kChunks, c = (i % kChunks) * 8, tok = first + r;
    if (tok < N)
      *reinterpret_cast<uint4*>(dst + tok * ld + c) =
          *reinterpret_cast<const uint4*>(src + r * (D + 8) + c);
  }
}

// Writes a warp's 16 x D fp32 accumulator (times `s0` for row g, `s1` for row g+8) as bf16 into
// its [16][D+8] staging area.
template <int D>
__device__ __forceinline__ void stage_acc(bf16* dst, const float (&acc)[D / 8][4], float s0,
                                          float s1, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    *reinterpret_cast<__nv_bfloat162*>(dst + g * (D + 8) + n * 8 + 2 * t) =
        __floats2bfloat162_rn(acc[n][0] * s0, acc[n][1] * s0);
    *reinterpret_cast<__nv_bfloat162*>(dst + (g + 8) * (D + 8) + n * 8 + 2 * t) =
        __floats2bfloat162_rn(acc[n][2] * s1, acc[n][3] * s1);
  }
}

// sum_c a[c] * b[c] over the 8 bf16 of two 16-byte vectors, in fp32.
__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_bfloat162 x, y;
    memcpy(&x, &av[i], sizeof x);
    memcpy(&y, &bv[i], sizeof y);
    const float2 xf = __bfloat1622float2(x), yf = __bfloat1622float2(y);
    s = fmaf(xf.x, yf.x, s);
    s = fmaf(xf.y, yf.y, s);
  }
  return s;
}

template <int R, int C>
__device__ __forceinline__ void zero(float (&a)[R][C]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < C; ++j) a[i][j] = 0.f;
}

// Max / sum over the 4 lanes that share a fragment row (lanes 4g .. 4g+3).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Sum over the `kLanes` consecutive, aligned lanes of a group (kLanes a power of two <= 32).
template <int kLanes>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace lvit::cuda::tc
