// Dropout / drop-path mask kernel and launcher (declared in cuda/dropout.cuh).
#include <cmath>
#include <type_traits>

#include "core/rng.h"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/dropout.cuh"
#include "cuda/launch.cuh"

namespace lvit::cuda {
namespace {

// Dropout: one Philox block per thread gives the 4 words of elements 4t .. 4t+3 (the stream
// order of Philox::word), so each block of rounds is computed once.
template <typename T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, float p,
                               acc_t<T> scale, uint64_t seed, uint64_t offset,
                               const uint64_t* __restrict__ shift) {
  offset += *shift;
  const int64_t blocks = (n + 3) / 4;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < blocks;
       t += int64_t{gridDim.x} * blockDim.x) {
    uint32_t c[4] = {static_cast<uint32_t>(t),
                     static_cast<uint32_t>(static_cast<uint64_t>(t) >> 32),
                     static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)};
    Philox::block(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * t + k;
      if (i >= n) break;
      const float u = static_cast<float>(c[k] >> 8) * (1.0f / 16777216.0f);
      y[i] = st<T>(u >= p ? ld(x[i]) * scale : acc_t<T>(0));
    }
  }
}

// The vectorised form: thread t owns elements 8t .. 8t+7, i.e. Philox blocks 2t and 2t+1 (the
// same words as above), read and written with 16-byte accesses. n % 8 == 0.
template <typename T>
__global__ void dropout_vec_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, float p,
                                   acc_t<T> scale, uint64_t seed, uint64_t offset,
                                   const uint64_t* __restrict__ shift) {
  offset += *shift;
  const int64_t groups = n / kVec;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups;
       t += int64_t{gridDim.x} * blockDim.x) {
    alignas(16) T v[kVec];
    load8(x + kVec * t, v);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint64_t blk = static_cast<uint64_t>(2 * t + h);
      uint32_t c[4] = {static_cast<uint32_t>(blk), static_cast<uint32_t>(blk >> 32),
                       static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)};
      Philox::block(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float u = static_cast<float>(c[k] >> 8) * (1.0f / 16777216.0f);
        v[4 * h + k] = st<T>(u >= p ? ld(v[4 * h + k]) * scale : acc_t<T>(0));
      }
    }
    store8(y + kVec * t, v);
  }
}

// GELU fused with dropout, forward (kBackward false: out = mask gelu(x) scale) or backward
// (out = mask g gelu'(x) scale). Thread t owns elements 4t .. 4t+3: one Philox block.
template <typename T, bool kBackward>
__global__ void gelu_dropout_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                    T* __restrict__ out, int64_t n, float p, acc_t<T> scale,
                                    uint64_t seed, uint64_t offset,
                                    const uint64_t* __restrict__ shift) {
  using A = acc_t<T>;
  offset += *shift;
  const int64_t blocks = (n + 3) / 4;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < blocks;
       t += int64_t{gridDim.x} * blockDim.x) {
    uint32_t c[4] = {static_cast<uint32_t>(t),
                     static_cast<uint32_t>(static_cast<uint64_t>(t) >> 32),
                     static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)};
    Philox::block(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * t + k;
      if (i >= n) break;
      const float u = static_cast<float>(c[k] >> 8) * (1.0f / 16777216.0f);
      A r = A(0);
      if (u >= p) {
        const A v = ld(x[i]);
        if constexpr (kBackward) {
          r = ld(g[i]) * gelu_exact_grad(v) * scale;
        } else {
          r = gelu_exact(v) * scale;
        }
      }
      out[i] = st<T>(r);
    }
  }
}

// The vectorised fused kernel: thread t owns elements 8t .. 8t+7 (Philox blocks 2t, 2t+1),
// 16-byte loads and stores; the GELU is only evaluated for kept elements. n % 8 == 0.
template <typename T, bool kBackward>
__global__ void gelu_dropout_vec_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                        T* __restrict__ out, int64_t n, float p, acc_t<T> scale,
                                        uint64_t seed, uint64_t offset,
                                        const uint64_t* __restrict__ shift) {
  using A = acc_t<T>;
  offset += *shift;
  const int64_t groups = n / kVec;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups;
       t += int64_t{gridDim.x} * blockDim.x) {
    alignas(16) T xv[kVec];
    alignas(16) T gv[kVec];
    load8(x + kVec * t, xv);
    if constexpr (kBackward) load8(g + kVec * t, gv);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint64_t blk = static_cast<uint64_t>(2 * t + h);
      uint32_t c[4] = {static_cast<uint32_t>(blk), static_cast<uint32_t>(blk >> 32),
                       static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)};
      Philox::block(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int e = 4 * h + k;
        const float u = static_cast<float>(c[k] >> 8) * (1.0f / 16777216.0f);
        A r = A(0);
        if (u >= p) {
          const A v = ld(xv[e]);
          if constexpr (kBackward) {
            r = ld(gv[e]) * gelu_exact_grad(v) * scale;
          } else {
            r = gelu_exact(v) * scale;
          }
        }
        xv[e] = st<T>(r);
      }
    }
    store8(out + kVec * t, xv);
  }
}

