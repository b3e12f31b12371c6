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

namespace lvit::cuda {
namespace {

using attn::kLn2;
using attn::kLog2e;
using namespace tc;

// 8 warps (attn::row_tiling never picks more). The kernels declare __launch_bounds__(256, 1):
// with the minimum-blocks hint ptxas may use up to 255 registers (without it, it aimed lower
// and spilled the score fragments).
constexpr int kMaxThreads = 256;

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
__global__ void __launch_bounds__(kMaxThreads, 1)
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
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          uint32_t vb[4];
          load_b_kn(vb, vs, kLd, kc * 16, np * 16, lane);
          mma(o[2 * np], pa, vb[0], vb[1]);
          mma(o[2 * np + 1], pa, vb[2], vb[3]);
        }
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

// ---- backward: dq ------------------------------------------------------------------------------
// Block: W warps x 16 query rows; key/value tiles of kBwdTile(D) rows.
// Shared: Q, dO [16W][D+8]; K, V [2][T][D+8]. Per warp and key tile: S = Q K^T and
// dP = dO V^T (16xT each), P = exp2(S*scale*log2e - lse*log2e) (masked keys 0),
// dS = P (dP - delta), dq += dS K; dq is scaled by 1/sqrt(d) once at the end.
template <int D>
constexpr int kBwdTile = D >= 128 ? 32 : 64;  // fewer score registers at d = 128

template <int D>
size_t dq_smem(int warps) {
  return static_cast<size_t>(2 * warps * 16 + 4 * kBwdTile<D>) * (D + 8) * sizeof(bf16);
}

template <int D>
__global__ void __launch_bounds__(kMaxThreads, 1)
    attn_bwd_dq_mma(const bf16* __restrict__ qkv, const bf16* __restrict__ gout,
                    const float* __restrict__ lse, const float* __restrict__ delta,
                    bf16* __restrict__ gqkv, int N, int H, int tiles, float scale_log2,
                    float scale) {
  constexpr int kLd = D + 8, kBK = kBwdTile<D>, kSN = kBK / 8;
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

  load_rows<D>(Qs, Qg, ld, q0, rows, N);
  load_rows<D>(dOs, gout + pos.b * N * HD + int64_t{pos.h} * D, HD, q0, rows, N);
  load_rows<D>(Ks, Qg + HD, ld, 0, kBK, N);
  load_rows<D>(Vs, Qg + 2 * HD, ld, 0, kBK, N);
  cp_async_commit();

  const bool active = wq0 < N;
  float lse2[2], dl[2];  // rows g, g+8
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int q = wq0 + g + 8 * r;
    lse2[r] = q < N ? lse[pos.bh * N + q] * kLog2e : 0.f;
    dl[r] = q < N ? delta[pos.bh * N + q] : 0.f;
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
      const int k0 = kt * kBK, live = min(kBK / 16, (N - k0 + 15) / 16);  // as in the forward
      float s[kSN][4], dp[kSN][4];
      zero(s);
      zero(dp);
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd) {
        uint32_t qa[4], da[4];
        load_a(qa, Qs, kLd, warp * 16, kd * 16, lane);
        load_a(da, dOs, kLd, warp * 16, kd * 16, lane);
#pragma unroll
        for (int np = 0; np < kBK / 16; ++np) {
          if (np >= live) continue;  // uniform: the block holds no live column
          uint32_t kb[4], vb[4];
          load_b_nk(kb, ks, kLd, np * 16, kd * 16, lane);
          load_b_nk(vb, vs, kLd, np * 16, kd * 16, lane);
          mma(s[2 * np], qa, kb[0], kb[1]);
          mma(s[2 * np + 1], qa, kb[2], kb[3]);
          mma(dp[2 * np], da, vb[0], vb[1]);
          mma(dp[2 * np + 1], da, vb[2], vb[3]);
        }
      }
#pragma unroll
      for (int n = 0; n < kSN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + 8 * n + 2 * t + (e & 1), r = e >> 1;
          const float p = key < N ? exp2f(s[n][e] * scale_log2 - lse2[r]) : 0.f;
          s[n][e] = p * (dp[n][e] - dl[r]);  // dS
        }
#pragma unroll
      for (int kc = 0; kc < kBK / 16; ++kc) {
        if (kc >= live) continue;  // uniform: the block holds no live column
        uint32_t sa[4];
        acc_to_a(sa, s[2 * kc], s[2 * kc + 1]);
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          uint32_t kb[4];
          load_b_kn(kb, ks, kLd, kc * 16, np * 16, lane);
          mma(dq[2 * np], sa, kb[0], kb[1]);
          mma(dq[2 * np + 1], sa, kb[2], kb[3]);
        }
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
// Block: W warps x 16 key rows; query tiles of kBwdTile(D) rows. The scores are computed
// transposed (rows = keys, columns = queries), so lse and delta are per column and come from
// shared memory. Shared: K, V [16W][D+8]; Q, dO [2][T][D+8]; lse*log2e, delta [2][T] (fp32).
// Per warp and query tile: S^T = K Q^T, dP^T = V dO^T, P^T = exp2(S^T*scale*log2e - lse*log2e)
// (masked queries 0), dS^T = P^T (dP^T - delta), dv += P^T dO, dk += dS^T Q.
template <int D>
size_t dkdv_smem(int warps) {
  constexpr int kT = kBwdTile<D>;
  return static_cast<size_t>(2 * warps * 16 + 4 * kT) * (D + 8) * sizeof(bf16) +
         4 * kT * sizeof(float);
}

template <int D>
__global__ void __launch_bounds__(kMaxThreads, 1)
    attn_bwd_dkdv_mma(const bf16* __restrict__ qkv, const bf16* __restrict__ gout,
                      const float* __restrict__ lse, const float* __restrict__ delta,
                      bf16* __restrict__ gqkv, int N, int H, int tiles, float scale_log2,
                      float scale) {
  constexpr int kLd = D + 8, kBQ = kBwdTile<D>, kSN = kBQ / 8;
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
  load_rows<D>(Ks, Qg + HD, ld, k0, rows, N);
  load_rows<D>(Vs, Qg + 2 * HD, ld, k0, rows, N);
  load_rows<D>(Qs, Qg, ld, 0, kBQ, N);
  load_rows<D>(dOs, dOg, HD, 0, kBQ, N);
  cp_async_commit();
  load_stats(0, 0);

  const bool active = wk0 < N;
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
      // 16-query blocks of this tile that hold a query < N; the others are skipped.
      const int qbase = qt * kBQ, live = min(kBQ / 16, (N - qbase + 15) / 16);
      float st[kSN][4], dpt[kSN][4];
      zero(st);
      zero(dpt);
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd) {
        uint32_t ka[4], va[4];
        load_a(ka, Ks, kLd, warp * 16, kd * 16, lane);
        load_a(va, Vs, kLd, warp * 16, kd * 16, lane);
#pragma unroll
        for (int np = 0; np < kBQ / 16; ++np) {
          if (np >= live) continue;  // uniform: the block holds no live column
          uint32_t qb[4], ob[4];
          load_b_nk(qb, qs, kLd, np * 16, kd * 16, lane);
          load_b_nk(ob, dos, kLd, np * 16, kd * 16, lane);
          mma(st[2 * np], ka, qb[0], qb[1]);
          mma(st[2 * np + 1], ka, qb[2], qb[3]);
          mma(dpt[2 * np], va, ob[0], ob[1]);
          mma(dpt[2 * np + 1], va, ob[2], ob[3]);
        }
      }
#pragma unroll
      for (int n = 0; n < kSN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = 8 * n + 2 * t + (e & 1);  // query column within the tile
          const float p = qbase + c < N ? exp2f(st[n][e] * scale_log2 - ls[c]) : 0.f;
          st[n][e] = p;
          dpt[n][e] = p * (dpt[n][e] - dls[c]);  // dS^T
        }
#pragma unroll
      for (int kc = 0; kc < kBQ / 16; ++kc) {
        if (kc >= live) continue;  // uniform: the block holds no live column
        uint32_t pa[4], sa[4];
        acc_to_a(pa, st[2 * kc], st[2 * kc + 1]);
        acc_to_a(sa, dpt[2 * kc], dpt[2 * kc + 1]);
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          uint32_t ob[4], qb[4];
          load_b_kn(ob, dos, kLd, kc * 16, np * 16, lane);
          load_b_kn(qb, qs, kLd, kc * 16, np * 16, lane);
          mma(dv[2 * np], pa, ob[0], ob[1]);
          mma(dv[2 * np + 1], pa, ob[2], ob[3]);
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
      attn::allow_smem(attn_fwd_mma<D>, fwd_smem<D>(kMaxThreads / 32));
      attn_fwd_mma<D><<<attn::grid_blocks(rt.tiles, d), rt.warps * 32, smem, stream>>>(
          static_cast<const bf16*>(qkv), static_cast<bf16*>(out), lse, static_cast<int>(d.tokens),
          static_cast<int>(d.heads), rt.tiles, attn::scales_for(D).scale_log2);
      after_launch("attn_fwd_mma", stream);
    }
  });
}

void attention_bwd_mma(const void* gout, const void* qkv, const float* lse, const float* delta,
                       void* gqkv, const AttentionDims& d, cudaStream_t stream) {
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
      attn::allow_smem(attn_bwd_dq_mma<D>, dq_smem<D>(kMaxThreads / 32));
      attn_bwd_dq_mma<D><<<blocks, rt.warps * 32, smem_dq, stream>>>(
          q, go, lse, delta, g, N, H, rt.tiles, sc.scale_log2, sc.scale);
      after_launch("attn_bwd_dq_mma", stream);

      const size_t smem_kv = dkdv_smem<D>(rt.warps);
      attn::allow_smem(attn_bwd_dkdv_mma<D>, dkdv_smem<D>(kMaxThreads / 32));
      attn_bwd_dkdv_mma<D><<<blocks, rt.warps * 32, smem_kv, stream>>>(
          q, go, lse, delta, g, N, H, rt.tiles, sc.scale_log2, sc.scale);
      after_launch("attn_bwd_dkdv_mma", stream);
    }
  });
}

}  // namespace detail

}  // namespace lvit::cuda
