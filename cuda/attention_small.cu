// Softmax attention on tensor cores for short sequences (N <= 128, head dim 16, 32 or 64): one
// block per (image, head) holds that head's whole Q, K, V (and O, dO in the backward) in shared
// memory, so every operand crosses global memory exactly once, the N x N scores never leave the
// chip and the backward is a single kernel (no delta pre-pass, no recomputation over global
// memory, no atomics). Launched by attention_fwd/attention_bwd in cuda/attention.cu; longer
// sequences and d = 128 take the streaming kernels of cuda/attention_mma.cu.
//
// Geometry: NB = ceil(N/16) blocks of 16 tokens, NP = 16 NB padded rows (rows past N are
// zero-filled in shared memory, masked out of every softmax and never written back); NB warps,
// warp w owns the 16 tokens 16w .. 16w+15 (as queries in the forward and the dq pass, as keys
// in the dk/dv pass). Shared rows have stride d+8 (cuda/attention_mma.cuh). The ViT shapes:
// N = 65 -> NB = 5, 160 threads; N = 17 -> NB = 2.
//
// Precision and rounding points are those of the streaming kernels: P (forward), P and dS
// (backward) are rounded to bf16 as mma operands; row max, sums, lse, delta and all
// accumulators are fp32.
#include <cuda_bf16.h>

#include "cuda/attention_common.cuh"
#include "cuda/attention_mma.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

using attn::kLn2;
using attn::kLog2e;
using namespace tc;

constexpr int kMaxKeyBlocks = 8;  // N <= 128

[[noreturn]] void too_many_tokens(int64_t n, const char* where) {
  attn::unsupported("too many tokens for the one-block-per-head kernels", n, "N <= 128", where,
                    __FILE__, __LINE__);
}

// fn(std::integral_constant<int, nb>{}) for nb = 1 .. kMaxKeyBlocks.
template <typename Fn>
void with_key_blocks(int nb, Fn&& fn) {
  switch (nb) {
    case 1:
      return fn(std::integral_constant<int, 1>{});
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 3:
      return fn(std::integral_constant<int, 3>{});
    case 4:
      return fn(std::integral_constant<int, 4>{});
    case 5:
      return fn(std::integral_constant<int, 5>{});
    case 6:
      return fn(std::integral_constant<int, 6>{});
    case 7:
      return fn(std::integral_constant<int, 7>{});
    case 8:
      return fn(std::integral_constant<int, 8>{});
    default:
      too_many_tokens(16 * int64_t{nb}, "attention_fwd_small");
  }
}

// ---- forward -----------------------------------------------------------------------------------
// Shared: Q, K, V [NP][d+8] bf16 (NP = 80, d = 64: 34.6 KB). Q and K land first (one cp.async
// group), V second, so V's load overlaps S = Q K^T and the softmax.
// Warp w: S (16 x NP fp32 in registers: 2 NB accumulator blocks of 16x8) = Q_w K^T; keys >= N
// -> -inf; exact row max and sum in one pass (the whole row is in registers: no online
// rescaling); O_w (16 x d) = P V with P taken from the score registers (rounded to bf16);
// O_w / l is staged in the warp's own Q rows (read by no other warp) for 16-byte stores;
// lse = (m + log2 l) ln 2.
// Registers: 8 NB (S) + d/2 (O) + fragments. The minimum blocks per SM below hold ptxas to 96
// registers for NB <= 6 (d = 64, no spills: four blocks of 160 threads per SM at N = 65, with
// 4 x 34.6 KB of shared memory) and 128 above.
template <int NB>
constexpr int fwd_min_blocks = NB <= 5 ? 4 : (NB == 6 ? 3 : 2);

template <int D, int NB>
constexpr size_t fwd_smem_bytes = size_t{3} * 16 * NB*(D + 8) * sizeof(bf16);

