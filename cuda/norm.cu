// LayerNorm kernels and launchers (declared in cuda/norm.cuh). One warp per row for the
// row-wise parts; the weight/bias gradients are column sums over rows, done in row chunks
// (partial sums in a scratch buffer, then a fixed-order final sum: deterministic).
#include <algorithm>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "core/storage.h"
#include "cuda/allocator.cuh"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/dropout_mask.cuh"
#include "cuda/launch.cuh"
#include "cuda/norm.cuh"

namespace lvit::cuda {
namespace {

constexpr int kRowsPerBlock = 8;  // warps per block, one row each

template <typename T>
__device__ __forceinline__ T rsqrt_t(T v) {
  return T(1) / sqrt(v);
}
template <>
__device__ __forceinline__ float rsqrt_t<float>(float v) {
  return rsqrtf(v);
}

// x, w, b, mean, rstd of T (f32 or f64); y of TY (T, or bf16 under mixed precision).
template <typename T, typename TY>
__global__ void layernorm_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                     const T* __restrict__ b, T eps, int64_t M, int64_t D,
                                     TY* __restrict__ y, T* __restrict__ mean,
                                     T* __restrict__ rstd) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.y;
  if (row >= M) return;
  const int lane = threadIdx.x;
  const T* xr = x + row * D;
  T s = 0;
  for (int64_t j = lane; j < D; j += 32) s += xr[j];
  const T mu = warp_sum(s) / static_cast<T>(D);
  T v = 0;
  for (int64_t j = lane; j < D; j += 32) {
    const T c = xr[j] - mu;
    v += c * c;
  }
  const T rs = rsqrt_t(warp_sum(v) / static_cast<T>(D) + eps);
  TY* yr = y + row * D;
  for (int64_t j = lane; j < D; j += 32) yr[j] = st<TY>((xr[j] - mu) * rs * w[j] + b[j]);
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

// gx_j = rstd (g_j w_j - a - xhat_j c), a = mean_j(g w), c = mean_j(g w xhat).
template <typename T, typename TY>
__global__ void layernorm_bwd_gx_kernel(const TY* __restrict__ g, const T* __restrict__ x,
                                        const T* __restrict__ w, const T* __restrict__ mean,
                                        const T* __restrict__ rstd, int64_t M, int64_t D,
                                        T* __restrict__ gx, bool accumulate) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.y;
  if (row >= M) return;
  const int lane = threadIdx.x;
  const TY* gr = g + row * D;
  const T* xr = x + row * D;
  const T mu = mean[row], rs = rstd[row];
  T sgw = 0, sgwx = 0;
  for (int64_t j = lane; j < D; j += 32) {
    const T gw = static_cast<T>(ld(gr[j])) * w[j];
    sgw += gw;
    sgwx += gw * (xr[j] - mu) * rs;
  }
  const T a = warp_sum(sgw) / static_cast<T>(D), c = warp_sum(sgwx) / static_cast<T>(D);
  T* o = gx + row * D;
  for (int64_t j = lane; j < D; j += 32)
    o[j] = (accumulate ? o[j] : T(0)) +
           rs * (static_cast<T>(ld(gr[j])) * w[j] - a - (xr[j] - mu) * rs * c);
}

// Block (bx, by): columns [32 bx, 32 bx + 32), rows [by rows_per, ...), 32 x 8 threads.
// part_w[by, col] = sum g xhat, part_b[by, col] = sum g.
template <typename T, typename TY>
__global__ void layernorm_bwd_wb_partial_kernel(const TY* __restrict__ g, const T* __restrict__ x,
                                                const T* __restrict__ mean,
                                                const T* __restrict__ rstd, int64_t M, int64_t D,
                                                int64_t rows_per, T* __restrict__ part_w,
                                                T* __restrict__ part_b) {
  __shared__ T tw[8][33], tb[8][33];
  const int64_t col = blockIdx.x * int64_t{32} + threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per, r1 = min(M, r0 + rows_per);
  T aw = 0, ab = 0;
  if (col < D)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const T gv = static_cast<T>(ld(g[r * D + col]));
      aw += gv * (x[r * D + col] - mean[r]) * rstd[r];
      ab += gv;
    }
  tw[threadIdx.y][threadIdx.x] = aw;
  tb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && col < D) {
    T sw = 0, sb = 0;
    for (int i = 0; i < 8; ++i) {
      sw += tw[i][threadIdx.x];
      sb += tb[i][threadIdx.x];
    }
    part_w[blockIdx.y * D + col] = sw;
    part_b[blockIdx.y * D + col] = sb;
  }
}

