// Softmax attention on tensor cores, streaming kernels for any N: bf16 operands, fp32
// accumulation, softmax and lse (FlashAttention-2 structure), for head dims 16, 32, 64 and 128.
// Launched by attention_fwd/attention_bwd in cuda/attention.cu; short sequences (N <= 128,
// d <= 64) take the one-block-per-head kernels of cuda/attention_small.cu instead.
//
// A warp owns 16 rows of the block's tile (query rows in the forward and dq kernels, key rows in
// the dk/dv kernel); the other side streams through shared memory in tiles, double-buffered
// with cp.async so that the next tile loads while this one computes. Fragment layouts, ldmatrix
// addressing and the shared-memory padding: cuda/attention_mma.cuh.
//
// Precision: the probabilities (forward) and P, dS (backward) are rounded to bf16 as mma
// operands, as in FlashAttention-2; row sums, max, lse and all accumulators stay fp32.
#include <cuda_bf16.h>

#include "cuda/attention_common.cuh"
#include "cuda/attention_mma.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

using attn::kLn2;
using attn::kLog2e;
using namespace tc;

// At most 6 warps per block (attn::row_tiling never picks more). Launch bounds ask for kMinBlocks
// blocks of 192 threads per SM, which caps ptxas at 65536 / (192 * min blocks) registers per
// thread: 168 for d <= 64 (no spills; two blocks of 6 warps per SM at N = 257, where the dk/dv
// kernel used to take 205 registers and one block), 255 for d = 128 (which needs more).
constexpr int kMaxThreads = 32 * attn::kTiledMaxWarps;
template <int D>
constexpr int kMinBlocks = D >= 128 ? 1 : 2;

struct BlockPos {
  int64_t b, bh;
  int h, tile;
};
// blockIdx.x = (b*H + h) * tiles + tile (tiles fastest: the blocks of one head run together).
__device__ __forceinline__ BlockPos block_pos(int H, int tiles) {
  BlockPos p;
  p.tile = static_cast<int>(blockIdx.x % tiles);
  p.bh = blockIdx.x / tiles;
  p.b = p.bh / H;
  p.h = static_cast<int>(p.bh % H);
  return p;
}

// ---- forward -----------------------------------------------------------------------------------
// Block: W warps, 16 query rows each (rows q0 .. q0+16W-1 of one (b, h)); key/value tiles of
// 64 rows. Shared: Q [16W][D+8], K [2][64][D+8], V [2][64][D+8] (bf16).
// Per warp and key tile: S (16x64, fp32, 8 blocks of 16x8) = Q K^T; masked keys -> -inf; the
// online softmax in the log2 domain (thread-partial row sums l, reduced across the quad once at
// the end, as FlashAttention-2); O (16xD) = alpha O + P V.
// A warp whose 16 rows all lie past N skips the math but still loads and synchronises.
constexpr int kFwdKeys = 64;

template <int D>
size_t fwd_smem(int warps) {
  return static_cast<size_t>(warps * 16 + 4 * kFwdKeys) * (D + 8) * sizeof(bf16);
}

