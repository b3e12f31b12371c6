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
// the table below also gives its pairs weight 0, in the blocks that read it); NB warps, warp w owns
// tokens 16w .. 16w+15 (as queries forward and in the dq pass, as keys in the dk/dv pass). Shared
// rows have stride d+8 (cuda/attention_mma.cuh). Token grids are 1 + g^2 with g a power of two, so
// N is 2, 5, 17 or 65 (NB = 1, 1, 2, 5).
//
// Stage of a pair (DESIGN.md): tokens i, j >= 1 are cells i-1, j-1 of the g x g grid in row-major
// order, so with x = (i-1) ^ (j-1) the row and column differences are x >> log2(g) and
// x & (g-1), and the level is the bit length of their or; lambda = min(level, S-1); pairs with
// the class token (token 0) take S-1. A pair's "slot" is its level 0..3 (g <= 8), kClassSlot
// for class-token pairs or kPadSlot (weight 0) for padded rows; wl[slot] is its weight, from the
// logits in each CTA (cuda/ripple_alpha.cuh, f64, as the linear kernels), so nothing waits on
// the host.
//
// Where the time goes: the kernels are bound by instruction issue, not by the tensor cores
// (Nsight Compute, H200: the first version issued 2.2x the softmax kernels' instructions
// forward and 2.1x backward, for the same mma count forward, and ran 2x as long). So the
// per-pair work is kept to a few instructions:
//  - the slots come from a table built at compile time (kSlotTables: per 16x16 block of pairs
//    and lane, the 8 slots of the lane's accumulator elements, 4 bits each);
//  - a 16x16 block whose grid pairs all have a level >= S-1 ("far") has one weight, alpha_{S-1},
//    for every pair, so it skips the table (about half the blocks at g = 8, S = 3). Class-token
//    pairs have that weight too, and padded rows need no mask there: phi(q), phi(k), v and dO
//    are zero in them, and 1 / den' is 0 for padded queries;
//  - the backward does 5 products, as the softmax one (below).
//
// Precision: bf16 qkv, out, gout, gqkv; phi(q), phi(k) are computed from the bf16 inputs
// (exp in fp32 with the hardware exp2, x + 1 rounded once) and rounded to bf16 (the mma
// operands), as are P (forward), P / den and dS (backward); s, den, delta and every
// accumulator are fp32; d loss / d alpha is summed in fp32 within a warp, in f64 from there.
//
// Cost per (image, head), NP = 80, d = 64 (N = 65): forward 2 products of NP x NP x d
// (S = phi(Q) phi(K)^T, O = P V) = 4 NP^2 d = 1.6 MFLOP on tensor cores, reading q, k, v once
// (3 N d bf16 = 25 KB) and writing out (8.3 KB) and den (0.26 KB); backward 5 products (S and
// dO V^T, dq, dk, dv) = 10 NP^2 d = 4.1 MFLOP, reading q, k, v, gout and den (33 KB) and writing
// gqkv once (25 KB) and NB S doubles of d loss / d alpha: the softmax kernels' FLOPs and bytes.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "cuda/attention_common.cuh"
#include "cuda/check.cuh"
#include "cuda/ripple.cuh"
#include "cuda/ripple_alpha.cuh"
#include "cuda/ripple_mma.cuh"
#include "cuda/ripple_plan.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

using namespace tc;
using ripple_detail::Geom;
using ripple_detail::kMaxStages;

constexpr float kEps = 1e-6f;     // the denominator's eps (DESIGN.md)
constexpr int kMaxKeyBlocks = 8;  // N <= 128
// One galpha row per warp (ripple_bwd_small_kernel): the workspace holds this many per image.
static_assert(kMaxKeyBlocks <= kRippleGalphaRowsPerImage);
constexpr int kMaxLevel = 3;  // N <= 128: grids up to 8 x 8, levels 0 .. 3
constexpr int kClassSlot = kMaxLevel + 1;
constexpr int kPadSlot = kClassSlot + 1;
constexpr int kLevels = kMaxLevel + 1;  // slots that are levels

