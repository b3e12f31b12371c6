// Hydra attention: the generic kernels and the entry points (declared in cuda/hydra.cuh), which
// take the register-resident fast path of cuda/hydra_fast.cu where it applies; the math and
// the CPU reference are in ops/cpu/hydra.cpp. The generic kernels below run any shape.
//
// Two sets of kernels with the same structure and workspace: the fast ones (cuda/hydra_fast.cu:
// rows in registers through 16-byte loads, for branch widths C a multiple of 8 that split into
// power-of-two lane groups, and 16-byte-aligned tensors; both ViT presets) and the generic ones
// described here, for every other shape (C = 1, odd C, misaligned views, ...). The entry points
// pick.
//
// Generic mapping: grid (chunks, B), 8 warps per CTA; a CTA owns image b's token rows [t0, t1)
// (at most kChunkRows). A warp takes one row at a time: it stages the row in shared memory
// (coalesced), computes the per-branch statistics (sum of squares, in backward also g . x), then
// writes that row's elementwise results. Sums over the chunk's tokens (kv in forward, gkv in
// backward) are kept by channel owners: thread t owns channels t, t + 256, ..., so every partial
// has a single writer and a fixed summation order; the second kernel of each direction adds the
// chunks' partials in chunk order. Results are therefore deterministic, with no atomics.
//
// Per-branch statistics: with C <= 32 channels per branch one lane walks a whole branch (in
// channel order, as the CPU does); with C > 32 the warp strides over the branch and reduces by
// shuffles. Staged rows are padded (channel c at c + c / 32), so that lanes walking branches C
// apart land in distinct banks (C = 32 would otherwise be a 32-way conflict).
//
// Traffic per image: forward reads k, v (kernel 1) and q (kernel 2) once and writes out once,
// 4 N D floats plus B * chunks * D of partials; backward reads q, g (1) and k, v (2), writes
// gqkv once: 7 N D floats. Arithmetic is a few flops per element: these kernels are bound by
// memory bandwidth, and the chunking (about 32 rows per CTA) gives B * N / 32 CTAs to fill the
// GPU at the batch sizes of training.
#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/check.cuh"
#include "cuda/hydra.cuh"
#include "cuda/hydra_common.cuh"
#include "cuda/launch.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

using namespace hydra_detail;

struct Dims {
  int N, D;
  int C;       // channels per branch
  int nb;      // branches
  int chunks;  // CTAs per image
  int rows;    // token rows per chunk (the last chunk may have fewer)
  int RL;      // floats of one staged (padded) row
};

__host__ __device__ __forceinline__ int padded(int c) { return c + (c >> 5); }

Dims make_dims(int64_t N, int64_t D, int64_t branches) {
  Dims m{};
  m.N = static_cast<int>(N);
  m.D = static_cast<int>(D);
  m.nb = static_cast<int>(branches);
  m.C = static_cast<int>(D / branches);
  m.chunks = static_cast<int>((N + kChunkRows - 1) / kChunkRows);
  m.rows = static_cast<int>((N + m.chunks - 1) / m.chunks);
  m.RL = padded(m.D - 1) + 1;
  return m;
}

// Per-branch sums over one staged row x (padded): ssq[br] = sum x^2 and, when DOT,
// dot[br] = sum (y * s) x with y a second staged row and s a padded per-channel vector
// (the upstream gradient of phi(x) is y * s). Called by all 32 lanes of a warp; the results
// are visible to the warp after a __syncwarp().
template <bool DOT>
__device__ void branch_stats(const float* x, const float* y, const float* s, const Dims& m,
                             float* ssq, float* dot, int lane) {
  if (m.C <= 32) {
    for (int br = lane; br < m.nb; br += 32) {
      float a = 0.f, p = 0.f;
      for (int i = 0; i < m.C; ++i) {
        const int c = padded(br * m.C + i);
        const float xv = x[c];
        a = fmaf(xv, xv, a);
        if constexpr (DOT) p = fmaf(y[c] * s[c], xv, p);
      }
      ssq[br] = a;
      if constexpr (DOT) dot[br] = p;
    }
  } else {
    for (int br = 0; br < m.nb; ++br) {
      float a = 0.f, p = 0.f;
      for (int i = lane; i < m.C; i += 32) {
        const int c = padded(br * m.C + i);
        const float xv = x[c];
        a = fmaf(xv, xv, a);
        if constexpr (DOT) p = fmaf(y[c] * s[c], xv, p);
      }
      a = warp_sum(a);
      if constexpr (DOT) p = warp_sum(p);
      if (lane == 0) {
        ssq[br] = a;
        if constexpr (DOT) dot[br] = p;
      }
    }
  }
}

