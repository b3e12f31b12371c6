// Copy, dtype-conversion and fill kernels with their launchers (declared in cuda/copy.cuh).
// The host-side planning (which tensors to pack, stage or convert) is in cuda/copy.cpp.
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/check.cuh"
#include "cuda/copy.cuh"
#include "cuda/launch.cuh"

namespace lvit::cuda {
namespace {

// bf16 kept as its bits, so that no cuda_bf16.h conversion with its own NaN and rounding rules
// is involved: the device must produce exactly the bits the host (core/bf16.h) produces.
struct Bf16 {
  uint16_t bits;
};

template <typename T>
__device__ __forceinline__ double to_double(T v) {
  return static_cast<double>(v);
}
template <>
__device__ __forceinline__ double to_double<Bf16>(Bf16 v) {
  return static_cast<double>(__uint_as_float(static_cast<uint32_t>(v.bits) << 16));
}

template <typename T>
__device__ __forceinline__ T from_double(double v) {
  return static_cast<T>(v);
}
// Same algorithm as float_to_bf16 in core/bf16.h: NaN stays a quiet NaN, else round to
// nearest even; f64 goes through f32 first, as on the host.
template <>
__device__ __forceinline__ Bf16 from_double<Bf16>(double v) {
  uint32_t u = __float_as_uint(static_cast<float>(v));
  if ((u & 0x7fffffffu) > 0x7f800000u) return Bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return Bf16{static_cast<uint16_t>(u >> 16)};
}

// Conversions go through double as the host's do (core/tensor.cpp load/store), so that both
// give the same result for every value the host defines (out-of-range float -> integer casts
// are undefined on the host; the device saturates them). Same-type copies move bits.
template <typename S, typename D>
__device__ __forceinline__ D convert(S v) {
  if constexpr (std::is_same_v<S, D>) {
    return v;
  } else {
    return from_double<D>(to_double(v));
  }
}

// Element offsets of flat index i in dst and src. The loop is unrolled over the maximum rank
// with a runtime guard, so the layout arrays are indexed with constants and stay in the kernel
// parameter space instead of being copied to local memory.
template <typename Index>
__device__ __forceinline__ void offsets(Index i, const CopyLayout& l, int64_t& d, int64_t& s) {
  d = 0;
  s = 0;
#pragma unroll
  for (int k = kMaxCopyRank - 1; k >= 0; --k) {
    if (k < l.rank) {
      const Index size = static_cast<Index>(l.shape[k]);
      const Index idx = i % size;
      i /= size;
      d += static_cast<int64_t>(idx) * l.dst_strides[k];
      s += static_cast<int64_t>(idx) * l.src_strides[k];
    }
  }
}

template <typename S, typename D>
__global__ void copy_contiguous_kernel(D* __restrict__ dst, const S* __restrict__ src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = convert<S, D>(src[i]);
}

// 8 elements per thread with 16-byte accesses (both pointers 16-byte aligned, n % 8 == 0).
template <typename S, typename D>
__global__ void copy_vec_kernel(D* __restrict__ dst, const S* __restrict__ src, int64_t n) {
  const int64_t groups = n / kVec;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups;
       t += int64_t{gridDim.x} * blockDim.x) {
    alignas(16) S s[kVec];
    alignas(16) D d[kVec];
    load8(src + kVec * t, s);
#pragma unroll
    for (int k = 0; k < kVec; ++k) d[k] = convert<S, D>(s[k]);
    store8(dst + kVec * t, d);
  }
}

// Index is uint32_t when the element count fits (32-bit division is several times cheaper
// than 64-bit), int64_t otherwise.
template <typename S, typename D, typename Index>
__global__ void copy_strided_kernel(D* __restrict__ dst, const S* __restrict__ src, Index n,
                                    const CopyLayout layout) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n;
       i += Index{gridDim.x} * blockDim.x) {
    int64_t d, s;
    offsets(i, layout, d, s);
    dst[d] = convert<S, D>(src[s]);
  }
}

template <typename T, typename Index>
__global__ void fill_kernel(T* __restrict__ dst, T value, Index n, const CopyLayout layout) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n;
       i += Index{gridDim.x} * blockDim.x) {
    int64_t d, s;
    offsets(i, layout, d, s);
    dst[d] = value;
  }
}