// ---- vectorised f32 kernels for D a multiple of 128 up to 1024: a warp holds its row in
// registers (C float4 per lane, element 4 (lane + 32 c) + k), so x is read once ----

__device__ __forceinline__ void store4(float* p, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}
__device__ __forceinline__ void store4(__nv_bfloat16* p, float a, float b, float c, float d) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
  uint2 u;
  u.x = *reinterpret_cast<uint32_t*>(&lo);
  u.y = *reinterpret_cast<uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(p) = u;
}
__device__ __forceinline__ float4 load4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

// The rest of a vectorised forward once a warp holds its row v (element 4 (lane + 32 c) + k) and
// each lane the sum s of its elements, in the order (x + y) + (z + w) per float4:
// y = (v - mean) rstd w + b, and mean and rstd saved. Shared by the norm and the fused residual
// pass, so that both give the same bits.
template <int C, typename TY>
__device__ __forceinline__ void normalize_row(const float4 (&v)[C], float s,
                                              const float* __restrict__ w,
                                              const float* __restrict__ b, float eps, int D,
                                              int64_t row, int lane, TY* __restrict__ y,
                                              float* __restrict__ mean, float* __restrict__ rstd) {
  const float mu = warp_sum(s) / static_cast<float>(D);
  float q = 0;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const float a = v[c].x - mu, bb = v[c].y - mu, cc = v[c].z - mu, d = v[c].w - mu;
    q += (a * a + bb * bb) + (cc * cc + d * d);
  }
  const float rs = rsqrtf(warp_sum(q) / static_cast<float>(D) + eps);
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int j = 4 * (lane + 32 * c);
    const float4 wv = load4(w + j), bv = load4(b + j);
    store4(y + row * D + j, (v[c].x - mu) * rs * wv.x + bv.x, (v[c].y - mu) * rs * wv.y + bv.y,
           (v[c].z - mu) * rs * wv.z + bv.z, (v[c].w - mu) * rs * wv.w + bv.w);
  }
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

template <int C, typename TY>
__global__ void layernorm_fwd_vec_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ b, float eps, int64_t M, int D,
                                         TY* __restrict__ y, float* __restrict__ mean,
                                         float* __restrict__ rstd) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.y;
  if (row >= M) return;
  const int lane = threadIdx.x;
  float4 v[C];
  float s = 0;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    v[c] = load4(x + row * D + 4 * (lane + 32 * c));
    s += (v[c].x + v[c].y) + (v[c].z + v[c].w);
  }
  normalize_row<C>(v, s, w, b, eps, D, row, lane, y, mean, rstd);
}