// ---- forward ----

// partial[b, chunk, :] = sum over the chunk's tokens of phi(k_t) * v_t.
// smem: acc [D] | k rows [kWarps][RL] | 1 / max(norm, eps) [kWarps][nb]
template <typename T>
__global__ void __launch_bounds__(kCtaThreads)
    hydra_kv_partial_kernel(const T* __restrict__ qkv, const Dims m, float* __restrict__ partial) {
  extern __shared__ float sm[];
  float* acc = sm;
  float* rows = acc + m.D;
  float* inv = rows + kWarps * m.RL;
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t0 = chunk * m.rows, t1 = min(m.N, t0 + m.rows);
  const int64_t row = 3 * static_cast<int64_t>(m.D);  // qkv row stride
  const T* img = qkv + static_cast<int64_t>(b) * m.N * row;
  float* xr = rows + warp * m.RL;
  float* iv = inv + warp * m.nb;

  for (int c = threadIdx.x; c < m.D; c += kCtaThreads) acc[c] = 0.f;  // owner-only: no barrier
  for (int base = t0; base < t1; base += kWarps) {
    const int t = base + warp;
    if (t < t1) {
      const T* k = img + t * row + m.D;
      for (int c = lane; c < m.D; c += 32) xr[padded(c)] = ld(k[c]);
      __syncwarp();
      branch_stats<false>(xr, nullptr, nullptr, m, iv, nullptr, lane);
      __syncwarp();
      for (int br = lane; br < m.nb; br += 32) iv[br] = 1.f / fmaxf(sqrtf(iv[br]), kEps);
    }
    __syncthreads();
    const int nrows = min(kWarps, t1 - base);
    for (int c = threadIdx.x; c < m.D; c += kCtaThreads) {
      const int br = c / m.C;
      float s = acc[c];
      for (int w = 0; w < nrows; ++w) {
        const float v = ld(img[(base + w) * row + 2 * m.D + c]);
        s += rows[w * m.RL + padded(c)] * inv[w * m.nb + br] * v;
      }
      acc[c] = s;
    }
    __syncthreads();  // the rows are restaged next iteration
  }
  float* dst = partial + (static_cast<int64_t>(b) * m.chunks + chunk) * m.D;
  for (int c = threadIdx.x; c < m.D; c += kCtaThreads) dst[c] = acc[c];
}

