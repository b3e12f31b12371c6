// Elementwise and reduction kernels with their launchers (declared in cuda/elementwise.cuh).
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/check.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/launch.cuh"

namespace lvit::cuda {
namespace {

template <typename T>
struct BinaryFn {
  BinaryOp op;
  __device__ __forceinline__ T operator()(T a, T b) const {
    switch (op) {
      case BinaryOp::add:
        return a + b;
      case BinaryOp::sub:
        return a - b;
      case BinaryOp::mul:
        return a * b;
      default:
        return a / b;
    }
  }
};

// a, b and out may have different storage types (f32 + bf16 -> f32 for the mixed-precision
// residual stream); the arithmetic is in out's accumulation type.
template <typename TA, typename TB, typename TO>
__global__ void binary_flat_kernel(BinaryFn<acc_t<TO>> f, const TA* __restrict__ a,
                                   const TB* __restrict__ b, TO* __restrict__ out, int64_t n) {
  using A = acc_t<TO>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = st<TO>(f(static_cast<A>(ld(a[i])), static_cast<A>(ld(b[i]))));
}

// 8 elements per thread (every pointer 16-byte aligned, n % 8 == 0).
template <typename TA, typename TB, typename TO>
__global__ void binary_vec_kernel(BinaryFn<acc_t<TO>> f, const TA* __restrict__ a,
                                  const TB* __restrict__ b, TO* __restrict__ out, int64_t n) {
  using A = acc_t<TO>;
  const int64_t groups = n / kVec;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups;
       t += int64_t{gridDim.x} * blockDim.x) {
    alignas(16) TA va[kVec];
    alignas(16) TB vb[kVec];
    alignas(16) TO vo[kVec];
    load8(a + kVec * t, va);
    load8(b + kVec * t, vb);
#pragma unroll
    for (int k = 0; k < kVec; ++k)
      vo[k] = st<TO>(f(static_cast<A>(ld(va[k])), static_cast<A>(ld(vb[k]))));
    store8(out + kVec * t, vo);
  }
}

template <typename TA, typename TB, typename TO>
__global__ void binary_strided_kernel(BinaryFn<acc_t<TO>> f, const TA* __restrict__ a,
                                      const TB* __restrict__ b, TO* __restrict__ out,
                                      BroadcastLayout l, int64_t n) {
  using A = acc_t<TO>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    int64_t rem = i, oa = 0, ob = 0;
    for (int k = l.rank - 1; k >= 0; --k) {
      const int64_t idx = rem % l.shape[k];
      rem /= l.shape[k];
      oa += idx * l.a_strides[k];
      ob += idx * l.b_strides[k];
    }
    out[i] = st<TO>(f(static_cast<A>(ld(a[oa])), static_cast<A>(ld(b[ob]))));
  }
}

template <typename T>
__global__ void unary_kernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ out, int64_t n,
                             acc_t<T> s) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const A v = ld(x[i]);
    A r;
    switch (op) {
      case UnaryOp::neg:
        r = -v;
        break;
      case UnaryOp::exp:
        r = exp(v);
        break;
      case UnaryOp::log:
        r = log(v);
        break;
      case UnaryOp::sqrt:
        r = sqrt(v);
        break;
      case UnaryOp::square:
        r = v * v;
        break;
      case UnaryOp::add_scalar:
        r = v + s;
        break;
      default:
        r = v * s;
        break;
    }
    out[i] = r;
  }
}

template <typename T>
__global__ void axpy_vec_kernel(T* __restrict__ dst, const T* __restrict__ src, int64_t n,
                                acc_t<T> alpha) {
  const int64_t groups = n / kVec;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups;
       t += int64_t{gridDim.x} * blockDim.x) {
    alignas(16) T d[kVec];
    alignas(16) T s[kVec];
    load8(dst + kVec * t, d);
    load8(src + kVec * t, s);
#pragma unroll
    for (int k = 0; k < kVec; ++k) d[k] = st<T>(ld(d[k]) + alpha * ld(s[k]));
    store8(dst + kVec * t, d);
  }
}

template <typename T>
__global__ void axpy_kernel(T* __restrict__ dst, const T* __restrict__ src, int64_t n,
                            acc_t<T> alpha) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = st<T>(ld(dst[i]) + alpha * ld(src[i]));
}

// x's offset of reduced position r (0 <= r < product of red_shape).
__device__ __forceinline__ int64_t reduced_offset(const ReduceLayout& l, int64_t r) {
  int64_t off = 0;
  for (int k = l.red_rank - 1; k >= 0; --k) {
    off += (r % l.red_shape[k]) * l.red_strides[k];
    r /= l.red_shape[k];
  }
  return off;
}

__device__ __forceinline__ int64_t kept_offset(const ReduceLayout& l, int64_t j) {
  int64_t off = 0;
  for (int k = l.kept_rank - 1; k >= 0; --k) {
    off += (j % l.kept_shape[k]) * l.kept_strides[k];
    j /= l.kept_shape[k];
  }
  return off;
}

