// cuBLASLt GEMMs (row-major interface over column-major cuBLAS) and the column-sum kernel.
#include <cuda_bf16.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "core/storage.h"
#include "cuda/allocator.cuh"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/gemm.cuh"
#include "cuda/launch.cuh"

namespace lvit::cuda {
namespace {

std::atomic<MathMode> g_math_mode{MathMode::tf32};

// One cached cuBLASLt plan per problem: descriptors, layouts and the heuristic's first algorithm.
// Creating them costs tens of microseconds, more than many of the GEMMs themselves.
struct PlanKey {
  int device;
  DType dtype, c_dtype;
  MathMode mode;
  bool ta, tb;
  int epilogue;  // kNoEpilogue, kBias or kBiasGrad
  int64_t M, N, K, lda, ldb, ldc, sa, sb, sc, batch;
  auto tie() const {
    return std::tie(device, dtype, c_dtype, mode, ta, tb, epilogue, M, N, K, lda, ldb, ldc, sa, sb,
                    sc, batch);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

constexpr int kNoEpilogue = 0, kBias = 1, kBiasGrad = 2;

struct Plan {
  bool supported = true;  // false: cuBLASLt has no algorithm (only asked of kBiasGrad plans)
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

std::mutex g_plans_mutex;
std::map<PlanKey, Plan> g_plans;  // kept for the life of the process (a few hundred at most)

cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::f64:
      return CUDA_R_64F;
    case DType::bf16:
      return CUDA_R_16BF;
    default:
      unsupported_dtype("gemm", t);
  }
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                                   int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  LVIT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows),
                                               static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    LVIT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                       &count, sizeof(count)));
    LVIT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return l;
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLASLt's "A" is our B and
// its "B" our A, each read as the column-major transpose of how we store it.
Plan make_plan(const PlanKey& k, Context& ctx) {
  Plan p;
  const cudaDataType_t type = data_type(k.dtype), c_type = data_type(k.c_dtype);
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  cudaDataType_t scale_type = CUDA_R_32F;
  if (k.dtype == DType::f64) {
    compute = CUBLAS_COMPUTE_64F;
    scale_type = CUDA_R_64F;
  } else if (k.dtype == DType::f32 && k.mode == MathMode::tf32) {
    compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  }
  LVIT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, compute, scale_type));
  const cublasOperation_t op_a = k.tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A = our B
  const cublasOperation_t op_b = k.ta ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B = our A
  LVIT_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  LVIT_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  if (k.epilogue != kNoEpilogue) {
    // BGRADB: the column sums of op(our A) over the reduction dimension, i.e. the bias
    // gradient of the weight-gradient GEMM gw = g^T x, for free in its epilogue.
    const cublasLtEpilogue_t epi =
        k.epilogue == kBias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_BGRADB;
    LVIT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    const cudaDataType_t bias_type = c_type;
    LVIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                     &bias_type, sizeof(bias_type)));
  }
  // Stored (column-major) shapes: our B is [K, N] row-major = N x K column-major (or the
  // transpose when tb), our A is K x M column-major (or the transpose when ta).
  p.a = make_layout(type, k.tb ? k.K : k.N, k.tb ? k.N : k.K, k.ldb, k.batch, k.sb);
  p.b = make_layout(type, k.ta ? k.M : k.K, k.ta ? k.K : k.M, k.lda, k.batch, k.sa);
  p.c = make_layout(c_type, k.N, k.M, k.ldc, k.batch, k.sc);

  cublasLtMatmulPreference_t pref = nullptr;
  LVIT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = ctx.workspace_bytes;
  LVIT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.cublaslt, p.desc, p.a, p.b, p.c, p.c,
                                                           pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (k.epilogue == kBiasGrad && (st != CUBLAS_STATUS_SUCCESS || found == 0)) {
    p.supported = false;
    return p;
  }
  LVIT_CUBLAS_CHECK(st);
  if (found == 0)
    fail("cuBLASLt has no algorithm for a " + std::string(dtype_name(k.dtype)) + " GEMM " +
         std::to_string(k.M) + "x" + std::to_string(k.N) + "x" + std::to_string(k.K) + " (batch " +
         std::to_string(k.batch) + ")");
  p.algo = result.algo;
  return p;
}

