// Building blocks of the linear-form Ripple kernels on tensor cores (cuda/ripple_linear_mma.cu;
// kernel files only): the CTA geometry, the unit (aligned 4x4 block of cells) numbering and the
// levels of its pairs, moving 64-row tiles through registers into shared memory (phi or the
// 1 / den' scaling applied on the way), storing a unit's rows, the stage weights, and the d x d
// sums held by the warps. Fragment layouts in cuda/attention_mma.cuh.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#include "cuda/ripple_alpha.cuh"
#include "cuda/ripple_mma.cuh"
#include "cuda/ripple_plan.cuh"

namespace lvit::cuda::ripple_linear {

using namespace tc;
using ripple_detail::kMaxStages;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kTileRows = 16 * kWarps;  // 64 rows per tile, 16 per warp
// Warps that own rows of the d x d sums in the sum passes (16 rows each; the others only help
// move the tiles): all four for d = 64, two for d = 32.
template <int D>
constexpr int kSumWarps = D / 16;
// Whether `warp` owns rows of the sums (a compile-time yes for d = 64).
template <int D>
__device__ __forceinline__ bool owns_sum_rows(int warp) {
  return kSumWarps<D> >= kWarps || warp < kSumWarps<D>;
}
constexpr int kMaxLocalLevels = 3;               // levels 0..2 lie inside a unit: S <= 4
constexpr int kMinGridLog = 2, kMaxGridLog = 5;  // 4x4 .. 32x32 cells
constexpr int kLdS = 24;                         // row stride of the 16x16 scratch blocks
constexpr float kEps = 1e-6f;                    // the denominator's eps (DESIGN.md)

// ---- geometry ----------------------------------------------------------------------------------

// The token of row r of unit tile `tile` (units 4 tile .. 4 tile + 3), or -1 past the last unit.
// Units are numbered row-major over the (g/4) x (g/4) blocks of 4x4 cells.
__device__ __forceinline__ int unit_token(int tile, int r, int glog, int units) {
  const int u = 4 * tile + r / 16, k = r % 16;
  if (u >= units) return -1;
  const int ulog = glog - 2;  // log2 of units per row
  const int row = 4 * (u >> ulog) + (k >> 2), col = 4 * (u & ((1 << ulog) - 1)) + (k & 3);
  return 1 + (row << glog) + col;
}

// Level of the pair of unit rows ki, kj: the bit length of the or of their row and column
// differences inside the 4x4 block (0, 1 or 2).
__device__ __forceinline__ int unit_level(int ki, int kj) {
  const int x = ((ki >> 2) ^ (kj >> 2)) | ((ki & 3) ^ (kj & 3));
  return x == 0 ? 0 : (x == 1 ? 1 : 2);
}

// The level of accumulator element (n, e) of this lane in a unit's 16x16 pair block (C layout:
// row g + 8 (e >> 1), column 8n + 2t + (e & 1)).
__device__ __forceinline__ int elem_level(int lane, int n, int e) {
  return unit_level(lane / 4 + 8 * (e >> 1), 8 * n + 2 * (lane % 4) + (e & 1));
}

// ---- shared tiles ------------------------------------------------------------------------------

// How a thread takes part in moving a 64-row tile: the 16-byte chunk c of rows
// tid / (D/8) + kStep k (d = 64: rows tid / 8 + 16 k, k < 4). Each thread transforms (phi, or the
// scaling of G into U) the chunks it loaded itself, in registers, so no barrier and no shared
// read-back sits between a load and its transform.
template <int D>
struct TileSlots {
  static constexpr int kChunks = D / 8;             // 16-byte chunks per row
  static constexpr int kStep = kThreads / kChunks;  // rows between a thread's rows
  static constexpr int kRows = kTileRows / kStep;   // d = 64: 4, d = 32: 2
  int tok[kRows];  // the rows' tokens, -1 for rows past the end (zero-filled)
  int row0, c;     // first row, first channel
};
template <int D, typename TokOf>
__device__ __forceinline__ TileSlots<D> tile_slots(TokOf tok_of) {
  static_assert(kThreads % (D / 8) == 0 && kTileRows % TileSlots<D>::kStep == 0);
  TileSlots<D> s;
  s.row0 = threadIdx.x / (D / 8);
  s.c = (threadIdx.x % (D / 8)) * 8;
#pragma unroll
  for (int k = 0; k < TileSlots<D>::kRows; ++k) s.tok[k] = tok_of(s.row0 + TileSlots<D>::kStep * k);
  return s;
}

// dst's slot chunks = src's, asynchronously (cp.async; zeros for rows past the end).
template <int D>
__device__ __forceinline__ void copy_slots(bf16* dst, const bf16* __restrict__ src, int64_t ld,
                                           const TileSlots<D>& s) {
#pragma unroll
  for (int k = 0; k < TileSlots<D>::kRows; ++k)
    cp_async16(dst + (s.row0 + TileSlots<D>::kStep * k) * (D + 8) + s.c,
               src + int64_t{s.tok[k] < 0 ? 0 : s.tok[k]} * ld + s.c, s.tok[k] >= 0);
}

// The slot chunks of src (zeros past the end), in registers.
template <int D>
__device__ __forceinline__ void load_slots(uint4 (&v)[TileSlots<D>::kRows],
                                           const bf16* __restrict__ src, int64_t ld,
                                           const TileSlots<D>& s) {
#pragma unroll
  for (int k = 0; k < TileSlots<D>::kRows; ++k)
    v[k] = s.tok[k] >= 0 ? __ldg(reinterpret_cast<const uint4*>(src + s.tok[k] * ld + s.c))
                         : make_uint4(0, 0, 0, 0);
}

// dst's slot chunks = phi(v) (zero rows stay zero: phi(0) = 1 would give them weight).
template <int D>
__device__ __forceinline__ void store_phi_slots(bf16* dst, const uint4 (&v)[TileSlots<D>::kRows],
                                                const TileSlots<D>& s) {
#pragma unroll
  for (int k = 0; k < TileSlots<D>::kRows; ++k) {
    const uint4 p =
        s.tok[k] < 0 ? v[k] : make_uint4(phi2(v[k].x), phi2(v[k].y), phi2(v[k].z), phi2(v[k].w));
    *reinterpret_cast<uint4*>(dst + (s.row0 + TileSlots<D>::kStep * k) * (D + 8) + s.c) = p;
  }
}

// bf16 pair x times f, rounded once (as the fp32 product).
__device__ __forceinline__ uint32_t scale2(uint32_t x, float f) {
  __nv_bfloat162 h;
  memcpy(&h, &x, sizeof h);
  const float2 v = __bfloat1622float2(h);
  return pack_bf16(v.x * f, v.y * f);
}

// dst's slot chunks = v times inv[k] (U = G / (den + eps)).
template <int D>
__device__ __forceinline__ void store_scaled_slots(bf16* dst, const uint4 (&v)[TileSlots<D>::kRows],
                                                   const float (&inv)[TileSlots<D>::kRows],
                                                   const TileSlots<D>& s) {
#pragma unroll
  for (int k = 0; k < TileSlots<D>::kRows; ++k)
    *reinterpret_cast<uint4*>(dst + (s.row0 + TileSlots<D>::kStep * k) * (D + 8) + s.c) =
        make_uint4(scale2(v[k].x, inv[k]), scale2(v[k].y, inv[k]), scale2(v[k].z, inv[k]),
                   scale2(v[k].w, inv[k]));
}

// One warp: dst[tok(r0 + r) * ld + 0..D) = src[r][0..D) for its 16 unit rows (all valid).
template <int D, typename TokOf>
__device__ __forceinline__ void store_unit(bf16* __restrict__ dst, int64_t ld, const bf16* src,
                                           TokOf tok_of, int r0, int lane) {
  constexpr int kChunks = D / 8;
  for (int i = lane; i < 16 * kChunks; i += 32) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    *reinterpret_cast<uint4*>(dst + int64_t{tok_of(r0 + r)} * ld + c) =
        *reinterpret_cast<const uint4*>(src + r * (D + 8) + c);
  }
}

