// Ripple attention kernels and launchers (declared in cuda/ripple.cuh); the CPU reference with
// the same math is ops/cpu/ripple.cpp.
//
// Grid (heads, B), 256 threads; a CTA owns one (image b, head h) and loops over it in two
// phases, all in fp32 with the d x d sums in shared memory:
//  1. the global sums over the pass's tokens, tiles of T rows streamed through shared memory:
//     KV = sum_j phi(k_j) v_j^T, z = sum_j phi(k_j) (backward also GQ = sum_i phi(q_i) ug_i^T,
//     gz = sum_i phi(q_i) ud_i with [ug_i, ud_i] = [g_i, -g_i.o_i] / (den_i + eps));
//  2. tiles of T grid cells in Morton (Z) order, so that every dyadic block up to T cells is a
//     contiguous, aligned run of rows: out rows (or gradient rows) = coef * the global term
//     (a T x d x d product) + the block-local term, computed densely inside each block of
//     mk cells: W(i, j) phi(q_i).phi(k_j) with W the telescoped weight of the pair's level.
//     The class token belongs to no block; it rides as an extra row on the first tile and
//     gets the global term only (matrix-vector products).
// The main pass covers the global term (coefficient alpha_{S-1}) and the levels whose blocks
// fit in a tile; each larger level (rare: see cuda/ripple.cuh) runs as an extra pass whose
// "global" sums go over one block at a time, with coefficient alpha_s - alpha_{s+1}, adding
// onto the main pass's raw numerators (forward) or gradients (backward).
//
// Thread mapping. Phase 1: thread (ty, tx) = (tid / 16, tid % 16) owns rows ty*R .. and columns
// tx*R .. (R = DP / 16) of the d x d sums; tiles are row-major with a stride of DP + 4 floats
// so those reads are float4. Phase 2: thread (ty, tx) owns tile rows ty*RI .. ty*RI+RI-1 and
// columns tx, tx + 16, ... (RC = DP / 16 of them); tile rows are read as float4 along the
// reduction, the d x d matrices (stride DP + 1, odd) one float per column, which is
// conflict-free both for M[k][col] and M[col][k] walks, so no transposed copies are needed.
// DP is d rounded up to 16, 32, 64 or 128 (padded channels are zero); T = 64 (16 for DP = 128,
// to fit shared memory).
//
// Cost per (image, head), n = N tokens, m = mk: forward 2 n d^2 FMA (KV, then phi(Q) KV) plus
// 2 n m d for the local term, reading q once and k, v twice (the second time for the local
// term, mostly from L2), writing out and den; backward 5 n d^2 FMA (KV, GQ, three tile
// products) plus 5 n m d, reading q, k, v, g, out twice and writing gqkv once. Shared memory for
// d = 64 at S = 3: 72 KB forward (3 CTAs per SM), 108 KB backward (2 CTAs per SM).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/check.cuh"
#include "cuda/ripple.cuh"
#include "cuda/ripple_alpha.cuh"
#include "cuda/ripple_plan.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

using ripple_detail::Geom;
using ripple_detail::kMaxStages;
using ripple_detail::Pass;
using ripple_detail::Plan;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr float kEps = 1e-6f;  // the denominator's eps (DESIGN.md)

// The rows of a tile: tokens first .. first + count - 1, or (by_cell) the grid cells with
// Morton indices first .., i.e. tokens 1 + r g + c.
struct Rows {
  int first, count;
  bool by_cell;
  bool with_class = false;  // the class token (token 0) as the extra row T
};

template <int DP_, int T_>
struct Cfg {
  static constexpr int DP = DP_;    // padded head width
  static constexpr int T = T_;      // rows per tile
  static constexpr int TR = T + 1;  // rows per staging buffer: phase 1 of the main pass takes
                                    // the class token with the first T tokens
  static constexpr int TRU = (TR + 3) / 4 * 4;
  static constexpr int P = DP + 4;    // tile row stride (floats)
  static constexpr int LDM = DP + 1;  // d x d matrix row stride (odd)
  static constexpr int R = DP / 16;   // phase 1: R x R block of a d x d sum per thread
  static constexpr int RI = T / 16;   // phase 2: rows per thread
  static constexpr int RC = DP / 16;  // phase 2: columns per thread
  static constexpr int NSUB = kThreads / DP;
  static constexpr int kFwdBlocks = DP <= 64 ? 3 : 1;  // CTAs per SM that shared memory allows
  static constexpr int kBwdBlocks = DP <= 64 ? 2 : 1;
  static_assert(DP % 16 == 0 && T % 16 == 0 && (T * DP) % kThreads == 0);
};

// ---- small device helpers ----