// Element i of the matrix being summed: x[i], or with a multiplier d (column_sums_of_product)
// the product x[i] d[i] rounded to T, which is also stored in prod[i] (the same value the
// elementwise multiply would have written, so the sums match multiply-then-sum bit for bit).
template <typename T>
__device__ __forceinline__ T summand(const T* __restrict__ x, const T* __restrict__ d,
                                     T* __restrict__ prod, int64_t i) {
  if (d == nullptr) return x[i];
  const T v = st<T>(ld(x[i]) * ld(d[i]));
  prod[i] = v;
  return v;
}

// Partial column sums: block (bx, by) sums rows [by*rows_per, ...) of columns [32 bx, 32 bx + 32)
// with 32 x 8 threads (reads of 32 consecutive elements are coalesced), into part[by, col].
template <typename T, typename Acc>
__global__ void column_partial_kernel(const T* __restrict__ x, const T* __restrict__ d,
                                      T* __restrict__ prod, int64_t M, int64_t N, int64_t rows_per,
                                      Acc* __restrict__ part) {
  __shared__ Acc tile[8][33];
  const int64_t col = blockIdx.x * int64_t{32} + threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per;
  const int64_t r1 = min(M, r0 + rows_per);
  Acc acc = 0;
  if (col < N)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8)
      acc += static_cast<Acc>(summand(x, d, prod, r * N + col));
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    Acc s = 0;
    for (int i = 0; i < 8; ++i) s += tile[i][threadIdx.x];
    part[blockIdx.y * N + col] = s;
  }
}

// The vectorised form for contiguous rows (N % 4 == 0, 8- or 16-byte aligned rows): each thread
// sums 4 adjacent columns, a warp covers 128 columns, 8 warps split the chunk's rows.
template <typename T, typename Acc>
__global__ void column_partial_vec_kernel(const T* __restrict__ x, const T* __restrict__ d,
                                          T* __restrict__ prod, int64_t M, int64_t N,
                                          int64_t rows_per, Acc* __restrict__ part) {
  __shared__ Acc tile[8][128];
  const int64_t col = blockIdx.x * int64_t{128} + 4 * threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per;
  const int64_t r1 = min(M, r0 + rows_per);
  Acc a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  // Four rows' loads in flight per thread (rows r, r + 8, r + 16, r + 24), then their adds in
  // row order: the memory system sees 4x the outstanding requests of a row-at-a-time loop.
  auto load4 = [&](int64_t r, Acc(&v)[4]) {
    const int64_t i = r * N + col;
    if constexpr (sizeof(T) == 2) {
      uint2 u = *reinterpret_cast<const uint2*>(x + i);
      T* e = reinterpret_cast<T*>(&u);
      if (d != nullptr) {  // the product, rounded to T, stored as the elementwise multiply would
        const uint2 du = *reinterpret_cast<const uint2*>(d + i);
        const T* de = reinterpret_cast<const T*>(&du);
        for (int k = 0; k < 4; ++k) e[k] = st<T>(ld(e[k]) * ld(de[k]));
        *reinterpret_cast<uint2*>(prod + i) = u;
      }
      for (int k = 0; k < 4; ++k) v[k] = static_cast<Acc>(e[k]);
    } else {
      for (int k = 0; k < 4; ++k) v[k] = static_cast<Acc>(summand(x, d, prod, i + k));
    }
  };
  if (col < N)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 32) {
      Acc v[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (r + 8 * j < r1) {
          load4(r + 8 * j, v[j]);
        } else {
          for (int k = 0; k < 4; ++k) v[j][k] = Acc(0);
        }
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        a0 += v[j][0];
        a1 += v[j][1];
        a2 += v[j][2];
        a3 += v[j][3];
      }
    }
  tile[threadIdx.y][4 * threadIdx.x] = a0;
  tile[threadIdx.y][4 * threadIdx.x + 1] = a1;
  tile[threadIdx.y][4 * threadIdx.x + 2] = a2;
  tile[threadIdx.y][4 * threadIdx.x + 3] = a3;
  __syncthreads();
  // 256 threads fold the 8 partial rows of the block's 128 columns.
  const int t = threadIdx.y * 32 + threadIdx.x;
  if (t < 128 && blockIdx.x * int64_t{128} + t < N) {
    Acc s = 0;
    for (int i = 0; i < 8; ++i) s += tile[i][t];
    part[blockIdx.y * N + blockIdx.x * int64_t{128} + t] = s;
  }
}