template <int D, int NB>
__global__ void __launch_bounds__(32 * NB, fwd_min_blocks<NB>)
    attn_fwd_small(const bf16* __restrict__ qkv, bf16* __restrict__ out, float* __restrict__ lse,
                   int N, int H, float scale_log2) {
  constexpr int kNP = 16 * NB, kLd = D + 8, kSN = 2 * NB;
  bf16* Qs = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* Ks = Qs + kNP * kLd;
  bf16* Vs = Ks + kNP * kLd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const auto [bh, b, h, HD, ld] = head_slice<D>(H);
  const bf16* Qg = qkv + b * N * ld + int64_t{h} * D;

  load_rows<D>(Qs, Qg, ld, 0, kNP, N);
  load_rows<D>(Ks, Qg + HD, ld, 0, kNP, N);
  cp_async_commit();
  load_rows<D>(Vs, Qg + 2 * HD, ld, 0, kNP, N);
  cp_async_commit();
  cp_async_wait<1>();  // this thread's Q and K copies
  __syncthreads();     // everyone's

  float s[kSN][4];
  zero(s);
  mma_rows_bt<D, NB>(s, Qs, Ks, kLd, warp * 16, lane);
  // Element (n, e) is key 8n + 2t + (e & 1) of row g + 8 (e >> 1). Key 0 < N lies in every row
  // (lane t = 0, n = 0), so each row max is finite and exp2(-inf - m) = 0 for masked keys.
  float m[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < kSN; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = 8 * n + 2 * t + (e & 1);
      s[n][e] = key < N ? s[n][e] * scale_log2 : -INFINITY;
      m[e >> 1] = fmaxf(m[e >> 1], s[n][e]);
    }
  m[0] = quad_max(m[0]);
  m[1] = quad_max(m[1]);
  float l[2] = {0.f, 0.f};  // thread-partial row sums, reduced across the quad at the end
#pragma unroll
  for (int n = 0; n < kSN; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[n][e] = exp2f(s[n][e] - m[e >> 1]);
      l[e >> 1] += s[n][e];
    }

  cp_async_wait<0>();  // V
  __syncthreads();
  float o[D / 8][4];
  zero(o);
#pragma unroll
  for (int kc = 0; kc < NB; ++kc) {
    uint32_t pa[4];
    acc_to_a(pa, s[2 * kc], s[2 * kc + 1]);
    mma_a_rows<D>(o, pa, Vs, kLd, kc * 16, lane);
  }

  l[0] = quad_sum(l[0]);
  l[1] = quad_sum(l[1]);
  bf16* os = Qs + warp * 16 * kLd;  // the warp's own Q rows: no other warp reads them
  stage_acc<D>(os, o, 1.f / l[0], 1.f / l[1], lane);
  const int q0 = warp * 16;
  if (t == 0) {
    if (q0 + g < N) lse[bh * N + q0 + g] = (m[0] + log2f(l[0])) * kLn2;
    if (q0 + g + 8 < N) lse[bh * N + q0 + g + 8] = (m[1] + log2f(l[1])) * kLn2;
  }
  __syncwarp();
  store_rows<D>(out + b * N * HD + int64_t{h} * D, HD, os, q0, N, lane);
}