template <int D>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocks<D>)
    attn_fwd_mma(const bf16* __restrict__ qkv, bf16* __restrict__ out, float* __restrict__ lse,
                 int N, int H, int tiles, float scale_log2) {
  constexpr int kLd = D + 8, kBK = kFwdKeys, kSN = kBK / 8;
  const int rows = static_cast<int>(blockDim.x / 32) * 16;
  bf16* Qs = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* Ks = Qs + rows * kLd;
  bf16* Vs = Ks + 2 * kBK * kLd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, t = lane % 4;
  const BlockPos pos = block_pos(H, tiles);
  const int q0 = pos.tile * rows, wq0 = q0 + warp * 16;
  const int64_t HD = int64_t{H} * D, ld = 3 * HD;
  const bf16* Qg = qkv + pos.b * N * ld + int64_t{pos.h} * D;

  load_rows<D>(Qs, Qg, ld, q0, rows, N);
  load_rows<D>(Ks, Qg + HD, ld, 0, kBK, N);
  load_rows<D>(Vs, Qg + 2 * HD, ld, 0, kBK, N);
  cp_async_commit();

  const bool active = wq0 < N;  // warp-uniform
  uint32_t qa[D / 16][4];
  float o[D / 8][4];
  zero(o);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows g and g+8
  const int nkt = (N + kBK - 1) / kBK;
  for (int kt = 0; kt < nkt; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < nkt) {
      // Refills the buffer read in iteration kt-1: every warp left it at that iteration's
      // closing barrier.
      load_rows<D>(Ks + (buf ^ 1) * kBK * kLd, Qg + HD, ld, (kt + 1) * kBK, kBK, N);
      load_rows<D>(Vs + (buf ^ 1) * kBK * kLd, Qg + 2 * HD, ld, (kt + 1) * kBK, kBK, N);
      cp_async_commit();
      cp_async_wait<1>();  // all but the tile just issued have landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (active) {
      const bf16* ks = Ks + buf * kBK * kLd;
      const bf16* vs = Vs + buf * kBK * kLd;
      if (kt == 0) {
#pragma unroll
        for (int kd = 0; kd < D / 16; ++kd) load_a(qa[kd], Qs, kLd, warp * 16, kd * 16, lane);
      }
      // 16-key blocks of this tile that hold a key < N; the products skip the others (whose
      // probabilities are 0), e.g. three of the four blocks of N = 65's second tile.
      const int k0 = kt * kBK, live = min(kBK / 16, (N - k0 + 15) / 16);
      float s[kSN][4];
      zero(s);
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd)
#pragma unroll
        for (int np = 0; np < kBK / 16; ++np) {
          if (np >= live) continue;  // uniform: the block holds no live column
          uint32_t kb[4];
          load_b_nk(kb, ks, kLd, np * 16, kd * 16, lane);
          mma(s[2 * np], qa[kd], kb[0], kb[1]);
          mma(s[2 * np + 1], qa[kd], kb[2], kb[3]);
        }
      // Key of element (n, e): kt*64 + 8n + 2t + (e & 1); its row is g + 8 * (e >> 1). Every
      // tile holds key kt*64 < N (in lane t = 0's column 0), so each row max below is finite.
      float mx[2] = {m[0], m[1]};
#pragma unroll
      for (int n = 0; n < kSN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + 8 * n + 2 * t + (e & 1);
          s[n][e] = key < N ? s[n][e] * scale_log2 : -INFINITY;
          mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
        }
      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = quad_max(mx[r]);
        alpha[r] = exp2f(m[r] - mx[r]);  // 0 on the first tile (m = -inf)
        m[r] = mx[r];
        l[r] *= alpha[r];
      }
#pragma unroll
      for (int n = 0; n < kSN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[n][e] = exp2f(s[n][e] - m[e >> 1]);
          l[e >> 1] += s[n][e];
        }
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
      }
#pragma unroll
      for (int kc = 0; kc < kBK / 16; ++kc) {
        if (kc >= live) continue;  // uniform: the block holds no live column
        uint32_t pa[4];
        acc_to_a(pa, s[2 * kc], s[2 * kc + 1]);
        mma_a_rows<D>(o, pa, vs, kLd, kc * 16, lane);
      }
    }
    __syncthreads();
  }

  if (active) {
    const int g = lane / 4;
    l[0] = quad_sum(l[0]);
    l[1] = quad_sum(l[1]);
    // The warp's own Q rows are no longer read: they stage O for 16-byte stores.
    bf16* os = Qs + warp * 16 * kLd;
    stage_acc<D>(os, o, 1.f / l[0], 1.f / l[1], lane);
    if (t == 0) {
      if (wq0 + g < N) lse[pos.bh * N + wq0 + g] = (m[0] + log2f(l[0])) * kLn2;
      if (wq0 + g + 8 < N) lse[pos.bh * N + wq0 + g + 8] = (m[1] + log2f(l[1])) * kLn2;
    }
    __syncwarp();
    store_rows<D>(out + pos.b * N * HD + int64_t{pos.h} * D, HD, os, wq0, N, lane);
  }
}