// The 16-byte form for 2-byte elements (bf16; N % 8 == 0, 16-byte aligned rows): each thread
// sums 8 adjacent columns, a warp covers 256 columns, 8 warps split the chunk's rows. Each
// thread has 4 rows' 16-byte loads of x (and d) in flight, all issued before the first is
// used (64 registers: 4 blocks per SM). Against the 4-column form on an H200, the column sums
// of a vit-cifar step at batch 512 took 7.8 instead of 9.1 ms per 5 steps.
template <typename T, typename Acc>
__global__ void __launch_bounds__(256, 4)
    column_partial_vec8_kernel(const T* __restrict__ x, const T* __restrict__ d,
                               T* __restrict__ prod, int64_t M, int64_t N, int64_t rows_per,
                               Acc* __restrict__ part) {
  static_assert(sizeof(T) == 2);
  constexpr int kRows = 4;
  __shared__ Acc tile[8][256];
  const int64_t col = blockIdx.x * int64_t{256} + 8 * threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per;
  const int64_t r1 = min(M, r0 + rows_per);
  Acc acc[8] = {};
  if (col < N)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8 * kRows) {
      uint4 xr[kRows], dr[kRows];
#pragma unroll
      for (int j = 0; j < kRows; ++j)
        if (r + 8 * j < r1) {
          const int64_t i = (r + 8 * j) * N + col;
          xr[j] = *reinterpret_cast<const uint4*>(x + i);
          if (d != nullptr) dr[j] = *reinterpret_cast<const uint4*>(d + i);
        }
#pragma unroll
      for (int j = 0; j < kRows; ++j)
        if (r + 8 * j < r1) {
          T* e = reinterpret_cast<T*>(&xr[j]);
          if (d != nullptr) {  // the product, rounded to T, as the elementwise multiply stores it
            const T* de = reinterpret_cast<const T*>(&dr[j]);
#pragma unroll
            for (int k = 0; k < 8; ++k) e[k] = st<T>(ld(e[k]) * ld(de[k]));
            *reinterpret_cast<uint4*>(prod + (r + 8 * j) * N + col) = xr[j];
          }
#pragma unroll
          for (int k = 0; k < 8; ++k) acc[k] += static_cast<Acc>(e[k]);
        }
    }
#pragma unroll
  for (int k = 0; k < 8; ++k) tile[threadIdx.y][8 * threadIdx.x + k] = acc[k];
  __syncthreads();
  // 256 threads fold the 8 partial rows of the block's 256 columns.
  const int t = threadIdx.y * 32 + threadIdx.x;
  if (blockIdx.x * int64_t{256} + t < N) {
    Acc s = 0;
    for (int i = 0; i < 8; ++i) s += tile[i][t];
    part[blockIdx.y * N + blockIdx.x * int64_t{256} + t] = s;
  }
}

// out[col] = the sum of part[0 .. chunks, col] (column_total). Block bx: columns [32 bx,
// 32 bx + 32), 32 x 8 threads.
template <typename T, typename Acc>
__global__ void column_final_kernel(const Acc* __restrict__ part, int64_t chunks, int64_t N,
                                    T* __restrict__ out) {
  __shared__ Acc tile[8][33];
  const Acc s = column_total(part, chunks, N, tile);
  const int64_t col = blockIdx.x * int64_t{32} + threadIdx.x;
  if (threadIdx.y == 0 && col < N) out[col] = st<T>(s);
}

}  // namespace

void set_math_mode(MathMode mode) { g_math_mode.store(mode); }
MathMode math_mode() { return g_math_mode.load(); }

