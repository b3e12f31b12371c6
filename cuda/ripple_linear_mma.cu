// Ripple attention in its linear-time form on tensor cores (bf16, head width 32 or 64, 1 <= S <= 4,
// grids 4x4 to 32x32): declared in cuda/ripple.cuh, chosen by ops/ripple.cpp for bf16 where the
// dense kernels (cuda/ripple_small.cu, N <= 128) do not apply, i.e. the 257-token Tiny ImageNet
// presets. Same math as ops/cpu/ripple.cpp (DESIGN.md, "Linear-time form"): with
// phi = elu + 1, psi_j = phi(k_j), a = alpha_{S-1} and the local weight W_ij = alpha_l - a for
// the cells i, j of a pair at level l < S-1 (0 otherwise),
//   num_i = a phi_i^T KV + sum_{j local} W_ij (phi_i . psi_j) v_j,   KV = sum_j psi_j v_j^T,
//   den_i = a phi_i . z  + sum_{j local} W_ij (phi_i . psi_j),      z  = sum_j psi_j,
//   o_i = num_i / (den_i + eps).
// With S <= 4 every local level (blocks of 1, 4 and 16 cells) lies inside an aligned 4x4 block
// of cells, a "unit": so the local term is one 16x16 diagonal block per unit, and everything
// else goes through the d x d sums. This is what makes the form cheap at 257 tokens: per head
// the forward is 2 products of N x d x d plus 2 of N x 16 x d locally, against the dense
// form's 2 N^2 d (N = 257, d = 64: 2.6M against 8.5M multiply-adds, 3.2x fewer); the backward
// likewise.
//
// One CTA of 4 warps per (image, head), streaming tiles of 64 rows through shared memory:
//  - "sum" passes run over the cells in row-major order, 64 tokens a tile; warp w owns rows
//    16w .. 16w+15 of the d x d sums (d = 64: the 4 warps cover them, d = 32: warps 0 and 1;
//    no reduction across warps), accumulated in fp32 registers over all tiles, A = psi^T (or
//    phi^T) read with ldmatrix.trans from the [token][channel] tile;
//  - "unit" passes run over the units, 4 a tile (warp w = unit 4 tile + w), rows gathered so
//    that unit row k is cell (4 br + k / 4, 4 bc + k % 4) of unit (br, bc); the level of a pair
//    of unit rows is then a function of the two row numbers only (unit_level), the same for
//    every unit, so each lane computes its 8 local weights once.
// The class token (token 0) belongs to no unit: its key enters the sums as a rank-1 term in
// fp32, and its query row is a matrix-vector product (global term only) after the sums.
//
// Forward: sum pass KVz = psi^T [V | 1] (z as an extra 8-column block, column 0), rounded to
// bf16 into shared memory [d][d + 24]; unit pass O = a phi(Q_u) KVz + (W * phi(Q_u) psi(K_u)^T)
// [V_u | 1], den = the z column times a plus the local row sums (fp32).
//
// Backward, with u_i = g_i / (den_i + eps) and c_i = -(g_i . o_i) / (den_i + eps):
//   dphi_i = a (KV u_i + c_i z) + sum_j dS_ij psi_j,  dS_ij = W_ij (u_i . v_j + c_i)
//   dpsi_j = a (GQ v_j + gz)    + sum_i dS_ij phi_i,  GQ = sum_i phi_i u_i^T, gz = sum_i c_i phi_i
//   dv_j   = a GQ^T psi_j       + sum_i W_ij s_ij u_i,
// then dq = dphi min(phi, 1), dk likewise. c_i needs g_i . o_i, recomputed in fp32 rather than
// read from the bf16 output (see the dense backward in cuda/ripple_small.cu for why): g_i . o_i
// = u_i . num_i = a phi_i . (KV u_i) + sum_j W_ij s_ij (u_i . v_j). Three passes:
//  1. sum pass: KVz = psi^T [V | 1] and GQ = phi^T U (both fp32 in registers, then bf16 in
//     shared memory);
//  2. unit pass: X = U_u KV^T, t_i = phi_i . X_i, the local block s = phi psi^T and U V^T,
//     hence c_i (kept in shared memory, one float per cell), gz += phi_u^T c_u (fp32),
//     d loss / d alpha_l for the local levels, and the unit's dq (from X) and dv;
//  3. unit pass: dk, which needs gz, i.e. every c (s and U V^T recomputed).
// d loss / d alpha_{S-1} (the global stage) is not summed over all N^2 pairs: with A_i =
// u_i . num_i and den_i the saved denominator, sum_s alpha_s (d loss / d alpha_s) = sum_i (A_i +
// c_i den_i) = sum_i A_i eps / (den_i + eps) exactly, so d loss / d alpha_{S-1} = (that -
// sum_{l < S-1} alpha_l (d loss / d alpha_l)) / a, from the local sums alone (0 if a is 0: it is
// only ever used times a, cuda/ripple_logits.cu).
//
// Precision: bf16 q, k, v, gout, out, gqkv; phi, U, KVz, GQ, the local weights times s (or dS)
// rounded to bf16 as mma operands; every accumulator, t, c, den and gz fp32; the alpha sums f64.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/check.cuh"
#include "cuda/ripple.cuh"
#include "cuda/ripple_alpha.cuh"
#include "cuda/ripple_linear_tiles.cuh"
#include "cuda/ripple_mma.cuh"
#include "cuda/ripple_plan.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

