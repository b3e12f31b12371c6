// Elementwise arithmetic and reductions on the device: the CUDA half of ops/elementwise.cpp and
// ops/reduce.cpp. Host-only header; raw pointers to device memory of the current device, f32,
// f64 or bf16 (`dtype`; bf16 is computed in fp32), launched on `stream`.
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
// Dtypes: all three equal, or f32 with bf16 to f32 (either order): the mixed-precision residual
// stream adds a bf16 branch output to an f32 stream.
void binary(BinaryOp op, DType a_dtype, DType b_dtype, DType out_dtype, const void* a,
            const void* b, void* out, const BroadcastLayout& layout, cudaStream_t stream);

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