// kv[b] = the sum of the partials (written by chunk 0); out_t = phi(q_t) * kv[b].
// smem: kv [RL] | q rows [kWarps][RL] | 1 / max(norm, eps) [kWarps][nb]
template <typename T>
__global__ void __launch_bounds__(kCtaThreads)
    hydra_out_kernel(const T* __restrict__ qkv, const float* __restrict__ partial, const Dims m,
                     T* __restrict__ out, float* __restrict__ kv) {
  extern __shared__ float sm[];
  float* kvs = sm;
  float* rows = kvs + m.RL;
  float* inv = rows + kWarps * m.RL;
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t0 = chunk * m.rows, t1 = min(m.N, t0 + m.rows);
  const int64_t row = 3 * static_cast<int64_t>(m.D);  // qkv row stride
  const T* img = qkv + static_cast<int64_t>(b) * m.N * row;
  float* xr = rows + warp * m.RL;
  float* iv = inv + warp * m.nb;

  const float* part = partial + static_cast<int64_t>(b) * m.chunks * m.D;
  for (int c = threadIdx.x; c < m.D; c += kCtaThreads) {
    float s = 0.f;
    for (int ch = 0; ch < m.chunks; ++ch) s += part[ch * m.D + c];
    kvs[padded(c)] = s;
    if (chunk == 0) kv[static_cast<int64_t>(b) * m.D + c] = s;
  }
  __syncthreads();
  for (int t = t0 + warp; t < t1; t += kWarps) {
    const T* q = img + t * row;
    for (int c = lane; c < m.D; c += 32) xr[padded(c)] = ld(q[c]);
    __syncwarp();
    branch_stats<false>(xr, nullptr, nullptr, m, iv, nullptr, lane);
    __syncwarp();
    for (int br = lane; br < m.nb; br += 32) iv[br] = 1.f / fmaxf(sqrtf(iv[br]), kEps);
    __syncwarp();
    T* o = out + (static_cast<int64_t>(b) * m.N + t) * m.D;
    for (int c = lane; c < m.D; c += 32) o[c] = st<T>(xr[padded(c)] * iv[c / m.C] * kvs[padded(c)]);
    __syncwarp();  // the next row overwrites xr and iv
  }
}

// ---- backward ----

// Per-row statistics of the backward kernels, [kWarps][3][nb]: the norm, gphi . x, and
// 1 / max(norm, eps).
struct RowStats {
  float *norm, *dot, *inv;
};
__device__ __forceinline__ RowStats row_stats(float* base, int warp, int nb) {
  float* p = base + warp * 3 * nb;
  return {p, p + nb, p + 2 * nb};
}

// gq_t = d/dq_t through phi(q_t) with d/dphi(q_t) = g_t * kv; partial[b, chunk, :] = the
// chunk's sum of g_t * phi(q_t) (its part of d loss / d kv).
// smem: kv [RL] | q rows [kWarps][RL] | g rows [kWarps][RL] | stats [kWarps][3][nb] | acc [D]
template <typename T>
__global__ void __launch_bounds__(kCtaThreads)
    hydra_gq_kernel(const T* __restrict__ gout, const T* __restrict__ qkv,
                    const float* __restrict__ kv, const Dims m, T* __restrict__ gqkv,
                    float* __restrict__ partial) {
  extern __shared__ float sm[];
  float* kvs = sm;
  float* qrows = kvs + m.RL;
  float* grows = qrows + kWarps * m.RL;
  float* stats = grows + kWarps * m.RL;
  float* acc = stats + kWarps * 3 * m.nb;
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t0 = chunk * m.rows, t1 = min(m.N, t0 + m.rows);
  const int64_t row = 3 * static_cast<int64_t>(m.D);  // qkv row stride
  const T* img = qkv + static_cast<int64_t>(b) * m.N * row;
  float* xr = qrows + warp * m.RL;
  float* yr = grows + warp * m.RL;
  const RowStats rs = row_stats(stats, warp, m.nb);

  for (int c = threadIdx.x; c < m.D; c += kCtaThreads) {
    kvs[padded(c)] = kv[static_cast<int64_t>(b) * m.D + c];
    acc[c] = 0.f;
  }
  __syncthreads();
  for (int base = t0; base < t1; base += kWarps) {
    const int t = base + warp;
    if (t < t1) {
      const T* q = img + t * row;
      const T* g = gout + (static_cast<int64_t>(b) * m.N + t) * m.D;
      for (int c = lane; c < m.D; c += 32) {
        xr[padded(c)] = ld(q[c]);
        yr[padded(c)] = ld(g[c]);
      }
      __syncwarp();
      branch_stats<true>(xr, yr, kvs, m, rs.norm, rs.dot, lane);
      __syncwarp();
      for (int br = lane; br < m.nb; br += 32) {
        const float n = sqrtf(rs.norm[br]);
        rs.norm[br] = n;
        rs.inv[br] = 1.f / fmaxf(n, kEps);
      }
      __syncwarp();
      T* gq = gqkv + (static_cast<int64_t>(b) * m.N + t) * row;
      for (int c = lane; c < m.D; c += 32) {
        const int pc = padded(c), br = c / m.C;
        gq[c] = st<T>(normalize_bwd(xr[pc], yr[pc] * kvs[pc], rs.norm[br], rs.dot[br]));
      }
    }
    __syncthreads();
    const int nrows = min(kWarps, t1 - base);
    for (int c = threadIdx.x; c < m.D; c += kCtaThreads) {
      const int pc = padded(c), br = c / m.C;
      float s = acc[c];
      for (int w = 0; w < nrows; ++w)
        s += grows[w * m.RL + pc] * qrows[w * m.RL + pc] * stats[(w * 3 + 2) * m.nb + br];
      acc[c] = s;
    }
    __syncthreads();
  }
  float* dst = partial + (static_cast<int64_t>(b) * m.chunks + chunk) * m.D;
  for (int c = threadIdx.x; c < m.D; c += kCtaThreads) dst[c] = acc[c];
}