using namespace tc;
using ripple_detail::Geom;
using ripple_detail::kMaxStages;

using namespace ripple_linear;

// ---- forward -----------------------------------------------------------------------------------
// Shared: Q, K, V tiles [64][D+8], KVz [D][D+24] (bf16; d = 64: 38.9 KB, 4 blocks per SM) and
// the class token's phi(q), phi(k), v.
template <int D>
constexpr size_t fwd_smem_bytes = (size_t{3} * kTileRows * (D + 8) + size_t{D} * (D + 24) +
                                   size_t{3} * D) *
                                  sizeof(bf16);

template <int D>
__global__ void __launch_bounds__(kThreads, 4)
    ripple_linear_fwd_kernel(const bf16* __restrict__ qkv, const float* __restrict__ logits,
                             bf16* __restrict__ out, float* __restrict__ den, int N, int H, int S,
                             int glog) {
  static_assert(D == 32 || D == 64);
  constexpr int kLd = D + 8, kLdKV = D + 24;
  __shared__ float wl[1 + kMaxLocalLevels];
  __shared__ float cls_num[D + 1];
  bf16* Qs = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* Ks = Qs + kTileRows * kLd;
  bf16* Vs = Ks + kTileRows * kLd;
  bf16* KVs = Vs + kTileRows * kLd;
  bf16* Cls = KVs + D * kLdKV;  // phi(q_0), phi(k_0), v_0
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const auto [bh, b, h, HD, ld] = head_slice<D>(H);
  const bf16* Qg = qkv + b * N * ld + int64_t{h} * D;
  const int units = 1 << (2 * glog - 4), tiles = (units + 3) / 4;

  if (threadIdx.x == 0) local_weights(logits, h, S, wl);
  for (int i = threadIdx.x; i < 3 * D / 8; i += kThreads)
    *reinterpret_cast<uint4*>(Cls + i * 8) =
        *reinterpret_cast<const uint4*>(Qg + (i / (D / 8)) * HD + (i % (D / 8)) * 8);

  // Sum pass: KVz over the cells, then the class token's key.
  float kv[D / 8][4], kz[4] = {};
  zero(kv);
  const uint32_t one = g == 0 ? pack_bf16(1.f, 1.f) : 0u;  // B = a column of ones
  for (int tok0 = 1; tok0 < N; tok0 += kTileRows) {
    __syncthreads();  // the previous tile is consumed
    const TileSlots<D> sl = tile_slots<D>([&](int r) { return tok0 + r < N ? tok0 + r : -1; });
    copy_slots<D>(Vs, Qg + 2 * HD, ld, sl);
    cp_async_commit();
    uint4 kr[TileSlots<D>::kRows];
    load_slots<D>(kr, Qg + HD, ld, sl);
    store_phi_slots<D>(Ks, kr, sl);
    cp_async_wait<0>();
    __syncthreads();
    if (owns_sum_rows<D>(warp)) {
#pragma unroll
      for (int kt = 0; kt < kTileRows / 16; ++kt) {
        uint32_t a[4];
        load_a_trans(a, Ks, kLd, 16 * warp, 16 * kt, lane);  // psi^T: rows = channels
        mma_a_rows<D>(kv, a, Vs, kLd, 16 * kt, lane);
        mma(kz, a, one, one);
      }
    }
  }
  phi_rows<D>(Cls, 2, D);
  __syncthreads();
  if (owns_sum_rows<D>(warp)) {
    add_outer<D>(kv, Cls + D, Cls + 2 * D, warp, lane);
    if (t == 0) {
      kz[0] += ldf(Cls + D, 16 * warp + g);
      kz[2] += ldf(Cls + D, 16 * warp + g + 8);
    }
    store_sum<D>(KVs, kLdKV, kv, kz, warp, lane);
  }
  __syncthreads();

  const float a = wl[0];
  // The class token's query: the global term only.
  if (threadIdx.x <= D) {
    float acc = 0.f;
    for (int p = 0; p < D; ++p) acc = fmaf(ldf(Cls, p), ldf(KVs, p * kLdKV + threadIdx.x), acc);
    cls_num[threadIdx.x] = acc;
  }
  __syncthreads();
  if (threadIdx.x < D)
    out[b * N * HD + int64_t{h} * D + threadIdx.x] =
        __float2bfloat16(a * cls_num[threadIdx.x] / (a * cls_num[D] + kEps));
  if (threadIdx.x == 0) den[bh * N] = a * cls_num[D];

  // Unit pass.
  float wloc[2][4];  // this lane's local weights W in a unit's pair block
#pragma unroll
  for (int n = 0; n < 2; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) wloc[n][e] = wl[1 + elem_level(lane, n, e)];
  const bool local = S > 1;
  const int r0 = 16 * warp;
  for (int tile = 0; tile < tiles; ++tile) {
    __syncthreads();  // the previous tile is consumed
    auto tok_of = [&](int r) { return unit_token(tile, r, glog, units); };
    const TileSlots<D> sl = tile_slots<D>(tok_of);
    uint4 qr[TileSlots<D>::kRows], kr[TileSlots<D>::kRows];
    if (local) {
      copy_slots<D>(Vs, Qg + 2 * HD, ld, sl);
      cp_async_commit();
      load_slots<D>(kr, Qg + HD, ld, sl);
    }
    load_slots<D>(qr, Qg, ld, sl);
    if (local) store_phi_slots<D>(Ks, kr, sl);
    store_phi_slots<D>(Qs, qr, sl);
    cp_async_wait<0>();
    __syncthreads();
    const int rows = 16 * min(kWarps, units - 4 * tile);
    if (r0 >= rows) continue;

    float o[D / 8][4], oz[4] = {};
    zero(o);
#pragma unroll
    for (int kd = 0; kd < D / 16; ++kd) {
      uint32_t fa[4], bz[4];
      load_a(fa, Qs, kLd, r0, 16 * kd, lane);
      mma_a_rows<D>(o, fa, KVs, kLdKV, 16 * kd, lane);
      load_b_kn(bz, KVs, kLdKV, 16 * kd, D, lane);
      mma(oz, fa, bz[0], bz[1]);
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] *= a;
    float l[2] = {0.f, 0.f};  // the local row sums, thread-partial
    if (local) {
      float s[2][4] = {};
      mma_rows_bt<D, 1>(s, Qs, kLd, Ks + r0 * kLd, kLd, r0, lane);
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[n][e] *= wloc[n][e];
          l[e >> 1] += s[n][e];
        }
      uint32_t pa[4];
      acc_to_a(pa, s[0], s[1]);
      mma_a_rows<D>(o, pa, Vs + r0 * kLd, kLd, 0, lane);
    }
    // den = a phi . z (column 0 of oz, held by the quad's lane t = 0) + the local row sums.
    const float d0 = a * __shfl_sync(0xffffffffu, oz[0], lane & ~3) + quad_sum(l[0]);
    const float d1 = a * __shfl_sync(0xffffffffu, oz[2], lane & ~3) + quad_sum(l[1]);
    bf16* os = Qs + r0 * kLd;  // the warp's own Q rows: no other warp reads them
    __syncwarp();              // every lane's reads of them are done
    stage_acc<D>(os, o, 1.f / (d0 + kEps), 1.f / (d1 + kEps), lane);
    if (t == 0) {
      den[bh * N + tok_of(r0 + g)] = d0;
      den[bh * N + tok_of(r0 + g + 8)] = d1;
    }
    __syncwarp();
    store_unit<D>(out + b * N * HD + int64_t{h} * D, HD, os, tok_of, r0, lane);
  }
}