__device__ __forceinline__ float phi(float x) { return x > 0.f ? x + 1.f : expf(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the 16 lanes that share a tile row in phase 2 (lane bits 0..3 are tx).
__device__ __forceinline__ float row_sum16(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float comp(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// v = p[0 .. N-1] from shared memory, as float4 / float2 where N allows (p suitably aligned).
template <int N>
__device__ __forceinline__ void lds_vec(float (&v)[N], const float* p) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int q = 0; q < N / 4; ++q) {
      const float4 t = reinterpret_cast<const float4*>(p)[q];
      v[4 * q] = t.x;
      v[4 * q + 1] = t.y;
      v[4 * q + 2] = t.z;
      v[4 * q + 3] = t.w;
    }
  } else if constexpr (N == 2) {
    const float2 t = *reinterpret_cast<const float2*>(p);
    v[0] = t.x;
    v[1] = t.y;
  } else {
    static_assert(N == 1);
    v[0] = p[0];
  }
}

__device__ __forceinline__ int token_of_cell(int p, const Geom& m) {
  int r = 0, c = 0;
  for (int bit = 0; bit < m.glog; ++bit) {
    c |= ((p >> (2 * bit)) & 1) << bit;
    r |= ((p >> (2 * bit + 1)) & 1) << bit;
  }
  return 1 + r * m.g + c;
}

__device__ __forceinline__ int row_token(const Rows& rows, int i, const Geom& m) {
  return rows.by_cell ? token_of_cell(rows.first + i, m) : rows.first + i;
}

// Level of two cells from their Morton indices within an aligned tile: the smallest s with
// both in one 2^s x 2^s block, i.e. half the bit length of their xor, rounded up.
__device__ __forceinline__ int pair_level(int i, int j) { return (33 - __clz(i ^ j)) >> 1; }

// The pass coefficient and the main pass's local weights w[l] = alpha_l - alpha_{s_minus},
// from the stick-breaking weights of logits row h (f64, as the CPU op computes them).
__device__ void pass_weights(const float* logits, int h, const Geom& m, const Pass& pass,
                             float* coef, float* w) {
  double alpha[kMaxStages];
  ripple_detail::stage_weights(logits, h, m.S, alpha);
  if (pass.seg_cells == 0) {
    *coef = static_cast<float>(alpha[m.S - 1]);
    for (int l = 0; l < 4; ++l)
      w[l] = pass.mk > 0 && l < m.S ? static_cast<float>(alpha[l] - alpha[pass.s_minus]) : 0.f;
  } else {
    *coef = static_cast<float>(alpha[pass.s_plus] - alpha[pass.s_minus]);
  }
}

// ---- tile loads ----

// tok[r] = the token of row r of `rows` (-1 past rows.count), read by the loads and stores
// after the caller's next barrier: a Morton index is decoded once per row, not per element.
template <class K>
__device__ void set_rows(int* tok, const Rows& rows, const Geom& m) {
  for (int r = threadIdx.x; r < K::TR; r += kThreads)
    tok[r] = r < rows.count ? row_token(rows, r, m) : r == K::T && rows.with_class ? 0 : -1;
}

// dst [TR][P] = (phi of) channels 0 .. d-1 of the rows tok[] of src (token t at src + t * ld);
// padded channels and rows without a token are zero. (Unrolling by 4 keeps loads in flight
// without spilling at the forward's 80-register budget; explicit batches of 8 spilled.)
template <class K, bool PHI>
__device__ void load_tile(float* dst, const float* src, int64_t ld, const int* tok, const Geom& m) {
#pragma unroll 4
  for (int e = threadIdx.x; e < K::TR * K::DP; e += kThreads) {
    const int r = e / K::DP, c = e % K::DP;
    const int t = tok[r];
    float v = 0.f;
    if (t >= 0 && c < m.d) {
      v = src[t * ld + c];
      if constexpr (PHI) v = phi(v);
    }
    dst[r * K::P + c] = v;
  }
}

// U [TR][P] = g_i / (den_i + eps), ud [TR] = -(g_i . o_i) / (den_i + eps): d loss / d [num_i,
// den_i] (ops/cpu/ripple.cpp), for the rows tok[]. Warp w takes rows w, w + 8, ..., loading
// 3 rows before reducing them.
template <class K>
__device__ void load_uu(float* U, float* ud, const float* g, const float* o, const float* den,
                        const int* tok, const Geom& m) {
  constexpr int RPW = (K::TR + kWarps - 1) / kWarps, G = 3, CPL = (K::DP + 31) / 32;
  static_assert(RPW % G == 0);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int j0 = 0; j0 < RPW; j0 += G) {
    float gv[G][CPL], ov[G][CPL], dv[G];
#pragma unroll
    for (int j = 0; j < G; ++j) {
      const int r = warp + (j0 + j) * kWarps;  // warp-uniform
      const int64_t t = r < K::TR ? tok[r] : -1;
      dv[j] = t >= 0 ? den[t] : 0.f;
#pragma unroll
      for (int q = 0; q < CPL; ++q) {
        const int c = lane + 32 * q;
        const bool valid = t >= 0 && c < m.d;
        gv[j][q] = valid ? g[t * m.D + c] : 0.f;
        ov[j][q] = valid ? o[t * m.D + c] : 0.f;
      }
    }
#pragma unroll
    for (int j = 0; j < G; ++j) {
      const int r = warp + (j0 + j) * kWarps;
      if (r >= K::TR) continue;
      const float inv = tok[r] >= 0 ? 1.f / (dv[j] + kEps) : 0.f;
      float dot = 0.f;
#pragma unroll
      for (int q = 0; q < CPL; ++q) {
        dot = fmaf(gv[j][q], ov[j][q], dot);
        if (lane + 32 * q < K::DP) U[r * K::P + lane + 32 * q] = gv[j][q] * inv;
      }
      dot = warp_sum(dot);
      if (lane == 0) ud[r] = -dot * inv;
    }
  }
}

