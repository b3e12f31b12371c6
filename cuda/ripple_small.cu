// Ripple attention in its dense form on tensor cores, for short sequences (bf16, N <= 128, head
// width 16, 32 or 64): declared in cuda/ripple.cuh, chosen by ops/ripple.cpp. Modelled on the
// one-block-per-head softmax kernels of cuda/attention_small.cu (same geometry, same mma
// helpers, same rounding points); the math is the dense reference of ops/cpu/ripple.cpp:
//   s_ij = phi(q_i).phi(k_j) (phi = elu + 1),  P_ij = w_ij s_ij,  w_ij = alpha_{lambda(i,j)},
//   den_i = sum_j P_ij,  o_i = sum_j P_ij v_j / (den_i + eps).
// At these sizes the N x N weights fit on chip, and the dense form is the cheaper one on tensor
// cores: the linear form's d x d sums (cuda/ripple.cu) cost 2 N d^2 FMA per head forward against
// 2 N^2 d here (N = 65 < d = 64 is about even in FLOPs), but run in fp32 on CUDA cores and need
// a barrier per phase, while the dense form is four or five mma products with no reduction
// across warps.
//
// Geometry: NB = ceil(N/16) blocks of 16 tokens, NP = 16 NB padded rows (zero-filled in shared
// memory: phi is applied to rows < N only, so a padded key has phi(k) = 0 and weighs nothing;
// its pairs are also masked to weight 0 explicitly); NB warps, warp w owns tokens 16w .. 16w+15
// (as queries forward and in the dq pass, as keys in the dk/dv pass). Shared rows have stride
// d+8 (cuda/attention_mma.cuh). Token grids are 1 + g^2 with g a power of two, so N is 2, 5, 17
// or 65 (NB = 1, 1, 2, 5).
//
// Stage of a pair (DESIGN.md): tokens i, j >= 1 are cells i-1, j-1 of the g x g grid in row-major
// order, so with x = (i-1) ^ (j-1) the row and column differences are x >> log2(g) and
// x & (g-1), and the level is the bit length of their or; lambda = min(level, S-1); pairs with
// the class token (token 0) take S-1. The kernels look a pair's weight up by its "slot": the
// level 0..3 (g <= 8), kClassSlot for class-token pairs, kPadSlot (weight 0) for padded rows.
// The stage weights alpha come from the logits in each CTA (cuda/ripple_alpha.cuh, f64, as the
// linear kernels), so nothing waits on the host.
//
// Precision: bf16 qkv, out, gout, gqkv; phi(q), phi(k) are computed in fp32 from the bf16
// inputs and rounded to bf16 (the mma operands), as are P (forward), P / den and dS
// (backward); s, den, delta and every accumulator are fp32, d loss / d alpha is reduced in f64.
//
// Cost per (image, head), NP = 80, d = 64 (N = 65): forward 2 products of NP x NP x d
// (S = phi(Q) phi(K)^T, O = P V) = 4 NP^2 d = 1.6 MFLOP on tensor cores, reading q, k, v once
// (3 N d bf16 = 25 KB) and writing out (8.3 KB) and den (0.26 KB); backward 7 products (S and
// dO V^T for delta, their transposes, dv, dk, dq) = 14 NP^2 d = 5.7 MFLOP, reading q, k, v,
// gout and den (33 KB) and writing gqkv once (25 KB) and S doubles of d loss / d alpha. The
// softmax kernels do 4 + 10 NP^2 d on the same bytes (plus O in the backward). For ripple-cifar
// at batch 512 (3072 heads per layer, 12 layers): 60 + 211 GFLOP and 1.2 + 2.2 GB per step,
// about 1.1 ms of HBM traffic at 3 TB/s; mma.sync at these tile sizes runs far below the
// tensor cores' peak, so expect the softmax kernels' 1.8 ms times about 1.3 (the FLOP ratio),
// against the linear kernels' 19 ms.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "cuda/attention_common.cuh"
#include "cuda/attention_mma.cuh"
#include "cuda/check.cuh"
#include "cuda/ripple.cuh"
#include "cuda/ripple_alpha.cuh"
#include "cuda/ripple_plan.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

using namespace tc;
using ripple_detail::Geom;
using ripple_detail::kMaxStages;