// ---- backward ----------------------------------------------------------------------------------
// Shared (bf16 unless noted; d = 64, 16x16 grid: 67 KB, three blocks per SM):
//   Q, K, V, U tiles [64][D+8] (phi applied to Q and K, U = G / (den + eps))
//   KVz [D][D+24], GQ [D][D+8]
//   per warp: dS and W * s [16][24]
//   the class token's phi(q), phi(k), v, u [4][D]
//   fp32: 1 / (den + eps) of the tile's rows [64], z [D], gz [D], the warps' gz [4][D], and c
//   per cell in unit order [cells].
template <int D>
constexpr size_t bwd_smem_bf16 = size_t{4} * kTileRows*(D + 8) + size_t{D} * (D + 24) +
                                 size_t{D} * (D + 8) + size_t{kWarps} * 2 * 16 * kLdS
                                 + size_t{4} * D;
template <int D>
size_t bwd_smem_bytes(int cells) {
  return bwd_smem_bf16<D> * sizeof(bf16) +
         (size_t{kTileRows} + 2 * D + size_t{kWarps} * D + cells) * sizeof(float);
}

template <int D>
__global__ void __launch_bounds__(kThreads, 3)
    ripple_linear_bwd_kernel(const bf16* __restrict__ qkv, const bf16* __restrict__ gout,
                             const float* __restrict__ den, const float* __restrict__ logits,
                             bf16* __restrict__ gqkv, double* __restrict__ galpha, int N, int H,
                             int S, int glog) {
  static_assert(D == 32 || D == 64);
  static_assert(bwd_smem_bf16<D> % 8 == 0);  // the fp32 arrays start 16-byte aligned
  constexpr int kLd = D + 8, kLdKV = D + 24;
  __shared__ float wl[1 + kMaxLocalLevels];
  __shared__ float c_cls;
  __shared__ double red[kWarps][kMaxLocalLevels + 1];
  __shared__ double alpha[kMaxLocalLevels + 1];  // f64 stage weights (S <= 4)
  bf16* Qs = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* Ks = Qs + kTileRows * kLd;
  bf16* Vs = Ks + kTileRows * kLd;
  bf16* Us = Vs + kTileRows * kLd;
  bf16* KVs = Us + kTileRows * kLd;
  bf16* GQs = KVs + D * kLdKV;
  bf16* Scr = GQs + D * kLd;
  bf16* Cls = Scr + kWarps * 2 * 16 * kLdS;  // phi(q_0), phi(k_0), v_0, u_0
  float* Inv = reinterpret_cast<float*>(Cls + 4 * D);
  float* Zf = Inv + kTileRows;
  float* Gz = Zf + D;
  float* Gzw = Gz + D;
  float* Cs = Gzw + kWarps * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const auto [bh, b, h, HD, ld] = head_slice<D>(H);
  const bf16* Qg = qkv + b * N * ld + int64_t{h} * D;
  const bf16* Gg = gout + b * N * HD + int64_t{h} * D;
  const float* denb = den + bh * N;
  bf16* gq_out = gqkv + b * N * ld + int64_t{h} * D;  // dq; dk at +HD, dv at +2HD
  const int units = 1 << (2 * glog - 4), tiles = (units + 3) / 4;
  const int r0 = 16 * warp;
  bf16* scr_ds = Scr + warp * 2 * 16 * kLdS;
  bf16* scr_p = scr_ds + 16 * kLdS;

  if (threadIdx.x == 0) local_weights(logits, h, S, wl, alpha);
  for (int i = threadIdx.x; i < 4 * D / 8; i += kThreads) {
    const int which = i / (D / 8), c = (i % (D / 8)) * 8;
    const bf16* src = which < 3 ? Qg + which * HD : Gg;
    *reinterpret_cast<uint4*>(Cls + i * 8) = *reinterpret_cast<const uint4*>(src + c);
  }
  const float inv_cls = 1.f / (denb[0] + kEps);

  // Loads the tile's Q, K, V and G rows and 1 / (den + eps), applies phi to Q and K and turns G
  // into U; `rows` = the tile's valid (leading) rows. Ends with a barrier.
  auto prepare = [&](auto tok_of) {
    __syncthreads();  // the previous tile is consumed
    using Slots = TileSlots<D>;
    const Slots sl = tile_slots<D>(tok_of);
    copy_slots<D>(Vs, Qg + 2 * HD, ld, sl);
    cp_async_commit();
    uint4 qr[Slots::kRows], kr[Slots::kRows], gr[Slots::kRows];
    float inv[Slots::kRows];
    load_slots<D>(qr, Qg, ld, sl);
    load_slots<D>(kr, Qg + HD, ld, sl);
    load_slots<D>(gr, Gg, HD, sl);
#pragma unroll
    for (int k = 0; k < Slots::kRows; ++k)
      inv[k] = sl.tok[k] >= 0 ? 1.f / (denb[sl.tok[k]] + kEps) : 0.f;
    if (sl.c == 0)
#pragma unroll
      for (int k = 0; k < Slots::kRows; ++k) Inv[sl.row0 + Slots::kStep * k] = inv[k];
    store_phi_slots<D>(Qs, qr, sl);
    store_phi_slots<D>(Ks, kr, sl);
    store_scaled_slots<D>(Us, gr, inv, sl);
    cp_async_wait<0>();
    __syncthreads();
  };

  // 1. Sum pass: KVz = psi^T [V | 1], GQ = phi^T U.
  {
    float kv[D / 8][4], kz[4] = {}, gq[D / 8][4];
    zero(kv);
    zero(gq);
    const uint32_t one = g == 0 ? pack_bf16(1.f, 1.f) : 0u;
    for (int tok0 = 1; tok0 < N; tok0 += kTileRows) {
      prepare([&](int r) { return tok0 + r < N ? tok0 + r : -1; });
      if (owns_sum_rows<D>(warp)) {
#pragma unroll
        for (int kt = 0; kt < kTileRows / 16; ++kt) {
          uint32_t fa[4];
          load_a_trans(fa, Ks, kLd, r0, 16 * kt, lane);
          mma_a_rows<D>(kv, fa, Vs, kLd, 16 * kt, lane);
          mma(kz, fa, one, one);
          load_a_trans(fa, Qs, kLd, r0, 16 * kt, lane);
          mma_a_rows<D>(gq, fa, Us, kLd, 16 * kt, lane);
        }
      }
    }
    // The class token: phi of its q and k, u = g / (den + eps), then its rank-1 terms.
    phi_rows<D>(Cls, 2, D);
    for (int i = threadIdx.x; i < D; i += kThreads)
      Cls[3 * D + i] = __float2bfloat16(ldf(Cls, 3 * D + i) * inv_cls);
    __syncthreads();
    if (owns_sum_rows<D>(warp)) {
      add_outer<D>(kv, Cls + D, Cls + 2 * D, warp, lane);
      add_outer<D>(gq, Cls, Cls + 3 * D, warp, lane);
      if (t == 0) {
        kz[0] += ldf(Cls + D, r0 + g);
        kz[2] += ldf(Cls + D, r0 + g + 8);
      }
      store_sum<D>(KVs, kLdKV, kv, kz, warp, lane);
      store_sum<D>(GQs, kLd, gq, nullptr, warp, lane);
    }
  }
  __syncthreads();
  const float a = wl[0];
  for (int p = threadIdx.x; p < D; p += kThreads) Zf[p] = ldf(KVs, p * kLdKV + D);
  // The class token's c = -a phi(q_0) . (KV u_0) / (den_0 + eps) (no local term).
  double eps_sum = 0.0;  // sum_i A_i eps / (den_i + eps), thread-partial
  if (warp == 0) {
    float part = 0.f;
    for (int p = lane; p < D; p += 32) {
      float y = 0.f;
      for (int q = 0; q < D; ++q) y = fmaf(ldf(KVs, p * kLdKV + q), ldf(Cls, 3 * D + q), y);
      part = fmaf(ldf(Cls, p), y, part);
    }
    const float A0 = a * group_sum<32>(part);
    if (lane == 0) {
      c_cls = -A0 * inv_cls;
      eps_sum = static_cast<double>(A0) * kEps * inv_cls;
    }
  }
  __syncthreads();

  float wloc[2][4];
  int lvl[2][4];
#pragma unroll
  for (int n = 0; n < 2; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      lvl[n][e] = elem_level(lane, n, e);
      wloc[n][e] = wl[1 + lvl[n][e]];
    }
  const bool local = S > 1;
  const int near_levels = min(S - 1, kMaxLocalLevels);

  // The local 16x16 block of unit rows r0..: s = phi psi^T and uv = U V^T.
  auto local_block = [&](float(&s)[2][4], float(&uv)[2][4]) {
    zero(s);
    zero(uv);
    mma_rows_bt<D, 1>(s, Qs, kLd, Ks + r0 * kLd, kLd, r0, lane);
    mma_rows_bt<D, 1>(uv, Us, kLd, Vs + r0 * kLd, kLd, r0, lane);
  };

  // 2. Unit pass: c, gz, d loss / d alpha of the local levels, dq and dv.
  float gz_part[D / 32];
#pragma unroll
  for (int j = 0; j < D / 32; ++j) gz_part[j] = warp == 0 ? ldf(Cls, lane + 32 * j) * c_cls : 0.f;
  float near[kMaxLocalLevels] = {};
  for (int tile = 0; tile < tiles; ++tile) {
    const int rows = 16 * min(kWarps, units - 4 * tile);
    auto tok_of = [&](int r) { return unit_token(tile, r, glog, units); };
    prepare(tok_of);
    if (r0 >= rows) continue;
    float x[D / 8][4];
    zero(x);
    mma_rows_bt<D, D / 16>(x, Us, kLd, KVs, kLdKV, r0, lane);  // U KV^T
    float tr[2] = {0.f, 0.f};                                  // phi_i . (KV u_i)
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float2 f = __bfloat1622float2(
            *reinterpret_cast<const __nv_bfloat162*>(Qs + (r0 + g + 8 * r) * kLd + 8 * n + 2 * t));
        tr[r] = fmaf(x[n][2 * r], f.x, fmaf(x[n][2 * r + 1], f.y, tr[r]));
      }
    float s[2][4], uv[2][4], loc[2] = {0.f, 0.f};
    if (local) {
      local_block(s, uv);
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) loc[e >> 1] = fmaf(wloc[n][e] * s[n][e], uv[n][e], loc[e >> 1]);
    }
    const float inv[2] = {Inv[r0 + g], Inv[r0 + g + 8]};
    float c[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float A = a * quad_sum(tr[r]) + quad_sum(loc[r]);
      c[r] = -A * inv[r];
      if (t == 0) {
        eps_sum += static_cast<double>(A) * kEps * inv[r];
        Cs[kTileRows * tile + r0 + g + 8 * r] = c[r];
      }
    }
    if (local) {
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
#pragma unroll
          for (int k = 0; k < kMaxLocalLevels; ++k)
            if (k < near_levels && lvl[n][e] == k)
              near[k] = fmaf(s[n][e], uv[n][e] + c[e >> 1], near[k]);
    }
    // dS = W (U V^T + c 1^T) and W s, as A fragments.
    uint32_t dsa[4] = {}, pa[4] = {};
    if (local) {
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          uv[n][e] = wloc[n][e] * (uv[n][e] + c[e >> 1]);
          s[n][e] *= wloc[n][e];
        }
      acc_to_a(dsa, uv[0], uv[1]);
      acc_to_a(pa, s[0], s[1]);
      store_a(scr_p, kLdS, 0, 0, pa, lane);
    }
    // Each result is staged in the warp's own V rows (last read by U V^T) for 16-byte stores.
    bf16* stg = Vs + r0 * kLd;
    // dq = (a (U KV^T + c z^T) + dS psi) min(phi, 1): X becomes it.
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        x[n][e] = a * fmaf(c[e >> 1], Zf[8 * n + 2 * t + (e & 1)], x[n][e]);
    if (local) mma_a_rows<D>(x, dsa, Ks + r0 * kLd, kLd, 0, lane);
    __syncwarp();  // every lane's reads of V_u, and its c and W s, are done
    stage_chain<D>(stg, x, Qs + r0 * kLd, lane);
    __syncwarp();
    store_unit<D>(gq_out, ld, stg, tok_of, r0, lane);
    __syncwarp();
    // dv = a psi GQ + (W s)^T U
    zero(x);