// ---- phase 1: d x d sums over token rows ----

// acc[i][j] += sum_{r < rows} X[r][a0 + i] Y[r][c0 + j].
template <class K>
__device__ void acc_tn(float (&acc)[K::R][K::R], const float* X, const float* Y, int rows) {
  const int a0 = (threadIdx.x >> 4) * K::R, c0 = (threadIdx.x & 15) * K::R;
  for (int r = 0; r < rows; ++r) {
    float x[K::R], y[K::R];
    lds_vec(x, X + r * K::P + a0);
    lds_vec(y, Y + r * K::P + c0);
#pragma unroll
    for (int i = 0; i < K::R; ++i)
#pragma unroll
      for (int j = 0; j < K::R; ++j) acc[i][j] = fmaf(x[i], y[j], acc[i][j]);
  }
}

// This thread's share of sum_{r < rows} X[r][a] (times w[r] when W), a = tid % DP.
template <class K, bool W>
__device__ float col_partial(const float* X, const float* w, int rows) {
  const int a = threadIdx.x % K::DP;
  float s = 0.f;
  for (int r = threadIdx.x / K::DP; r < rows; r += K::NSUB)
    s = W ? fmaf(X[r * K::P + a], w[r], s) : s + X[r * K::P + a];
  return s;
}

// dst[a] = the sum of every thread's col_partial share (fixed order). Starts and ends with a
// barrier, so it also publishes shared memory written before it.
template <class K>
__device__ void finish_cols(float* dst, float* red, float part) {
  red[threadIdx.x] = part;
  __syncthreads();
  if (threadIdx.x < K::DP) {
    float s = 0.f;
    for (int p = 0; p < K::NSUB; ++p) s += red[p * K::DP + threadIdx.x];
    dst[threadIdx.x] = s;
  }
  __syncthreads();
}

template <class K>
__device__ void store_mat(float* M, const float (&acc)[K::R][K::R]) {
  const int a0 = (threadIdx.x >> 4) * K::R, c0 = (threadIdx.x & 15) * K::R;
#pragma unroll
  for (int i = 0; i < K::R; ++i)
#pragma unroll
    for (int j = 0; j < K::R; ++j) M[(a0 + i) * K::LDM + c0 + j] = acc[i][j];
}

// [M, z] = sum over `count` rows from `first` of X^T [Y, w] (w = 1 when !W), a tile at a time:
// load(tok) fills X, Y (and w) for the rows listed in tok.
template <class K, bool W, class Load>
__device__ void global_sums(float* M, float* zs, float* red, int* tok, const float* X,
                            const float* Y, const float* w, int first, int count, bool by_cell,
                            const Geom& m, Load&& load) {
  float acc[K::R][K::R] = {};
  float zp = 0.f;
  for (int r0 = 0, n = 0; r0 < count; r0 += n) {
    n = min(r0 == 0 && !by_cell ? K::TR : K::T, count - r0);
    const Rows rows{first + r0, n, by_cell};
    set_rows<K>(tok, rows, m);
    __syncthreads();
    load(tok);
    __syncthreads();
    acc_tn<K>(acc, X, Y, rows.count);
    zp += col_partial<K, W>(X, w, rows.count);
    __syncthreads();
  }
  store_mat<K>(M, acc);
  finish_cols<K>(zs, red, zp);
}

// ---- phase 2: tile rows ----

