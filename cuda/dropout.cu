// Dropout / drop-path mask kernels and launchers (declared in cuda/dropout.cuh).
//
// Every elementwise kernel here gives thread t the elements 8t .. 8t+7, whose keep bits come
// from Philox blocks 2t and 2t+1 (element i takes word i % 4 of block i / 4: the stream order
// of Philox::word and of the CPU kernel, so a seed gives the same mask on either device). The
// elements move with 16-byte accesses when `vec` (n % 8 == 0, every pointer aligned), else one by
// one with bounds checks: one kernel per operation serves both layouts.
#include <cmath>
#include <type_traits>

#include "core/rng.h"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/dropout.cuh"
#include "cuda/dropout_mask.cuh"
#include "cuda/launch.cuh"

namespace lvit::cuda {
namespace {

// v = p[i0 .. i0 + 8): one 16-byte access per 16 bytes when vec, else element-wise (0 past n).
template <typename T>
__device__ __forceinline__ void load_group(const T* __restrict__ p, int64_t i0, int64_t n, bool vec,
                                           T (&v)[kVec]) {
  if (vec) {
    load8(p + i0, v);
    return;
  }
#pragma unroll
  for (int e = 0; e < kVec; ++e) v[e] = i0 + e < n ? p[i0 + e] : T(0);
}
template <typename T>
__device__ __forceinline__ void store_group(T* __restrict__ p, int64_t i0, int64_t n, bool vec,
                                            const T (&v)[kVec]) {
  if (vec) {
    store8(p + i0, v);
    return;
  }
  for (int e = 0; e < kVec && i0 + e < n; ++e) p[i0 + e] = v[e];
}

// y = keep ? x * scale : 0.
template <typename T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, float p,
                               acc_t<T> scale, uint64_t seed, uint64_t offset,
                               const uint64_t* __restrict__ shift, bool vec) {
  offset += *shift;
  const int64_t groups = (n + kVec - 1) / kVec;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups;
       t += int64_t{gridDim.x} * blockDim.x) {
    const unsigned keep = keep_bits8(t, p, seed, offset);
    alignas(16) T v[kVec];
    load_group(x, kVec * t, n, vec, v);
#pragma unroll
    for (int e = 0; e < kVec; ++e) v[e] = st<T>((keep >> e) & 1u ? ld(v[e]) * scale : acc_t<T>(0));
    store_group(y, kVec * t, n, vec, v);
  }
}

// GELU fused with dropout: y = keep ? gelu(x) scale : 0 and (kDeriv) dydx = keep ? gelu'(x)
// scale : 0. The GELU is evaluated for every element and the mask selects after: a branch per
// element cost more than the dropped elements' arithmetic, since every warp holds kept ones.
template <typename T, bool kDeriv>
__global__ void gelu_dropout_kernel(const T* __restrict__ x, T* __restrict__ y,
                                    T* __restrict__ dydx, int64_t n, float p, acc_t<T> scale,
                                    uint64_t seed, uint64_t offset,
                                    const uint64_t* __restrict__ shift, bool vec) {
  using A = acc_t<T>;
  offset += *shift;
  const int64_t groups = (n + kVec - 1) / kVec;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups;
       t += int64_t{gridDim.x} * blockDim.x) {
    const unsigned keep = keep_bits8(t, p, seed, offset);
    alignas(16) T xv[kVec];
    alignas(16) T dv[kVec];
    load_group(x, kVec * t, n, vec, xv);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const bool kept = (keep >> e) & 1u;
      const A v = ld(xv[e]);
      A r, dr = A(0);
      if constexpr (kDeriv)
        gelu_value_and_slope<T>(v, r, dr);
      else
        r = gelu_value<T>(v);
      xv[e] = st<T>(kept ? r * scale : A(0));
      if constexpr (kDeriv) dv[e] = st<T>(kept ? dr * scale : A(0));
    }
    store_group(y, kVec * t, n, vec, xv);
    if constexpr (kDeriv) store_group(dydx, kVec * t, n, vec, dv);
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
  const uint64_t* shift = current_philox_shift();
  dispatch_floating(dtype, "dropout", [&](auto zero) {
    using T = decltype(zero);
    const acc_t<T> scale = static_cast<acc_t<T>>(1.0 / (1.0 - p));
    const auto* px = static_cast<const T*>(x);
    auto* py = static_cast<T*>(y);
    if (group == 1)
      dropout_kernel<T><<<grid_for((n + kVec - 1) / kVec), kThreads, 0, stream>>>(
          px, py, n, static_cast<float>(p), scale, seed, offset, shift,
          vec_ok(n, sizeof(T), px, py));
    else
      drop_path_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
          px, py, n, group, static_cast<float>(p), scale, seed, offset, shift);
  });
  after_launch("dropout", stream);
}

void gelu_dropout_fwd(DType dtype, const void* x, void* y, void* dydx, int64_t n, double p,
                      uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  const uint64_t* shift = current_philox_shift();
  dispatch_floating(dtype, "gelu_dropout", [&](auto zero) {
    using T = decltype(zero);
    const bool vec = vec_ok(n, sizeof(T), x, y) && (!dydx || vec_ok(n, sizeof(T), dydx));
    const auto scale = static_cast<acc_t<T>>(1.0 / (1.0 - p));
    const unsigned blocks = grid_for((n + kVec - 1) / kVec);
    const T* px = static_cast<const T*>(x);
    if (dydx)
      gelu_dropout_kernel<T, true>
          <<<blocks, kThreads, 0, stream>>>(px, static_cast<T*>(y), static_cast<T*>(dydx), n,
                                            static_cast<float>(p), scale, seed, offset, shift, vec);
    else
      gelu_dropout_kernel<T, false>
          <<<blocks, kThreads, 0, stream>>>(px, static_cast<T*>(y), nullptr, n,
                                            static_cast<float>(p), scale, seed, offset, shift, vec);
  });
  after_launch("gelu_dropout_fwd", stream);
}

namespace {
// ---- the residual add fused with its branch's dropout ----

// Forward (kBackward false): out (R) = a + round_Y(keep ? b * scale : 0) with a = x (R), b = y (Y).
// Backward: out (Y) = keep ? a * scale : 0 with a = g (R); b unused.
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
    load_group(a, i0, n, vec, av);
    if constexpr (!kBackward) load_group(b, i0, n, vec, bv);
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
    store_group(out, i0, n, vec, ov);
  }
}

template <bool kBackward>
void launch_add_dropout(DType rdtype, const void* a, DType ydtype, const void* b, void* out,
                        int64_t n, double p, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  const uint64_t* shift = current_philox_shift();
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