constexpr float kEps = 1e-6f;     // the denominator's eps (DESIGN.md)
constexpr int kMaxKeyBlocks = 8;  // N <= 128
constexpr int kMaxLevel = 3;      // N <= 128: grids up to 8 x 8, levels 0 .. 3
constexpr int kClassSlot = kMaxLevel + 1;
constexpr int kPadSlot = kClassSlot + 1;
constexpr int kGradSlots = kClassSlot + 1;  // slots that carry d loss / d alpha

// phi(x) = elu(x) + 1; phi'(x) = 1 (x > 0), exp(x) (x <= 0), i.e. min(phi(x), 1).
__device__ __forceinline__ float phi(float x) { return x > 0.f ? x + 1.f : expf(x); }

// The weight slot of the pair (query token i, key token j); glog = log2(grid side).
__device__ __forceinline__ int pair_slot(int i, int j, int N, int glog) {
  if (i >= N || j >= N) return kPadSlot;
  if (i == 0 || j == 0) return kClassSlot;
  const unsigned x = static_cast<unsigned>((i - 1) ^ (j - 1));
  return 32 - __clz(static_cast<int>((x >> glog) | (x & ((1u << glog) - 1u))));
}

// wl[slot] = the weight of a pair in that slot, from the logits of head h (f64 stick-breaking,
// rounded to f32 like the CPU op's f32 weights). One thread.
__device__ __noinline__ void slot_weights(const float* logits, int h, int S, float* wl) {
  double alpha[kMaxStages];
  ripple_detail::stage_weights(logits, h, S, alpha);
  for (int l = 0; l <= kMaxLevel; ++l) wl[l] = static_cast<float>(alpha[min(l, S - 1)]);
  wl[kClassSlot] = static_cast<float>(alpha[S - 1]);
  wl[kPadSlot] = 0.f;
}

// x = phi(x) in place for rows 0 .. N-1 of a [NP][D+8] bf16 tile (fp32 math, rounded back to
// bf16: the mma operand). Padded rows stay zero (phi(0) = 1 would give them weight).
template <int D>
__device__ void phi_rows(bf16* x, int N) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < N * kChunks; i += blockDim.x) {
    uint4* p = reinterpret_cast<uint4*>(x + (i / kChunks) * (D + 8) + (i % kChunks) * 8);
    uint32_t v[4];
    memcpy(v, p, sizeof v);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      __nv_bfloat162 h;
      memcpy(&h, &v[k], sizeof h);
      const float2 f = __bfloat1622float2(h);
      v[k] = pack_bf16(phi(f.x), phi(f.y));
    }
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

// ---- forward -----------------------------------------------------------------------------------
// Shared: phi(Q), phi(K), V [NP][d+8] bf16 (NP = 80, d = 64: 34.6 KB). Q and K land first (one
// cp.async group) and go through phi; V's load overlaps that and S = phi(Q) phi(K)^T.
// Warp w: S (16 x NP fp32 in registers: 2 NB accumulator blocks of 16x8) = phi(Q_w) phi(K)^T;
// P = w S in place (weights looked up per element), den = row sums of P in fp32; O_w (16 x d)
// = P V with P taken from the registers (rounded to bf16); O_w / (den + eps) is staged in the
// warp's own Q rows (read by no other warp) for 16-byte stores. Same register budget as
// attn_fwd_small: four blocks of 160 threads per SM at N = 65.
template <int NB>
constexpr int fwd_min_blocks = NB <= 5 ? 4 : (NB == 6 ? 3 : 2);

template <int D, int NB>
constexpr size_t fwd_smem_bytes = size_t{3} * 16 * NB*(D + 8) * sizeof(bf16);