#pragma unroll
    for (int kd = 0; kd < D / 16; ++kd) {
      uint32_t fa[4];
      load_a(fa, Ks, kLd, r0, 16 * kd, lane);
      mma_a_rows<D>(x, fa, GQs, kLd, 16 * kd, lane);
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) x[n][e] *= a;
    if (local) {
      uint32_t fa[4];
      load_a_trans(fa, scr_p, kLdS, 0, 0, lane);
      mma_a_rows<D>(x, fa, Us + r0 * kLd, kLd, 0, lane);
    }
    stage_acc<D>(stg, x, 1.f, 1.f, lane);
    __syncwarp();
    store_unit<D>(gq_out + 2 * HD, ld, stg, tok_of, r0, lane);
#pragma unroll
    for (int j = 0; j < D / 32; ++j)
      for (int k = 0; k < 16; ++k)
        gz_part[j] = fmaf(ldf(Qs, (r0 + k) * kLd + lane + 32 * j), Cs[kTileRows * tile + r0 + k],
                          gz_part[j]);
  }
#pragma unroll
  for (int j = 0; j < D / 32; ++j) Gzw[warp * D + lane + 32 * j] = gz_part[j];
  __syncthreads();
  for (int p = threadIdx.x; p < D; p += kThreads) {
    float s = 0.f;
    for (int w = 0; w < kWarps; ++w) s += Gzw[w * D + p];  // fixed order: deterministic
    Gz[p] = s;
  }
  __syncthreads();

  // The class token's gradients (global terms only).
  if (threadIdx.x < D) {
    const int p = threadIdx.x;
    float x = 0.f, y = 0.f;
    for (int q = 0; q < D; ++q) {
      x = fmaf(ldf(KVs, p * kLdKV + q), ldf(Cls, 3 * D + q), x);
      y = fmaf(ldf(GQs, p * kLd + q), ldf(Cls, 2 * D + q), y);
    }
    gq_out[p] = __float2bfloat16(a * (x + c_cls * Zf[p]) * fminf(ldf(Cls, p), 1.f));
    gq_out[HD + p] = __float2bfloat16(a * (y + Gz[p]) * fminf(ldf(Cls, D + p), 1.f));
  } else if (threadIdx.x < 2 * D) {
    const int q = threadIdx.x - D;
    float v = 0.f;
    for (int p = 0; p < D; ++p) v = fmaf(ldf(GQs, p * kLd + q), ldf(Cls, D + p), v);
    gq_out[2 * HD + q] = __float2bfloat16(a * v);
  }

  // 3. Unit pass: dk.
  for (int tile = 0; tile < tiles; ++tile) {
    const int rows = 16 * min(kWarps, units - 4 * tile);
    auto tok_of = [&](int r) { return unit_token(tile, r, glog, units); };
    prepare(tok_of);
    if (r0 >= rows) continue;
    const float c[2] = {Cs[kTileRows * tile + r0 + g], Cs[kTileRows * tile + r0 + g + 8]};
    uint32_t dsa[4] = {};
    if (local) {
      float s[2][4], uv[2][4];
      local_block(s, uv);
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) uv[n][e] = wloc[n][e] * (uv[n][e] + c[e >> 1]);  // dS
      acc_to_a(dsa, uv[0], uv[1]);
      store_a(scr_ds, kLdS, 0, 0, dsa, lane);
      __syncwarp();
    }
    // dk = (a (V GQ^T + 1 gz^T) + dS^T phi) min(psi, 1), staged in the warp's own V rows.
    float acc[D / 8][4];
    zero(acc);
    mma_rows_bt<D, D / 16>(acc, Vs, kLd, GQs, kLd, r0, lane);
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[n][e] = a * (acc[n][e] + Gz[8 * n + 2 * t + (e & 1)]);
    if (local) {
      uint32_t fa[4];
      load_a_trans(fa, scr_ds, kLdS, 0, 0, lane);
      mma_a_rows<D>(acc, fa, Qs + r0 * kLd, kLd, 0, lane);
    }
    bf16* stg = Vs + r0 * kLd;
    __syncwarp();  // every lane's reads of V_u are done
    stage_chain<D>(stg, acc, Ks + r0 * kLd, lane);
    __syncwarp();
    store_unit<D>(gq_out + HD, ld, stg, tok_of, r0, lane);
  }

  double sums[kMaxLocalLevels + 1], tot[kMaxLocalLevels + 1];
