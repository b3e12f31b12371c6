// Cross-entropy kernels and launchers (declared in cuda/loss.cuh). One block per row: C is a
// class count (10..1000), so a row fits a block's registers comfortably.
#include <cmath>

#include "core/storage.h"
#include "cuda/allocator.cuh"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/launch.cuh"
#include "cuda/loss.cuh"

namespace lvit::cuda {
namespace {

constexpr int kRowThreads = 128;

template <typename L>
__device__ __forceinline__ int64_t label_of(const void* labels, int64_t i) {
  return static_cast<int64_t>(static_cast<const L*>(labels)[i]);
}

// loss_i = lse - sum_j q_j z_j (sum_j q_j = 1), probs = softmax(z).
template <typename T, typename L>
__global__ void ce_fwd_kernel(const T* __restrict__ logits, const void* labels,
                              const T* __restrict__ targets, T smoothing, int64_t C,
                              T* __restrict__ probs, T* __restrict__ row_loss) {
  const int64_t i = blockIdx.x;
  const T* z = logits + i * C;
  T* p = probs + i * C;
  T mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) mx = max(mx, z[j]);
  mx = block_max(mx);
  T s = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += exp(z[j] - mx);
  s = block_sum(s);
  const T inv = T(1) / s;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) p[j] = exp(z[j] - mx) * inv;
  T qz = 0;
  if (targets) {
    const T* q = targets + i * C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) qz += q[j] * z[j];
  } else {
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) qz += z[j];
    qz *= smoothing / static_cast<T>(C);
  }
  qz = block_sum(qz);
  if (threadIdx.x == 0) {
    T l = mx + log(s) - qz;
    if (!targets) {
      const int64_t y = label_of<L>(labels, i);
      l = (y >= 0 && y < C) ? l - (T(1) - smoothing) * z[y] : T(NAN);
    }
    row_loss[i] = l;
  }
}

template <typename T>
__global__ void mean_kernel(const T* __restrict__ v, int64_t n, T* __restrict__ out) {
  T s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += v[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s / static_cast<T>(n);
}

template <typename T, typename L>
__global__ void ce_bwd_kernel(const T* __restrict__ probs, const void* labels,
                              const T* __restrict__ targets, T smoothing, const T* gloss, int64_t B,
                              int64_t C, T* __restrict__ glogits) {
  const T gs = *gloss / static_cast<T>(B), off = smoothing / static_cast<T>(C);
  const int64_t n = B * C;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k / C, j = k - i * C;
    T q;
    if (targets)
      q = targets[k];
    else
      q = off + (label_of<L>(labels, i) == j ? T(1) - smoothing : T(0));
    glogits[k] = (probs[k] - q) * gs;
  }
}

template <typename Fn>
void dispatch_labels(DType label_dtype, Fn&& fn) {
  if (label_dtype == DType::i32)
    fn(int32_t{});
  else if (label_dtype == DType::i64)
    fn(int64_t{});
  else
    unsupported_dtype("cross_entropy labels", label_dtype);
}

}  // namespace

void cross_entropy_fwd(DType dtype, const void* logits, const void* labels, DType label_dtype,
                       const void* targets, double smoothing, int64_t B, int64_t C, void* probs,
                       void* loss, cudaStream_t stream) {
  if (!labels) label_dtype = DType::i64;  // soft targets: the label type is unused
  dispatch_float(dtype, "cross_entropy", [&](auto zero) {
    using T = decltype(zero);
    Allocator* alloc = caching_allocator(current_device());
    const size_t bytes = static_cast<size_t>(B > 0 ? B : 1) * sizeof(T);
    T* row_loss = static_cast<T*>(alloc->allocate(bytes));
    if (B > 0)
      dispatch_labels(label_dtype, [&](auto lzero) {
        using L = decltype(lzero);
        ce_fwd_kernel<T, L><<<static_cast<unsigned>(B), kRowThreads, 0, stream>>>(
            static_cast<const T*>(logits), labels, static_cast<const T*>(targets), T(smoothing), C,
            static_cast<T*>(probs), row_loss);
      });
    after_launch("cross_entropy_fwd", stream);
    mean_kernel<T><<<1, 1024, 0, stream>>>(row_loss, B, static_cast<T*>(loss));
    after_launch("cross_entropy_mean", stream);
    alloc->deallocate(row_loss, bytes);  // stream-ordered reuse: see cuda/allocator.cuh
  });
}

void cross_entropy_bwd(DType dtype, const void* probs, const void* labels, DType label_dtype,
                       const void* targets, double smoothing, const void* gloss, int64_t B,
                       int64_t C, void* glogits, cudaStream_t stream) {
  if (B * C == 0) return;
  if (!labels) label_dtype = DType::i64;
  dispatch_float(dtype, "cross_entropy backward", [&](auto zero) {
    using T = decltype(zero);
    dispatch_labels(label_dtype, [&](auto lzero) {
      using L = decltype(lzero);
      ce_bwd_kernel<T, L><<<grid_for(B * C), kThreads, 0, stream>>>(
          static_cast<const T*>(probs), labels, static_cast<const T*>(targets), T(smoothing),
          static_cast<const T*>(gloss), B, C, static_cast<T*>(glogits));
    });
  });
  after_launch("cross_entropy_bwd", stream);
}

}  // namespace lvit::cuda