// acc[ri][rc] = sum_k X[i][k] M(k, col) for i = i0 + ri, col = tx + 16 rc, with M(k, col) =
// M[k][col], or M[col][k] when TRANS.
template <class K, bool TRANS>
__device__ void gemm_tile(float (&acc)[K::RI][K::RC], const float* X, const float* M) {
  const int i0 = (threadIdx.x >> 4) * K::RI, tx = threadIdx.x & 15;
#pragma unroll
  for (int ri = 0; ri < K::RI; ++ri)
#pragma unroll
    for (int rc = 0; rc < K::RC; ++rc) acc[ri][rc] = 0.f;
#pragma unroll 2
  for (int k = 0; k < K::DP; k += 4) {
    float4 x[K::RI];
#pragma unroll
    for (int ri = 0; ri < K::RI; ++ri)
      x[ri] = *reinterpret_cast<const float4*>(X + (i0 + ri) * K::P + k);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      float y[K::RC];
#pragma unroll
      for (int rc = 0; rc < K::RC; ++rc) {
        const int col = tx + 16 * rc;
        y[rc] = TRANS ? M[col * K::LDM + k + kk] : M[(k + kk) * K::LDM + col];
      }
#pragma unroll
      for (int ri = 0; ri < K::RI; ++ri) {
        const float xv = comp(x[ri], kk);
#pragma unroll
        for (int rc = 0; rc < K::RC; ++rc) acc[ri][rc] = fmaf(xv, y[rc], acc[ri][rc]);
      }
    }
  }
}

template <class K>
__device__ __forceinline__ float dot_rows(const float* x, const float* y) {
  float s = 0.f;
#pragma unroll 4
  for (int a = 0; a < K::DP; a += 4) {
    const float4 u = *reinterpret_cast<const float4*>(x + a);
    const float4 v = *reinterpret_cast<const float4*>(y + a);
    s = fmaf(u.x, v.x, s);
    s = fmaf(u.y, v.y, s);
    s = fmaf(u.z, v.z, s);
    s = fmaf(u.w, v.w, s);
  }
  return s;
}

// The local term's pairs, entry e = i * mk + jj for tile row i and the jj-th cell j of i's
// block: WA[e] = W A_ij with A_ij = phi(q_i).phi(k_j); in backward also WG[e] = W G_ij with
// G_ij = ug_i . v_j + ud_i, and dl[level] += A_ij G_ij (d loss / d W, summed per level).
template <class K, bool BWD>
__device__ void local_entries(float* WA, float* WG, const float* Qs, const float* Ks,
                              const float* Us, const float* Vs, const float* ud, int rows, int mk,
                              const float* w, double (&dl)[5]) {
  for (int e = threadIdx.x; e < rows * mk; e += kThreads) {
    const int i = e / mk, jj = e - i * mk, j = i - i % mk + jj;
    const int l = pair_level(i, j);
    const float A = dot_rows<K>(Qs + i * K::P, Ks + j * K::P);
    WA[e] = w[l] * A;
    if constexpr (BWD) {
      const float G = dot_rows<K>(Us + i * K::P, Vs + j * K::P) + ud[i];
      WG[e] = w[l] * G;
      const double ag = static_cast<double>(A) * G;
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (q == l) dl[q] += ag;
    }
  }
}

// acc[ri][rc] += sum over the block of row i of W(i, j) Y[j][col] (TRANS: W(j, i), i.e. the
// transposed local matrix, for gradients with respect to keys and values).
template <class K, bool TRANS>
__device__ void local_add(float (&acc)[K::RI][K::RC], const float* W, const float* Y, int mk,
                          int rows) {
  const int i0 = (threadIdx.x >> 4) * K::RI, tx = threadIdx.x & 15;
#pragma unroll
  for (int ri = 0; ri < K::RI; ++ri) {
    const int i = i0 + ri;
    if (i >= rows) continue;
    const int b0 = i - i % mk;
    for (int q = 0; q < mk; ++q) {
      const float wv = TRANS ? W[(b0 + q) * mk + (i - b0)] : W[i * mk + q];
      const float* y = Y + (b0 + q) * K::P + tx;
#pragma unroll
      for (int rc = 0; rc < K::RC; ++rc) acc[ri][rc] = fmaf(wv, y[16 * rc], acc[ri][rc]);
    }
  }
}

// y[col] = sum_k x[k] M(k, col) for col = tid < DP (M(k, col) as in gemm_tile). Barriers inside.
template <class K, bool TRANS>
__device__ float block_matvec(const float* x, const float* M, float* red) {
  const int col = threadIdx.x % K::DP;
  float s = 0.f;
  for (int k = threadIdx.x / K::DP; k < K::DP; k += K::NSUB)
    s = fmaf(x[k], TRANS ? M[col * K::LDM + k] : M[k * K::LDM + col], s);
  red[threadIdx.x] = s;
  __syncthreads();
  float y = 0.f;
  if (threadIdx.x < K::DP)
    for (int p = 0; p < K::NSUB; ++p) y += red[p * K::DP + threadIdx.x];
  __syncthreads();
  return y;
}

// ---- forward ----