// gx rows as layernorm_bwd_gx_kernel, rows strided over the grid (warp per row). With kWB, the
// same pass also sums g xhat and g over the block's rows into part_w[blockIdx.x, :] and
// part_b[blockIdx.x, :] (the weight and bias gradients' partials, finished by
// layernorm_bwd_wb_final_kernel), so g and x are read once for all three gradients. The warps
// add their column sums into shared memory one after another: a fixed order, deterministic.
template <int C, typename TY, bool kWB>
__global__ void layernorm_bwd_vec_kernel(const TY* __restrict__ g, const float* __restrict__ x,
                                         const float* __restrict__ w,
                                         const float* __restrict__ mean,
                                         const float* __restrict__ rstd, int64_t M, int D,
                                         float* __restrict__ gx, bool accumulate,
                                         float* __restrict__ part_w, float* __restrict__ part_b) {
  const int lane = threadIdx.x;
  float4 pw[kWB ? C : 1], pb[kWB ? C : 1];  // this lane's column sums (kWB)
  if constexpr (kWB)
#pragma unroll
    for (int c = 0; c < C; ++c) pw[c] = pb[c] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.y; row < M;
       row += int64_t{gridDim.x} * kRowsPerBlock) {
    const float mu = mean[row], rs = rstd[row];
    float4 gw[C], xh[C];  // g * w and xhat
    float sgw = 0, sgwx = 0;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int j = 4 * (lane + 32 * c);
      const float4 gv = load4(g + row * D + j), xv = load4(x + row * D + j), wv = load4(w + j);
      gw[c] = make_float4(gv.x * wv.x, gv.y * wv.y, gv.z * wv.z, gv.w * wv.w);
      xh[c] = make_float4((xv.x - mu) * rs, (xv.y - mu) * rs, (xv.z - mu) * rs, (xv.w - mu) * rs);
      sgw += (gw[c].x + gw[c].y) + (gw[c].z + gw[c].w);
      sgwx += (gw[c].x * xh[c].x + gw[c].y * xh[c].y) + (gw[c].z * xh[c].z + gw[c].w * xh[c].w);
      if constexpr (kWB) {
        pw[c].x += gv.x * xh[c].x;
        pw[c].y += gv.y * xh[c].y;
        pw[c].z += gv.z * xh[c].z;
        pw[c].w += gv.w * xh[c].w;
        pb[c].x += gv.x;
        pb[c].y += gv.y;
        pb[c].z += gv.z;
        pb[c].w += gv.w;
      }
    }
    const float a = warp_sum(sgw) / static_cast<float>(D);
    const float cc = warp_sum(sgwx) / static_cast<float>(D);
    if (gx) {
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const int j = 4 * (lane + 32 * c);
        const float4 o = accumulate ? load4(gx + row * D + j) : make_float4(0.f, 0.f, 0.f, 0.f);
        store4(gx + row * D + j, o.x + rs * (gw[c].x - a - xh[c].x * cc),
               o.y + rs * (gw[c].y - a - xh[c].y * cc), o.z + rs * (gw[c].z - a - xh[c].z * cc),
               o.w + rs * (gw[c].w - a - xh[c].w * cc));
      }
    }
  }
  if constexpr (kWB) {
    __shared__ float4 sw[C * 32], sb[C * 32];  // element 4 (lane + 32 c) + k, as the registers
    for (int warp = 0; warp < kRowsPerBlock; ++warp) {
      if (threadIdx.y == warp) {
#pragma unroll
        for (int c = 0; c < C; ++c) {
          const int k = lane + 32 * c;
          if (warp == 0) {
            sw[k] = pw[c];
            sb[k] = pb[c];
          } else {
            sw[k] = make_float4(sw[k].x + pw[c].x, sw[k].y + pw[c].y, sw[k].z + pw[c].z,
                                sw[k].w + pw[c].w);
            sb[k] = make_float4(sb[k].x + pb[c].x, sb[k].y + pb[c].y, sb[k].z + pb[c].z,
                                sb[k].w + pb[c].w);
          }
        }
      }
      __syncthreads();
    }
    for (int k = threadIdx.y * 32 + lane; k < C * 32; k += kRowsPerBlock * 32) {
      reinterpret_cast<float4*>(part_w + int64_t{blockIdx.x} * D)[k] = sw[k];
      reinterpret_cast<float4*>(part_b + int64_t{blockIdx.x} * D)[k] = sb[k];
    }
  }
}