// gkv = the sum of the partials; gv_t = gkv * phi(k_t), gk_t = d/dk_t through phi(k_t) with
// d/dphi(k_t) = gkv * v_t.
// smem: gkv [RL] | k rows [kWarps][RL] | v rows [kWarps][RL] | stats [kWarps][3][nb]
template <typename T>
__global__ void __launch_bounds__(kCtaThreads)
    hydra_gkv_kernel(const T* __restrict__ qkv, const float* __restrict__ partial, const Dims m,
                     T* __restrict__ gqkv) {
  extern __shared__ float sm[];
  float* gkv = sm;
  float* krows = gkv + m.RL;
  float* vrows = krows + kWarps * m.RL;
  float* stats = vrows + kWarps * m.RL;
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t0 = chunk * m.rows, t1 = min(m.N, t0 + m.rows);
  const int64_t row = 3 * static_cast<int64_t>(m.D);  // qkv row stride
  const T* img = qkv + static_cast<int64_t>(b) * m.N * row;
  float* xr = krows + warp * m.RL;
  float* yr = vrows + warp * m.RL;
  const RowStats rs = row_stats(stats, warp, m.nb);

  const float* part = partial + static_cast<int64_t>(b) * m.chunks * m.D;
  for (int c = threadIdx.x; c < m.D; c += kCtaThreads) {
    float s = 0.f;
    for (int ch = 0; ch < m.chunks; ++ch) s += part[ch * m.D + c];
    gkv[padded(c)] = s;
  }
  __syncthreads();
  for (int t = t0 + warp; t < t1; t += kWarps) {
    const T* k = img + t * row + m.D;
    const T* v = k + m.D;
    for (int c = lane; c < m.D; c += 32) {
      xr[padded(c)] = ld(k[c]);
      yr[padded(c)] = ld(v[c]);
    }
    __syncwarp();
    branch_stats<true>(xr, yr, gkv, m, rs.norm, rs.dot, lane);
    __syncwarp();
    for (int br = lane; br < m.nb; br += 32) {
      const float n = sqrtf(rs.norm[br]);
      rs.norm[br] = n;
      rs.inv[br] = 1.f / fmaxf(n, kEps);
    }
    __syncwarp();
    T* gk = gqkv + (static_cast<int64_t>(b) * m.N + t) * row + m.D;
    T* gv = gk + m.D;
    for (int c = lane; c < m.D; c += 32) {
      const int pc = padded(c), br = c / m.C;
      const float x = xr[pc], g = gkv[pc];
      gv[c] = st<T>(g * x * rs.inv[br]);
      gk[c] = st<T>(normalize_bwd(x, yr[pc] * g, rs.norm[br], rs.dot[br]));
    }
    __syncwarp();  // the next row overwrites xr, yr and the stats
  }
}

// ---- launchers ----