// Writes tile rows: out = num / (den + eps) (finalize) or the raw num, den[t] = den; with
// pass.accumulate the values of earlier passes are added first.
template <class K>
__device__ void emit_fwd(const float (&acc)[K::RI][K::RC], const float (&dn)[K::RI], const int* tok,
                         float* out_bh, float* den_bh, const Geom& m, const Pass& pass) {
  const int i0 = (threadIdx.x >> 4) * K::RI, tx = threadIdx.x & 15;
  const int src_lane = (threadIdx.x & 31) & ~15;  // the lane with tx == 0 of this row
#pragma unroll
  for (int ri = 0; ri < K::RI; ++ri) {
    const int t = tok[i0 + ri];
    const bool valid = t >= 0;
    float dsum = dn[ri];
    if (pass.accumulate) {  // one lane reads the old den, before that lane overwrites it
      const float old = valid && tx == 0 ? den_bh[t] : 0.f;
      dsum += __shfl_sync(0xffffffffu, old, src_lane);
    }
    if (!valid) continue;
    const float inv = 1.f / (dsum + kEps);
    float* o = out_bh + static_cast<int64_t>(t) * m.D;
#pragma unroll
    for (int rc = 0; rc < K::RC; ++rc) {
      const int col = tx + 16 * rc;
      if (col >= m.d) continue;
      float v = acc[ri][rc];
      if (pass.accumulate) v += o[col];
      o[col] = pass.finalize ? v * inv : v;
    }
    if (tx == 0) den_bh[t] = dsum;
  }
}

// smem: KV [DP][LDM] | z [DP] | Q, K, V buffers [TR][P] | red [256] | WA [T * mk]; static: the
// tile's tokens and the pass weights.
template <class K>
__global__ void __launch_bounds__(kThreads, K::kFwdBlocks)
    ripple_fwd_kernel(const float* __restrict__ qkv, const float* __restrict__ logits, const Geom m,
                      const Pass pass, float* __restrict__ out, float* __restrict__ den) {
  extern __shared__ float4 smem4[];
  float* KV = reinterpret_cast<float*>(smem4);
  float* zs = KV + K::DP * K::LDM;
  float* Qs = zs + K::DP;
  float* Ks = Qs + K::TR * K::P;
  float* Vs = Ks + K::TR * K::P;
  float* red = Vs + K::TR * K::P;
  float* WA = red + kThreads;
  __shared__ int tok[K::TR];
  __shared__ float s_w[4], s_coef, s_den0;
  const int h = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
  if (tid == 0) pass_weights(logits, h, m, pass, &s_coef, s_w);
  __syncthreads();
  const float coef = s_coef;
  const int64_t ld = 3 * static_cast<int64_t>(m.D);
  const float* q_src = qkv + static_cast<int64_t>(b) * m.N * ld + h * m.d;
  const float* k_src = q_src + m.D;
  const float* v_src = q_src + 2 * m.D;
  float* out_bh = out + static_cast<int64_t>(b) * m.N * m.D + h * m.d;
  float* den_bh = den + (static_cast<int64_t>(b) * m.H + h) * m.N;
  const bool main_pass = pass.seg_cells == 0;
  const int tile = min(K::T, m.cells);
  const int i0 = (tid >> 4) * K::RI, tx = tid & 15;
  const int nseg = main_pass ? 1 : m.cells / pass.seg_cells;

  for (int seg = 0; seg < nseg; ++seg) {
    const int cell0 = seg * pass.seg_cells;
    // phase 1: [KV, z] = sum_j phi(k_j) [v_j, 1] over the pass's tokens
    global_sums<K, false>(KV, zs, red, tok, Ks, Vs, nullptr, main_pass ? 0 : cell0,
                          main_pass ? m.N : pass.seg_cells, !main_pass, m, [&](const int* tk) {
                            load_tile<K, true>(Ks, k_src, ld, tk, m);
                            load_tile<K, false>(Vs, v_src, ld, tk, m);
                          });
    // phase 2: the pass's cells, a tile at a time
    const int ncells = main_pass ? m.cells : pass.seg_cells;
    for (int c0 = 0; c0 < ncells; c0 += tile) {
      const bool with_class = main_pass && c0 == 0;  // the class token rides on the first tile
      set_rows<K>(tok, Rows{cell0 + c0, tile, true, with_class}, m);
      __syncthreads();
      load_tile<K, true>(Qs, q_src, ld, tok, m);
      if (pass.mk) {
        load_tile<K, true>(Ks, k_src, ld, tok, m);
        load_tile<K, false>(Vs, v_src, ld, tok, m);
      }
      __syncthreads();
      if (pass.mk) {
        double unused[5];
        local_entries<K, false>(WA, nullptr, Qs, Ks, nullptr, nullptr, nullptr, tile, pass.mk, s_w,
                                unused);
        __syncthreads();
      }
      float acc[K::RI][K::RC], dn[K::RI];
      gemm_tile<K, false>(acc, Qs, KV);
#pragma unroll
      for (int ri = 0; ri < K::RI; ++ri) {
        const int i = i0 + ri;
        float s = 0.f;
        for (int a = tx; a < K::DP; a += 16) s = fmaf(Qs[i * K::P + a], zs[a], s);
        s *= coef;
        if (pass.mk && i < tile)
          for (int q = tx; q < pass.mk; q += 16) s += WA[i * pass.mk + q];
        dn[ri] = row_sum16(s);
#pragma unroll
        for (int rc = 0; rc < K::RC; ++rc) acc[ri][rc] *= coef;
      }
      if (pass.mk) local_add<K, false>(acc, WA, Vs, pass.mk, tile);
      emit_fwd<K>(acc, dn, tok, out_bh, den_bh, m, pass);
      if (with_class) {  // row T: the global term only, finalized (no extra pass touches it)
        const float* x = Qs + K::T * K::P;
        const float y = block_matvec<K, false>(x, KV, red);
        if (tid < 32) {
          float s = 0.f;
          for (int a = tid; a < K::DP; a += 32) s = fmaf(x[a], zs[a], s);
          s = warp_sum(s);
          if (tid == 0) s_den0 = s * coef;
        }
        __syncthreads();
        if (tid < m.d) out_bh[tid] = coef * y * (1.f / (s_den0 + kEps));
        if (tid == 0) den_bh[0] = s_den0;
      }
      __syncthreads();  // the next tile overwrites tok, Q, K, V and WA
    }
  }
}