#pragma unroll
  for (int k = 0; k < kMaxLocalLevels; ++k) sums[k] = near[k];
  sums[kMaxLocalLevels] = eps_sum;
  block_sums(sums, &red[0][0], tot);
  if (threadIdx.x == 0) {
    double* gab = galpha + bh * S;
    double rest = tot[kMaxLocalLevels];  // sum_s alpha_s (d loss / d alpha_s)
    for (int l = 0; l < near_levels; ++l) {
      gab[l] = tot[l];
      rest -= alpha[l] * tot[l];
    }
    gab[S - 1] = alpha[S - 1] > 0.0 ? rest / alpha[S - 1] : 0.0;
  }
}

// ---- launchers ---------------------------------------------------------------------------------

Geom linear_mma_geom(int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages, int64_t grid,
                     const char* where) {
  const Geom m = ripple_detail::make_geom(B, N, D, heads, stages, grid);
  if (!ripple_linear_mma_supported(N, m.d, stages))
    fail(std::string(where) + ": no linear tensor-core kernel for N = " + std::to_string(N) +
         ", head width " + std::to_string(m.d) + ", " + std::to_string(stages) +
         " stages (grids 4x4 to 32x32, head width 32 or 64, 1 to 4 stages)");
  if (B * heads >= (int64_t{1} << 31)) fail(std::string(where) + ": too many heads");
  return m;
}