// ---- backward: dq and delta --------------------------------------------------------------------
// Block: W warps x 16 query rows; key/value tiles of kBwdTile(D) rows, double-buffered.
// Shared: Q, dO [16W][D+8]; K, V [2][T][D+8].
// First delta_i = rowsum(dO_i * O_i) for the warp's 16 rows, in fp32 from the bf16 values: O
// goes straight from global memory into registers (issued before the first wait, so it
// overlaps the tile loads), dO comes from shared memory; d/8 lanes per row, one 16-byte chunk
// each, a shuffle sum. delta goes to global memory for the dk/dv kernel (launched next on the
// same stream) and stays in registers here, so no separate delta pass reads O and dO.
// Then per warp and 16-key chunk of each tile: S = Q K^T and dP = dO V^T (16x16 each),
// P = exp2(S*scale*log2e - lse*log2e) (masked keys 0), dS = P (dP - delta), dq += dS K_chunk;
// dq is scaled by 1/sqrt(d) once at the end. Chunks of 16 keys keep the score registers at 16
// (a whole tile's would be 4T), and at d <= 64 the warp's Q and dO fragments stay in registers
// for the whole kernel; see kMinBlocks for the resulting occupancy.
template <int D>
constexpr int kBwdTile = D >= 128 ? 32 : 64;  // fewer score registers at d = 128

// Whether the backward kernels hold the A fragments of their own 16 rows (Q and dO for dq, K
// and V for dk/dv: d/2 registers) for the whole kernel rather than reloading them per chunk.
template <int D>
constexpr bool kHoldRows = D <= 64;

template <int D>
size_t dq_smem(int warps) {
  return static_cast<size_t>(2 * warps * 16 + 4 * kBwdTile<D>) * (D + 8) * sizeof(bf16);
}

template <int R>
__device__ __forceinline__ void copy_frag(uint32_t (&dst)[R], const uint32_t (&src)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) dst[i] = src[i];
}