// ---- backward ----

// Writes tile rows of one gradient part (X: phi(x) for the chain through phi' = min(phi, 1)).
template <class K, bool CHAIN>
__device__ void emit_grad(const float (&acc)[K::RI][K::RC], const float* X, const int* tok,
                          float* dst_bh, const Geom& m, bool accumulate) {
  const int i0 = (threadIdx.x >> 4) * K::RI, tx = threadIdx.x & 15;
  const int64_t ld = 3 * static_cast<int64_t>(m.D);
#pragma unroll
  for (int ri = 0; ri < K::RI; ++ri) {
    const int i = i0 + ri, t = tok[i];
    if (t < 0) continue;
    float* dst = dst_bh + t * ld;
#pragma unroll
    for (int rc = 0; rc < K::RC; ++rc) {
      const int col = tx + 16 * rc;
      if (col >= m.d) continue;
      float v = acc[ri][rc];
      if constexpr (CHAIN) v *= fminf(X[i * K::P + col], 1.f);
      dst[col] = accumulate ? dst[col] + v : v;
    }
  }
}

// smem: KV, GQ [DP][LDM] | z, gz [DP] | Q, K, V, U buffers [TR][P] | ud [TRU] | red [256] |
// WA, WG [T * mk]. galpha [B, H, S]: this pass's d loss / d alpha (main: written; extra:
// added).
template <class K>
__global__ void __launch_bounds__(kThreads, K::kBwdBlocks)
    ripple_bwd_kernel(const float* __restrict__ gout, const float* __restrict__ qkv,
                      const float* __restrict__ logits, const float* __restrict__ out,
                      const float* __restrict__ den, const Geom m, const Pass pass,
                      float* __restrict__ gqkv, double* __restrict__ galpha) {
  extern __shared__ float4 smem4[];
  float* KV = reinterpret_cast<float*>(smem4);
  float* GQ = KV + K::DP * K::LDM;
  float* zs = GQ + K::DP * K::LDM;
  float* gzs = zs + K::DP;
  float* Qs = gzs + K::DP;
  float* Ks = Qs + K::TR * K::P;
  float* Vs = Ks + K::TR * K::P;
  float* Us = Vs + K::TR * K::P;
  float* ud = Us + K::TR * K::P;
  float* red = ud + K::TRU;
  float* WA = red + kThreads;
  float* WG = WA + K::T * pass.mk;
  __shared__ int tok[K::TR];
  __shared__ float s_w[4], s_coef;
  __shared__ double s_dl[kWarps][5];
  const int h = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
  if (tid == 0) pass_weights(logits, h, m, pass, &s_coef, s_w);
  __syncthreads();
  const float coef = s_coef;
  const int64_t ld = 3 * static_cast<int64_t>(m.D);
  const float* q_src = qkv + static_cast<int64_t>(b) * m.N * ld + h * m.d;
  const float* k_src = q_src + m.D;
  const float* v_src = q_src + 2 * m.D;
  const float* g_bh = gout + static_cast<int64_t>(b) * m.N * m.D + h * m.d;
  const float* o_bh = out + static_cast<int64_t>(b) * m.N * m.D + h * m.d;
  const float* den_bh = den + (static_cast<int64_t>(b) * m.H + h) * m.N;
  float* gq_bh = gqkv + static_cast<int64_t>(b) * m.N * ld + h * m.d;
  float* gk_bh = gq_bh + m.D;
  float* gv_bh = gq_bh + 2 * m.D;
  const bool main_pass = pass.seg_cells == 0;
  const int tile = min(K::T, m.cells);
  const int i0 = (tid >> 4) * K::RI, tx = tid & 15;
  const int nseg = main_pass ? 1 : m.cells / pass.seg_cells;
  double dl[5] = {};  // [0..3]: local pairs by level; [4]: the pass coefficient

  auto load_rows = [&](const Rows& rows) {  // barriers before and after
    set_rows<K>(tok, rows, m);
    __syncthreads();
    load_tile<K, true>(Qs, q_src, ld, tok, m);
    load_tile<K, true>(Ks, k_src, ld, tok, m);
    load_tile<K, false>(Vs, v_src, ld, tok, m);
    load_uu<K>(Us, ud, g_bh, o_bh, den_bh, tok, m);
    __syncthreads();
  };
  for (int seg = 0; seg < nseg; ++seg) {
    const int cell0 = seg * pass.seg_cells;
    const int first = main_pass ? 0 : cell0, count = main_pass ? m.N : pass.seg_cells;
    // phase 1: [KV, z] = sum_j phi(k_j) [v_j, 1], [GQ, gz] = sum_i phi(q_i) [ug_i, ud_i]
    global_sums<K, false>(KV, zs, red, tok, Ks, Vs, nullptr, first, count, !main_pass, m,
                          [&](const int* tk) {
                            load_tile<K, true>(Ks, k_src, ld, tk, m);
                            load_tile<K, false>(Vs, v_src, ld, tk, m);
                          });
    global_sums<K, true>(GQ, gzs, red, tok, Qs, Us, ud, first, count, !main_pass, m,
                         [&](const int* tk) {
                           load_tile<K, true>(Qs, q_src, ld, tk, m);
                           load_uu<K>(Us, ud, g_bh, o_bh, den_bh, tk, m);
                         });
    // d loss / d coef = sum over the pass's pairs of A_ij G_ij = <GQ, KV> + <gz, z>
    for (int e = tid; e < K::DP * K::DP; e += kThreads) {
      const int a = e / K::DP, c = e % K::DP;
      dl[4] += static_cast<double>(KV[a * K::LDM + c]) * GQ[a * K::LDM + c];
    }
    if (tid < K::DP) dl[4] += static_cast<double>(zs[tid]) * gzs[tid];

    // phase 2: d phi(q), d v, d phi(k) of the pass's cells, a tile at a time
    const int ncells = main_pass ? m.cells : pass.seg_cells;
    for (int c0 = 0; c0 < ncells; c0 += tile) {
      const bool with_class = main_pass && c0 == 0;  // the class token rides on the first tile
      load_rows(Rows{cell0 + c0, tile, true, with_class});
      if (pass.mk) {
        local_entries<K, true>(WA, WG, Qs, Ks, Us, Vs, ud, tile, pass.mk, s_w, dl);
        __syncthreads();
      }
      float acc[K::RI][K::RC];
      // d phi(q_i) = coef (KV ug_i + ud_i z) + sum_j W G_ij phi(k_j)
      gemm_tile<K, true>(acc, Us, KV);
#pragma unroll
      for (int ri = 0; ri < K::RI; ++ri)
#pragma unroll
        for (int rc = 0; rc < K::RC; ++rc)
          acc[ri][rc] = (acc[ri][rc] + ud[i0 + ri] * zs[tx + 16 * rc]) * coef;
      if (pass.mk) local_add<K, false>(acc, WG, Ks, pass.mk, tile);
      emit_grad<K, true>(acc, Qs, tok, gq_bh, m, pass.accumulate);
      // d v_j = coef GQ^T phi(k_j) + sum_i W A_ij ug_i
      gemm_tile<K, false>(acc, Ks, GQ);
#pragma unroll
      for (int ri = 0; ri < K::RI; ++ri)
#pragma unroll
        for (int rc = 0; rc < K::RC; ++rc) acc[ri][rc] *= coef;
      if (pass.mk) local_add<K, true>(acc, WA, Us, pass.mk, tile);
      emit_grad<K, false>(acc, nullptr, tok, gv_bh, m, pass.accumulate);
      // d phi(k_j) = coef (GQ v_j + gz) + sum_i W G_ij phi(q_i)
      gemm_tile<K, true>(acc, Vs, GQ);
#pragma unroll
      for (int ri = 0; ri < K::RI; ++ri)
#pragma unroll
        for (int rc = 0; rc < K::RC; ++rc) acc[ri][rc] = (acc[ri][rc] + gzs[tx + 16 * rc]) * coef;
      if (pass.mk) local_add<K, true>(acc, WG, Qs, pass.mk, tile);
      emit_grad<K, true>(acc, Ks, tok, gk_bh, m, pass.accumulate);
      if (with_class) {                      // row T: the global term only
        const int a = tid, r = K::T * K::P;  // a: the output channel, for tid < DP
        float y = block_matvec<K, true>(Us + r, KV, red);
        if (a < m.d) gq_bh[a] = (y + ud[K::T] * zs[a]) * coef * fminf(Qs[r + a], 1.f);
        y = block_matvec<K, false>(Ks + r, GQ, red);
        if (a < m.d) gv_bh[a] = y * coef;
        y = block_matvec<K, true>(Vs + r, GQ, red);
        if (a < m.d) gk_bh[a] = (y + gzs[a]) * coef * fminf(Ks[r + a], 1.f);
      }
      __syncthreads();  // the next tile overwrites tok, the tiles, ud, WA and WG
    }
  }

  // d loss / d alpha of this (image, head): block sums in a fixed order
  const int warp = tid >> 5, lane = tid & 31;
#pragma unroll
  for (int q = 0; q < 5; ++q) {
    double v = dl[q];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) s_dl[warp][q] = v;
  }
  __syncthreads();
  if (tid == 0) {
    double tot[5] = {};
    for (int w = 0; w < kWarps; ++w)
      for (int q = 0; q < 5; ++q) tot[q] += s_dl[w][q];
    double* ga = galpha + (static_cast<int64_t>(b) * m.H + h) * m.S;
    if (main_pass) {
      // w(i, j) = alpha_{S-1} + [local pair] (alpha_l - alpha_{s_minus})
      for (int s = 0; s < m.S; ++s) ga[s] = 0.0;
      ga[m.S - 1] += tot[4];
      if (pass.mk) {
        for (int l = 0; l < 4 && l < m.S; ++l) {
          ga[l] += tot[l];
          ga[pass.s_minus] -= tot[l];
        }
      }
    } else {
      ga[pass.s_plus] += tot[4];
      ga[pass.s_minus] -= tot[4];
    }
  }
}