// fn(std::integral_constant<int, d>{}) for the head widths the kernels take.
template <typename Fn>
void with_width(int d, Fn&& fn) {
  if (d == 32) return fn(std::integral_constant<int, 32>{});
  return fn(std::integral_constant<int, 64>{});  // linear_mma_geom admitted only 32 and 64
}

}  // namespace

bool ripple_linear_mma_supported(int64_t N, int64_t head_dim, int64_t stages) {
  if ((head_dim != 32 && head_dim != 64) || stages < 1 || stages > kMaxLocalLevels + 1)
    return false;
  for (int glog = kMinGridLog; glog <= kMaxGridLog; ++glog)
    if (N == 1 + (int64_t{1} << (2 * glog))) return true;
  return false;
}

void ripple_linear_mma_fwd(const void* qkv, const float* logits, int64_t B, int64_t N, int64_t D,
                           int64_t heads, int64_t stages, int64_t grid, void* out, float* den,
                           cudaStream_t stream) {
  const Geom m = linear_mma_geom(B, N, D, heads, stages, grid, "ripple_linear_mma_fwd");
  if (B == 0) return;
  with_width(m.d, [&](auto dc) {
    constexpr int Dh = decltype(dc)::value;
    constexpr size_t smem = fwd_smem_bytes<Dh>;
    allow_dynamic_smem(reinterpret_cast<const void*>(&ripple_linear_fwd_kernel<Dh>), smem,
                       "ripple_linear_fwd_kernel");
    ripple_linear_fwd_kernel<Dh><<<static_cast<unsigned>(B * heads), kThreads, smem, stream>>>(
        static_cast<const bf16*>(qkv), logits, static_cast<bf16*>(out), den, m.N, m.H, m.S, m.glog);
    after_launch("ripple_linear_fwd_kernel", stream);
  });
}

