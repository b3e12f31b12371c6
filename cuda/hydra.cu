// Hydra attention kernels and launchers (declared in cuda/hydra.cuh); the math and the CPU
// reference are in ops/cpu/hydra.cpp.
//
// Mapping: grid (chunks, B), 8 warps per CTA; a CTA owns image b's token rows [t0, t1) (at most
// kChunkRows). A warp takes one row at a time: it stages the row in shared memory (coalesced),
// computes the per-branch statistics (sum of squares, in backward also g . x), then writes that
// row's elementwise results. Sums over the chunk's tokens (kv in forward, gkv in backward) are
// kept by channel owners: thread t owns channels t, t + 256, ..., so every partial has a single
// writer and a fixed summation order; the second kernel of each direction adds the chunks'
// partials in chunk order. Results are therefore deterministic, with no atomics.
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
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kChunkRows = 32;   // token rows per CTA (at most)
constexpr float kEps = 1e-6f;    // the norm clamp of phi (DESIGN.md)
constexpr float kInvEps = 1e6f;  // the CPU's T(1 / kEps)

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

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
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

// d loss / d x of phi(x) = x / max(||x||, eps), given gphi = d loss / d phi(x), the norm and
// dot = gphi . x (ops/cpu/hydra.cpp: the projection off the unit vector, or g / eps when the
// clamp is active).
__device__ __forceinline__ float normalize_bwd(float x, float gphi, float norm, float dot) {
  if (norm >= kEps) {
    const float inv = 1.f / norm;
    return (gphi - x * inv * (dot * inv)) * inv;
  }
  return gphi * kInvEps;
}

// ---- forward ----

// partial[b, chunk, :] = sum over the chunk's tokens of phi(k_t) * v_t.
// smem: acc [D] | k rows [kWarps][RL] | 1 / max(norm, eps) [kWarps][nb]
__global__ void __launch_bounds__(kThreads)
    hydra_kv_partial_kernel(const float* __restrict__ qkv, const Dims m,
                            float* __restrict__ partial) {
  extern __shared__ float sm[];
  float* acc = sm;
  float* rows = acc + m.D;
  float* inv = rows + kWarps * m.RL;
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t0 = chunk * m.rows, t1 = min(m.N, t0 + m.rows);
  const int64_t ld = 3 * static_cast<int64_t>(m.D);
  const float* img = qkv + static_cast<int64_t>(b) * m.N * ld;
  float* xr = rows + warp * m.RL;
  float* iv = inv + warp * m.nb;

  for (int c = threadIdx.x; c < m.D; c += kThreads) acc[c] = 0.f;  // owner-only: no barrier
  for (int base = t0; base < t1; base += kWarps) {
    const int t = base + warp;
    if (t < t1) {
      const float* k = img + t * ld + m.D;
      for (int c = lane; c < m.D; c += 32) xr[padded(c)] = k[c];
      __syncwarp();
      branch_stats<false>(xr, nullptr, nullptr, m, iv, nullptr, lane);
      __syncwarp();
      for (int br = lane; br < m.nb; br += 32) iv[br] = 1.f / fmaxf(sqrtf(iv[br]), kEps);
    }
    __syncthreads();
    const int nrows = min(kWarps, t1 - base);
    for (int c = threadIdx.x; c < m.D; c += kThreads) {
      const int br = c / m.C;
      float s = acc[c];
      for (int w = 0; w < nrows; ++w) {
        const float v = img[(base + w) * ld + 2 * m.D + c];
        s += rows[w * m.RL + padded(c)] * inv[w * m.nb + br] * v;
      }
      acc[c] = s;
    }
    __syncthreads();  // the rows are restaged next iteration
  }
  float* dst = partial + (static_cast<int64_t>(b) * m.chunks + chunk) * m.D;
  for (int c = threadIdx.x; c < m.D; c += kThreads) dst[c] = acc[c];
}