// ---- the slot table ----------------------------------------------------------------------------
// The grids the kernels take: g = 1, 2, 4, 8 (glog 0..3), N = 1 + g^2 = 2, 5, 17, 65 tokens in
// NB = 1, 1, 2, 5 blocks of 16. Block pair (r, c) of grid glog is entry first_pair(glog) +
// r NB + c.
constexpr int kGrids = 4;
constexpr int kBlockPairs = 1 + 1 + 4 + 25;

__host__ __device__ constexpr int grid_blocks(int glog) { return glog <= 2 ? (glog + 2) / 2 : 5; }
__host__ __device__ constexpr int first_pair(int glog) { return glog <= 2 ? glog : 6; }
static_assert(first_pair(3) == first_pair(2) + grid_blocks(2) * grid_blocks(2) &&
              first_pair(3) + grid_blocks(3) * grid_blocks(3) == kBlockPairs);

constexpr int pair_slot(int i, int j, int N, int glog) {
  if (i >= N || j >= N) return kPadSlot;
  if (i == 0 || j == 0) return kClassSlot;
  const unsigned x = static_cast<unsigned>((i - 1) ^ (j - 1));
  unsigned y = (x >> glog) | (x & ((1u << glog) - 1u));
  int level = 0;
  for (; y != 0; y >>= 1) ++level;
  return level;
}

struct SlotTables {
  // Slot of accumulator element (n, e) of `lane` (query row 16 r + lane/4 + 8 (e >> 1), key
  // 16 c + 8 n + 2 (lane%4) + (e & 1), the mma C layout) in bits 4 (4n + e) .. +3.
  uint32_t slots[kBlockPairs][32];
  // The smallest level of a grid pair in the block pair (kClassSlot if it holds none): the
  // block is "far" for S stages when this is >= S-1.
  uint8_t min_level[kBlockPairs];
};

constexpr SlotTables make_slot_tables() {
  SlotTables t{};
  for (int glog = 0; glog < kGrids; ++glog) {
    const int N = 1 + (1 << (2 * glog)), nb = grid_blocks(glog);
    for (int r = 0; r < nb; ++r)
      for (int c = 0; c < nb; ++c) {
        const int p = first_pair(glog) + r * nb + c;
        int lo = kClassSlot;
        for (int lane = 0; lane < 32; ++lane) {
          uint32_t bits = 0;
          for (int n = 0; n < 2; ++n)
            for (int e = 0; e < 4; ++e) {
              const int slot = pair_slot(16 * r + lane / 4 + 8 * (e >> 1),
                                         16 * c + 8 * n + 2 * (lane % 4) + (e & 1), N, glog);
              bits |= static_cast<uint32_t>(slot) << (4 * (4 * n + e));
              lo = slot < lo ? slot : lo;
            }
          t.slots[p][lane] = bits;
        }
        t.min_level[p] = static_cast<uint8_t>(lo);
      }
  }
  return t;
}

__device__ const SlotTables kSlotTables = make_slot_tables();

// The slot of element (n, e) from a lane's table word.
__device__ __forceinline__ int slot_at(uint32_t bits, int n, int e) {
  return static_cast<int>((bits >> (4 * (4 * n + e))) & 15u);
}

// The table words of a warp's row of NB block pairs (p0 .. p0 + NB - 1), loaded ahead of their
// use: their latency then overlaps the copies and products before it (as loads inside the loop
// they stalled the backward for about 5% of its time, Nsight Compute on an H200). Bit c of
// `near` is set where block pair p0 + c holds a pair of a level below S-1; bits[c] is the
// lane's slot word there.
template <int NB>
struct BlockRowSlots {
  uint32_t near = 0;
  uint32_t bits[NB];
  __device__ __forceinline__ BlockRowSlots(int p0, int S, int lane) {
#pragma unroll
    for (int c = 0; c < NB; ++c) {
      near |= (kSlotTables.min_level[p0 + c] < S - 1 ? 1u : 0u) << c;
      bits[c] = kSlotTables.slots[p0 + c][lane];
    }
  }
};