template <int D>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocks<D>)
    attn_bwd_dq_mma(const bf16* __restrict__ qkv, const bf16* __restrict__ gout,
                    const bf16* __restrict__ out, const float* __restrict__ lse,
                    float* __restrict__ delta, bf16* __restrict__ gqkv, int N, int H, int tiles,
                    float scale_log2, float scale) {
  constexpr int kLd = D + 8, kBK = kBwdTile<D>, kHold = kHoldRows<D> ? D / 16 : 1;
  // delta: kC lanes (16-byte chunks) per row, kR rows per step, kSteps steps for 16 rows.
  constexpr int kC = D / 8, kR = 32 / kC, kSteps = 16 / kR;
  const int rows = static_cast<int>(blockDim.x / 32) * 16;
  bf16* Qs = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* dOs = Qs + rows * kLd;
  bf16* Ks = dOs + rows * kLd;
  bf16* Vs = Ks + 2 * kBK * kLd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const BlockPos pos = block_pos(H, tiles);
  const int q0 = pos.tile * rows, wq0 = q0 + warp * 16;
  const int64_t HD = int64_t{H} * D, ld = 3 * HD;
  const bf16* Qg = qkv + pos.b * N * ld + int64_t{pos.h} * D;
  const int64_t orow = pos.b * N * HD + int64_t{pos.h} * D;  // row 0 of this head in O, dO

  // Two groups: Q and dO (needed for delta and the held fragments), then the first K, V tile.
  load_rows<D>(Qs, Qg, ld, q0, rows, N);
  load_rows<D>(dOs, gout + orow, HD, q0, rows, N);
  cp_async_commit();
  load_rows<D>(Ks, Qg + HD, ld, 0, kBK, N);
  load_rows<D>(Vs, Qg + 2 * HD, ld, 0, kBK, N);
  cp_async_commit();

  const bool active = wq0 < N;  // warp-uniform
  uint4 o_part[kSteps];         // this lane's chunks of O for delta
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int q = wq0 + j * kR + lane / kC;
    o_part[j] = active && q < N
                    ? *reinterpret_cast<const uint4*>(out + orow + q * HD + (lane % kC) * 8)
                    : make_uint4(0u, 0u, 0u, 0u);
  }
  float lse2[2], dl[2] = {0.f, 0.f};  // rows g, g+8
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int q = wq0 + g + 8 * r;
    lse2[r] = q < N ? lse[pos.bh * N + q] * kLog2e : 0.f;
  }
  uint32_t qa[kHold][4], da[kHold][4];
  cp_async_wait<1>();  // Q and dO
  __syncthreads();
  if (active) {
    // delta of rows wq0 + j*kR + lane/kC; after group_sum every lane of a row's group holds the
    // row's sum, and lane (g, t) fetches rows g and g+8 from their groups.
    float part[kSteps];
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const int r = j * kR + lane / kC, q = wq0 + r;
      const uint4 dov =
          *reinterpret_cast<const uint4*>(dOs + (warp * 16 + r) * kLd + (lane % kC) * 8);
      part[j] = group_sum<kC>(dot8(o_part[j], dov));
      if (lane % kC == 0 && q < N) delta[pos.bh * N + q] = part[j];
    }
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const float x = __shfl_sync(0xffffffffu, part[j], (g % kR) * kC);
      const float y = __shfl_sync(0xffffffffu, part[j], ((g + 8) % kR) * kC);
      if (g / kR == j) dl[0] = x;
      if ((g + 8) / kR == j) dl[1] = y;
    }
    if constexpr (kHoldRows<D>) {
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd) {
        load_a(qa[kd], Qs, kLd, warp * 16, kd * 16, lane);
        load_a(da[kd], dOs, kLd, warp * 16, kd * 16, lane);
      }
    }
  }

  float dq[D / 8][4];
  zero(dq);
  const int nkt = (N + kBK - 1) / kBK;
  for (int kt = 0; kt < nkt; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < nkt) {
      load_rows<D>(Ks + (buf ^ 1) * kBK * kLd, Qg + HD, ld, (kt + 1) * kBK, kBK, N);
      load_rows<D>(Vs + (buf ^ 1) * kBK * kLd, Qg + 2 * HD, ld, (kt + 1) * kBK, kBK, N);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (active) {
      const bf16* ks = Ks + buf * kBK * kLd;
      const bf16* vs = Vs + buf * kBK * kLd;
      const int k0 = kt * kBK, live = min(kBK / 16, (N - k0 + 15) / 16);  // chunks with a key
#pragma unroll 1
      for (int c = 0; c < live; ++c) {
        float s[2][4], dp[2][4];
        zero(s);
        zero(dp);
#pragma unroll
        for (int kd = 0; kd < D / 16; ++kd) {
          uint32_t qf[4], df[4], kb[4], vb[4];
          if constexpr (kHoldRows<D>) {
            copy_frag(qf, qa[kd]);
            copy_frag(df, da[kd]);
          } else {
            load_a(qf, Qs, kLd, warp * 16, kd * 16, lane);
            load_a(df, dOs, kLd, warp * 16, kd * 16, lane);
          }
          load_b_nk(kb, ks, kLd, c * 16, kd * 16, lane);
          mma(s[0], qf, kb[0], kb[1]);
          mma(s[1], qf, kb[2], kb[3]);
          load_b_nk(vb, vs, kLd, c * 16, kd * 16, lane);
          mma(dp[0], df, vb[0], vb[1]);
          mma(dp[1], df, vb[2], vb[3]);
        }
        // Element (n, e): key k0 + 16c + 8n + 2t + (e & 1), row g + 8 (e >> 1).
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = k0 + 16 * c + 8 * n + 2 * t + (e & 1), r = e >> 1;
            const float p = key < N ? exp2f(s[n][e] * scale_log2 - lse2[r]) : 0.f;
            s[n][e] = p * (dp[n][e] - dl[r]);  // dS
          }
        uint32_t sa[4];
        acc_to_a(sa, s[0], s[1]);
        mma_a_rows<D>(dq, sa, ks, kLd, c * 16, lane);
      }
    }
    __syncthreads();
  }

  if (active) {
    bf16* st = Qs + warp * 16 * kLd;  // the warp's own Q rows stage dq
    stage_acc<D>(st, dq, scale, scale, lane);
    __syncwarp();
    store_rows<D>(gqkv + pos.b * N * ld + int64_t{pos.h} * D, ld, st, wq0, N, lane);
  }
}