void check_args(int64_t B, int64_t N, int64_t D, int64_t branches) {
  if (B < 0 || N < 0 || D <= 0 || branches <= 0 || D % branches != 0 || B > 65535 ||
      N > (int64_t{1} << 24) || D > (int64_t{1} << 20))
    fail("hydra: unsupported sizes B " + std::to_string(B) + ", N " + std::to_string(N) + ", D " +
         std::to_string(D) + ", branches " + std::to_string(branches));
}

}  // namespace

int64_t hydra_workspace_floats(int64_t B, int64_t N, int64_t D) {
  return B * ((N + kChunkRows - 1) / kChunkRows) * D;
}

void hydra_fwd(DType dtype, const void* qkv, int64_t B, int64_t N, int64_t D, int64_t branches,
               void* out, float* kv, float* workspace, cudaStream_t stream) {
  check_args(B, N, D, branches);
  if (B == 0) return;
  if (N == 0) {  // no tokens: kv = 0, out is empty
    LVIT_CUDA_CHECK(cudaMemsetAsync(kv, 0, floats_to_bytes(B * D), stream));
    return;
  }
  if (hydra_fwd_fast(dtype, qkv, B, N, D, branches, out, kv, workspace, stream)) return;
  const Dims m = make_dims(N, D, branches);
  const dim3 grid(static_cast<unsigned>(m.chunks), static_cast<unsigned>(B));
  dispatch_storage(dtype, "hydra_fwd", [&](auto tag) {
    using T = decltype(tag);
    const size_t smem1 = floats_to_bytes(m.D + int64_t{kWarps} * (m.RL + m.nb));
    allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_kv_partial_kernel<T>), smem1,
                       "hydra_kv_partial_kernel");
    hydra_kv_partial_kernel<T>
        <<<grid, kCtaThreads, smem1, stream>>>(static_cast<const T*>(qkv), m, workspace);
    after_launch("hydra_kv_partial_kernel", stream);

    const size_t smem2 = floats_to_bytes(m.RL + int64_t{kWarps} * (m.RL + m.nb));
    allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_out_kernel<T>), smem2,
                       "hydra_out_kernel");
    hydra_out_kernel<T><<<grid, kCtaThreads, smem2, stream>>>(static_cast<const T*>(qkv), workspace,
                                                              m, static_cast<T*>(out), kv);
    after_launch("hydra_out_kernel", stream);
  });
}

void hydra_bwd(DType dtype, const void* gout, const void* qkv, const float* kv, int64_t B,
               int64_t N, int64_t D, int64_t branches, void* gqkv, float* workspace,
               cudaStream_t stream) {
  check_args(B, N, D, branches);
  if (B == 0 || N == 0) return;
  if (hydra_bwd_fast(dtype, gout, qkv, kv, B, N, D, branches, gqkv, workspace, stream)) return;
  const Dims m = make_dims(N, D, branches);
  const dim3 grid(static_cast<unsigned>(m.chunks), static_cast<unsigned>(B));
  dispatch_storage(dtype, "hydra_bwd", [&](auto tag) {
    using T = decltype(tag);
    const size_t smem1 = floats_to_bytes(m.RL + m.D + int64_t{kWarps} * (2 * m.RL + 3 * m.nb));
    allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_gq_kernel<T>), smem1,
                       "hydra_gq_kernel");
    hydra_gq_kernel<T><<<grid, kCtaThreads, smem1, stream>>>(static_cast<const T*>(gout),
                                                             static_cast<const T*>(qkv), kv, m,
                                                             static_cast<T*>(gqkv), workspace);
    after_launch("hydra_gq_kernel", stream);

    const size_t smem2 = floats_to_bytes(m.RL + int64_t{kWarps} * (2 * m.RL + 3 * m.nb));
    allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_gkv_kernel<T>), smem2,
                       "hydra_gkv_kernel");
    hydra_gkv_kernel<T><<<grid, kCtaThreads, smem2, stream>>>(static_cast<const T*>(qkv), workspace,
                                                              m, static_cast<T*>(gqkv));
    after_launch("hydra_gkv_kernel", stream);
  });
}

}  // namespace lvit::cuda