// ---- launchers ----

// Calls fn(Cfg{}) with the configuration for head width d.
template <class Fn>
void with_cfg(int d, Fn&& fn) {
  if (d <= 16) return fn(Cfg<16, 64>{});
  if (d <= 32) return fn(Cfg<32, 64>{});
  if (d <= 64) return fn(Cfg<64, 64>{});
  return fn(Cfg<128, 16>{});
}

template <class K>
size_t fwd_smem(int mk) {
  return sizeof(float) * (K::DP * K::LDM + K::DP + 3 * K::TR * K::P + kThreads + K::T * mk);
}
template <class K>
size_t bwd_smem(int mk) {
  return sizeof(float) *
         (2 * K::DP * K::LDM + 2 * K::DP + 4 * K::TR * K::P + K::TRU + kThreads + 2 * K::T * mk);
}

}  // namespace

void ripple_fwd(const float* qkv, const float* logits, int64_t B, int64_t N, int64_t D,
                int64_t heads, int64_t stages, int64_t grid, float* out, float* den,
                cudaStream_t stream) {
  const Geom m = ripple_detail::make_geom(B, N, D, heads, stages, grid);
  if (B == 0) return;
  with_cfg(m.d, [&](auto cfg) {
    using K = decltype(cfg);
    const Plan plan = ripple_detail::make_plan(m, K::T);
    auto launch = [&](const Pass& p) {
      const size_t smem = fwd_smem<K>(p.mk);
      allow_dynamic_smem(reinterpret_cast<const void*>(&ripple_fwd_kernel<K>), smem,
                         "ripple_fwd_kernel");
      ripple_fwd_kernel<K><<<dim3(m.H, m.B), kThreads, smem, stream>>>(qkv, logits, m, p, out, den);
      after_launch("ripple_fwd_kernel", stream);
    };
    launch(plan.main);
    for (const Pass& p : plan.extra) launch(p);
  });
}