// fn(n, e, slot, w, far) for the lane's 8 elements (n, e) of block pair c of the row
// (accumulator layout; w = wl[slot]): from the table where the block holds pairs of a level below
// S-1 (far = std::false_type), else with kClassSlot and alpha_{S-1} for every element (far =
// std::true_type), which is right for all pairs of a far block (see the file comment) and lets
// the compiler drop the slot-specific work there.
template <int NB, typename Fn>
__device__ __forceinline__ void for_block_pairs(const BlockRowSlots<NB>& row, int c,
                                                const float* wl, Fn&& fn) {
  if (row.near >> c & 1u) {
    const uint32_t bits = row.bits[c];
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int slot = slot_at(bits, n, e);
        fn(n, e, slot, wl[slot], std::false_type{});
      }
  } else {
    const float w = wl[kClassSlot];
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) fn(n, e, kClassSlot, w, std::true_type{});
  }
}

// The first logits of head h, loaded by thread 0 at the top of a kernel so that their latency
// overlaps the copies (slot_weights reads them, and loads the later ones: S > 3). Two: more
// made the forward spill at its 64-register bound.
constexpr int kLogitsAhead = 2;
struct LogitsAhead {
  float v[kLogitsAhead];
  __device__ __forceinline__ LogitsAhead(const float* logits, int h, int S, bool mine) {
#pragma unroll
    for (int k = 0; k < kLogitsAhead; ++k) v[k] = mine && k + 1 < S ? logits[h * (S - 1) + k] : 0.f;
  }
};

// wl[slot] = the weight of a pair in that slot, from the logits of head h: the f64
// stick-breaking of cuda/ripple_alpha.cuh rounded to f32, like the CPU op's f32 weights, with no
// array of stage weights (the kernels' only local memory was that array: 256 bytes of stack,
// Nsight Compute counted the first barrier's wait behind this thread at twice the softmax
// kernel's). One thread, after its phi stores; not inlined: inline, its f64 temporaries made the
// 64-register forward spill.
__device__ __noinline__ void slot_weights(LogitsAhead ahead, const float* logits, int h, int S,
                                          float* wl) {
  static_assert(kLogitsAhead == 2);
  ripple_detail::for_stage_weights(
      S,
      [&](int s) {  // selects, not an index into `ahead` (that would put it in local memory)
        return static_cast<double>(s == 0   ? ahead.v[0]
                                   : s == 1 ? ahead.v[1]
                                            : logits[h * (S - 1) + s]);
      },
      [&](int s, double alpha) {
        if (s + 1 < S) {  // stage s < S-1: level s alone
          if (s <= kMaxLevel) wl[s] = static_cast<float>(alpha);
        } else {  // the last stage: the levels from S-1 on, and the class token's pairs
          for (int l = s; l <= kMaxLevel; ++l) wl[l] = static_cast<float>(alpha);
          wl[kClassSlot] = static_cast<float>(alpha);
        }
      });
  wl[kPadSlot] = 0.f;
}

// phi(Q) and phi(K) of one (image, head) into shared tiles [16 NB][D+8], zero in the rows
// >= N: plain 16-byte loads, all in flight together (D / 8 per thread with 32 NB threads),
// phi in registers, 16-byte shared stores. Against cp.async and phi in place this saves a
// read and write of both tiles in shared memory and the barrier between copy and phi.
template <int D, int NB>
struct PhiQK {
  static constexpr int kChunks = D / 8;                       // 16-byte chunks per row
  static constexpr int kPer = 16 * NB * kChunks / (32 * NB);  // per thread and matrix
  static_assert(kPer * 32 * NB == 16 * NB * kChunks);
  uint4 q[kPer], k[kPer];
  // qg: row 0 of the head's q (k at +HD), row stride ld.
  __device__ __forceinline__ void load(const bf16* qg, int64_t HD, int64_t ld, int N) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = threadIdx.x + j * 32 * NB, r = i / kChunks, c = (i % kChunks) * 8;
      q[j] = k[j] = make_uint4(0, 0, 0, 0);
      if (r < N) {
        q[j] = __ldg(reinterpret_cast<const uint4*>(qg + r * ld + c));
        k[j] = __ldg(reinterpret_cast<const uint4*>(qg + HD + r * ld + c));
      }
    }
  }
  __device__ __forceinline__ void store_phi(bf16* qs, bf16* ks, int N) const {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = threadIdx.x + j * 32 * NB, r = i / kChunks, c = (i % kChunks) * 8;
      uint4 pq = q[j], pk = k[j];  // zero rows stay zero (phi(0) = 1 would give them weight)
      if (r < N) {
        pq = make_uint4(phi2(pq.x), phi2(pq.y), phi2(pq.z), phi2(pq.w));
        pk = make_uint4(phi2(pk.x), phi2(pk.y), phi2(pk.z), phi2(pk.w));
      }
      *reinterpret_cast<uint4*>(qs + r * (D + 8) + c) = pq;
      *reinterpret_cast<uint4*>(ks + r * (D + 8) + c) = pk;
    }
  }
};

