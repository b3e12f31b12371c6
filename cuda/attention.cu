// Softmax attention: the launchers declared in cuda/attention.cuh, the backward's delta kernel
// and the SIMT (CUDA-core, fp32 arithmetic) flash kernels used for f32 tensors and for bf16
// with d = 8. The bf16 tensor-core kernels are in cuda/attention_small.cu (N <= 128, d <= 64)
// and cuda/attention_mma.cu (the rest).
//
// SIMT kernels: a block of 128 threads owns a tile of T rows (T = 64, or 32 for d = 128, to keep
// shared memory and registers in bounds) of one (batch, head) and streams the other side in
// tiles of T. Threads form a 16 x 8 grid (ty = tid / 8, tx = tid % 8); thread (ty, tx) owns tile
// rows ty*R .. ty*R+R-1 (R = T/16), score columns tx + 8j (j < T/8) and output channels tx + 8j
// (j < d/8). The 8 threads of a row group are 8 consecutive lanes, so row max and sum are three
// xor shuffles. Operands live in shared memory as fp32 with row stride d+1 (score tiles T+1),
// which makes every inner-loop read conflict-free: a warp reads 4 rows (one per ty) at strides
// that land in distinct banks, and 8 consecutive columns.
#include <cuda_bf16.h>

#include "cuda/attention_common.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

using attn::kLn2;
using attn::kLog2e;
using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

// ---- backward preprocessing: delta[b, h, n] = sum_c dO[b, n, h*d + c] * O[b, n, h*d + c] -----
// One warp per (token row, head): lanes stride the d channels (coalesced), then a warp sum.
template <typename T>
__global__ void attn_delta_kernel(const T* __restrict__ gout, const T* __restrict__ out,
                                  float* __restrict__ delta, int64_t items, int N, int H, int d) {
  const int64_t w = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= items) return;     // warp-uniform
  const int64_t row = w / H;  // b*N + n
  const int h = static_cast<int>(w % H);
  const int64_t base = row * H * d + int64_t{h} * d;
  float s = 0.f;
  for (int c = lane; c < d; c += 32) s += to_f32(gout[base + c]) * to_f32(out[base + c]);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) {
    const int64_t b = row / N, n = row % N;
    delta[(b * H + h) * N + n] = s;
  }
}

// ---- SIMT kernels ------------------------------------------------------------------------------

template <int D>
struct Simt {
  static constexpr int kThreads = 128;
  static constexpr int kT = D >= 128 ? 32 : 64;  // tile rows = tile columns
  static constexpr int kR = kT / 16;             // rows per thread
  static constexpr int kC = kT / 8;              // score columns per thread
  static constexpr int kDC = D / 8;              // output channels per thread
  static constexpr int kLd = D + 1;              // row stride of [T][d] operand tiles
  static constexpr int kLdS = kT + 1;            // row stride of [T][T] score tiles
  static constexpr size_t kOperand = size_t{kT} * kLd;
  static constexpr size_t kScores = size_t{kT} * kLdS;
};

// dst[r][c] = src[(first + r) * ld + c] as fp32 for r < T, c < d; rows past N are zero (so they
// add nothing to any product and never produce inf or NaN).
template <typename T, int D>
__device__ __forceinline__ void load_tile(float* dst, const T* __restrict__ src, int64_t ld,
                                          int first, int N) {
  using C = Simt<D>;
  for (int i = threadIdx.x; i < C::kT * D; i += C::kThreads) {
    const int r = i / D, c = i % D, tok = first + r;
    dst[r * C::kLd + c] = tok < N ? to_f32(src[tok * ld + c]) : 0.f;
  }
}