// Drop-path: one uniform per sample of `group` elements.
template <typename T>
__global__ void drop_path_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                 int64_t group, float p, acc_t<T> scale, uint64_t seed,
                                 uint64_t offset, const uint64_t* __restrict__ shift) {
  offset += *shift;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const bool keep = Philox::uniform(seed, offset, static_cast<uint64_t>(i / group)) >= p;
    y[i] = st<T>(keep ? ld(x[i]) * scale : acc_t<T>(0));
  }
}

}  // namespace

void apply_mask(DType dtype, const void* x, void* y, int64_t n, double p, uint64_t seed,
                uint64_t offset, int64_t group, cudaStream_t stream) {
  if (n == 0) return;
  int device = 0;
  LVIT_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t* shift = context(device).philox_shift;
  dispatch_floating(dtype, "dropout", [&](auto zero) {
    using T = decltype(zero);
    const acc_t<T> scale = static_cast<acc_t<T>>(1.0 / (1.0 - p));
    const auto* px = static_cast<const T*>(x);
    auto* py = static_cast<T*>(y);
    if (group == 1 && vec_ok(n, sizeof(T), px, py))
      dropout_vec_kernel<T><<<grid_for(n / kVec), kThreads, 0, stream>>>(
          px, py, n, static_cast<float>(p), scale, seed, offset, shift);
    else if (group == 1)
      dropout_kernel<T><<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(
          px, py, n, static_cast<float>(p), scale, seed, offset, shift);
    else
      drop_path_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
          px, py, n, group, static_cast<float>(p), scale, seed, offset, shift);
  });
  after_launch("dropout", stream);
}

namespace {
template <bool kBackward>
void launch_gelu_dropout(DType dtype, const void* g, const void* x, void* out, int64_t n, double p,
                         uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  int device = 0;
  LVIT_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t* shift = context(device).philox_shift;
  dispatch_floating(dtype, "gelu_dropout", [&](auto zero) {
    using T = decltype(zero);
    if (vec_ok(n, sizeof(T), x, out) && (!kBackward || vec_ok(n, sizeof(T), g))) {
      gelu_dropout_vec_kernel<T, kBackward><<<grid_for(n / kVec), kThreads, 0, stream>>>(
          static_cast<const T*>(g), static_cast<const T*>(x), static_cast<T*>(out), n,
          static_cast<float>(p), static_cast<acc_t<T>>(1.0 / (1.0 - p)), seed, offset, shift);
      return;
    }
    gelu_dropout_kernel<T, kBackward><<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(
        static_cast<const T*>(g), static_cast<const T*>(x), static_cast<T*>(out), n,
        static_cast<float>(p), static_cast<acc_t<T>>(1.0 / (1.0 - p)), seed, offset, shift);
  });
  after_launch(kBackward ? "gelu_dropout_bwd" : "gelu_dropout_fwd", stream);
}
}  // namespace

void gelu_dropout_fwd(DType dtype, const void* x, void* y, int64_t n, double p, uint64_t seed,
                      uint64_t offset, cudaStream_t stream) {
  launch_gelu_dropout<false>(dtype, nullptr, x, y, n, p, seed, offset, stream);
}

void gelu_dropout_bwd(DType dtype, const void* g, const void* x, void* gx, int64_t n, double p,
                      uint64_t seed, uint64_t offset, cudaStream_t stream) {
  launch_gelu_dropout<true>(dtype, g, x, gx, n, p, seed, offset, stream);
}

namespace {
// ---- the residual add fused with its branch's dropout ----

// The keep bits of elements 8t .. 8t+7 (Philox blocks 2t and 2t+1: dropout_kernel's words).
__device__ __forceinline__ unsigned keep_bits8(int64_t t, float p, uint64_t seed, uint64_t offset) {
  unsigned bits = 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint64_t blk = static_cast<uint64_t>(2 * t + h);
    uint32_t c[4] = {static_cast<uint32_t>(blk), static_cast<uint32_t>(blk >> 32),
                     static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)};
    Philox::block(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
#pragma unroll
    for (int k = 0; k < 4; ++k)
      bits |= (static_cast<float>(c[k] >> 8) * (1.0f / 16777216.0f) >= p ? 1u : 0u) << (4 * h + k);
  }
  return bits;
}

