// GELU and softmax kernels with their launchers (declared in cuda/activation.cuh).
#include <cmath>

#include "cuda/activation.cuh"
#include "cuda/check.cuh"
#include "cuda/launch.cuh"

namespace lvit::cuda {
namespace {

constexpr int kRowsPerBlock = 8;  // softmax: one warp per row

template <typename T>
__global__ void gelu_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const A v = ld(x[i]);
    y[i] = st<T>(gelu_value<T>(v));
  }
}

template <typename T>
__global__ void gelu_bwd_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                T* __restrict__ gx, int64_t n) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const A v = ld(x[i]);
    gx[i] = st<T>(ld(g[i]) * gelu_slope<T>(v));
  }
}

// Vectorised GELU (n % 8 == 0, 16-byte aligned): 8 elements per thread per iteration.
template <typename T, bool kBackward>
__global__ void gelu_vec_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                T* __restrict__ out, int64_t n) {
  using A = acc_t<T>;
  const int64_t groups = n / kVec;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups;
       t += int64_t{gridDim.x} * blockDim.x) {
    alignas(16) T xv[kVec];
    alignas(16) T gv[kVec];
    load8(x + kVec * t, xv);
    if constexpr (kBackward) load8(g + kVec * t, gv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const A v = ld(xv[k]);
      if constexpr (kBackward) {
        xv[k] = st<T>(ld(gv[k]) * gelu_slope<T>(v));
      } else {
        xv[k] = st<T>(gelu_value<T>(v));
      }
    }
    store8(out + kVec * t, xv);
  }
}

template <typename T>
__global__ void softmax_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t M,
                                   int64_t N) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.y;
  if (row >= M) return;
  const T* xr = x + row * N;
  T* yr = y + row * N;
  T mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < N; j += 32) mx = max(mx, xr[j]);
  mx = warp_max(mx);
  T s = 0;
  for (int64_t j = threadIdx.x; j < N; j += 32) s += exp(xr[j] - mx);
  const T inv = T(1) / warp_sum(s);
  for (int64_t j = threadIdx.x; j < N; j += 32) yr[j] = exp(xr[j] - mx) * inv;
}

template <typename T>
__global__ void softmax_bwd_kernel(const T* __restrict__ g, const T* __restrict__ y,
                                   T* __restrict__ gx, int64_t M, int64_t N) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.y;
  if (row >= M) return;
  const T *gr = g + row * N, *yr = y + row * N;
  T dot = 0;
  for (int64_t j = threadIdx.x; j < N; j += 32) dot += gr[j] * yr[j];
  dot = warp_sum(dot);
  T* o = gx + row * N;
  for (int64_t j = threadIdx.x; j < N; j += 32) o[j] = yr[j] * (gr[j] - dot);
}

unsigned row_blocks(int64_t M) {
  return static_cast<unsigned>((M + kRowsPerBlock - 1) / kRowsPerBlock);
}

}  // namespace

void gelu_fwd(DType dtype, const void* x, void* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_floating(dtype, "gelu", [&](auto zero) {
    using T = decltype(zero);
    if (vec_ok(n, sizeof(T), x, y)) {
      gelu_vec_kernel<T, false><<<grid_for(n / kVec), kThreads, 0, stream>>>(
          nullptr, static_cast<const T*>(x), static_cast<T*>(y), n);
      return;
    }
    gelu_fwd_kernel<T>
        <<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), n);
  });
  after_launch("gelu_fwd", stream);
}

void gelu_bwd(DType dtype, const void* g, const void* x, void* gx, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_floating(dtype, "gelu backward", [&](auto zero) {
    using T = decltype(zero);
    if (vec_ok(n, sizeof(T), g, x, gx)) {
      gelu_vec_kernel<T, true><<<grid_for(n / kVec), kThreads, 0, stream>>>(
          static_cast<const T*>(g), static_cast<const T*>(x), static_cast<T*>(gx), n);
      return;
    }
    gelu_bwd_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
        static_cast<const T*>(g), static_cast<const T*>(x), static_cast<T*>(gx), n);
  });
  after_launch("gelu_bwd", stream);
}

void softmax_fwd(DType dtype, const void* x, void* y, int64_t M, int64_t N, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  dispatch_float(dtype, "softmax", [&](auto zero) {
    using T = decltype(zero);
    softmax_fwd_kernel<T><<<row_blocks(M), dim3(32, kRowsPerBlock), 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), M, N);
  });
  after_launch("softmax_fwd", stream);
}

void softmax_bwd(DType dtype, const void* g, const void* y, void* gx, int64_t M, int64_t N,
                 cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  dispatch_float(dtype, "softmax backward", [&](auto zero) {
    using T = decltype(zero);
    softmax_bwd_kernel<T><<<row_blocks(M), dim3(32, kRowsPerBlock), 0, stream>>>(
        static_cast<const T*>(g), static_cast<const T*>(y), static_cast<T*>(gx), M, N);
  });
  after_launch("softmax_bwd", stream);
}

}  // namespace lvit::cuda