// ---- forward -----------------------------------------------------------------------------------
// Shared: phi(Q), phi(K), V [NP][d+8] bf16 (NP = 80, d = 64: 34.6 KB). Q and K come through
// registers and phi (PhiQK); V's cp.async overlaps that and S = phi(Q) phi(K)^T.
// Warp w: S (16 x NP fp32 in registers: 2 NB accumulator blocks of 16x8) = phi(Q_w) phi(K)^T;
// P = w S per 16x16 block (far blocks: alpha_{S-1} S), den = row sums of P in fp32, P packed
// to bf16 A fragments; O_w (16 x d) = P V; O_w / (den + eps) is staged in the warp's own Q rows
// (read by no other warp) for 16-byte stores. Four blocks of 160 threads per SM at N = 65.
template <int NB>
constexpr int fwd_min_blocks = NB <= 5 ? 6 : (NB == 6 ? 3 : 2);

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
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
  const auto [bh, b, h, HD, ld] = head_slice<D>(H);
  const bf16* Qg = qkv + b * N * ld + int64_t{h} * D;

  const int q0 = warp * 16, pair0 = first_pair(glog) + warp * NB;
  const LogitsAhead ahead(logits, h, S, threadIdx.x == 0);
  const BlockRowSlots<NB> row_slots(pair0, S, lane);  // ahead of use, as in the backward
  PhiQK<D, NB> qk;
  qk.load(Qg, HD, ld, N);
  load_rows<D>(Vs, Qg + 2 * HD, ld, 0, kNP, N);
  cp_async_commit();
  qk.store_phi(Qs, Ks, N);
  if (threadIdx.x == 0) slot_weights(ahead, logits, h, S, wl);  // after: no registers for q, k
  __syncthreads();                                              // phi(Q), phi(K) and wl complete

  float s[kSN][4];
  zero(s);
  mma_rows_bt<D, NB>(s, Qs, Ks, kLd, warp * 16, lane);
  // Element (n, e) of key block c: key 16c + 8n + 2t + (e & 1) of query q0 + g + 8 (e >> 1).
  float l[2] = {0.f, 0.f};  // thread-partial den, reduced across the quad below
  uint32_t pa[NB][4];       // P as A fragments: frees s before O's accumulators
#pragma unroll
  for (int c = 0; c < NB; ++c) {
    for_block_pairs(row_slots, c, wl, [&](int n, int e, int, float w, auto) {
      s[2 * c + n][e] *= w;
      l[e >> 1] += s[2 * c + n][e];
    });
    acc_to_a(pa[c], s[2 * c], s[2 * c + 1]);
  }

  cp_async_wait<0>();  // V
  __syncthreads();
  float o[D / 8][4];
  zero(o);
#pragma unroll
  for (int c = 0; c < NB; ++c) mma_a_rows<D>(o, pa[c], Vs, kLd, c * 16, lane);

  l[0] = quad_sum(l[0]);
  l[1] = quad_sum(l[1]);
  bf16* os = Qs + q0 * kLd;  // the warp's own Q rows: no other warp reads them
  stage_acc<D>(os, o, 1.f / (l[0] + kEps), 1.f / (l[1] + kEps), lane);
  if (lane % 4 == 0) {
    if (q0 + g < N) den[bh * N + q0 + g] = l[0];
    if (q0 + g + 8 < N) den[bh * N + q0 + g + 8] = l[1];
  }
  __syncwarp();
  store_rows<D>(out + b * N * HD + int64_t{h} * D, HD, os, q0, N, lane);
}