void ripple_linear_mma_bwd(const void* gout, const void* qkv, const float* logits, const float* den,
                           int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages,
                           int64_t grid, void* gqkv, float* glogits, double* workspace,
                           cudaStream_t stream) {
  const Geom m = linear_mma_geom(B, N, D, heads, stages, grid, "ripple_linear_mma_bwd");
  if (ripple_detail::empty_batch_backward(B, heads, stages, glogits, stream)) return;
  with_width(m.d, [&](auto dc) {
    constexpr int Dh = decltype(dc)::value;
    const size_t smem = bwd_smem_bytes<Dh>(m.cells);
    allow_dynamic_smem(reinterpret_cast<const void*>(&ripple_linear_bwd_kernel<Dh>), smem,
                       "ripple_linear_bwd_kernel");
    ripple_linear_bwd_kernel<Dh><<<static_cast<unsigned>(B * heads), kThreads, smem, stream>>>(
        static_cast<const bf16*>(qkv), static_cast<const bf16*>(gout), den, logits,
        static_cast<bf16*>(gqkv), workspace, m.N, m.H, m.S, m.glog);
    after_launch("ripple_linear_bwd_kernel", stream);
  });
  if (glogits) ripple_logits_grad(workspace, logits, B, heads, stages, glogits, stream);
}

}  // namespace lvit::cuda