template <int D, int NB>
__global__ void __launch_bounds__(32 * NB, fwd_min_blocks<NB>)
    ripple_fwd_small_kernel(const bf16* __restrict__ qkv, const float* __restrict__ logits,
                            bf16* __restrict__ out, float* __restrict__ den, int N, int H, int S,
                            int glog) {
  constexpr int kNP = 16 * NB, kLd = D + 8, kSN = 2 * NB;
  __shared__ float wl[kPadSlot + 1];
  bf16* Qs = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* Ks = Qs + kNP * kLd;
  bf16* Vs = Ks + kNP * kLd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t bh = blockIdx.x, b = bh / H;
  const int h = static_cast<int>(bh % H);
  const int64_t HD = int64_t{H} * D, ld = 3 * HD;
  const bf16* Qg = qkv + b * N * ld + int64_t{h} * D;

  load_rows<D>(Qs, Qg, ld, 0, kNP, N);
  load_rows<D>(Ks, Qg + HD, ld, 0, kNP, N);
  cp_async_commit();
  load_rows<D>(Vs, Qg + 2 * HD, ld, 0, kNP, N);
  cp_async_commit();
  if (threadIdx.x == 0) slot_weights(logits, h, S, wl);
  cp_async_wait<1>();  // this thread's Q and K copies
  __syncthreads();     // everyone's
  phi_rows<D>(Qs, N);
  phi_rows<D>(Ks, N);
  __syncthreads();

  float s[kSN][4];
  zero(s);
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
    uint32_t qa[4];
    load_a(qa, Qs, kLd, warp * 16, kd * 16, lane);
#pragma unroll
    for (int np = 0; np < NB; ++np) {
      uint32_t kb[4];
      load_b_nk(kb, Ks, kLd, np * 16, kd * 16, lane);
      mma(s[2 * np], qa, kb[0], kb[1]);
      mma(s[2 * np + 1], qa, kb[2], kb[3]);
    }
  }
  // Element (n, e) is key 8n + 2t + (e & 1) of query q0 + g + 8 (e >> 1).
  const int q0 = warp * 16;
  float l[2] = {0.f, 0.f};  // thread-partial den, reduced across the quad below
#pragma unroll
  for (int n = 0; n < kSN; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[n][e] *= wl[pair_slot(q0 + g + 8 * (e >> 1), 8 * n + 2 * t + (e & 1), N, glog)];
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
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      uint32_t vb[4];
      load_b_kn(vb, Vs, kLd, kc * 16, np * 16, lane);
      mma(o[2 * np], pa, vb[0], vb[1]);
      mma(o[2 * np + 1], pa, vb[2], vb[3]);
    }
  }

  l[0] = quad_sum(l[0]);
  l[1] = quad_sum(l[1]);
  bf16* os = Qs + q0 * kLd;  // the warp's own Q rows: no other warp reads them
  stage_acc<D>(os, o, 1.f / (l[0] + kEps), 1.f / (l[1] + kEps), lane);
  if (t == 0) {
    if (q0 + g < N) den[bh * N + q0 + g] = l[0];
    if (q0 + g + 8 < N) den[bh * N + q0 + g + 8] = l[1];
  }
  __syncwarp();
  store_rows<D>(out + b * N * HD + int64_t{h} * D, HD, os, q0, N, lane);
}

// ---- backward ----------------------------------------------------------------------------------
// With den'_i = den_i + eps, o_i = sum_j P_ij v_j / den'_i and upstream g_i:
//   dP_ij  = d loss / d P_ij = g_i . (v_j - o_i) / den'_i   (through the numerator and den)
//   dv_j   = sum_i P_ij g_i / den'_i
//   ds_ij  = w_ij dP_ij                                      (P_ij = w_ij s_ij)
//   dphi(q_i) = sum_j ds_ij phi(k_j),  dphi(k_j) = sum_i ds_ij phi(q_i)
//   dq = dphi(q) min(phi(q), 1), dk likewise (phi' = min(phi, 1))
//   d loss / d alpha_s = sum over the pairs with lambda(i, j) = s of s_ij dP_ij.
// As products: dP = (dO V^T - delta 1^T) / den' with delta_i = g_i . o_i, dv = (P / den')^T dO,
// dk = dS^T phi(Q), dq = dS phi(K), dS = w * dP.
// delta is recomputed here as delta_i = sum_j P_ij (g_i . v_j) / den'_i rather than read off the
// saved bf16 output: then sum_j P_ij dP_ij = 0 holds up to fp32 rounding, as it does exactly.
// d loss / d alpha is a sum of B N^2 terms s_ij dP_ij of both signs that cancels almost
// entirely (sum_s alpha_s (d loss / d alpha_s) = sum_ij P_ij dP_ij = 0), and the bf16 output's
// rounding error in delta (2^-9 relative, the same for all N keys of a query) survives that
// cancellation: emulating both variants on the test shapes, it put the logits' gradient off by
// up to 36x the test tolerance (8 u sqrt(N) max|want|), the recomputed delta by 1x. The price is
// two more 16x16xd products per (query chunk, key chunk) (7 instead of 5), but O is not read.
// One kernel writes dq, dk, dv of one (image, head) once each and d loss / d alpha of that
// (image, head) into galpha [B, H, S] (f64, the layout ripple_logits_grad reads).
// Shared (bf16 unless noted; NP = 80, d = 64: 59.4 KB, three blocks per SM):
//   phi(Q), phi(K), V, dO [NP][d+8]
//   S   [NP][max(NP, d)+8]: dS^T (rows = keys, cols = queries)
//   1 / den', delta [NP] fp32 (0 for padded rows, which zeroes their dP)
// Steps:
//  0. cp.async: dO, Q, K, V; plain loads of den; phi of Q and K in place.
//  1. Warp w = queries 16w..16w+15, over 16-key chunks: S = phi(Q_w) phi(K_c)^T and
//     dO_w V_c^T (16x16 fp32 each); delta = row sums of w S (dO V^T), times 1 / den'.
//  2. Barrier (delta complete). Warp w = keys 16w..16w+15, over 16-query chunks (like
//     attn_bwd_small): S^T = phi(K_w) phi(Q_c)^T and V_w dO_c^T -> dP^T, per element the slot's
//     weight and d loss / d alpha (fp32 per thread, per slot); dv += (P^T / den') dO_c and
//     dk += dS^T phi(Q_c) straight from the registers (rounded to bf16); dS^T (the same bf16
//     values) goes to shared memory. dv, then dk (times min(phi(k), 1)), are staged in the
//     warp's own V rows (no other warp reads them) and stored.
//  3. Barrier (dS^T complete; Q and dO no longer read by other warps). Warp w = queries 16w..:
//     dq = dS phi(K), the dS fragments read transposed (ldmatrix.trans) out of dS^T; times
//     min(phi(q), 1), staged in the warp's own dO rows and stored. Then the per-slot d loss /
//     d alpha sums: warp shuffles and a fixed-order sum over the warps (deterministic), in f64.
// Registers: capped at 128 (launch bounds 256 threads, 2 blocks) as attn_bwd_small.
constexpr int kBwdMaxThreads = 32 * kMaxKeyBlocks;