int64_t ripple_bwd_workspace_doubles(int64_t B, int64_t heads, int64_t stages) {
  return (B * kRippleGalphaRowsPerImage + kRippleLogitsPartialRows) * heads * stages;
}

void ripple_bwd(const float* gout, const float* qkv, const float* logits, const float* out,
                const float* den, int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages,
                int64_t grid, float* gqkv, float* glogits, double* workspace, cudaStream_t stream) {
  const Geom m = ripple_detail::make_geom(B, N, D, heads, stages, grid);
  if (ripple_detail::empty_batch_backward(B, heads, stages, glogits, stream)) return;
  with_cfg(m.d, [&](auto cfg) {
    using K = decltype(cfg);
    const Plan plan = ripple_detail::make_plan(m, K::T);
    auto launch = [&](const Pass& p) {
      const size_t smem = bwd_smem<K>(p.mk);
      allow_dynamic_smem(reinterpret_cast<const void*>(&ripple_bwd_kernel<K>), smem,
                         "ripple_bwd_kernel");
      ripple_bwd_kernel<K><<<dim3(m.H, m.B), kThreads, smem, stream>>>(gout, qkv, logits, out, den,
                                                                       m, p, gqkv, workspace);
      after_launch("ripple_bwd_kernel", stream);
    };
    launch(plan.main);
    for (const Pass& p : plan.extra) launch(p);
  });
  if (glogits) ripple_logits_grad(workspace, logits, B, heads, stages, glogits, stream);
}

}  // namespace lvit::cuda