// ---- the residual pass fused with the next LayerNorm's forward (add_dropout_layernorm_fwd) ----
// h = a + bf16(keep ? b scale : 0) with add_dropout_fwd's values and mask (element i's word is
// word i % 4 of Philox block i / 4), then y = (h - mean) rstd w + bias in bf16 with mean and
// rstd saved: the residual stream is written once and not read back by the norm. A warp per
// row in the layout of layernorm_fwd_vec_kernel (lane l holds elements 4 (l + 32 c) + k) and
// through its normalize_row, so the statistics and y are those of the two kernels bit for bit;
// each lane's 4 elements take one Philox block.
template <int C>
__global__ void add_dropout_layernorm_kernel(
    const float* __restrict__ a, const __nv_bfloat16* __restrict__ b, float p, float scale,
    uint64_t seed, uint64_t offset, const uint64_t* __restrict__ shift, const float* __restrict__ w,
    const float* __restrict__ bias, float eps, int64_t M, int D, float* __restrict__ h,
    __nv_bfloat16* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.y;
  if (row >= M) return;
  offset += *shift;
  const uint32_t threshold = Philox::keep_threshold(p);
  const int lane = threadIdx.x;
  // The dropped branch value as add_dropout_kernel rounds it: bf16(b scale) or 0.
  auto dropped = [&](float x, uint32_t word) {
    return word >= threshold ? __bfloat162float(__float2bfloat16_rn(x * scale)) : 0.f;
  };
  float4 v[C];
  float s = 0;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int64_t q = row * (D / 4) + lane + 32 * c;  // elements 4q .. 4q+3
    uint32_t word[4];
    Philox::words(seed, offset, static_cast<uint64_t>(q), word);
    const float4 av = load4(a + 4 * q), bv = load4(b + 4 * q);
    v[c] = make_float4(av.x + dropped(bv.x, word[0]), av.y + dropped(bv.y, word[1]),
                       av.z + dropped(bv.z, word[2]), av.w + dropped(bv.w, word[3]));
    s += (v[c].x + v[c].y) + (v[c].z + v[c].w);
  }
#pragma unroll
  for (int c = 0; c < C; ++c)
    store4(h + row * D + 4 * (lane + 32 * c), v[c].x, v[c].y, v[c].z, v[c].w);
  normalize_row<C>(v, s, w, bias, eps, D, row, lane, y, mean, rstd);
}

// Calls fn(std::integral_constant<int, C>) for C = D / 128 in 1..8; false when D does not fit.
template <typename Fn>
bool with_chunks(int64_t D, Fn&& fn) {
  if (D % 128 != 0 || D < 128 || D > 1024) return false;
  switch (D / 128) {
    case 1:
      fn(std::integral_constant<int, 1>{});
      return true;
    case 2:
      fn(std::integral_constant<int, 2>{});
      return true;
    case 3:
      fn(std::integral_constant<int, 3>{});
      return true;
    case 4:
      fn(std::integral_constant<int, 4>{});
      return true;
    case 5:
      fn(std::integral_constant<int, 5>{});
      return true;
    case 6:
      fn(std::integral_constant<int, 6>{});
      return true;
    case 7:
      fn(std::integral_constant<int, 7>{});
      return true;
    default:
      fn(std::integral_constant<int, 8>{});
      return true;
  }
}

// gw[col] = sum over chunks of part_w[chunk, col], gb likewise (column_total). Block bx:
// columns [32 bx, 32 bx + 32), 32 x 8 threads.
template <typename T>
__global__ void layernorm_bwd_wb_final_kernel(const T* __restrict__ part_w,
                                              const T* __restrict__ part_b, int64_t chunks,
                                              int64_t D, T* __restrict__ gw, T* __restrict__ gb) {
  __shared__ T tw[8][33], tb[8][33];
  const T sw = column_total(part_w, chunks, D, tw);
  const T sb = column_total(part_b, chunks, D, tb);
  const int64_t col = blockIdx.x * int64_t{32} + threadIdx.x;
  if (threadIdx.y != 0 || col >= D) return;
  if (gw) gw[col] = sw;
  if (gb) gb[col] = sb;
}

// Calls fn with a value of the output type: T itself, or bf16 (mixed precision, f32 input).
template <typename T, typename Fn>
void with_y_type(DType y_dtype, Fn&& fn) {
  if (y_dtype == DType::bf16 && std::is_same_v<T, float>)
    fn(__nv_bfloat16{});
  else if (y_dtype == dtype_of<T>::value)
    fn(T{});
  else
    fail("layer_norm: no CUDA kernel for output dtype " + std::string(dtype_name(y_dtype)));
}