template <int D>
size_t bwd_smem_bytes(int nb) {
  const size_t np = 16 * static_cast<size_t>(nb), lds = (np > D ? np : D) + 8;
  return (4 * np * (D + 8) + np * lds) * sizeof(bf16) + 2 * np * sizeof(float);
}

template <int D>
__global__ void __launch_bounds__(kBwdMaxThreads, 2)
    ripple_bwd_small_kernel(const bf16* __restrict__ qkv, const bf16* __restrict__ gout,
                            const float* __restrict__ den, const float* __restrict__ logits,
                            bf16* __restrict__ gqkv, double* __restrict__ galpha, int N, int H,
                            int S, int glog) {
  constexpr int kLd = D + 8;
  __shared__ float wl[kPadSlot + 1];
  __shared__ double red[kMaxKeyBlocks][kGradSlots];
  const int nb = static_cast<int>(blockDim.x / 32), np = 16 * nb, lds = max(np, D) + 8;
  bf16* Qs = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* Ks = Qs + np * kLd;
  bf16* Vs = Ks + np * kLd;
  bf16* dOs = Vs + np * kLd;
  bf16* Ss = dOs + np * kLd;                             // dS^T
  float* Inv = reinterpret_cast<float*>(Ss + np * lds);  // 1 / (den + eps)
  float* Dl = Inv + np;                                  // delta
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t bh = blockIdx.x, b = bh / H;
  const int h = static_cast<int>(bh % H);
  const int64_t HD = int64_t{H} * D, ld = 3 * HD;
  const bf16* Qg = qkv + b * N * ld + int64_t{h} * D;

  // 0. Loads and phi.
  load_rows<D>(dOs, gout + b * N * HD + int64_t{h} * D, HD, 0, np, N);
  load_rows<D>(Qs, Qg, ld, 0, np, N);
  load_rows<D>(Ks, Qg + HD, ld, 0, np, N);
  load_rows<D>(Vs, Qg + 2 * HD, ld, 0, np, N);
  cp_async_commit();
  if (threadIdx.x == 0) slot_weights(logits, h, S, wl);
  for (int i = threadIdx.x; i < np; i += blockDim.x)
    Inv[i] = i < N ? 1.f / (den[bh * N + i] + kEps) : 0.f;
  cp_async_wait<0>();
  __syncthreads();
  phi_rows<D>(Qs, N);
  phi_rows<D>(Ks, N);
  __syncthreads();

  // 1. delta of queries k0 .. k0+15 (k0: this warp's 16 tokens, queries here, keys in 2.).
  const int k0 = warp * 16;
  {
    float part[2] = {0.f, 0.f};
#pragma unroll 1
    for (int kc = 0; kc < nb; ++kc) {
      const int c0 = kc * 16;
      float sc[2][4], gv[2][4];
      zero(sc);
      zero(gv);
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd) {
        uint32_t qa[4], oa[4], kb[4], vb[4];
        load_a(qa, Qs, kLd, k0, kd * 16, lane);
        load_b_nk(kb, Ks, kLd, c0, kd * 16, lane);
        mma(sc[0], qa, kb[0], kb[1]);
        mma(sc[1], qa, kb[2], kb[3]);
        load_a(oa, dOs, kLd, k0, kd * 16, lane);
        load_b_nk(vb, Vs, kLd, c0, kd * 16, lane);
        mma(gv[0], oa, vb[0], vb[1]);
        mma(gv[1], oa, vb[2], vb[3]);
      }
      // Element (n, e): query k0 + g + 8 (e >> 1), key c0 + 8n + 2t + (e & 1).
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float w =
              wl[pair_slot(k0 + g + 8 * (e >> 1), c0 + 8 * n + 2 * t + (e & 1), N, glog)];
          part[e >> 1] += w * sc[n][e] * gv[n][e];
        }
    }
    part[0] = quad_sum(part[0]);
    part[1] = quad_sum(part[1]);
    if (t == 0) {
      Dl[k0 + g] = part[0] * Inv[k0 + g];
      Dl[k0 + g + 8] = part[1] * Inv[k0 + g + 8];
    }
  }
  __syncthreads();  // delta complete

  // 2. Keys k0 .. k0+15 of this warp.
  float dk[D / 8][4], dv[D / 8][4];
  zero(dk);
  zero(dv);
  float ga[kGradSlots] = {};  // this thread's d loss / d alpha per slot
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
      const float2 iv = *reinterpret_cast<const float2*>(Inv + q);
      const float2 dl = *reinterpret_cast<const float2*>(Dl + q);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int slot = pair_slot(q + (e & 1), k0 + g + 8 * (e >> 1), N, glog);
        const float w = wl[slot], inv = e & 1 ? iv.y : iv.x;
        const float dp = (dpt[n][e] - (e & 1 ? dl.y : dl.x)) * inv;  // dP
        const float sd = st[n][e] * dp;
