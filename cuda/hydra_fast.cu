// Hydra attention, the fast path (declared in cuda/hydra_common.cuh; the entry points of
// cuda/hydra.cuh try it first and fall back to the generic kernels of cuda/hydra.cu).
#include <algorithm>
#include <cstdint>

#include "cuda/hydra.cuh"
#include "cuda/hydra_common.cuh"
#include "cuda/launch.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace hydra_detail {
namespace {

// ---- fast path: rows in registers, 16-byte vectors, per-branch lane groups ----
//
// For C a multiple of 8 whose C / 8 vectors split as tpb * vpt with tpb a power of two <= 32
// and vpt <= kMaxVpt (hydra-cifar and hydra-tiny: C = 96 -> 4 x 3, C = 384 -> 16 x 3), and
// 16-byte-aligned tensors. A (row, branch) pair belongs to an aligned group of tpb lanes of one
// warp; lane j of the group owns the branch's 8-channel vectors j, j + tpb, ... (vpt of them: a
// warp-wide load covers whole contiguous runs of the row). A row takes R = nb * tpb lanes, so a
// CTA works on P = kCtaThreads / R rows at once (a "pass"; 16 for both presets). Each lane loads
// its vectors with 16-byte loads, sums its squares (and, backward, its part of gphi . x) in
// registers, and the group adds them with log2(tpb) xor shuffles (every lane of the group gets
// the same sums); the elementwise results go straight back out of registers. The bf16 kernels
// take at most 64 registers (ptxas, sm_90): 4 CTAs (1024 threads) per SM, several 16-byte loads
// in flight per lane.
//
// Sums over the chunk's tokens: every lane adds its rows' terms into its own cells of acc
// [P][D] in shared memory (one writer per cell, rows in order, no barrier), and after the passes
// the CTA adds the P row slots in slot order: deterministic, no atomics. The chunks' partials are
// added in chunk order as in the generic kernels.
//
// Bytes per image (bf16): kernel 1 reads k, v (2 N D * 2), kernel 2 reads q and writes out
// (2 N D * 2), backward 1 reads q, g and writes gq (3 N D * 2), backward 2 reads k, v and writes
// gk, gv (4 N D * 2); the partials (chunks * D floats per image, read back from L2) are a few
// percent of that. hydra-cifar at B = 512 (25.6 MB per N D plane): 51, 51, 77 and 102 MB, about
// 13, 13, 19 and 26 us at 4 TB/s.

constexpr int kMaxVpt = 4;  // 8-channel vectors per lane at most (registers: 2 x 4 x 16 B for bf16)

struct Fast {
  int N, D, C, nb;
  int tpb;     // lanes per (row, branch): a power of two <= 32
  int vpt;     // vectors per lane: C = 8 * tpb * vpt
  int R;       // lanes per row: nb * tpb <= kCtaThreads
  int P;       // rows per pass: kCtaThreads / R
  int chunks;  // CTAs per image
  int rows;    // token rows per chunk (the last chunk may have fewer)
};

// A lane's place: row slot (rows base + slot of each pass), whether the slot exists (the last
// kCtaThreads % R lanes idle), and the channel of its first vector (vector v at ch0 + v * vs).
struct FastLane {
  int slot;
  bool on;
  int ch0, vs;
};

__device__ __forceinline__ FastLane fast_lane(const Fast& f) {
  const int slot = threadIdx.x / f.R, s = threadIdx.x - slot * f.R;
  const int br = s / f.tpb, j = s - br * f.tpb;
  return {slot, slot < f.P, br * f.C + 8 * j, 8 * f.tpb};
}

// 8 stored values, raw: one 16-byte word for bf16, two for f32.
template <typename T>
struct Raw8 {
  static constexpr int kWords = sizeof(T) / 2;
  uint4 w[kWords];
};

__device__ __forceinline__ void widen(const Raw8<float>& r, float (&f)[8]) {
  const uint32_t u[8] = {r.w[0].x, r.w[0].y, r.w[0].z, r.w[0].w,
                         r.w[1].x, r.w[1].y, r.w[1].z, r.w[1].w};
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = __uint_as_float(u[i]);
}
// bf16 -> f32 is exact: the 16 bits become the high half (element 2i is the low half of word i).
__device__ __forceinline__ void widen(const Raw8<__nv_bfloat16>& r, float (&f)[8]) {
  const uint32_t u[4] = {r.w[0].x, r.w[0].y, r.w[0].z, r.w[0].w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ void put8(float* p, const float (&f)[8]) {
  float4* d = reinterpret_cast<float4*>(p);
  d[0] = make_float4(f[0], f[1], f[2], f[3]);
  d[1] = make_float4(f[4], f[5], f[6], f[7]);
}
__device__ __forceinline__ void put8(__nv_bfloat16* p, const float (&f)[8]) {
  uint32_t u[4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
    u[i] = static_cast<uint32_t>(__bfloat16_as_ushort(st<__nv_bfloat16>(f[2 * i]))) |
           (static_cast<uint32_t>(__bfloat16_as_ushort(st<__nv_bfloat16>(f[2 * i + 1]))) << 16);
  *reinterpret_cast<uint4*>(p) = make_uint4(u[0], u[1], u[2], u[3]);
}

// 8 f32 from shared memory (16-byte aligned).
__device__ __forceinline__ void get8(const float* p, float (&f)[8]) {
  const float4* s = reinterpret_cast<const float4*>(p);
  const float4 a = s[0], b = s[1];
  f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}

// Sum over an aligned group of tpb lanes (a power of two <= 32); all 32 lanes of the warp call it.
__device__ __forceinline__ float group_sum(float x, int tpb) {
  for (int o = tpb >> 1; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// The lane's vectors of one row (vector v at p + v * vs; zeros where !ok or v >= vpt).
template <typename T>
__device__ __forceinline__ void load_vecs(const T* p, const FastLane& l, const Fast& f, bool ok,
                                          Raw8<T> (&r)[kMaxVpt]) {
#pragma unroll
  for (int v = 0; v < kMaxVpt; ++v)
#pragma unroll
    for (int i = 0; i < Raw8<T>::kWords; ++i)
      r[v].w[i] = ok && v < f.vpt ? __ldg(reinterpret_cast<const uint4*>(p + v * l.vs) + i)
                                  : make_uint4(0, 0, 0, 0);
}

// The branch's norm of x and, when DOT, gphi . x with gphi = y * s (s: channels in shared
// memory): the lane's terms in registers, then the group's sum. All lanes of the warp call it.
struct BranchSums {
  float norm, dot;
};
template <bool DOT, typename T>
__device__ __forceinline__ BranchSums branch_sums(const Raw8<T> (&xr)[kMaxVpt],
                                                  const Raw8<T> (&yr)[kMaxVpt], const float* s,
                                                  const FastLane& l, const Fast& f) {
  float ss = 0.f, dot = 0.f;
#pragma unroll
  for (int v = 0; v < kMaxVpt; ++v) {
    if (v >= f.vpt) break;
    float x[8];
    widen(xr[v], x);
    for (int i = 0; i < 8; ++i) ss = fmaf(x[i], x[i], ss);
    if constexpr (DOT) {
      float y[8], c[8];
      widen(yr[v], y);
      get8(s + l.ch0 + v * l.vs, c);
      for (int i = 0; i < 8; ++i) dot = fmaf(y[i] * c[i], x[i], dot);
    }
  }
  BranchSums r{sqrtf(group_sum(ss, f.tpb)), 0.f};
  if constexpr (DOT) r.dot = group_sum(dot, f.tpb);
  return r;
}

// dst[c] = sum of the image's chunk partials in chunk order (also to kv when not null).
__device__ __forceinline__ void sum_chunks(const float* partial, int b, const Fast& f, float* dst,
                                           float* kv) {
  const float* part = partial + static_cast<int64_t>(b) * f.chunks * f.D;
  for (int c = threadIdx.x; c < f.D; c += kCtaThreads) {
    float s = 0.f;
    for (int ch = 0; ch < f.chunks; ++ch) s += part[ch * f.D + c];
    dst[c] = s;
    if (kv) kv[c] = s;
  }
}

// dst[c] = sum over the P row slots of acc[slot][c], in slot order. After a __syncthreads().
__device__ __forceinline__ void sum_slots(const float* acc, const Fast& f, float* dst) {
  for (int c = threadIdx.x; c < f.D; c += kCtaThreads) {
    float s = 0.f;
    for (int sl = 0; sl < f.P; ++sl) s += acc[sl * f.D + c];
    dst[c] = s;
  }
}

// partial[b, chunk, :] = sum over the chunk's tokens of phi(k_t) * v_t.
// smem: acc [P][D]
template <typename T>
__global__ void __launch_bounds__(kCtaThreads)
    hydra_kv_partial_fast(const T* __restrict__ qkv, const Fast f, float* __restrict__ partial) {
  extern __shared__ float sm[];
  const FastLane l = fast_lane(f);
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int t0 = chunk * f.rows, t1 = min(f.N, t0 + f.rows);
  const int64_t row = 3 * static_cast<int64_t>(f.D);  // qkv row stride
  const T* img = qkv + static_cast<int64_t>(b) * f.N * row;
  float* acc = sm + l.slot * f.D + l.ch0;  // this lane's cells (when l.on)
  if (l.on)
    for (int v = 0; v < f.vpt; ++v)
      for (int i = 0; i < 8; ++i) acc[v * l.vs + i] = 0.f;

  for (int base = t0; base < t1; base += f.P) {
    const int t = base + l.slot;
    const bool ok = l.on && t < t1;
    const T* k = img + (ok ? t : 0) * row + f.D + l.ch0;
    Raw8<T> kr[kMaxVpt], vr[kMaxVpt];
    load_vecs(k, l, f, ok, kr);
    load_vecs(k + f.D, l, f, ok, vr);
    const float inv = 1.f / fmaxf(branch_sums<false>(kr, kr, nullptr, l, f).norm, kEps);
    if (ok) {
#pragma unroll
      for (int v = 0; v < kMaxVpt; ++v) {
        if (v >= f.vpt) break;
        float x[8], y[8], a[8];
        widen(kr[v], x);
        widen(vr[v], y);
        get8(acc + v * l.vs, a);
        for (int i = 0; i < 8; ++i) a[i] = fmaf(x[i] * inv, y[i], a[i]);
        put8(acc + v * l.vs, a);
      }
    }
  }
  __syncthreads();
  sum_slots(sm, f, partial + (static_cast<int64_t>(b) * f.chunks + chunk) * f.D);
}

// kv[b] = the sum of the partials (written by chunk 0); out_t = phi(q_t) * kv[b].
// smem: kv [D]
template <typename T>
__global__ void __launch_bounds__(kCtaThreads)
    hydra_out_fast(const T* __restrict__ qkv, const float* __restrict__ partial, const Fast f,
                   T* __restrict__ out, float* __restrict__ kv) {
  extern __shared__ float kvs[];
  const FastLane l = fast_lane(f);
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int t0 = chunk * f.rows, t1 = min(f.N, t0 + f.rows);
  const int64_t row = 3 * static_cast<int64_t>(f.D);  // qkv row stride
  const T* img = qkv + static_cast<int64_t>(b) * f.N * row;

  sum_chunks(partial, b, f, kvs, chunk == 0 ? kv + static_cast<int64_t>(b) * f.D : nullptr);
  __syncthreads();
  for (int base = t0; base < t1; base += f.P) {
    const int t = base + l.slot;
    const bool ok = l.on && t < t1;
    Raw8<T> qr[kMaxVpt];
    load_vecs(img + (ok ? t : 0) * row + l.ch0, l, f, ok, qr);
    const float inv = 1.f / fmaxf(branch_sums<false>(qr, qr, nullptr, l, f).norm, kEps);
    if (ok) {
      T* o = out + (static_cast<int64_t>(b) * f.N + t) * f.D + l.ch0;
#pragma unroll
      for (int v = 0; v < kMaxVpt; ++v) {
        if (v >= f.vpt) break;
        float x[8], s[8];
        widen(qr[v], x);
        get8(kvs + l.ch0 + v * l.vs, s);
        for (int i = 0; i < 8; ++i) x[i] = x[i] * inv * s[i];
        put8(o + v * l.vs, x);
      }
    }
  }
}

// gq_t = d/dq_t through phi(q_t) with d/dphi(q_t) = g_t * kv; partial[b, chunk, :] = the
// chunk's sum of g_t * phi(q_t).
// smem: kv [D] | acc [P][D]
template <typename T>
__global__ void __launch_bounds__(kCtaThreads)
    hydra_gq_fast(const T* __restrict__ gout, const T* __restrict__ qkv,
                  const float* __restrict__ kv, const Fast f, T* __restrict__ gqkv,
                  float* __restrict__ partial) {
  extern __shared__ float sm[];
  float* kvs = sm;
  const FastLane l = fast_lane(f);
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int t0 = chunk * f.rows, t1 = min(f.N, t0 + f.rows);
  const int64_t row = 3 * static_cast<int64_t>(f.D);  // qkv row stride
  const T* img = qkv + static_cast<int64_t>(b) * f.N * row;
  float* acc = sm + f.D + l.slot * f.D + l.ch0;  // this lane's cells (when l.on)

  for (int c = threadIdx.x; c < f.D; c += kCtaThreads)
    kvs[c] = kv[static_cast<int64_t>(b) * f.D + c];
  if (l.on)
    for (int v = 0; v < f.vpt; ++v)
      for (int i = 0; i < 8; ++i) acc[v * l.vs + i] = 0.f;
  __syncthreads();
  for (int base = t0; base < t1; base += f.P) {
    const int t = base + l.slot;
    const bool ok = l.on && t < t1;
    const int64_t tok = static_cast<int64_t>(b) * f.N + (ok ? t : 0);
    const T* q = img + (ok ? t : 0) * row + l.ch0;
    const T* g = gout + tok * f.D + l.ch0;
    Raw8<T> qr[kMaxVpt], gr[kMaxVpt];
    load_vecs(q, l, f, ok, qr);
    load_vecs(g, l, f, ok, gr);
    const BranchSums bs = branch_sums<true>(qr, gr, kvs, l, f);  // gphi = g * kv
    const float inv = 1.f / fmaxf(bs.norm, kEps);
    if (ok) {
      T* gq = gqkv + tok * row + l.ch0;
#pragma unroll
      for (int v = 0; v < kMaxVpt; ++v) {
        if (v >= f.vpt) break;
        float x[8], y[8], s[8], a[8];
        widen(qr[v], x);
        widen(gr[v], y);
        get8(kvs + l.ch0 + v * l.vs, s);
        get8(acc + v * l.vs, a);
        for (int i = 0; i < 8; ++i) {
          a[i] = fmaf(y[i] * x[i], inv, a[i]);
          s[i] = normalize_bwd(x[i], y[i] * s[i], bs.norm, bs.dot);
        }
        put8(acc + v * l.vs, a);
        put8(gq + v * l.vs, s);
      }
    }
  }
  __syncthreads();
  sum_slots(sm + f.D, f, partial + (static_cast<int64_t>(b) * f.chunks + chunk) * f.D);
}

// gkv = the sum of the partials; gv_t = gkv * phi(k_t), gk_t = d/dk_t through phi(k_t) with
// d/dphi(k_t) = gkv * v_t.
// smem: gkv [D]
template <typename T>
__global__ void __launch_bounds__(kCtaThreads)
    hydra_gkv_fast(const T* __restrict__ qkv, const float* __restrict__ partial, const Fast f,
                   T* __restrict__ gqkv) {
  extern __shared__ float gkv[];
  const FastLane l = fast_lane(f);
  const int b = blockIdx.y, chunk = blockIdx.x;
  const int t0 = chunk * f.rows, t1 = min(f.N, t0 + f.rows);
  const int64_t row = 3 * static_cast<int64_t>(f.D);  // qkv row stride
  const T* img = qkv + static_cast<int64_t>(b) * f.N * row;

  sum_chunks(partial, b, f, gkv, nullptr);
  __syncthreads();
  for (int base = t0; base < t1; base += f.P) {
    const int t = base + l.slot;
    const bool ok = l.on && t < t1;
    const T* k = img + (ok ? t : 0) * row + f.D + l.ch0;
    Raw8<T> kr[kMaxVpt], vr[kMaxVpt];
    load_vecs(k, l, f, ok, kr);
    load_vecs(k + f.D, l, f, ok, vr);
    const BranchSums bs = branch_sums<true>(kr, vr, gkv, l, f);  // gphi = v * gkv
    const float inv = 1.f / fmaxf(bs.norm, kEps);
    if (ok) {
      T* gk = gqkv + (static_cast<int64_t>(b) * f.N + t) * row + f.D + l.ch0;
#pragma unroll
      for (int v = 0; v < kMaxVpt; ++v) {
        if (v >= f.vpt) break;
        float x[8], y[8], s[8];
        widen(kr[v], x);
        widen(vr[v], y);
        get8(gkv + l.ch0 + v * l.vs, s);
        for (int i = 0; i < 8; ++i) {
          const float gv = s[i] * x[i] * inv;
          y[i] = normalize_bwd(x[i], y[i] * s[i], bs.norm, bs.dot);
          x[i] = gv;
        }
        put8(gk + v * l.vs, y);
        put8(gk + f.D + v * l.vs, x);
      }
    }
  }
}

// The fast kernels' geometry, or false where they do not apply (the generic kernels run): C a
// multiple of 8 with C / 8 = tpb * vpt (tpb a power of two <= 32, vpt <= kMaxVpt, the largest
// such vpt), and a row's R = branches * tpb lanes within one CTA.
bool make_fast(int64_t N, int64_t D, int64_t branches, Fast* f) {
  if (D <= 0 || branches <= 0 || D % branches != 0 || (D / branches) % 8 != 0) return false;
  const int64_t vecs = D / branches / 8;
  for (int vpt = kMaxVpt; vpt >= 1; --vpt) {
    if (vecs % vpt != 0) continue;
    const int64_t tpb = vecs / vpt;
    if (tpb > 32 || (tpb & (tpb - 1)) != 0) continue;
    if (branches * tpb > kCtaThreads) return false;  // a smaller vpt only widens the row
    f->N = static_cast<int>(N);
    f->D = static_cast<int>(D);
    f->nb = static_cast<int>(branches);
    f->C = static_cast<int>(D / branches);
    f->tpb = static_cast<int>(tpb);
    f->vpt = vpt;
    f->R = static_cast<int>(branches * tpb);
    f->P = kCtaThreads / f->R;
    // Chunks of about max(kChunkRows, P) rows (two passes of 16 rows for both presets, 3 * B
    // CTAs at N = 65): never more chunks than the generic kernels, whose size the workspace has.
    const int64_t target = std::max(kChunkRows, f->P);
    f->chunks = static_cast<int>(std::max<int64_t>(1, (N + target - 1) / target));
    f->rows = static_cast<int>((N + f->chunks - 1) / f->chunks);
    return true;
  }
  return false;
}

}  // namespace

bool hydra_fwd_fast(DType dtype, const void* qkv, int64_t B, int64_t N, int64_t D, int64_t branches,
                    void* out, float* kv, float* workspace, cudaStream_t stream) {
  Fast f{};
  if (!(make_fast(N, D, branches, &f) && aligned16(qkv) && aligned16(out))) return false;
  const dim3 grid(static_cast<unsigned>(f.chunks), static_cast<unsigned>(B));
  dispatch_storage(dtype, "hydra_fwd", [&](auto tag) {
    using T = decltype(tag);
    const size_t smem1 = floats_to_bytes(int64_t{f.P} * f.D);
    allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_kv_partial_fast<T>), smem1,
                       "hydra_kv_partial_fast");
    hydra_kv_partial_fast<T>
        <<<grid, kCtaThreads, smem1, stream>>>(static_cast<const T*>(qkv), f, workspace);
    after_launch("hydra_kv_partial_fast", stream);
    hydra_out_fast<T><<<grid, kCtaThreads, floats_to_bytes(f.D), stream>>>(
        static_cast<const T*>(qkv), workspace, f, static_cast<T*>(out), kv);
    after_launch("hydra_out_fast", stream);
  });
  return true;
}

bool hydra_bwd_fast(DType dtype, const void* gout, const void* qkv, const float* kv, int64_t B,
                    int64_t N, int64_t D, int64_t branches, void* gqkv, float* workspace,
                    cudaStream_t stream) {
  Fast f{};
  if (!(make_fast(N, D, branches, &f) && aligned16(gout) && aligned16(qkv) && aligned16(gqkv)))
    return false;
  const dim3 grid(static_cast<unsigned>(f.chunks), static_cast<unsigned>(B));
  dispatch_storage(dtype, "hydra_bwd", [&](auto tag) {
    using T = decltype(tag);
    const size_t smem1 = floats_to_bytes(int64_t{f.P + 1} * f.D);
    allow_dynamic_smem(reinterpret_cast<const void*>(&hydra_gq_fast<T>), smem1, "hydra_gq_fast");
    hydra_gq_fast<T><<<grid, kCtaThreads, smem1, stream>>>(static_cast<const T*>(gout),
                                                           static_cast<const T*>(qkv), kv, f,
                                                           static_cast<T*>(gqkv), workspace);
    after_launch("hydra_gq_fast", stream);
    hydra_gkv_fast<T><<<grid, kCtaThreads, floats_to_bytes(f.D), stream>>>(
        static_cast<const T*>(qkv), workspace, f, static_cast<T*>(gqkv));
    after_launch("hydra_gkv_fast", stream);
  });
  return true;
}

}  // namespace hydra_detail

bool hydra_fast_shape(int64_t D, int64_t branches) {
  hydra_detail::Fast f{};
  return hydra_detail::make_fast(1, D, branches, &f);
}

}  // namespace lvit::cuda