// kv[b] = the sum of the partials (written by chunk 0); out_t = phi(q_t) * kv[b].
// smem: kv [RL] | q rows [kWarps][RL] | 1 / max(norm, eps) [kWarps][nb]
__global__ void __launch_bounds__(kThreads)
    hydra_out_kernel(const float* __restrict__ qkv, const float* __restrict__ partial, const Dims m,
                     float* __restrict__ out, float* __restrict__ kv) {
  extern __shared__ float sm[];
  float* kvs = sm;
  float* rows = kvs + m.RL;
  float* inv = rows + kWarps * m.RL;
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t0 = chunk * m.rows, t1 = min(m.N, t0 + m.rows);
  const int64_t ld = 3 * static_cast<int64_t>(m.D);
  const float* img = qkv + static_cast<int64_t>(b) * m.N * ld;
  float* xr = rows + warp * m.RL;
  float* iv = inv + warp * m.nb;

  const float* part = partial + static_cast<int64_t>(b) * m.chunks * m.D;
  for (int c = threadIdx.x; c < m.D; c += kThreads) {
    float s = 0.f;
    for (int ch = 0; ch < m.chunks; ++ch) s += part[ch * m.D + c];
    kvs[padded(c)] = s;
    if (chunk == 0) kv[static_cast<int64_t>(b) * m.D + c] = s;
  }
  __syncthreads();
  for (int t = t0 + warp; t < t1; t += kWarps) {
    const float* q = img + t * ld;
    for (int c = lane; c < m.D; c += 32) xr[padded(c)] = q[c];
    __syncwarp();
    branch_stats<false>(xr, nullptr, nullptr, m, iv, nullptr, lane);
    __syncwarp();
    for (int br = lane; br < m.nb; br += 32) iv[br] = 1.f / fmaxf(sqrtf(iv[br]), kEps);
    __syncwarp();
    float* o = out + (static_cast<int64_t>(b) * m.N + t) * m.D;
    for (int c = lane; c < m.D; c += 32) o[c] = xr[padded(c)] * iv[c / m.C] * kvs[padded(c)];
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
__global__ void __launch_bounds__(kThreads)
    hydra_gq_kernel(const float* __restrict__ gout, const float* __restrict__ qkv,
                    const float* __restrict__ kv, const Dims m, float* __restrict__ gqkv,
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
  const int64_t ld = 3 * static_cast<int64_t>(m.D);
  const float* img = qkv + static_cast<int64_t>(b) * m.N * ld;
  float* xr = qrows + warp * m.RL;
  float* yr = grows + warp * m.RL;
  const RowStats st = row_stats(stats, warp, m.nb);

  for (int c = threadIdx.x; c < m.D; c += kThreads) {
    kvs[padded(c)] = kv[static_cast<int64_t>(b) * m.D + c];
    acc[c] = 0.f;
  }
  __syncthreads();
  for (int base = t0; base < t1; base += kWarps) {
    const int t = base + warp;
    if (t < t1) {
      const float* q = img + t * ld;
      const float* g = gout + (static_cast<int64_t>(b) * m.N + t) * m.D;
      for (int c = lane; c < m.D; c += 32) {
        xr[padded(c)] = q[c];
        yr[padded(c)] = g[c];
      }
      __syncwarp();
      branch_stats<true>(xr, yr, kvs, m, st.norm, st.dot, lane);
      __syncwarp();
      for (int br = lane; br < m.nb; br += 32) {
        const float n = sqrtf(st.norm[br]);
        st.norm[br] = n;
        st.inv[br] = 1.f / fmaxf(n, kEps);
      }
      __syncwarp();
      float* gq = gqkv + (static_cast<int64_t>(b) * m.N + t) * ld;
      for (int c = lane; c < m.D; c += 32) {
        const int pc = padded(c), br = c / m.C;
        gq[c] = normalize_bwd(xr[pc], yr[pc] * kvs[pc], st.norm[br], st.dot[br]);
      }
    }
    __syncthreads();
    const int nrows = min(kWarps, t1 - base);
    for (int c = threadIdx.x; c < m.D; c += kThreads) {
      const int pc = padded(c), br = c / m.C;
      float s = acc[c];
      for (int w = 0; w < nrows; ++w)
        s += grows[w * m.RL + pc] * qrows[w * m.RL + pc] * stats[(w * 3 + 2) * m.nb + br];
      acc[c] = s;
    }
    __syncthreads();
  }
  float* dst = partial + (static_cast<int64_t>(b) * m.chunks + chunk) * m.D;
  for (int c = threadIdx.x; c < m.D; c += kThreads) dst[c] = acc[c];
}

// gkv = the sum of the partials; gv_t = gkv * phi(k_t), gk_t = d/dk_t through phi(k_t) with
// d/dphi(k_t) = gkv * v_t.
// smem: gkv [RL] | k rows [kWarps][RL] | v rows [kWarps][RL] | stats [kWarps][3][nb]
__global__ void __launch_bounds__(kThreads)
    hydra_gkv_kernel(const float* __restrict__ qkv, const float* __restrict__ partial, const Dims m,
                     float* __restrict__ gqkv) {
  extern __shared__ float sm[];
  float* gkv = sm;
  float* krows = gkv + m.RL;
  float* vrows = krows + kWarps * m.RL;
  float* stats = vrows + kWarps * m.RL;
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t0 = chunk * m.rows, t1 = min(m.N, t0 + m.rows);
  const int64_t ld = 3 * static_cast<int64_t>(m.D);
  const float* img = qkv + static_cast<int64_t>(b) * m.N * ld;
  float* xr = krows + warp * m.RL;
  float* yr = vrows + warp * m.RL;
  const RowStats st = row_stats(stats, warp, m.nb);

  const float* part = partial + static_cast<int64_t>(b) * m.chunks * m.D;
  for (int c = threadIdx.x; c < m.D; c += kThreads) {
    float s = 0.f;
    for (int ch = 0; ch < m.chunks; ++ch) s += part[ch * m.D + c];
    gkv[padded(c)] = s;
  }
  __syncthreads();
  for (int t = t0 + warp; t < t1; t += kWarps) {
    const float* k = img + t * ld + m.D;
    const float* v = k + m.D;
    for (int c = lane; c < m.D; c += 32) {
      xr[padded(c)] = k[c];
      yr[padded(c)] = v[c];
    }
    __syncwarp();
    branch_stats<true>(xr, yr, gkv, m, st.norm, st.dot, lane);
    __syncwarp();
    for (int br = lane; br < m.nb; br += 32) {
      const float n = sqrtf(st.norm[br]);
      st.norm[br] = n;
      st.inv[br] = 1.f / fmaxf(n, kEps);
    }
    __syncwarp();
    float* gk = gqkv + (static_cast<int64_t>(b) * m.N + t) * ld + m.D;
    float* gv = gk + m.D;
    for (int c = lane; c < m.D; c += 32) {
      const int pc = padded(c), br = c / m.C;
      const float x = xr[pc], g = gkv[pc];
      gv[c] = g * x * st.inv[br];
      gk[c] = normalize_bwd(x, yr[pc] * g, st.norm[br], st.dot[br]);
    }
    __syncwarp();  // the next row overwrites xr, yr and the stats
  }
}

// ---- launchers ----

size_t floats_to_bytes(int64_t n) { return static_cast<size_t>(n) * sizeof(float); }

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

void hydra_fwd(const float* qkv, int64_t B, int64_t N, int64_t D, int64_t branches, float* out,
               float* kv, float* workspace, cudaStream_t stream) {
  check_args(B, N, D, branches);
  if (B == 0) return;
  if (N == 0) {  // no tokens: kv = 0, out is empty
    LVIT_CUDA_CHECK(cudaMemsetAsync(kv, 0, floats_to_bytes(B * D), stream));
    return;
  }
  const Dims m = make_dims(N, D, branches);
  const dim3 grid(static_cast<unsigned>(m.chunks), static_cast<unsigned>(B));

  const size_t smem1 = floats_to_bytes(m.D + int64_t{kWarps} * (m.RL + m.nb));
  allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_kv_partial_kernel), smem1,
                     "hydra_kv_partial_kernel");
  hydra_kv_partial_kernel<<<grid, kThreads, smem1, stream>>>(qkv, m, workspace);
  after_launch("hydra_kv_partial_kernel", stream);

  const size_t smem2 = floats_to_bytes(m.RL + int64_t{kWarps} * (m.RL + m.nb));
  allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_out_kernel), smem2, "hydra_out_kernel");
  hydra_out_kernel<<<grid, kThreads, smem2, stream>>>(qkv, workspace, m, out, kv);
  after_launch("hydra_out_kernel", stream);
}

void hydra_bwd(const float* gout, const float* qkv, const float* kv, int64_t B, int64_t N,
               int64_t D, int64_t branches, float* gqkv, float* workspace, cudaStream_t stream) {
  check_args(B, N, D, branches);
  if (B == 0 || N == 0) return;
  const Dims m = make_dims(N, D, branches);
  const dim3 grid(static_cast<unsigned>(m.chunks), static_cast<unsigned>(B));

  const size_t smem1 = floats_to_bytes(m.RL + m.D + int64_t{kWarps} * (2 * m.RL + 3 * m.nb));
  allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_gq_kernel), smem1, "hydra_gq_kernel");
  hydra_gq_kernel<<<grid, kThreads, smem1, stream>>>(gout, qkv, kv, m, gqkv, workspace);
  after_launch("hydra_gq_kernel", stream);

  const size_t smem2 = floats_to_bytes(m.RL + int64_t{kWarps} * (2 * m.RL + 3 * m.nb));
  allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_gkv_kernel), smem2, "hydra_gkv_kernel");
  hydra_gkv_kernel<<<grid, kThreads, smem2, stream>>>(qkv, workspace, m, gqkv);
  after_launch("hydra_gkv_kernel", stream);
}

}  // namespace lvit::cuda