// Forward (kBackward false): out (R) = a + round_Y(keep ? b * scale : 0) with a = x (R), b = y (Y).
// Backward: out (Y) = keep ? a * scale : 0 with a = g (R); b unused. Thread t owns elements
// 8t .. 8t+7, moved with 16-byte accesses when `vec` (every pointer aligned, n % 8 == 0), else
// one by one with bounds checks.
template <typename R, typename Y, bool kBackward>
__global__ void add_dropout_kernel(const R* __restrict__ a, const Y* __restrict__ b,
                                   void* __restrict__ out_raw, int64_t n, float p, acc_t<R> scale,
                                   uint64_t seed, uint64_t offset,
                                   const uint64_t* __restrict__ shift, bool vec) {
  using A = acc_t<R>;
  using O = std::conditional_t<kBackward, Y, R>;
  O* __restrict__ out = static_cast<O*>(out_raw);
  offset += *shift;
  const int64_t groups = (n + kVec - 1) / kVec;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups;
       t += int64_t{gridDim.x} * blockDim.x) {
    const unsigned keep = keep_bits8(t, p, seed, offset);
    const int64_t i0 = kVec * t;
    alignas(16) R av[kVec];
    alignas(16) Y bv[kVec];
    alignas(16) O ov[kVec];
    if (vec) {
      load8(a + i0, av);
      if constexpr (!kBackward) load8(b + i0, bv);
    } else {
      for (int e = 0; e < kVec; ++e) {
        av[e] = i0 + e < n ? a[i0 + e] : R(0);
        if constexpr (!kBackward) bv[e] = i0 + e < n ? b[i0 + e] : Y(0);
      }
    }
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const bool kept = (keep >> e) & 1u;
      if constexpr (kBackward) {
        ov[e] = st<Y>(kept ? A(ld(av[e])) * scale : A(0));
      } else {
        const Y d = st<Y>(kept ? A(ld(bv[e])) * scale : A(0));
        ov[e] = st<R>(A(ld(av[e])) + A(ld(d)));
      }
    }
    if (vec) {
      store8(out + i0, ov);
    } else {
      for (int e = 0; e < kVec && i0 + e < n; ++e) out[i0 + e] = ov[e];
    }
  }
}

template <bool kBackward>
void launch_add_dropout(DType rdtype, const void* a, DType ydtype, const void* b, void* out,
                        int64_t n, double p, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  int device = 0;
  LVIT_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t* shift = context(device).philox_shift;
  auto launch = [&](auto r_tag, auto y_tag) {
    using R = decltype(r_tag);
    using Y = decltype(y_tag);
    const R* pa = static_cast<const R*>(a);
    const Y* pb = static_cast<const Y*>(b);
    const bool vec =
        vec_ok(n, sizeof(R), pa) &&
        (kBackward ? vec_ok(n, sizeof(Y), static_cast<const Y*>(out))
                   : vec_ok(n, sizeof(Y), pb) && vec_ok(n, sizeof(R), static_cast<const R*>(out)));
    add_dropout_kernel<R, Y, kBackward><<<grid_for((n + kVec - 1) / kVec), kThreads, 0, stream>>>(
        pa, pb, out, n, static_cast<float>(p), static_cast<acc_t<R>>(1.0 / (1.0 - p)), seed, offset,
        shift, vec);
  };
  if (rdtype == DType::f32 && ydtype == DType::bf16)
    launch(float{}, __nv_bfloat16{});
  else if (rdtype == DType::f32 && ydtype == DType::f32)
    launch(float{}, float{});
  else if (rdtype == DType::f64 && ydtype == DType::f64)
    launch(double{}, double{});
  else
    unsupported_dtype("add_dropout (residual and branch dtypes)", ydtype);
  after_launch(kBackward ? "add_dropout_bwd" : "add_dropout_fwd", stream);
}
}  // namespace

void add_dropout_fwd(DType rdtype, const void* x, DType ydtype, const void* y, void* out, int64_t n,
                     double p, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  launch_add_dropout<false>(rdtype, x, ydtype, y, out, n, p, seed, offset, stream);
}

void add_dropout_bwd(DType rdtype, const void* g, DType ydtype, void* gy, int64_t n, double p,
                     uint64_t seed, uint64_t offset, cudaStream_t stream) {
  launch_add_dropout<true>(rdtype, g, ydtype, nullptr, gy, n, p, seed, offset, stream);
}

}  // namespace lvit::cuda