// ---- backward ----------------------------------------------------------------------------------

// acc = the sum over the NB blocks c of A_c times rows 16c .. 16c+15 of the [.][ldb] tile b, A_c
// the 16x16 block at rows r0.., cols 16c.. of the [.][lda] tile a, or of a^T (kTrans: a stored
// with the reduction index as its row, as P / den' and dS are for dv and dk).
template <int D, int NB, bool kTrans>
__device__ __forceinline__ void block_rows_times(float (&acc)[D / 8][4], const bf16* a, int lda,
                                                 int r0, const bf16* b, int ldb, int lane) {
  zero(acc);
#pragma unroll
  for (int c = 0; c < NB; ++c) {
    uint32_t fa[4];
    if constexpr (kTrans)
      load_a_trans(fa, a, lda, r0, c * 16, lane);
    else
      load_a(fa, a, lda, r0, c * 16, lane);
    mma_a_rows<D>(acc, fa, b, ldb, c * 16, lane);
  }
}
// With den'_i = den_i + eps, o_i = sum_j P_ij v_j / den'_i and upstream g_i:
//   dP_ij  = d loss / d P_ij = g_i . (v_j - o_i) / den'_i   (through the numerator and den)
//   dv_j   = sum_i P_ij g_i / den'_i
//   ds_ij  = w_ij dP_ij                                      (P_ij = w_ij s_ij)
//   dphi(q_i) = sum_j ds_ij phi(k_j),  dphi(k_j) = sum_i ds_ij phi(q_i)
//   dq = dphi(q) min(phi(q), 1), dk likewise (phi' = min(phi, 1))
//   d loss / d alpha_s = sum over the pairs with lambda(i, j) = s of s_ij dP_ij.
// As products: dP = (dO V^T - delta 1^T) / den' with delta_i = g_i . o_i, dv = (P / den')^T dO,
// dk = dS^T phi(Q), dq = dS phi(K), dS = w * dP.
// delta is computed here as delta_i = sum_j P_ij (g_i . v_j) / den'_i rather than read off the
// saved bf16 output: then sum_j P_ij dP_ij = 0 holds up to fp32 rounding, as it does exactly.
// d loss / d alpha is a sum of B N^2 terms s_ij dP_ij of both signs that cancels almost
// entirely (sum_s alpha_s (d loss / d alpha_s) = sum_ij P_ij dP_ij = 0), and the bf16 output's
// rounding error in delta (2^-9 relative, the same for all N keys of a query) survives that
// cancellation: emulating both variants on the test shapes, it put the logits' gradient off by
// up to 36x the test tolerance (8 u sqrt(N) max|want|), the recomputed delta by 1x. It costs no
// product of its own: warp w keeps its 16 query rows of S and dO V^T (fp32) in registers over all
// keys until delta is known, then forms dP, dS and P / den' from them.
// One kernel writes dq, dk, dv of one (image, head) once each and d loss / d alpha of each
// warp's queries into galpha [B, NB, H, S] (f64; ripple_logits_grad sums the B NB rows).
// Shared (bf16 unless noted; NP = 80, d = 64: 74.6 KB, three blocks per SM):
//   phi(Q), phi(K), V, dO [NP][d+8]
//   P / den', dS [NP][NP+8], rows = queries
//   1 / den' [NP] fp32 (0 for padded rows, which zeroes their dP)
// Steps:
//  0. Q and K in registers (PhiQK), dO and V by cp.async (in flight during phi), plain loads
//     of den; phi(Q), phi(K) stored to shared memory; one barrier.
//  1. Warp w = queries q0 = 16w..q0+15: S = phi(Q_w) phi(K)^T and dO_w V^T (16 x NP fp32 each,
//     2 products); delta = row sums of w S (dO V^T), times 1 / den'; then per 16x16 block dP,
//     P / den' and dS = w dP, rounded to bf16 into shared memory, and d loss / d alpha (fp32
//     per thread: one sum for the far pairs, one per near level).
//  2. Barrier (P / den' and dS complete; V no longer read). Warp w = keys k0 = 16w..:
//     dv = (P / den')^T dO and dk = dS^T phi(Q) (both read transposed with ldmatrix.trans), then
//     its query rows' dq = dS phi(K), each staged in the warp's own V rows and stored. Then the
//     warp's d loss / d alpha sums: fp32 shuffles (deterministic), one f64 row of galpha.
template <int D, int NB>
constexpr size_t bwd_smem_bytes = (size_t{4} * 16 * NB * (D + 8) +
                                   size_t{2} * 16 * NB * (16 * NB + 8)) *
                                      sizeof(bf16) +
                                  size_t{16} * NB * sizeof(float);