// acc[i][j] += sum_c A[ty*R + i][c] * B[tx + 8j][c] over c < d: a T x T tile of A B^T, A and B
// [T][d] tiles with stride d+1.
template <int D>
__device__ __forceinline__ void mm_abt(float (&acc)[Simt<D>::kR][Simt<D>::kC],
                                       const float* __restrict__ A, const float* __restrict__ B,
                                       int ty, int tx) {
  using C = Simt<D>;
#pragma unroll 8
  for (int c = 0; c < D; ++c) {
    float a[C::kR], b[C::kC];
#pragma unroll
    for (int i = 0; i < C::kR; ++i) a[i] = A[(ty * C::kR + i) * C::kLd + c];
#pragma unroll
    for (int j = 0; j < C::kC; ++j) b[j] = B[(tx + 8 * j) * C::kLd + c];
#pragma unroll
    for (int i = 0; i < C::kR; ++i)
#pragma unroll
      for (int j = 0; j < C::kC; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

// acc[i][j] += sum_s P[ty*R + i][s] * B[s][tx + 8j] over s < T: a T x d tile of P B, P a
// [T][T] score tile (stride T+1), B a [T][d] operand tile (stride d+1).
template <int D>
__device__ __forceinline__ void mm_ab(float (&acc)[Simt<D>::kR][Simt<D>::kDC],
                                      const float* __restrict__ P, const float* __restrict__ B,
                                      int ty, int tx) {
  using C = Simt<D>;
#pragma unroll 8
  for (int s = 0; s < C::kT; ++s) {
    float a[C::kR], b[C::kDC];
#pragma unroll
    for (int i = 0; i < C::kR; ++i) a[i] = P[(ty * C::kR + i) * C::kLdS + s];
#pragma unroll
    for (int j = 0; j < C::kDC; ++j) b[j] = B[s * C::kLd + tx + 8 * j];
#pragma unroll
    for (int i = 0; i < C::kR; ++i)
#pragma unroll
      for (int j = 0; j < C::kDC; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

// Reduction over the 8 lanes of a row group (consecutive lanes: tid = ty*8 + tx).
__device__ __forceinline__ float group8_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
}
__device__ __forceinline__ float group8_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v + __shfl_xor_sync(0xffffffffu, v, 4);
}

// Which (batch, head, tile) a block owns: blockIdx.x = (b*H + h) * tiles + tile, tiles fastest
// so that the blocks sharing one head's K/V run together (L2 reuse).
struct BlockPos {
  int64_t b, bh;
  int h, tile;
};
__device__ __forceinline__ BlockPos block_pos(int H, int tiles) {
  BlockPos p;
  p.tile = static_cast<int>(blockIdx.x % tiles);
  p.bh = blockIdx.x / tiles;
  p.b = p.bh / H;
  p.h = static_cast<int>(p.bh % H);
  return p;
}

// Forward. Shared: Q [T][d+1], K [T][d+1], V [T][d+1], P [T][T+1] (fp32).
// Per query row, the running max m (log2 domain), sum l and output o are rescaled by
// exp2(m_old - m_new) whenever a key tile raises the max; every key tile holds at least one
// real key (k0 < N), so m is finite after the first tile and exp2(-inf) = 0 starts it cleanly.
template <typename T, int D>
__global__ void __launch_bounds__(Simt<D>::kThreads)
    attn_fwd_simt(const T* __restrict__ qkv, T* __restrict__ out, float* __restrict__ lse, int N,
                  int H, int tiles, float scale_log2) {
  using C = Simt<D>;
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Ks = Qs + C::kOperand;
  float* Vs = Ks + C::kOperand;
  float* Ps = Vs + C::kOperand;
  const BlockPos pos = block_pos(H, tiles);
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const int q0 = pos.tile * C::kT;
  const int64_t HD = int64_t{H} * D, ld = 3 * HD;
  const T* Qg = qkv + pos.b * N * ld + int64_t{pos.h} * D;

  load_tile<T, D>(Qs, Qg, ld, q0, N);
  float m[C::kR], l[C::kR], o[C::kR][C::kDC];
#pragma unroll
  for (int i = 0; i < C::kR; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < C::kDC; ++j) o[i][j] = 0.f;
  }

  for (int k0 = 0; k0 < N; k0 += C::kT) {
    __syncthreads();  // the previous tile's K, V, P are no longer read
    load_tile<T, D>(Ks, Qg + HD, ld, k0, N);
    load_tile<T, D>(Vs, Qg + 2 * HD, ld, k0, N);
    __syncthreads();
    float s[C::kR][C::kC];
#pragma unroll
    for (int i = 0; i < C::kR; ++i)
#pragma unroll
      for (int j = 0; j < C::kC; ++j) s[i][j] = 0.f;
    mm_abt<D>(s, Qs, Ks, ty, tx);
#pragma unroll
    for (int i = 0; i < C::kR; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < C::kC; ++j) {
        s[i][j] = k0 + tx + 8 * j < N ? s[i][j] * scale_log2 : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      const float m_new = fmaxf(m[i], group8_max(mx));
      const float alpha = exp2f(m[i] - m_new);
      m[i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < C::kC; ++j) {
        const float p = exp2f(s[i][j] - m_new);
        Ps[(ty * C::kR + i) * C::kLdS + tx + 8 * j] = p;
        sum += p;
      }
      l[i] = l[i] * alpha + group8_sum(sum);
#pragma unroll
      for (int j = 0; j < C::kDC; ++j) o[i][j] *= alpha;
    }
    __syncthreads();
    mm_ab<D>(o, Ps, Vs, ty, tx);
  }

#pragma unroll
  for (int i = 0; i < C::kR; ++i) {
    const int q = q0 + ty * C::kR + i;
    if (q >= N) continue;
    const float inv = 1.f / l[i];
    T* orow = out + (pos.b * N + q) * HD + int64_t{pos.h} * D;
#pragma unroll
    for (int j = 0; j < C::kDC; ++j) orow[tx + 8 * j] = from_f32<T>(o[i][j] * inv);
    if (tx == 0) lse[pos.bh * N + q] = (m[i] + log2f(l[i])) * kLn2;
  }
}

// dq for one query tile: dS = P * (dP - delta), dq = scale * dS K over all key tiles.
// Shared: Q, dO, K, V [T][d+1], dS [T][T+1].
template <typename T, int D>
__global__ void __launch_bounds__(Simt<D>::kThreads)
    attn_bwd_dq_simt(const T* __restrict__ qkv, const T* __restrict__ gout,
                     const float* __restrict__ lse, const float* __restrict__ delta,
                     T* __restrict__ gqkv, int N, int H, int tiles, float scale_log2, float scale) {
  using C = Simt<D>;
  extern __shared__ float smem[];
  float* Qs = smem;
  float* dOs = Qs + C::kOperand;
  float* Ks = dOs + C::kOperand;
  float* Vs = Ks + C::kOperand;
  float* Ss = Vs + C::kOperand;
  const BlockPos pos = block_pos(H, tiles);
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const int q0 = pos.tile * C::kT;
  const int64_t HD = int64_t{H} * D, ld = 3 * HD;
  const T* Qg = qkv + pos.b * N * ld + int64_t{pos.h} * D;

  load_tile<T, D>(Qs, Qg, ld, q0, N);
  load_tile<T, D>(dOs, gout + pos.b * N * HD + int64_t{pos.h} * D, HD, q0, N);
  float lse2[C::kR], dl[C::kR], dq[C::kR][C::kDC];
#pragma unroll
  for (int i = 0; i < C::kR; ++i) {
    const int q = q0 + ty * C::kR + i;
    lse2[i] = q < N ? lse[pos.bh * N + q] * kLog2e : 0.f;
    dl[i] = q < N ? delta[pos.bh * N + q] : 0.f;
#pragma unroll
    for (int j = 0; j < C::kDC; ++j) dq[i][j] = 0.f;
  }

  for (int k0 = 0; k0 < N; k0 += C::kT) {
    __syncthreads();
    load_tile<T, D>(Ks, Qg + HD, ld, k0, N);
    load_tile<T, D>(Vs, Qg + 2 * HD, ld, k0, N);
    __syncthreads();
    float s[C::kR][C::kC], dp[C::kR][C::kC];
#pragma unroll
    for (int i = 0; i < C::kR; ++i)
#pragma unroll
      for (int j = 0; j < C::kC; ++j) s[i][j] = dp[i][j] = 0.f;
    mm_abt<D>(s, Qs, Ks, ty, tx);
    mm_abt<D>(dp, dOs, Vs, ty, tx);
#pragma unroll
    for (int i = 0; i < C::kR; ++i)
#pragma unroll
      for (int j = 0; j < C::kC; ++j) {
        const float p = k0 + tx + 8 * j < N ? exp2f(s[i][j] * scale_log2 - lse2[i]) : 0.f;
        Ss[(ty * C::kR + i) * C::kLdS + tx + 8 * j] = p * (dp[i][j] - dl[i]);
      }
    __syncthreads();
    mm_ab<D>(dq, Ss, Ks, ty, tx);
  }

#pragma unroll
  for (int i = 0; i < C::kR; ++i) {
    const int q = q0 + ty * C::kR + i;
    if (q >= N) continue;
    T* grow = gqkv + (pos.b * N + q) * ld + int64_t{pos.h} * D;
#pragma unroll
    for (int j = 0; j < C::kDC; ++j) grow[tx + 8 * j] = from_f32<T>(dq[i][j] * scale);
  }
}

// dk, dv for one key tile, streaming query tiles. The tile is computed transposed (rows = keys,
// columns = queries), so lse and delta are per column and come from shared memory.
// Shared: K, V, Q, dO [T][d+1], P^T, dS^T [T][T+1], lse*log2(e) and delta [T].
template <typename T, int D>
__global__ void __launch_bounds__(Simt<D>::kThreads)
    attn_bwd_dkdv_simt(const T* __restrict__ qkv, const T* __restrict__ gout,
                       const float* __restrict__ lse, const float* __restrict__ delta,
                       T* __restrict__ gqkv, int N, int H, int tiles, float scale_log2,
                       float scale) {
  using C = Simt<D>;
  extern __shared__ float smem[];
  float* Ks = smem;
  float* Vs = Ks + C::kOperand;
  float* Qs = Vs + C::kOperand;
  float* dOs = Qs + C::kOperand;
  float* Ps = dOs + C::kOperand;
  float* dSs = Ps + C::kScores;
  float* Ls = dSs + C::kScores;
  float* Dl = Ls + C::kT;
  const BlockPos pos = block_pos(H, tiles);
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const int k0 = pos.tile * C::kT;
  const int64_t HD = int64_t{H} * D, ld = 3 * HD;
  const T* Qg = qkv + pos.b * N * ld + int64_t{pos.h} * D;
  const T* dOg = gout + pos.b * N * HD + int64_t{pos.h} * D;

  load_tile<T, D>(Ks, Qg + HD, ld, k0, N);
  load_tile<T, D>(Vs, Qg + 2 * HD, ld, k0, N);
  float dk[C::kR][C::kDC], dv[C::kR][C::kDC];
#pragma unroll
  for (int i = 0; i < C::kR; ++i)
#pragma unroll
    for (int j = 0; j < C::kDC; ++j) dk[i][j] = dv[i][j] = 0.f;

  for (int q0 = 0; q0 < N; q0 += C::kT) {
    __syncthreads();
    load_tile<T, D>(Qs, Qg, ld, q0, N);
    load_tile<T, D>(dOs, dOg, HD, q0, N);
    for (int r = threadIdx.x; r < C::kT; r += C::kThreads) {
      const int q = q0 + r;
      Ls[r] = q < N ? lse[pos.bh * N + q] * kLog2e : 0.f;
      Dl[r] = q < N ? delta[pos.bh * N + q] : 0.f;
    }
    __syncthreads();
    float st[C::kR][C::kC], dpt[C::kR][C::kC];
#pragma unroll
    for (int i = 0; i < C::kR; ++i)
#pragma unroll
      for (int j = 0; j < C::kC; ++j) st[i][j] = dpt[i][j] = 0.f;
    mm_abt<D>(st, Ks, Qs, ty, tx);
    mm_abt<D>(dpt, Vs, dOs, ty, tx);
#pragma unroll
    for (int i = 0; i < C::kR; ++i)
#pragma unroll
      for (int j = 0; j < C::kC; ++j) {
        const int c = tx + 8 * j;
        const float p = q0 + c < N ? exp2f(st[i][j] * scale_log2 - Ls[c]) : 0.f;
        Ps[(ty * C::kR + i) * C::kLdS + c] = p;
        dSs[(ty * C::kR + i) * C::kLdS + c] = p * (dpt[i][j] - Dl[c]);
      }
    __syncthreads();
    mm_ab<D>(dv, Ps, dOs, ty, tx);
    mm_ab<D>(dk, dSs, Qs, ty, tx);
  }

#pragma unroll
  for (int i = 0; i < C::kR; ++i) {
    const int key = k0 + ty * C::kR + i;
    if (key >= N) continue;
    T* grow = gqkv + (pos.b * N + key) * ld + int64_t{pos.h} * D;
#pragma unroll
    for (int j = 0; j < C::kDC; ++j) {
      grow[HD + tx + 8 * j] = from_f32<T>(dk[i][j] * scale);
      grow[2 * HD + tx + 8 * j] = from_f32<T>(dv[i][j]);
    }
  }
}

// ---- launchers ---------------------------------------------------------------------------------

template <typename T, int D>
void launch_fwd_simt(const void* qkv, void* out, float* lse, const AttentionDims& d,
                     cudaStream_t stream) {
  using C = Simt<D>;
  const int64_t tiles = (d.tokens + C::kT - 1) / C::kT;
  const size_t smem = (3 * C::kOperand + C::kScores) * sizeof(float);
  allow_dynamic_smem(reinterpret_cast<const void*>(&attn_fwd_simt<T, D>), smem, "attn_fwd_simt");
  attn_fwd_simt<T, D><<<attn::grid_blocks(tiles, d), C::kThreads, smem, stream>>>(
      static_cast<const T*>(qkv), static_cast<T*>(out), lse, static_cast<int>(d.tokens),
      static_cast<int>(d.heads), static_cast<int>(tiles), attn::scales_for(D).scale_log2);
  after_launch("attn_fwd_simt", stream);
}

template <typename T, int D>
void launch_bwd_simt(const void* gout, const void* qkv, const float* lse, const float* delta,
                     void* gqkv, const AttentionDims& d, cudaStream_t stream) {
  using C = Simt<D>;
  const int64_t tiles = (d.tokens + C::kT - 1) / C::kT;
  const attn::Scales sc = attn::scales_for(D);
  const int N = static_cast<int>(d.tokens), H = static_cast<int>(d.heads);
  const T* q = static_cast<const T*>(qkv);
  const T* go = static_cast<const T*>(gout);
  T* g = static_cast<T*>(gqkv);

  const size_t smem_dq = (4 * C::kOperand + C::kScores) * sizeof(float);
  allow_dynamic_smem(reinterpret_cast<const void*>(&attn_bwd_dq_simt<T, D>), smem_dq,
                     "attn_bwd_dq_simt");
  attn_bwd_dq_simt<T, D><<<attn::grid_blocks(tiles, d), C::kThreads, smem_dq, stream>>>(
      q, go, lse, delta, g, N, H, static_cast<int>(tiles), sc.scale_log2, sc.scale);
  after_launch("attn_bwd_dq_simt", stream);

  const size_t smem_kv = (4 * C::kOperand + 2 * C::kScores + 2 * C::kT) * sizeof(float);
  allow_dynamic_smem(reinterpret_cast<const void*>(&attn_bwd_dkdv_simt<T, D>), smem_kv,
                     "attn_bwd_dkdv_simt");
  attn_bwd_dkdv_simt<T, D><<<attn::grid_blocks(tiles, d), C::kThreads, smem_kv, stream>>>(
      q, go, lse, delta, g, N, H, static_cast<int>(tiles), sc.scale_log2, sc.scale);
  after_launch("attn_bwd_dkdv_simt", stream);
}

template <typename T>
void launch_delta(const void* gout, const void* out, float* delta, const AttentionDims& d,
                  cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t items = d.batch * d.tokens * d.heads;  // one warp each
  const int64_t blocks = (items + kThreads / 32 - 1) / (kThreads / 32);
  attn_delta_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(gout), static_cast<const T*>(out), delta, items,
      static_cast<int>(d.tokens), static_cast<int>(d.heads), static_cast<int>(d.head_dim));
  after_launch("attn_delta_kernel", stream);
}

// The kernel family that runs for (dtype, dims, request); throws for impossible requests.
enum class Family { simt, tiled, small };

Family pick_family(DType dtype, const AttentionDims& d, AttentionKernel kernel, const char* where) {
  if (dtype != DType::f32 && dtype != DType::bf16)
    attn::unsupported("unsupported dtype", static_cast<int>(dtype), "dtype must be f32 or bf16",
                      where, __FILE__, __LINE__);
  if (!attention_head_dim_supported(d.head_dim))
    attn::unsupported("unsupported head dim", d.head_dim, "head dim must be 8, 16, 32, 64 or 128",
                      where, __FILE__, __LINE__);
  const bool mma_ok = dtype == DType::bf16 && d.head_dim >= 16;
  const bool forced_mma = kernel == AttentionKernel::mma || kernel == AttentionKernel::mma_tiled ||
                          kernel == AttentionKernel::mma_small;
  if (forced_mma && !mma_ok)
    attn::unsupported("no tensor-core kernel", d.head_dim,
                      "the mma kernels need bf16 and head dim 16, 32, 64 or 128", where, __FILE__,
                      __LINE__);
  const bool small_ok = mma_ok && detail::attention_small_supported(d);
  if (kernel == AttentionKernel::mma_small && !small_ok)
    attn::unsupported("no one-block-per-head kernel", d.tokens,
                      "the small kernels need bf16, head dim 16, 32 or 64 and N <= 128", where,
                      __FILE__, __LINE__);
  if (!mma_ok || kernel == AttentionKernel::simt) return Family::simt;
  if (kernel == AttentionKernel::mma_tiled) return Family::tiled;
  return small_ok ? Family::small : Family::tiled;
}

bool empty_problem(const AttentionDims& d) { return d.batch == 0 || d.tokens == 0 || d.heads == 0; }

}  // namespace

void attention_fwd(DType dtype, const void* qkv, void* out, float* lse, const AttentionDims& d,
                   cudaStream_t stream, AttentionKernel kernel) {
  const Family family = pick_family(dtype, d, kernel, "attention_fwd");
  if (empty_problem(d)) return;
  if (family == Family::small) return detail::attention_fwd_small(qkv, out, lse, d, stream);
  if (family == Family::tiled) return detail::attention_fwd_mma(qkv, out, lse, d, stream);
  attn::with_head_dim(d.head_dim, "attention_fwd", [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    if (dtype == DType::f32)
      launch_fwd_simt<float, D>(qkv, out, lse, d, stream);
    else
      launch_fwd_simt<bf16, D>(qkv, out, lse, d, stream);
  });
}

void attention_bwd(DType dtype, const void* gout, const void* qkv, const void* out,
                   const float* lse, float* delta, void* gqkv, const AttentionDims& d,
                   cudaStream_t stream, AttentionKernel kernel) {
  const Family family = pick_family(dtype, d, kernel, "attention_bwd");
  if (empty_problem(d)) return;
  if (family == Family::small)
    return detail::attention_bwd_small(gout, qkv, out, lse, gqkv, d, stream);
  if (family == Family::tiled)
    return detail::attention_bwd_mma(gout, qkv, out, lse, delta, gqkv, d, stream);
  if (dtype == DType::f32)
    launch_delta<float>(gout, out, delta, d, stream);
  else
    launch_delta<bf16>(gout, out, delta, d, stream);
  attn::with_head_dim(d.head_dim, "attention_bwd", [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    if (dtype == DType::f32)
      launch_bwd_simt<float, D>(gout, qkv, lse, delta, gqkv, d, stream);
    else
      launch_bwd_simt<bf16, D>(gout, qkv, lse, delta, gqkv, d, stream);
  });
}

bool attention_bwd_needs_delta(DType dtype, const AttentionDims& dims) {
  return pick_family(dtype, dims, AttentionKernel::automatic, "attention_bwd_needs_delta") !=
         Family::small;
}

}  // namespace lvit::cuda