bool fits_u32(int64_t n) { return n <= int64_t{UINT32_MAX} - int64_t{kThreads} * kMaxBlocks; }

template <typename S, typename D>
void launch_typed(void* dst, const void* src, const CopyLayout& l, cudaStream_t stream) {
  const int64_t n = l.numel();
  D* d = static_cast<D*>(dst);
  const S* s = static_cast<const S*>(src);
  if (l.contiguous() && sizeof(S) >= 2 && sizeof(D) >= 2 && vec_ok(n, sizeof(S), s) &&
      vec_ok(n, sizeof(D), d)) {
    copy_vec_kernel<S, D><<<grid_for(n / kVec), kThreads, 0, stream>>>(d, s, n);
  } else if (l.contiguous()) {
    copy_contiguous_kernel<S, D><<<grid_for(n), kThreads, 0, stream>>>(d, s, n);
  } else if (fits_u32(n)) {
    copy_strided_kernel<S, D, uint32_t>
        <<<grid_for(n), kThreads, 0, stream>>>(d, s, static_cast<uint32_t>(n), l);
  } else {
    copy_strided_kernel<S, D, int64_t><<<grid_for(n), kThreads, 0, stream>>>(d, s, n, l);
  }
  if (!profiling()) return after_launch("copy_kernel", stream);
  // The profile tells the copies apart by kind and size (2^k elements and up).
  int log2n = 0;
  while ((int64_t{2} << log2n) <= n) ++log2n;
  const std::string what = std::string(l.contiguous() ? "copy " : "copy strided ") +
                           std::to_string(sizeof(S)) + "B->" + std::to_string(sizeof(D)) +
                           "B n>=2^" + std::to_string(log2n);
  after_launch(what.c_str(), stream);
}

// Calls fn(T{}) with T the device element type of `t`.
template <typename Fn>
void with_type(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32:
      return fn(float{});
    case DType::f64:
      return fn(double{});
    case DType::bf16:
      return fn(Bf16{});
    case DType::i32:
      return fn(int32_t{});
    case DType::i64:
      return fn(int64_t{});
    case DType::u8:
      return fn(uint8_t{});
  }
}

// Calls fn(T{}) with an unsigned type of `size` bytes: same-dtype copies and fills only move
// bits, so four instantiations cover all six dtypes.
template <typename Fn>
void with_bits(size_t size, Fn&& fn) {
  switch (size) {
    case 1:
      return fn(uint8_t{});
    case 2:
      return fn(uint16_t{});
    case 4:
      return fn(uint32_t{});
    case 8:
      return fn(uint64_t{});
  }
}

size_t element_size(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64:
      return 8;
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::bf16:
      return 2;
    case DType::u8:
      return 1;
  }
  return 0;
}

}  // namespace

void launch_copy(void* dst, DType dst_dtype, const void* src, DType src_dtype,
                 const CopyLayout& layout, cudaStream_t stream) {
  if (layout.numel() == 0) return;
  if (dst_dtype == src_dtype) {
    with_bits(element_size(dst_dtype), [&](auto bits) {
      using T = decltype(bits);
      launch_typed<T, T>(dst, src, layout, stream);
    });
    return;
  }
  with_type(src_dtype, [&](auto s) {
    with_type(dst_dtype, [&](auto d) {
      using S = decltype(s);
      using D = decltype(d);
      if constexpr (!std::is_same_v<S, D>) launch_typed<S, D>(dst, src, layout, stream);
    });
  });
}

void launch_fill(void* dst, size_t elem_size, uint64_t bits, const CopyLayout& layout,
                 cudaStream_t stream) {
  const int64_t n = layout.numel();
  if (n == 0) return;
  with_bits(elem_size, [&](auto zero) {
    using T = decltype(zero);
    T* d = static_cast<T*>(dst);
    const T v = static_cast<T>(bits);
    if (fits_u32(n)) {
      fill_kernel<T, uint32_t>
          <<<grid_for(n), kThreads, 0, stream>>>(d, v, static_cast<uint32_t>(n), layout);
    } else {
      fill_kernel<T, int64_t><<<grid_for(n), kThreads, 0, stream>>>(d, v, n, layout);
    }
    after_launch("fill_kernel", stream);
  });
}

}  // namespace lvit::cuda