// ---- backward: dk, dv --------------------------------------------------------------------------
// Block: W warps x 16 key rows; query tiles of kBwdTile(D) rows, double-buffered. The scores are
// computed transposed (rows = keys, columns = queries), so lse and delta are per column and
// come from shared memory. Shared: K, V [16W][D+8]; Q, dO [2][T][D+8]; lse*log2e, delta [2][T]
// (fp32). Per warp and 16-query chunk of each tile: S^T = K Q^T, dP^T = V dO^T (16x16 each),
// P^T = exp2(S^T*scale*log2e - lse*log2e) (masked queries 0), dS^T = P^T (dP^T - delta),
// dv += P^T dO_chunk, dk += dS^T Q_chunk. As in the dq kernel, chunks of 16 keep the score
// registers small and at d <= 64 the warp's K and V fragments stay in registers.
template <int D>
size_t dkdv_smem(int warps) {
  constexpr int kT = kBwdTile<D>;
  return static_cast<size_t>(2 * warps * 16 + 4 * kT) * (D + 8) * sizeof(bf16) +
         4 * kT * sizeof(float);
}

template <int D>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocks<D>)
    attn_bwd_dkdv_mma(const bf16* __restrict__ qkv, const bf16* __restrict__ gout,
                      const float* __restrict__ lse, const float* __restrict__ delta,
                      bf16* __restrict__ gqkv, int N, int H, int tiles, float scale_log2,
                      float scale) {
  constexpr int kLd = D + 8, kBQ = kBwdTile<D>, kHold = kHoldRows<D> ? D / 16 : 1;
  const int rows = static_cast<int>(blockDim.x / 32) * 16;
  bf16* Ks = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* Vs = Ks + rows * kLd;
  bf16* Qs = Vs + rows * kLd;
  bf16* dOs = Qs + 2 * kBQ * kLd;
  float* Ls = reinterpret_cast<float*>(dOs + 2 * kBQ * kLd);  // [2][kBQ]
  float* Dl = Ls + 2 * kBQ;                                   // [2][kBQ]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, t = lane % 4;
  const BlockPos pos = block_pos(H, tiles);
  const int k0 = pos.tile * rows, wk0 = k0 + warp * 16;
  const int64_t HD = int64_t{H} * D, ld = 3 * HD;
  const bf16* Qg = qkv + pos.b * N * ld + int64_t{pos.h} * D;
  const bf16* dOg = gout + pos.b * N * HD + int64_t{pos.h} * D;
  const float* lse_bh = lse + pos.bh * N;
  const float* delta_bh = delta + pos.bh * N;

  // Plain loads of one query tile's statistics (visible after the next barrier).
  auto load_stats = [&](int buf, int first) {
    for (int i = threadIdx.x; i < kBQ; i += blockDim.x) {
      const int q = first + i;
      Ls[buf * kBQ + i] = q < N ? lse_bh[q] * kLog2e : 0.f;
      Dl[buf * kBQ + i] = q < N ? delta_bh[q] : 0.f;
    }
  };
  // Two groups: the block's K and V rows (for the held fragments), then the first Q, dO tile.
  load_rows<D>(Ks, Qg + HD, ld, k0, rows, N);
  load_rows<D>(Vs, Qg + 2 * HD, ld, k0, rows, N);
  cp_async_commit();
  load_rows<D>(Qs, Qg, ld, 0, kBQ, N);
  load_rows<D>(dOs, dOg, HD, 0, kBQ, N);
  cp_async_commit();
  load_stats(0, 0);

  const bool active = wk0 < N;
  uint32_t ka[kHold][4], va[kHold][4];
  if constexpr (kHoldRows<D>) {
    cp_async_wait<1>();  // K and V
    __syncthreads();
    if (active) {
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd) {
        load_a(ka[kd], Ks, kLd, warp * 16, kd * 16, lane);
        load_a(va[kd], Vs, kLd, warp * 16, kd * 16, lane);
      }
    }
  }
  float dk[D / 8][4], dv[D / 8][4];
  zero(dk);
  zero(dv);
  const int nqt = (N + kBQ - 1) / kBQ;
  for (int qt = 0; qt < nqt; ++qt) {
    const int buf = qt & 1;
    if (qt + 1 < nqt) {
      load_rows<D>(Qs + (buf ^ 1) * kBQ * kLd, Qg, ld, (qt + 1) * kBQ, kBQ, N);
      load_rows<D>(dOs + (buf ^ 1) * kBQ * kLd, dOg, HD, (qt + 1) * kBQ, kBQ, N);
      cp_async_commit();
      load_stats(buf ^ 1, (qt + 1) * kBQ);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (active) {
      const bf16* qs = Qs + buf * kBQ * kLd;
      const bf16* dos = dOs + buf * kBQ * kLd;
      const float* ls = Ls + buf * kBQ;
      const float* dls = Dl + buf * kBQ;
      // 16-query chunks of this tile that hold a query < N; the others are skipped.
      const int qbase = qt * kBQ, live = min(kBQ / 16, (N - qbase + 15) / 16);
#pragma unroll 1
      for (int c = 0; c < live; ++c) {
        float st[2][4], dpt[2][4];
        zero(st);
        zero(dpt);
#pragma unroll
        for (int kd = 0; kd < D / 16; ++kd) {
          uint32_t kf[4], vf[4], qb[4], ob[4];
          if constexpr (kHoldRows<D>) {
            copy_frag(kf, ka[kd]);
            copy_frag(vf, va[kd]);
          } else {
            load_a(kf, Ks, kLd, warp * 16, kd * 16, lane);
            load_a(vf, Vs, kLd, warp * 16, kd * 16, lane);
          }
          load_b_nk(qb, qs, kLd, c * 16, kd * 16, lane);
          mma(st[0], kf, qb[0], qb[1]);
          mma(st[1], kf, qb[2], qb[3]);
          load_b_nk(ob, dos, kLd, c * 16, kd * 16, lane);
          mma(dpt[0], vf, ob[0], ob[1]);
          mma(dpt[1], vf, ob[2], ob[3]);
        }
        // Element (n, e): query column 16c + 8n + 2t + (e & 1) of the tile.
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          const int col = 16 * c + 8 * n + 2 * t;
          const float2 l2 = *reinterpret_cast<const float2*>(ls + col);
          const float2 dl = *reinterpret_cast<const float2*>(dls + col);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const bool ok = qbase + col + (e & 1) < N;
            const float p = ok ? exp2f(st[n][e] * scale_log2 - (e & 1 ? l2.y : l2.x)) : 0.f;
            st[n][e] = p;
            dpt[n][e] = p * (dpt[n][e] - (e & 1 ? dl.y : dl.x));  // dS^T
          }
        }
        uint32_t pa[4], sa[4];
        acc_to_a(pa, st[0], st[1]);
        acc_to_a(sa, dpt[0], dpt[1]);
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          uint32_t ob[4], qb[4];
          load_b_kn(ob, dos, kLd, c * 16, np * 16, lane);
          mma(dv[2 * np], pa, ob[0], ob[1]);
          mma(dv[2 * np + 1], pa, ob[2], ob[3]);
          load_b_kn(qb, qs, kLd, c * 16, np * 16, lane);
          mma(dk[2 * np], sa, qb[0], qb[1]);
          mma(dk[2 * np + 1], sa, qb[2], qb[3]);
        }
      }
    }
    __syncthreads();
  }

  if (active) {
    // The warp's own K and V rows stage dk and dv.
    bf16* sk = Ks + warp * 16 * kLd;
    bf16* sv = Vs + warp * 16 * kLd;
    stage_acc<D>(sk, dk, scale, scale, lane);
    stage_acc<D>(sv, dv, 1.f, 1.f, lane);
    __syncwarp();
    bf16* grow = gqkv + pos.b * N * ld + int64_t{pos.h} * D;
    store_rows<D>(grow + HD, ld, sk, wk0, N, lane);
    store_rows<D>(grow + 2 * HD, ld, sv, wk0, N, lane);
  }
}