unsigned row_blocks(int64_t M) {
  return static_cast<unsigned>(std::max<int64_t>(1, (M + kRowsPerBlock - 1) / kRowsPerBlock));
}

}  // namespace

void layernorm_fwd(DType dtype, DType y_dtype, const void* x, const void* w, const void* b,
                   double eps, int64_t M, int64_t D, void* y, void* mean, void* rstd,
                   cudaStream_t stream) {
  if (M == 0) return;
  dispatch_float(dtype, "layer_norm", [&](auto zero) {
    using T = decltype(zero);
    with_y_type<T>(y_dtype, [&](auto yzero) {
      using TY = decltype(yzero);
      if constexpr (std::is_same_v<T, float>) {
        if (aligned16(x) && aligned16(w) && aligned16(b) && aligned16(y) &&
            with_chunks(D, [&](auto chunks) {
              layernorm_fwd_vec_kernel<decltype(chunks)::value, TY>
                  <<<row_blocks(M), dim3(32, kRowsPerBlock), 0, stream>>>(
                      static_cast<const float*>(x), static_cast<const float*>(w),
                      static_cast<const float*>(b), static_cast<float>(eps), M, static_cast<int>(D),
                      static_cast<TY*>(y), static_cast<float*>(mean), static_cast<float*>(rstd));
            }))
          return;
      }
      layernorm_fwd_kernel<T, TY><<<row_blocks(M), dim3(32, kRowsPerBlock), 0, stream>>>(
          static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), T(eps), M,
          D, static_cast<TY*>(y), static_cast<T*>(mean), static_cast<T*>(rstd));
    });
  });
  after_launch("layernorm_fwd", stream);
}