// Many outputs: one thread per output element, looping over the reduced elements. Neighbouring
// threads read neighbouring kept elements, coalesced when the innermost kept stride is 1
// (bias-style sums over leading dimensions, the common case).
template <typename T>
__global__ void sum_to_thread_kernel(const T* __restrict__ x, T* __restrict__ out, ReduceLayout l,
                                     int64_t n_out, int64_t n_red) {
  for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < n_out;
       j += int64_t{gridDim.x} * blockDim.x) {
    const T* base = x + kept_offset(l, j);
    acc_t<T> acc = 0;
    for (int64_t r = 0; r < n_red; ++r) acc += ld(base[reduced_offset(l, r)]);
    out[j] = st<T>(acc);
  }
}

// Few outputs: one block per output element, its threads striding over the reduced elements.
template <typename T>
__global__ void sum_to_block_kernel(const T* __restrict__ x, T* __restrict__ out, ReduceLayout l,
                                    int64_t n_red) {
  const T* base = x + kept_offset(l, blockIdx.x);
  acc_t<T> acc = 0;
  for (int64_t r = threadIdx.x; r < n_red; r += blockDim.x) acc += ld(base[reduced_offset(l, r)]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = st<T>(acc);
}

}  // namespace

void binary(BinaryOp op, DType a_dtype, DType b_dtype, DType out_dtype, const void* a,
            const void* b, void* out, const BroadcastLayout& l, cudaStream_t stream) {
  int64_t n = 1;
  for (int k = 0; k < l.rank; ++k) n *= l.shape[k];
  if (n == 0) return;
  auto run = [&](auto za, auto zb, auto zo) {
    using TA = decltype(za);
    using TB = decltype(zb);
    using TO = decltype(zo);
    const BinaryFn<acc_t<TO>> f{op};
    const auto* pa = static_cast<const TA*>(a);
    const auto* pb = static_cast<const TB*>(b);
    auto* po = static_cast<TO*>(out);
    if (l.contiguous && vec_ok(n, sizeof(TA), pa) && vec_ok(n, sizeof(TB), pb) &&
        vec_ok(n, sizeof(TO), po))
      binary_vec_kernel<TA, TB, TO><<<grid_for(n / kVec), kThreads, 0, stream>>>(f, pa, pb, po, n);
    else if (l.contiguous)
      binary_flat_kernel<TA, TB, TO><<<grid_for(n), kThreads, 0, stream>>>(f, pa, pb, po, n);
    else
      binary_strided_kernel<TA, TB, TO><<<grid_for(n), kThreads, 0, stream>>>(f, pa, pb, po, l, n);
  };
  if (a_dtype == b_dtype && b_dtype == out_dtype)
    dispatch_floating(out_dtype, "binary op", [&](auto z) { run(z, z, z); });
  else if (a_dtype == DType::f32 && b_dtype == DType::bf16 && out_dtype == DType::f32)
    run(float{}, __nv_bfloat16{}, float{});
  else if (a_dtype == DType::bf16 && b_dtype == DType::f32 && out_dtype == DType::f32)
    run(__nv_bfloat16{}, float{}, float{});
  else
    fail(std::string("binary op: no CUDA kernel for ") + std::string(dtype_name(a_dtype)) +
         " and " + std::string(dtype_name(b_dtype)) + " to " + std::string(dtype_name(out_dtype)));
  after_launch("binary", stream);
}

void unary(UnaryOp op, DType dtype, const void* x, void* out, int64_t n, double s,
           cudaStream_t stream) {
  if (n == 0) return;
  dispatch_floating(dtype, "unary op", [&](auto zero) {
    using T = decltype(zero);
    unary_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(op, static_cast<const T*>(x),
                                                          static_cast<T*>(out), n, acc_t<T>(s));
  });
  after_launch("unary", stream);
}

void axpy(DType dtype, void* dst, const void* src, int64_t n, double alpha, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_floating(dtype, "axpy_", [&](auto zero) {
    using T = decltype(zero);
    if (vec_ok(n, sizeof(T), dst, src)) {
      axpy_vec_kernel<T><<<grid_for(n / kVec), kThreads, 0, stream>>>(
          static_cast<T*>(dst), static_cast<const T*>(src), n, acc_t<T>(alpha));
      return;
    }
    axpy_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
        static_cast<T*>(dst), static_cast<const T*>(src), n, acc_t<T>(alpha));
  });
  after_launch("axpy", stream);
}

void sum_to(DType dtype, const void* x, void* out, const ReduceLayout& l, cudaStream_t stream) {
  int64_t n_out = 1, n_red = 1;
  for (int k = 0; k < l.kept_rank; ++k) n_out *= l.kept_shape[k];
  for (int k = 0; k < l.red_rank; ++k) n_red *= l.red_shape[k];
  if (n_out == 0) return;
  dispatch_floating(dtype, "sum_to", [&](auto zero) {
    using T = decltype(zero);
    // Enough outputs to fill the GPU with one thread each, or too little work per output to
    // be worth a block: thread per output. Otherwise a block per output.
    if (n_out >= 4096 || n_red < 64)
      sum_to_thread_kernel<T><<<grid_for(n_out), kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<T*>(out), l, n_out, n_red);
    else
      sum_to_block_kernel<T><<<static_cast<unsigned>(n_out), kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<T*>(out), l, n_red);
  });
  after_launch("sum_to", stream);
}

}  // namespace lvit::cuda