// ---- backward ----------------------------------------------------------------------------------
// One kernel: dq, dk, dv of one (image, head), each written once into gqkv.
// Shared (bf16 unless noted; NP = 80, d = 64: 59.4 KB, three blocks per SM):
//   Q, K, V, dO [NP][d+8]
//   S           [NP][max(NP, d)+8]: first O [NP][d+8] (only for delta), then dS^T (rows =
//               keys, cols = queries)
//   lse*log2(e), delta [NP] fp32
// Steps:
//  0. cp.async group 1: O, dO; group 2: Q, K, V; plain loads of lse. When group 1 has landed:
//     delta_i = rowsum(dO_i * O_i) (fp32, from the bf16 values as the streaming path), one
//     16-byte chunk per thread and a shuffle sum over the d/8 lanes of a row.
//  1. Warp w = keys 16w..16w+15 (like FlashAttention-2's dk/dv kernel), over 16-query chunks:
//     S^T = K_w Q_c^T, dP^T = V_w dO_c^T (16x16 fp32 each), P^T = exp2(S^T scale log2e -
//     lse log2e) (0 for keys or queries >= N), dS^T = P^T (dP^T - delta);
//     dv += P^T dO_c, dk += dS^T Q_c straight from the registers (rounded to bf16), and dS^T
//     (the same bf16 values) goes to shared memory. Chunks of 16 keep the score registers at
//     16, so dk and dv (d/2 each) stay in registers without spilling.
//     dv is staged in the warp's own V rows (no other warp reads them) and stored.
//  2. Barrier (dS^T complete; Q and dO no longer read). dk * scale is staged in the warp's own
//     Q rows and stored; then warp w = queries 16w..: dq = scale * dS K, the dS fragments read
//     transposed (ldmatrix.trans) out of dS^T; staged in the warp's own dO rows and stored.
// Registers: capped at 128 (launch bounds 256 threads, 2 blocks) for three blocks of 160
// threads per SM at N = 65.
constexpr int kBwdMaxThreads = 32 * kMaxKeyBlocks;

template <int D>
size_t bwd_smem_bytes(int nb) {
  const size_t np = 16 * static_cast<size_t>(nb), lds = (np > D ? np : D) + 8;
  return (4 * np * (D + 8) + np * lds) * sizeof(bf16) + 2 * np * sizeof(float);
}

template <int D>
__global__ void __launch_bounds__(kBwdMaxThreads, 2)
    attn_bwd_small(const bf16* __restrict__ qkv, const bf16* __restrict__ gout,
                   const bf16* __restrict__ out, const float* __restrict__ lse,
                   bf16* __restrict__ gqkv, int N, int H, float scale_log2, float scale) {
  constexpr int kLd = D + 8, kChunks = D / 8;
  const int nb = static_cast<int>(blockDim.x / 32), np = 16 * nb, lds = max(np, D) + 8;
  bf16* Qs = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* Ks = Qs + np * kLd;
  bf16* Vs = Ks + np * kLd;
  bf16* dOs = Vs + np * kLd;
  bf16* Ss = dOs + np * kLd;                            // O, then dS^T
  float* Ls = reinterpret_cast<float*>(Ss + np * lds);  // lse * log2(e)
  float* Dl = Ls + np;                                  // delta
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const auto [bh, b, h, HD, ld] = head_slice<D>(H);
  const bf16* Qg = qkv + b * N * ld + int64_t{h} * D;
  const int64_t orow = b * N * HD + int64_t{h} * D;  // offset of the head's row 0 in O and dO

  // 0. Loads and delta.
  load_rows<D>(Ss, out + orow, HD, 0, np, N);
  load_rows<D>(dOs, gout + orow, HD, 0, np, N);
  cp_async_commit();
  load_rows<D>(Qs, Qg, ld, 0, np, N);
  load_rows<D>(Ks, Qg + HD, ld, 0, np, N);
  load_rows<D>(Vs, Qg + 2 * HD, ld, 0, np, N);
  cp_async_commit();
  for (int i = threadIdx.x; i < np; i += blockDim.x) Ls[i] = i < N ? lse[bh * N + i] * kLog2e : 0.f;
  cp_async_wait<1>();
  __syncthreads();
  // np * d/8 chunks (a multiple of 32) over 32 nb threads: every lane runs the same number of
  // iterations, and the d/8 chunks of a row sit in d/8 consecutive, aligned lanes.
  for (int i = threadIdx.x; i < np * kChunks; i += blockDim.x) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    const float part = dot8(*reinterpret_cast<const uint4*>(Ss + r * kLd + c),
                            *reinterpret_cast<const uint4*>(dOs + r * kLd + c));
    const float sum = group_sum<kChunks>(part);
    if (i % kChunks == 0) Dl[r] = sum;  // rows past N are zero-filled: delta 0
  }
  cp_async_wait<0>();
  __syncthreads();  // Q, K, V landed; delta known; O no longer read (S may take dS^T)

  // 1. Keys k0 .. k0+15 of this warp.
  const int k0 = warp * 16;
  const bool key_ok[2] = {k0 + g < N, k0 + g + 8 < N};
  float dk[D / 8][4], dv[D / 8][4];
  zero(dk);
  zero(dv);