void layernorm_bwd(DType dtype, DType g_dtype, const void* g, const void* x, const void* w,
                   const void* mean, const void* rstd, int64_t M, int64_t D, void* gx, void* gw,
                   void* gb, bool accumulate, cudaStream_t stream) {
  dispatch_float(dtype, "layer_norm backward", [&](auto zero) {
    using T = decltype(zero);
    with_y_type<T>(g_dtype, [&](auto yzero) {
      using TY = decltype(yzero);
      const TY* pg = static_cast<const TY*>(g);
      const T* px = static_cast<const T*>(x);
      const T *pm = static_cast<const T*>(mean), *pr = static_cast<const T*>(rstd);
      Allocator* alloc = caching_allocator(current_device());
      T* part = nullptr;
      size_t bytes = 0;
      int64_t chunks = 0;  // rows of partial column sums
      auto final_sums = [&] {
        layernorm_bwd_wb_final_kernel<T>
            <<<static_cast<unsigned>((D + 31) / 32), dim3(32, 8), 0, stream>>>(
                part, part + chunks * D, chunks, D, static_cast<T*>(gw), static_cast<T*>(gb));
        after_launch("layernorm_bwd_wb_final", stream);
        alloc->deallocate(part, bytes);  // stream-ordered reuse: see cuda/allocator.cuh
      };
      // f32, D a multiple of 128 up to 1024, 16-byte aligned: rows in registers, and the
      // weight/bias partials in the same pass. Blocks of 8 warps stride the rows, as many as
      // the GPU holds at once (a few per SM: few enough partial rows for the final sum). Not
      // more: a fixed 512 blocks, 1.3 waves of 3 blocks per SM on an H200, left most of the GPU
      // idle for the last 0.3 (2.9 TB/s in Nsight Compute).
      if constexpr (std::is_same_v<T, float>) {
        const bool wb = gw || gb;
        const bool vec = M > 0 && aligned16(g) && aligned16(x) && aligned16(w) &&
                         (!gx || aligned16(gx)) && (gx || wb);
        if (vec && with_chunks(D, [&](auto c) {
              constexpr int C = decltype(c)::value;
              const dim3 threads(32, kRowsPerBlock);
              const int64_t blocks = std::clamp<int64_t>(
                  row_blocks(M), 1,
                  wb ? resident_blocks(layernorm_bwd_vec_kernel<C, TY, true>, threads)
                     : resident_blocks(layernorm_bwd_vec_kernel<C, TY, false>, threads));
              float *pw = nullptr, *pb = nullptr;
              if (wb) {
                chunks = blocks;
                bytes = static_cast<size_t>(2 * chunks * D) * sizeof(float);
                part = static_cast<T*>(alloc->allocate(bytes));
                pw = part;
                pb = part + chunks * D;
              }
              if (wb)
                layernorm_bwd_vec_kernel<C, TY, true>
                    <<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
                        pg, px, static_cast<const float*>(w), pm, pr, M, static_cast<int>(D),
                        static_cast<float*>(gx), accumulate, pw, pb);
              else
                layernorm_bwd_vec_kernel<C, TY, false>
                    <<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
                        pg, px, static_cast<const float*>(w), pm, pr, M, static_cast<int>(D),
                        static_cast<float*>(gx), accumulate, nullptr, nullptr);
              after_launch(wb ? "layernorm_bwd_fused" : "layernorm_bwd_gx", stream);
            })) {
          if (wb) final_sums();
          return;
        }
      }
      if (gx && M > 0) {
        layernorm_bwd_gx_kernel<T, TY><<<row_blocks(M), dim3(32, kRowsPerBlock), 0, stream>>>(
            pg, px, static_cast<const T*>(w), pm, pr, M, D, static_cast<T*>(gx), accumulate);
        after_launch("layernorm_bwd_gx", stream);
      }
      if (!gw && !gb) return;
      // Row chunks so that (column blocks x chunks) fills the GPU; at least 64 rows each.
      const int64_t col_blocks = (D + 31) / 32;
      const int64_t want = std::max<int64_t>(1, 1024 / col_blocks);
      const int64_t rows_per = std::max<int64_t>(64, (M + want - 1) / want);
      chunks = std::max<int64_t>(1, (M + rows_per - 1) / rows_per);
      bytes = static_cast<size_t>(2 * chunks * D) * sizeof(T);
      part = static_cast<T*>(alloc->allocate(bytes));
      if (M == 0)
        LVIT_CUDA_CHECK(cudaMemsetAsync(part, 0, bytes, stream));
      else {
        layernorm_bwd_wb_partial_kernel<T, TY>
            <<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8),
               0, stream>>>(pg, px, pm, pr, M, D, rows_per, part, part + chunks * D);
        after_launch("layernorm_bwd_wb_partial", stream);
      }
      final_sums();
    });
  });
}

bool add_dropout_layernorm_supported(int64_t D, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  return D % 128 == 0 && D >= 128 && D <= 1024;
}

void add_dropout_layernorm_fwd(const float* a, const void* b, double p, uint64_t seed,
                               uint64_t offset, const float* w, const float* bias, double eps,
                               int64_t M, int64_t D, float* h, void* y, float* mean, float* rstd,
                               cudaStream_t stream) {
  if (M == 0) return;
  if (!add_dropout_layernorm_supported(D, {a, b, w, bias, h, y}))
    fail("add_dropout_layernorm_fwd: rows of " + std::to_string(D) +
         " (a multiple of 128 up to 1024, 16-byte aligned)");
  const uint64_t* shift = current_philox_shift();
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  with_chunks(D, [&](auto chunks) {
    add_dropout_layernorm_kernel<decltype(chunks)::value>
        <<<row_blocks(M), dim3(32, kRowsPerBlock), 0, stream>>>(
            a, static_cast<const __nv_bfloat16*>(b), static_cast<float>(p), scale, seed, offset,
            shift, w, bias, static_cast<float>(eps), M, static_cast<int>(D), h,
            static_cast<__nv_bfloat16*>(y), mean, rstd);
  });
  after_launch("add_dropout_layernorm_fwd", stream);
}

}  // namespace lvit::cuda