// fp32 value of element i of a bf16 array.
__device__ __forceinline__ float ldf(const bf16* p, int i) { return __bfloat162float(p[i]); }

// The stage weights of head h into wl: wl[0] = a = alpha_{S-1}, wl[1 + l] = alpha_l - a for
// the local levels l < S-1 (0 for the others); where alpha_out is given, also the f64 weights
// alpha_0 .. alpha_{S-1} (S <= 4). One thread.
__device__ __noinline__ inline void local_weights(const float* logits, int h, int S, float* wl,
                                                  double* alpha_out = nullptr) {
  double alpha[kMaxStages];
  ripple_detail::stage_weights(logits, h, S, alpha);
  if (alpha_out)
    for (int s = 0; s < S; ++s) alpha_out[s] = alpha[s];
  wl[0] = static_cast<float>(alpha[S - 1]);
  for (int l = 0; l < kMaxLocalLevels; ++l)
    wl[1 + l] = l < S - 1 ? static_cast<float>(alpha[l] - alpha[S - 1]) : 0.f;
}

// Writes the d x d sum held by the warps (rows 16 warp.., the D/8 accumulator blocks `m`) and,
// when z is given, its z column (column 0 of accumulator block z, written to column D, with
// columns D+1 .. D+15 zero) as bf16 into dst [D][ld].
template <int D>
__device__ __forceinline__ void store_sum(bf16* dst, int ld, const float (&m)[D / 8][4],
                                          const float* z, int warp, int lane) {
  const int g = lane / 4, t = lane % 4, r0 = 16 * warp + g;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    *reinterpret_cast<__nv_bfloat162*>(dst + r0 * ld + 8 * n + 2 * t) =
        __floats2bfloat162_rn(m[n][0], m[n][1]);
    *reinterpret_cast<__nv_bfloat162*>(dst + (r0 + 8) * ld + 8 * n + 2 * t) =
        __floats2bfloat162_rn(m[n][2], m[n][3]);
  }
  if (z != nullptr) {
    *reinterpret_cast<__nv_bfloat162*>(dst + r0 * ld + D + 2 * t) =
        __floats2bfloat162_rn(z[0], z[1]);
    *reinterpret_cast<__nv_bfloat162*>(dst + (r0 + 8) * ld + D + 2 * t) =
        __floats2bfloat162_rn(z[2], z[3]);
    *reinterpret_cast<__nv_bfloat162*>(dst + r0 * ld + D + 8 + 2 * t) = __float2bfloat162_rn(0.f);
    *reinterpret_cast<__nv_bfloat162*>(dst + (r0 + 8) * ld + D + 8 + 2 * t) =
        __float2bfloat162_rn(0.f);
  }
}

// m += x y^T for the warp's elements of a d x d sum (rows 16 warp + .., accumulator layout),
// x and y bf16 vectors in shared memory (a class-token term).
template <int D>
__device__ __forceinline__ void add_outer(float (&m)[D / 8][4], const bf16* x, const bf16* y,
                                          int warp, int lane) {
  const int g = lane / 4, t = lane % 4, r0 = 16 * warp + g;
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      m[n][e] = fmaf(ldf(x, r0 + 8 * (e >> 1)), ldf(y, 8 * n + 2 * t + (e & 1)), m[n][e]);
}

}  // namespace lvit::cuda::ripple_linear
