// Shared by the kernel files (cuda/*.cu only, never by plain C++): launch geometry and the warp
// and block reductions the kernels build on.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "cuda/check.cuh"

namespace lvit::cuda {

inline constexpr int kThreads = 256;
// Grid-stride loops cover larger sizes; this many blocks already fill an H100 many times over.
inline constexpr int64_t kMaxBlocks = int64_t{1} << 16;

inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned>(b < kMaxBlocks ? b : kMaxBlocks);
}

// Blocks of `kernel` (no dynamic shared memory) that the current device holds at once, asked
// of the runtime once per device, kernel and block size (every eager step calls this).
template <typename Kernel>
int64_t resident_blocks(Kernel* kernel, dim3 threads) {
  const int block = static_cast<int>(threads.x * threads.y * threads.z);
  int device = 0;
  LVIT_CUDA_CHECK(cudaGetDevice(&device));
  using Key = std::tuple<int, const void*, int>;
  static std::mutex mutex;
  static std::map<Key, int64_t> known;
  const Key key{device, reinterpret_cast<const void*>(kernel), block};
  std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = known.find(key); it != known.end()) return it->second;
  int sms = 0, per_sm = 0;
  LVIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  LVIT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block, 0));
  return known[key] = std::max<int64_t>(1, int64_t{sms} * per_sm);
}

// Calls fn(float{}) or fn(double{}) by dtype; anything else throws "no CUDA kernel for dtype".
template <typename Fn>
void dispatch_float(DType dtype, const char* what, Fn&& fn) {
  if (dtype == DType::f32)
    fn(float{});
  else if (dtype == DType::f64)
    fn(double{});
  else
    unsupported_dtype(what, dtype);
}

// Calls fn(float{}), fn(double{}) or fn(__nv_bfloat16{}) by dtype.
template <typename Fn>
void dispatch_floating(DType dtype, const char* what, Fn&& fn) {
  if (dtype == DType::bf16)
    fn(__nv_bfloat16{});
  else
    dispatch_float(dtype, what, fn);
}

// The arithmetic type of a storage type: bf16 values are computed in fp32.
template <typename T>
struct AccOf {
  using type = T;
};
template <>
struct AccOf<__nv_bfloat16> {
  using type = float;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

// Storage -> arithmetic and back (round to nearest even for bf16).
template <typename T>
__device__ __forceinline__ acc_t<T> ld(T v) {
  return static_cast<acc_t<T>>(v);
}
template <typename T, typename A>
__device__ __forceinline__ T st(A v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(static_cast<float>(v));
  else
    return static_cast<T>(v);
}

// ---- exact GELU (erf form, as timm and the CPU kernels), for every kernel that needs it ----
//
// gelu(v) = v Phi(v), gelu'(v) = Phi(v) + v phi(v), Phi(v) = (1 + erf(v / sqrt 2)) / 2 and
// phi(v) = exp(-v^2 / 2) / sqrt(2 pi). Storage type T picks the arithmetic: f32 and f64 take
// libm's erf and exp; bf16 results (2^-8 unit roundoff) take gelu_bf16_cdf_pdf below, the
// same function to 1e-5 relative in fewer instructions: GELU + dropout is the one elementwise pass
// of a bf16 training step bound by instruction issue rather than memory.

// The hardware approximations, flushing subnormals: one MUFU instruction each (the non-ftz forms
// add range fix-ups around it).
__device__ __forceinline__ float rcp_approx(float x) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float exp2_approx(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

// Phi(v) and phi(v) for bf16 results. The tail Phi(-|v|) = erfc(z) / 2 with z = |v| / sqrt 2
// takes the form of Numerical Recipes' erfcc, erfc(z) = t exp(-z^2 + P(t)) with t = 1 / (1 +
// z / 2), so the left tail keeps its relative accuracy where gelu(v) is tiny. P is our own
// degree-7 fit on t in [0.17, 1], which covers every |v| <= 13.8 (scripts/fit_gelu_erfc.py;
// fractional error 7.3e-7; NR's degree-9 fit for all z would cost two more multiply-adds). The
// constants are folded so that each exponential is one exp2 of a fused multiply-add:
// phi(v) = exp2(v^2 (-log2(e) / 2) + log2(1 / sqrt(2 pi))) and Phi(-|v|) = t phi(v) exp2(Q(t))
// with Q = log2(e) P - log2(2 / sqrt(2 pi)). In fp32 with the approximate reciprocal and exp2,
// gelu is within 1e-5 relative of the exact function for |v| <= 13 (the rounding of v^2
// dominates where it is large; below v = -13.2 phi flushes to 0, above it Phi rounds to 1) and
// gelu' within 1e-6 absolute. libm's erf, by contrast, rounds Phi(v) to 0 below v = -5.4, where
// 1 + erf cancels.
__device__ __forceinline__ void gelu_bf16_cdf_pdf(float v, float& cdf, float& pdf) {
  const float t = rcp_approx(fmaf(fabsf(v), 0.353553391f, 1.0f));  // 1 / (1 + |v| / sqrt 8)
  float q = -0.271082736f;
  q = fmaf(q, t, 1.08455743f);
  q = fmaf(q, t, -1.44377768f);
  q = fmaf(q, t, 0.503344167f);
  q = fmaf(q, t, -0.0558374573f);
  q = fmaf(q, t, 0.56770554f);
  q = fmaf(q, t, 1.44079866f);
  q = fmaf(q, t, -1.49996091f);
  pdf = exp2_approx(fmaf(v * v, -0.721347520f, -1.32574806f));
  const float tail = t * pdf * exp2_approx(q);  // Phi(-|v|)
  cdf = v >= 0.0f ? 1.0f - tail : tail;
}

// gelu(v) and gelu'(v) at once, sharing Phi; the one place where T picks the arithmetic.
template <typename T, typename A>
__device__ __forceinline__ void gelu_value_and_slope(A v, A& y, A& dy) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    float cdf, pdf;
    gelu_bf16_cdf_pdf(v, cdf, pdf);
    y = v * cdf;
    dy = fmaf(v, pdf, cdf);
  } else {
    const A e = erf(v * A(M_SQRT1_2));
    y = A(0.5) * v * (A(1) + e);
    dy = A(0.5) * (A(1) + e) + v * A(0.3989422804014327) * exp(A(-0.5) * v * v);
  }
}