#pragma unroll 1
  for (int qc = 0; qc < nb; ++qc) {
    const int q0 = qc * 16;
    float st[2][4], dpt[2][4];
    zero(st);
    zero(dpt);
#pragma unroll
    for (int kd = 0; kd < D / 16; ++kd) {
      uint32_t ka[4], va[4], qb[4], ob[4];
      load_a(ka, Ks, kLd, k0, kd * 16, lane);
      load_b_nk(qb, Qs, kLd, q0, kd * 16, lane);
      mma(st[0], ka, qb[0], qb[1]);
      mma(st[1], ka, qb[2], qb[3]);
      load_a(va, Vs, kLd, k0, kd * 16, lane);
      load_b_nk(ob, dOs, kLd, q0, kd * 16, lane);
      mma(dpt[0], va, ob[0], ob[1]);
      mma(dpt[1], va, ob[2], ob[3]);
    }
    // Element (n, e): key k0 + g + 8 (e >> 1), query q0 + 8n + 2t + (e & 1).
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      const int q = q0 + 8 * n + 2 * t;
      const float2 l2 = *reinterpret_cast<const float2*>(Ls + q);
      const float2 dl = *reinterpret_cast<const float2*>(Dl + q);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool ok = key_ok[e >> 1] && q + (e & 1) < N;
        const float p = ok ? exp2f(st[n][e] * scale_log2 - (e & 1 ? l2.y : l2.x)) : 0.f;
        st[n][e] = p;
        dpt[n][e] = p * (dpt[n][e] - (e & 1 ? dl.y : dl.x));  // dS^T
      }
    }
    uint32_t pa[4], sa[4];
    acc_to_a(pa, st[0], st[1]);
    acc_to_a(sa, dpt[0], dpt[1]);
    // sa[0..3] = dS^T (row g, cols 2t..), (row g+8, cols 2t..), (row g, cols 8+2t..),
    // (row g+8, cols 8+2t..) of this 16x16 block.
    bf16* srow = Ss + (k0 + g) * lds + q0 + 2 * t;
    *reinterpret_cast<uint32_t*>(srow) = sa[0];
    *reinterpret_cast<uint32_t*>(srow + 8 * lds) = sa[1];
    *reinterpret_cast<uint32_t*>(srow + 8) = sa[2];
    *reinterpret_cast<uint32_t*>(srow + 8 * lds + 8) = sa[3];
#pragma unroll
    for (int np16 = 0; np16 < D / 16; ++np16) {
      uint32_t ob[4], qb[4];
      load_b_kn(ob, dOs, kLd, q0, np16 * 16, lane);
      mma(dv[2 * np16], pa, ob[0], ob[1]);
      mma(dv[2 * np16 + 1], pa, ob[2], ob[3]);
      load_b_kn(qb, Qs, kLd, q0, np16 * 16, lane);
      mma(dk[2 * np16], sa, qb[0], qb[1]);
      mma(dk[2 * np16 + 1], sa, qb[2], qb[3]);
    }
  }
  bf16* grow = gqkv + b * N * ld + int64_t{h} * D;  // row 0 of this head's dq; dk +HD, dv +2HD
  bf16* sv = Vs + k0 * kLd;
  __syncwarp();
  stage_acc<D>(sv, dv, 1.f, 1.f, lane);
  __syncwarp();
  store_rows<D>(grow + 2 * HD, ld, sv, k0, N, lane);

  // 2. dk, then dq of queries k0 .. k0+15.
  __syncthreads();
  bf16* sk = Qs + k0 * kLd;
  stage_acc<D>(sk, dk, scale, scale, lane);
  __syncwarp();
  store_rows<D>(grow + HD, ld, sk, k0, N, lane);
  float dq[D / 8][4];
  zero(dq);