[[noreturn]] void no_mma(int64_t d, const char* where) {
  attn::unsupported("no tensor-core kernel", d, "head dim must be 16, 32, 64 or 128", where,
                    __FILE__, __LINE__);
}

}  // namespace

namespace detail {

void attention_fwd_mma(const void* qkv, void* out, float* lse, const AttentionDims& d,
                       cudaStream_t stream) {
  attn::with_head_dim(d.head_dim, "attention_fwd_mma", [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    if constexpr (D < 16) {
      no_mma(D, "attention_fwd_mma");
    } else {
      const attn::RowTiling rt = attn::row_tiling(d.tokens);
      const size_t smem = fwd_smem<D>(rt.warps);
      allow_dynamic_smem(reinterpret_cast<const void*>(&attn_fwd_mma<D>),
                         fwd_smem<D>(kMaxThreads / 32), "attn_fwd_mma");
      attn_fwd_mma<D><<<attn::grid_blocks(rt.tiles, d), rt.warps * 32, smem, stream>>>(
          static_cast<const bf16*>(qkv), static_cast<bf16*>(out), lse, static_cast<int>(d.tokens),
          static_cast<int>(d.heads), rt.tiles, attn::scales_for(D).scale_log2);
      after_launch("attn_fwd_mma", stream);
    }
  });
}

void attention_bwd_mma(const void* gout, const void* qkv, const void* out, const float* lse,
                       float* delta, void* gqkv, const AttentionDims& d, cudaStream_t stream) {
  attn::with_head_dim(d.head_dim, "attention_bwd_mma", [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    if constexpr (D < 16) {
      no_mma(D, "attention_bwd_mma");
    } else {
      const attn::RowTiling rt = attn::row_tiling(d.tokens);
      const attn::Scales sc = attn::scales_for(D);
      const int N = static_cast<int>(d.tokens), H = static_cast<int>(d.heads);
      const bf16* q = static_cast<const bf16*>(qkv);
      const bf16* go = static_cast<const bf16*>(gout);
      bf16* g = static_cast<bf16*>(gqkv);
      const unsigned blocks = attn::grid_blocks(rt.tiles, d);

      const size_t smem_dq = dq_smem<D>(rt.warps);
      allow_dynamic_smem(reinterpret_cast<const void*>(&attn_bwd_dq_mma<D>),
                         dq_smem<D>(kMaxThreads / 32), "attn_bwd_dq_mma");
      attn_bwd_dq_mma<D><<<blocks, rt.warps * 32, smem_dq, stream>>>(
          q, go, static_cast<const bf16*>(out), lse, delta, g, N, H, rt.tiles, sc.scale_log2,
          sc.scale);
      after_launch("attn_bwd_dq_mma", stream);

      const size_t smem_kv = dkdv_smem<D>(rt.warps);
      allow_dynamic_smem(reinterpret_cast<const void*>(&attn_bwd_dkdv_mma<D>),
                         dkdv_smem<D>(kMaxThreads / 32), "attn_bwd_dkdv_mma");
      attn_bwd_dkdv_mma<D><<<blocks, rt.warps * 32, smem_kv, stream>>>(
          q, go, lse, delta, g, N, H, rt.tiles, sc.scale_log2, sc.scale);
      after_launch("attn_bwd_dkdv_mma", stream);
    }
  });
}

}  // namespace detail

}  // namespace lvit::cuda