// One of the two: the compiler drops the unused half (inlined, side-effect free).
template <typename T, typename A>
__device__ __forceinline__ A gelu_value(A v) {
  A y, dy;
  gelu_value_and_slope<T>(v, y, dy);
  return y;
}
template <typename T, typename A>
__device__ __forceinline__ A gelu_slope(A v) {
  A y, dy;
  gelu_value_and_slope<T>(v, y, dy);
  return dy;
}

// ---- vectorised access: 8 elements per thread through 16-byte loads and stores ----

inline constexpr int kVec = 8;

// Whether p may be read and written with 16-byte vector accesses.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether a contiguous run of n elements at p (and at q, r when given) can be read 8 at a time
// with 16-byte accesses: n a multiple of 8, every pointer 16-byte aligned, elements >= 2 bytes.
template <typename... P>
inline bool vec_ok(int64_t n, size_t elem_size, const P*... ptrs) {
  if (n % kVec != 0 || (kVec * elem_size) % 16 != 0) return false;
  return (aligned16(ptrs) && ...);
}

// out[0..8) = p[0..8) (p 16-byte aligned; 8 * sizeof(T) a multiple of 16).
template <typename T>
__device__ __forceinline__ void load8(const T* __restrict__ p, T (&out)[kVec]) {
  constexpr int chunks = kVec * sizeof(T) / 16;
  const uint4* src = reinterpret_cast<const uint4*>(p);
  uint4* dst = reinterpret_cast<uint4*>(out);
#pragma unroll
  for (int c = 0; c < chunks; ++c) dst[c] = src[c];
}
template <typename T>
__device__ __forceinline__ void store8(T* __restrict__ p, const T (&in)[kVec]) {
  constexpr int chunks = kVec * sizeof(T) / 16;
  const uint4* src = reinterpret_cast<const uint4*>(in);
  uint4* dst = reinterpret_cast<uint4*>(p);
#pragma unroll
  for (int c = 0; c < chunks; ++c) dst[c] = src[c];
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// Contains __syncthreads(): call it from all threads of the block.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  T r = lane < warps ? partial[lane] : T(0);
  return warp_sum(r);
}

template <typename T>
__device__ T block_max(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  T r = lane < warps ? partial[lane] : partial[0];
  return warp_max(r);
}

// Column totals of partial sums, for blocks of 32 x 8 threads: the sum over rows 0 .. rows-1
// of column 32 blockIdx.x + threadIdx.x of part [rows, N] (0 past N). Thread row ty adds rows
// ty, ty + 8, ...; thread row 0 then adds the 8 row sums in order and alone returns the total.
// The order is fixed (deterministic), with 8 loads in flight per column instead of one serial
// chain. Every thread of the block must call it: it synchronises on `tile`.
template <typename Acc>
__device__ Acc column_total(const Acc* __restrict__ part, int64_t rows, int64_t N,
                            Acc (&tile)[8][33]) {
  const int64_t col = blockIdx.x * int64_t{32} + threadIdx.x;
  Acc s = 0;
  if (col < N)
    for (int64_t r = threadIdx.y; r < rows; r += 8) s += part[r * N + col];
  tile[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0)
    for (int i = 1; i < 8; ++i) s += tile[i][threadIdx.x];
  return s;
}

}  // namespace lvit::cuda