template <int NB>
constexpr int bwd_min_blocks = NB <= 5 ? 3 : 2;

template <int D, int NB>
__global__ void __launch_bounds__(32 * NB, bwd_min_blocks<NB>)
    ripple_bwd_small_kernel(const bf16* __restrict__ qkv, const bf16* __restrict__ gout,
                            const float* __restrict__ den, const float* __restrict__ logits,
                            bf16* __restrict__ gqkv, double* __restrict__ galpha, int N, int H,
                            int S, int glog) {
  constexpr int kNP = 16 * NB, kLd = D + 8, kLdp = kNP + 8, kSN = 2 * NB;
  __shared__ float wl[kPadSlot + 1];
  bf16* Qs = reinterpret_cast<bf16*>(ptx::dynamic_smem());
  bf16* Ks = Qs + kNP * kLd;
  bf16* Vs = Ks + kNP * kLd;
  bf16* dOs = Vs + kNP * kLd;
  bf16* Ps = dOs + kNP * kLd;                              // P / den'
  bf16* Ss = Ps + kNP * kLdp;                              // dS
  float* Inv = reinterpret_cast<float*>(Ss + kNP * kLdp);  // 1 / (den + eps)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
  const auto [bh, b, h, HD, ld] = head_slice<D>(H);
  const bf16* Qg = qkv + b * N * ld + int64_t{h} * D;

  // 0. Loads and phi. den of row threadIdx.x (blockDim = 2 NP) and the slot words first, so
  // that their latency overlaps the copies'.
  const float den_row = threadIdx.x < N ? den[bh * N + threadIdx.x] : 0.f;
  const int q0 = warp * 16, pair0 = first_pair(glog) + warp * NB;
  const LogitsAhead ahead(logits, h, S, threadIdx.x == 0);
  const BlockRowSlots<NB> row_slots(pair0, S, lane);
  PhiQK<D, NB> qk;
  qk.load(Qg, HD, ld, N);
  load_rows<D>(dOs, gout + b * N * HD + int64_t{h} * D, HD, 0, kNP, N);
  load_rows<D>(Vs, Qg + 2 * HD, ld, 0, kNP, N);
  cp_async_commit();
  if (threadIdx.x < kNP) Inv[threadIdx.x] = threadIdx.x < N ? 1.f / (den_row + kEps) : 0.f;
  qk.store_phi(Qs, Ks, N);
  if (threadIdx.x == 0) slot_weights(ahead, logits, h, S, wl);  // after: no registers for q, k
  cp_async_wait<0>();                                           // this thread's dO and V copies
  __syncthreads();  // everyone's, and phi(Q), phi(K), wl, 1 / den'

  // 1. Queries q0 .. q0+15. Element (n, e) of key block c: query q0 + g + 8 (e >> 1), key
  // 16c + 8n + 2t + (e & 1).
  float s[kSN][4], gv[kSN][4];
  zero(s);
  zero(gv);
  mma_rows_bt<D, NB>(s, Qs, Ks, kLd, q0, lane);
  mma_rows_bt<D, NB>(gv, dOs, Vs, kLd, q0, lane);
  // delta_i den'_i = sum_j w_ij s_ij gv_ij: the far blocks' sum (one fma per pair) times
  // alpha_{S-1} plus the near blocks' weighted sum.
  const float wfar = wl[kClassSlot];
  float tfar[2] = {0.f, 0.f}, tnear[2] = {0.f, 0.f};
#pragma unroll
  for (int c = 0; c < NB; ++c)
    for_block_pairs(row_slots, c, wl, [&](int n, int e, int, float w, auto far_block) {
      const float x = s[2 * c + n][e], y = gv[2 * c + n][e];
      if constexpr (decltype(far_block)::value)
        tfar[e >> 1] = fmaf(x, y, tfar[e >> 1]);
      else
        tnear[e >> 1] = fmaf(w, x * y, tnear[e >> 1]);
    });
  const float inv[2] = {Inv[q0 + g], Inv[q0 + g + 8]};
  float dinv[2];  // delta_i / den'_i
#pragma unroll
  for (int r = 0; r < 2; ++r) dinv[r] = quad_sum(fmaf(wfar, tfar[r], tnear[r])) * inv[r] * inv[r];

  // d loss / d alpha per thread: near[l] for the pairs at level l < near_levels (stage l),
  // far for all pairs (stage S-1, the class pairs included, once the near sums are taken off).
  const int near_levels = min(S - 1, kLevels);
  float far = 0.f, near[kLevels] = {};
#pragma unroll
  for (int c = 0; c < NB; ++c) {
    float pt[2][4], dt[2][4];  // P / den' and dS of this 16x16 block
    for_block_pairs(row_slots, c, wl, [&](int n, int e, int slot, float w, auto) {
      const float x = s[2 * c + n][e];
      const float dp = fmaf(gv[2 * c + n][e], inv[e >> 1], -dinv[e >> 1]);
      far = fmaf(x, dp, far);  // the near levels' share comes off at the end
#pragma unroll
      for (int k = 0; k < kLevels; ++k)  // a select and an fma per level (none in far blocks)
        if (k < near_levels) near[k] = fmaf(slot == k ? x : 0.f, dp, near[k]);
      pt[n][e] = w * inv[e >> 1] * x;
      dt[n][e] = w * dp;
    });
    uint32_t a[4];
    acc_to_a(a, pt[0], pt[1]);
    store_a(Ps, kLdp, q0, c * 16, a, lane);
    acc_to_a(a, dt[0], dt[1]);
    store_a(Ss, kLdp, q0, c * 16, a, lane);
  }
  __syncthreads();  // P / den' and dS complete; V free

  // 2. Keys k0 .. k0+15: dv, then dk; then the dq of queries k0 .. k0+15.
  const int k0 = warp * 16;
  bf16* grow = gqkv + b * N * ld + int64_t{h} * D;  // row 0 of this head's dq; dk +HD, dv +2HD
  bf16* sv = Vs + k0 * kLd;                         // the warp's own V rows: staging
  float acc[D / 8][4];
  block_rows_times<D, NB, true>(acc, Ps, kLdp, k0, dOs, kLd, lane);  // (P / den')^T dO
  stage_acc<D>(sv, acc, 1.f, 1.f, lane);
  __syncwarp();
  store_rows<D>(grow + 2 * HD, ld, sv, k0, N, lane);
  block_rows_times<D, NB, true>(acc, Ss, kLdp, k0, Qs, kLd, lane);  // dS^T phi(Q)
  __syncwarp();
  stage_chain<D>(sv, acc, Ks + k0 * kLd, lane);
  __syncwarp();
  store_rows<D>(grow + HD, ld, sv, k0, N, lane);
  block_rows_times<D, NB, false>(acc, Ss, kLdp, k0, Ks, kLd, lane);  // dS phi(K), own rows
  __syncwarp();
  stage_chain<D>(sv, acc, Qs + k0 * kLd, lane);
  __syncwarp();
  store_rows<D>(grow, ld, sv, k0, N, lane);

  // d loss / d alpha of this warp's queries: warp sums, level -> stage (near level l is stage
  // l; all pairs less the near ones are stage S-1) in f64, one row of galpha per warp. No
  // barrier: ripple_logits_grad adds the NB rows of an image with the batch (a block reduction
  // here had every warp wait for the slowest before exiting). The warp sums are fp32, like
  // each thread's own sum of its 8 NB terms: the 5 shuffle levels add 5 roundings to the 8 NB
  // that sum already has (in f64, the dependent shuffles and adds took 6% of this kernel's
  // stall samples).
  double tot[kLevels + 1];
#pragma unroll
  for (int k = 0; k <= kLevels; ++k) {
    float x = 0.f;
    if (k == kLevels || k < near_levels) {  // warp-uniform
      x = k < kLevels ? near[min(k, kLevels - 1)] : far;
      for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    }
    tot[k] = x;
  }
  if (lane == 0) {
    double* gab = galpha + ((b * NB + warp) * H + h) * S;  // [B, NB, H, S]
    double last = tot[kLevels];
#pragma unroll
    for (int k = 0; k < kLevels; ++k)
      if (k < near_levels) {
        gab[k] = tot[k];
        last -= tot[k];
      }
    for (int st = near_levels; st + 1 < S; ++st) gab[st] = 0.0;
    gab[S - 1] = last;
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

// fn(integral_constant<head width>, integral_constant<16-token blocks>) for a geometry that
// small_geom accepted.
template <typename Fn>
void with_kernel_shape(const Geom& m, const char* where, Fn&& fn) {
  attn::with_head_dim(m.d, where, [&](auto dc) {
    constexpr int Dh = decltype(dc)::value;
    if constexpr (Dh < 16 || Dh > 64)
      fail(std::string(where) + ": head width " + std::to_string(Dh));  // small_geom excluded it
    else
      with_token_blocks((m.N + 15) / 16, [&](auto nbc) { fn(dc, nbc); });
  });
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
  with_kernel_shape(m, "ripple_small_fwd", [&](auto dc, auto nbc) {
    constexpr int Dh = decltype(dc)::value, NB = decltype(nbc)::value;
    constexpr size_t smem = fwd_smem_bytes<Dh, NB>;
    allow_dynamic_smem(reinterpret_cast<const void*>(&ripple_fwd_small_kernel<Dh, NB>), smem,
                       "ripple_fwd_small_kernel");
    ripple_fwd_small_kernel<Dh, NB><<<static_cast<unsigned>(B * heads), 32 * NB, smem, stream>>>(
        static_cast<const bf16*>(qkv), logits, static_cast<bf16*>(out), den, m.N, m.H, m.S, m.glog);
    after_launch("ripple_fwd_small_kernel", stream);
  });
}

void ripple_small_bwd(const void* gout, const void* qkv, const float* logits, const float* den,
                      int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages, int64_t grid,
                      void* gqkv, float* glogits, double* workspace, cudaStream_t stream) {
  const Geom m = small_geom(B, N, D, heads, stages, grid, "ripple_small_bwd");
  if (ripple_detail::empty_batch_backward(B, heads, stages, glogits, stream)) return;
  with_kernel_shape(m, "ripple_small_bwd", [&](auto dc, auto nbc) {
    constexpr int Dh = decltype(dc)::value, NB = decltype(nbc)::value;
    constexpr size_t smem = bwd_smem_bytes<Dh, NB>;
    allow_dynamic_smem(reinterpret_cast<const void*>(&ripple_bwd_small_kernel<Dh, NB>), smem,
                       "ripple_bwd_small_kernel");
    ripple_bwd_small_kernel<Dh, NB><<<static_cast<unsigned>(B * heads), 32 * NB, smem, stream>>>(
        static_cast<const bf16*>(qkv), static_cast<const bf16*>(gout), den, logits,
        static_cast<bf16*>(gqkv), workspace, m.N, m.H, m.S, m.glog);
    after_launch("ripple_bwd_small_kernel", stream);
  });
  // galpha [B, NB, H, S]: the batch sum runs over B NB rows.
  if (glogits)
    ripple_logits_grad(workspace, logits, B * ((N + 15) / 16), heads, stages, glogits, stream);
}

}  // namespace lvit::cuda