#pragma unroll
        for (int k = 0; k < kGradSlots; ++k) ga[k] += k == slot ? sd : 0.f;
        st[n][e] = w * st[n][e] * inv;  // P / den'
        dpt[n][e] = w * dp;             // dS^T
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
  __syncwarp();
  stage_chain<D>(sv, dk, Ks + k0 * kLd, lane);
  __syncwarp();
  store_rows<D>(grow + HD, ld, sv, k0, N, lane);

  // 3. dq of queries k0 .. k0+15.
  __syncthreads();
  float dq[D / 8][4];
  zero(dq);
#pragma unroll 1
  for (int kc = 0; kc < nb; ++kc) {
    uint32_t sa[4];
    load_a_trans(sa, Ss, lds, k0, kc * 16, lane);  // dS rows k0.. (queries), cols kc*16.. (keys)
#pragma unroll
    for (int np16 = 0; np16 < D / 16; ++np16) {
      uint32_t kb[4];
      load_b_kn(kb, Ks, kLd, kc * 16, np16 * 16, lane);
      mma(dq[2 * np16], sa, kb[0], kb[1]);
      mma(dq[2 * np16 + 1], sa, kb[2], kb[3]);
    }
  }
  bf16* sq = dOs + k0 * kLd;
  stage_chain<D>(sq, dq, Qs + k0 * kLd, lane);
  __syncwarp();
  store_rows<D>(grow, ld, sq, k0, N, lane);

  // d loss / d alpha of this (image, head): slot sums over the block in a fixed order, then
  // slot -> stage (levels above S-1 and the class pairs fold into S-1).
#pragma unroll
  for (int k = 0; k < kGradSlots; ++k) {
    double v = ga[k];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) red[warp][k] = v;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double tot[kGradSlots] = {};
    for (int w = 0; w < nb; ++w)
      for (int k = 0; k < kGradSlots; ++k) tot[k] += red[w][k];
    double* gab = galpha + bh * S;
    for (int s = 0; s < S; ++s) gab[s] = 0.0;
    for (int l = 0; l <= kMaxLevel; ++l) gab[min(l, S - 1)] += tot[l];
    gab[S - 1] += tot[kClassSlot];
  }
}

// ---- launchers ---------------------------------------------------------------------------------

