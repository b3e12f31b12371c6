// Elementwise arithmetic and reductions on the device: the CUDA half of ops/elementwise.cpp and
// ops/reduce.cpp. Host-only header; raw pointers to device memory of the current device, f32
// or f64 (`dtype`), launched on `stream`.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace lvit::cuda {

enum class BinaryOp { add, sub, mul, div };
enum class UnaryOp { neg, exp, log, sqrt, square, add_scalar, mul_scalar };

inline constexpr int kMaxElementwiseRank = 8;

// out (contiguous, `shape`) = a op b, where a and b are read through their own strides over
// `shape` (stride 0 on broadcast dimensions).
struct BroadcastLayout {
  int rank = 0;
  int64_t shape[kMaxElementwiseRank] = {};
  int64_t a_strides[kMaxElementwiseRank] = {};
  int64_t b_strides[kMaxElementwiseRank] = {};
  bool contiguous = false;  // a and b both contiguous over shape: one flat loop
};
void binary(BinaryOp op, DType dtype, const void* a, const void* b, void* out,
            const BroadcastLayout& layout, cudaStream_t stream);

// out[i] = op(x[i]) for contiguous x, out of n elements; `s` is the scalar of add/mul_scalar.
void unary(UnaryOp op, DType dtype, const void* x, void* out, int64_t n, double s,
           cudaStream_t stream);

// dst[i] += alpha * src[i], both contiguous.
void axpy(DType dtype, void* dst, const void* src, int64_t n, double alpha, cudaStream_t stream);

// out[kept index] = sum over the reduced dimensions of x. The kept dimensions (outermost first)
// enumerate out contiguously; x is read through its strides.
struct ReduceLayout {
  int kept_rank = 0;
  int64_t kept_shape[kMaxElementwiseRank] = {};
  int64_t kept_strides[kMaxElementwiseRank] = {};  // x's strides
  int red_rank = 0;
  int64_t red_shape[kMaxElementwiseRank] = {};
  int64_t red_strides[kMaxElementwiseRank] = {};  // x's strides
};
void sum_to(DType dtype, const void* x, void* out, const ReduceLayout& layout, cudaStream_t stream);

}  // namespace lvit::cuda