namespace {

// The GEMM with an optional epilogue vector (bias read, or bias gradient written). Returns false
// only for a kBiasGrad plan that cuBLASLt cannot run.
bool gemm_impl(DType dtype, DType c_dtype, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
               const void* A, int64_t lda, int64_t stride_a, const void* B, int64_t ldb,
               int64_t stride_b, void* C, int64_t ldc, int64_t stride_c, int64_t batch,
               int epilogue, const void* vec, float beta) {
  if (c_dtype != dtype && !(dtype == DType::bf16 && c_dtype == DType::f32))
    fail("gemm: " + std::string(dtype_name(dtype)) + " operands with a " +
         std::string(dtype_name(c_dtype)) + " result");
  if (M == 0 || N == 0 || batch == 0) return epilogue != kBiasGrad;
  const int device = current_device();
  Context& ctx = context(device);
  if (K == 0) {  // empty sum: C = beta C (+ bias); rare, so through the general path below
    if (beta != 0.0f || epilogue != kNoEpilogue)
      fail("gemm: K = 0 with beta or an epilogue is not supported");
    for (int64_t i = 0; i < batch; ++i)
      LVIT_CUDA_CHECK(cudaMemset2DAsync(static_cast<char*>(C) + i * stride_c * dtype_size(c_dtype),
                                        ldc * dtype_size(c_dtype), 0, N * dtype_size(c_dtype), M,
                                        ctx.stream));
    return true;
  }
  const PlanKey key{device,
                    dtype,
                    c_dtype,
                    math_mode(),
                    ta,
                    tb,
                    epilogue,
                    M,
                    N,
                    K,
                    lda,
                    ldb,
                    ldc,
                    batch > 1 ? stride_a : 0,
                    batch > 1 ? stride_b : 0,
                    batch > 1 ? stride_c : 0,
                    batch};
  const double one64 = 1.0, beta64 = beta;
  const float one32 = 1.0f;
  const void* alpha = dtype == DType::f64 ? static_cast<const void*>(&one64) : &one32;
  const void* betap = dtype == DType::f64 ? static_cast<const void*>(&beta64) : &beta;
  // One lock over lookup, bias pointer and enqueue: the bias pointer is set on the shared
  // descriptor per call, so no other GEMM may slip in between.
  std::lock_guard<std::mutex> lock(g_plans_mutex);
  auto it = g_plans.find(key);
  if (it == g_plans.end()) it = g_plans.emplace(key, make_plan(key, ctx)).first;
  Plan& plan = it->second;
  if (!plan.supported) return false;
  if (epilogue != kNoEpilogue)
    LVIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &vec, sizeof(vec)));
  LVIT_CUBLAS_CHECK(cublasLtMatmul(ctx.cublaslt, plan.desc, alpha, B, plan.a, A, plan.b, betap, C,
                                   plan.c, C, plan.c, &plan.algo, ctx.workspace,
                                   ctx.workspace_bytes, ctx.stream));
  if (profiling())
    profile_mark((std::string("gemm ") + std::string(dtype_name(dtype)) + " " + std::to_string(M) +
                  "x" + std::to_string(N) + "x" + std::to_string(K) + (ta ? " T" : " N") +
                  (tb ? "T" : "N") + (batch > 1 ? " b" + std::to_string(batch) : ""))
                     .c_str(),
                 ctx.stream);
  return true;
}

}  // namespace

void gemm(DType dtype, DType c_dtype, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
          const void* A, int64_t lda, int64_t stride_a, const void* B, int64_t ldb,
          int64_t stride_b, void* C, int64_t ldc, int64_t stride_c, int64_t batch, const void* bias,
          float beta) {
  gemm_impl(dtype, c_dtype, ta, tb, M, N, K, A, lda, stride_a, B, ldb, stride_b, C, ldc, stride_c,
            batch, bias ? kBias : kNoEpilogue, bias, beta);
}

bool gemm_bias_grad(DType dtype, DType c_dtype, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                    const void* A, int64_t lda, const void* B, int64_t ldb, void* C, int64_t ldc,
                    void* bias_grad) {
  return gemm_impl(dtype, c_dtype, ta, tb, M, N, K, A, lda, 0, B, ldb, 0, C, ldc, 0, 1, kBiasGrad,
                   bias_grad, 0.0f);
}