// fn(std::integral_constant<int, nb>{}) for the 16-token block counts of the grids the
// kernels take: N = 2, 5 (1 block), 17 (2), 65 (5).
template <typename Fn>
void with_token_blocks(int nb, Fn&& fn) {
  switch (nb) {
    case 1:
      return fn(std::integral_constant<int, 1>{});
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 5:
      return fn(std::integral_constant<int, 5>{});
    default:
      fail("ripple (dense tensor-core kernels): " + std::to_string(16 * nb) + " padded tokens");
  }
}

// The geometry after the checks common to both launchers.
Geom small_geom(int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages, int64_t grid,
                const char* where) {
  const Geom m = ripple_detail::make_geom(B, N, D, heads, stages, grid);
  if (!ripple_small_supported(N, m.d))
    fail(std::string(where) + ": no dense tensor-core kernel for N = " + std::to_string(N) +
         ", head width " + std::to_string(m.d) + " (N <= 128, head width 16, 32 or 64)");
  if (B * heads >= (int64_t{1} << 31)) fail(std::string(where) + ": too many heads");
  return m;
}

}  // namespace

bool ripple_small_supported(int64_t N, int64_t head_dim) {
  return N >= 1 && N <= 16 * kMaxKeyBlocks && (head_dim == 16 || head_dim == 32 || head_dim == 64);
}

void ripple_small_fwd(const void* qkv, const float* logits, int64_t B, int64_t N, int64_t D,
                      int64_t heads, int64_t stages, int64_t grid, void* out, float* den,
                      cudaStream_t stream) {
  const Geom m = small_geom(B, N, D, heads, stages, grid, "ripple_small_fwd");
  if (B == 0) return;
  attn::with_head_dim(m.d, "ripple_small_fwd", [&](auto dc) {
    constexpr int Dh = decltype(dc)::value;
    if constexpr (Dh < 16 || Dh > 64) {
      fail("ripple_small_fwd: head width " + std::to_string(Dh));  // small_geom excluded it
    } else {
      with_token_blocks((m.N + 15) / 16, [&](auto nbc) {
        constexpr int NB = decltype(nbc)::value;
        constexpr size_t smem = fwd_smem_bytes<Dh, NB>;
        allow_dynamic_smem(reinterpret_cast<const void*>(&ripple_fwd_small_kernel<Dh, NB>), smem,
                           "ripple_fwd_small_kernel");
        ripple_fwd_small_kernel<Dh, NB>
            <<<static_cast<unsigned>(B * heads), 32 * NB, smem, stream>>>(
                static_cast<const bf16*>(qkv), logits, static_cast<bf16*>(out), den, m.N, m.H, m.S,
                m.glog);
        after_launch("ripple_fwd_small_kernel", stream);
      });
    }
  });
}

void ripple_small_bwd(const void* gout, const void* qkv, const float* logits, const float* den,
                      int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages, int64_t grid,
                      void* gqkv, float* glogits, double* workspace, cudaStream_t stream) {
  const Geom m = small_geom(B, N, D, heads, stages, grid, "ripple_small_bwd");
  if (glogits && m.S < 2) glogits = nullptr;  // no logits to differentiate
  if (B == 0) {                               // an empty batch: d loss / d logits = 0
    if (glogits)
      LVIT_CUDA_CHECK(cudaMemsetAsync(glogits, 0, sizeof(float) * heads * (stages - 1), stream));
    return;
  }
  attn::with_head_dim(m.d, "ripple_small_bwd", [&](auto dc) {
    constexpr int Dh = decltype(dc)::value;
    if constexpr (Dh < 16 || Dh > 64) {
      fail("ripple_small_bwd: head width " + std::to_string(Dh));  // small_geom excluded it
    } else {
      const int nb = (m.N + 15) / 16;
      const size_t smem = bwd_smem_bytes<Dh>(nb);
      allow_dynamic_smem(reinterpret_cast<const void*>(&ripple_bwd_small_kernel<Dh>), smem,
                         "ripple_bwd_small_kernel");
      ripple_bwd_small_kernel<Dh><<<static_cast<unsigned>(B * heads), 32 * nb, smem, stream>>>(
          static_cast<const bf16*>(qkv), static_cast<const bf16*>(gout), den, logits,
          static_cast<bf16*>(gqkv), workspace, m.N, m.H, m.S, m.glog);
      after_launch("ripple_bwd_small_kernel", stream);
    }
  });
  if (glogits) ripple_logits_grad(workspace, logits, B, heads, stages, glogits, stream);
}

}  // namespace lvit::cuda