#pragma unroll 1
  for (int kc = 0; kc < nb; ++kc) {
    uint32_t sa[4];
    load_a_trans(sa, Ss, lds, k0, kc * 16, lane);  // dS rows k0.. (queries), cols kc*16.. (keys)
    mma_a_rows<D>(dq, sa, Ks, kLd, kc * 16, lane);
  }
  bf16* sq = dOs + k0 * kLd;
  stage_acc<D>(sq, dq, scale, scale, lane);
  __syncwarp();
  store_rows<D>(grow, ld, sq, k0, N, lane);
}

[[noreturn]] void no_small(int64_t d, const char* where) {
  attn::unsupported("no one-block-per-head kernel", d, "head dim must be 16, 32 or 64", where,
                    __FILE__, __LINE__);
}

int key_blocks(const AttentionDims& d) { return static_cast<int>((d.tokens + 15) / 16); }

}  // namespace

namespace detail {

bool attention_small_supported(const AttentionDims& d) {
  return d.tokens <= 16 * kMaxKeyBlocks &&
         (d.head_dim == 16 || d.head_dim == 32 || d.head_dim == 64);
}

void attention_fwd_small(const void* qkv, void* out, float* lse, const AttentionDims& d,
                         cudaStream_t stream) {
  attn::with_head_dim(d.head_dim, "attention_fwd_small", [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    if constexpr (D < 16 || D > 64) {
      no_small(D, "attention_fwd_small");
    } else {
      with_key_blocks(key_blocks(d), [&](auto nbc) {
        constexpr int NB = decltype(nbc)::value;
        constexpr size_t smem = fwd_smem_bytes<D, NB>;
        allow_dynamic_smem(reinterpret_cast<const void*>(&attn_fwd_small<D, NB>), smem,
                           "attn_fwd_small");
        attn_fwd_small<D, NB><<<attn::grid_blocks(1, d), 32 * NB, smem, stream>>>(
            static_cast<const bf16*>(qkv), static_cast<bf16*>(out), lse, static_cast<int>(d.tokens),
            static_cast<int>(d.heads), attn::scales_for(D).scale_log2);
        after_launch("attn_fwd_small", stream);
      });
    }
  });
}

void attention_bwd_small(const void* gout, const void* qkv, const void* out, const float* lse,
                         void* gqkv, const AttentionDims& d, cudaStream_t stream) {
  attn::with_head_dim(d.head_dim, "attention_bwd_small", [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    if constexpr (D < 16 || D > 64) {
      no_small(D, "attention_bwd_small");
    } else {
      const int nb = key_blocks(d);
      if (nb > kMaxKeyBlocks) too_many_tokens(d.tokens, "attention_bwd_small");
      const attn::Scales sc = attn::scales_for(D);
      allow_dynamic_smem(reinterpret_cast<const void*>(&attn_bwd_small<D>),
                         bwd_smem_bytes<D>(kMaxKeyBlocks), "attn_bwd_small");
      attn_bwd_small<D><<<attn::grid_blocks(1, d), 32 * nb, bwd_smem_bytes<D>(nb), stream>>>(
          static_cast<const bf16*>(qkv), static_cast<const bf16*>(gout),
          static_cast<const bf16*>(out), lse, static_cast<bf16*>(gqkv), static_cast<int>(d.tokens),
          static_cast<int>(d.heads), sc.scale_log2, sc.scale);
      after_launch("attn_bwd_small", stream);
    }
  });
}

}  // namespace detail

}  // namespace lvit::cuda