namespace {

// column_sums, or with d (and prod) column_sums_of_product.
void column_sums_impl(DType dtype, DType out_dtype, const void* x, const void* d, void* prod,
                      int64_t M, int64_t N, void* out, cudaStream_t stream) {
  if (N == 0) return;
  const int device = current_device();
  auto run = [&](auto t_zero, auto acc_zero, auto out_zero) {
    using T = decltype(t_zero);
    using Acc = decltype(acc_zero);
    using TO = decltype(out_zero);
    // Whether x, d and prod (the latter two when given) all start on a multiple of `bytes`.
    auto all_aligned = [&](uintptr_t bytes) {
      for (const void* p : {x, d, static_cast<const void*>(prod)})
        if (p != nullptr && reinterpret_cast<uintptr_t>(p) % bytes != 0) return false;
      return true;
    };
    const bool vec = N % 4 == 0 && all_aligned(4 * sizeof(T));
    const bool vec8 = sizeof(T) == 2 && N % 8 == 0 && all_aligned(16);
    const T* pd = static_cast<const T*>(d);
    T* pp = static_cast<T*>(prod);
    // About 1024 blocks (8 per SM of an H100/H200) split between column blocks and row chunks;
    // each chunk at least 64 rows.
    const int64_t col_blocks = vec8 ? (N + 255) / 256 : vec ? (N + 127) / 128 : (N + 31) / 32;
    int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((M + 63) / 64, 1024 / col_blocks + 1));
    const int64_t rows_per = (M + chunks - 1) / std::max<int64_t>(chunks, 1);
    chunks = M == 0 ? 1 : (M + rows_per - 1) / rows_per;
    Allocator* alloc = caching_allocator(device);
    const size_t bytes = static_cast<size_t>(chunks * N) * sizeof(Acc);
    Acc* part = static_cast<Acc*>(alloc->allocate(bytes));
    if (M == 0) {
      LVIT_CUDA_CHECK(cudaMemsetAsync(part, 0, bytes, stream));
    } else if (vec8) {
      if constexpr (sizeof(T) == 2)
        column_partial_vec8_kernel<T, Acc>
            <<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8),
               0, stream>>>(static_cast<const T*>(x), pd, pp, M, N, rows_per, part);
      after_launch("column_partial", stream);
    } else if (vec) {
      column_partial_vec_kernel<T, Acc>
          <<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8), 0,
             stream>>>(static_cast<const T*>(x), pd, pp, M, N, rows_per, part);
      after_launch("column_partial", stream);
    } else {
      column_partial_kernel<T, Acc>
          <<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8), 0,
             stream>>>(static_cast<const T*>(x), pd, pp, M, N, rows_per, part);
      after_launch("column_partial", stream);
    }
    column_final_kernel<TO, Acc><<<static_cast<unsigned>((N + 31) / 32), dim3(32, 8), 0, stream>>>(
        part, chunks, N, static_cast<TO*>(out));
    after_launch("column_final", stream);
    alloc->deallocate(part, bytes);  // stream-ordered reuse: see cuda/allocator.cuh
  };
  if (dtype == DType::f32 && out_dtype == DType::f32)
    run(float{}, float{}, float{});
  else if (dtype == DType::f64 && out_dtype == DType::f64)
    run(double{}, double{}, double{});
  else if (dtype == DType::bf16 && out_dtype == DType::f32)
    run(__nv_bfloat16{}, float{}, float{});
  else if (dtype == DType::bf16 && out_dtype == DType::bf16)
    run(__nv_bfloat16{}, float{}, __nv_bfloat16{});
  else
    fail("column_sums: " + std::string(dtype_name(dtype)) + " to " +
         std::string(dtype_name(out_dtype)));
}

}  // namespace

void column_sums(DType dtype, DType out_dtype, const void* x, int64_t M, int64_t N, void* out,
                 cudaStream_t stream) {
  column_sums_impl(dtype, out_dtype, x, nullptr, nullptr, M, N, out, stream);
}

void column_sums_of_product(DType dtype, DType out_dtype, const void* x, const void* d, int64_t M,
                            int64_t N, void* prod, void* out, cudaStream_t stream) {
  column_sums_impl(dtype, out_dtype, x, d, prod, M, N, out, stream);
}

}  // namespace lvit::cuda
