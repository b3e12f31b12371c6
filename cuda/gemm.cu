// cuBLASLt GEMMs (row-major interface over column-major cuBLAS); declared in cuda/gemm.cuh.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
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

// GEMM tuning (set_gemm_tuning, or LVIT_GEMM_TUNE=1 at start-up; =2 also prints each choice to
// stderr): plans keep up to kTuneCandidates of the heuristic's algorithms and time them on their
// first eager call (tune_plan).
constexpr int kTuneCandidates = 8;
std::atomic<int> g_tuning{[] {
  const char* v = std::getenv("LVIT_GEMM_TUNE");
  return v ? std::atoi(v) : 0;
}()};
std::atomic<int64_t> g_tuned_plans{0};
int gemm_tuning_level() { return g_tuning.load(); }

struct Plan {
  bool supported = true;  // false: cuBLASLt has no algorithm (only asked of kBiasGrad plans)
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  // With tuning on when the plan was made: the heuristic's further candidates, timed on the
  // plan's first eager call (tune_plan); none once tuned.
  cublasLtMatmulAlgo_t candidates[kTuneCandidates]{};
  int n_candidates = 0;
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
  cublasLtMatmulHeuristicResult_t results[kTuneCandidates]{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      ctx.cublaslt, p.desc, p.a, p.b, p.c, p.c, pref, gemm_tuning_level() > 0 ? kTuneCandidates : 1,
      results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  const cublasLtMatmulHeuristicResult_t& result = results[0];
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
  for (int i = 1; i < found; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS) p.candidates[p.n_candidates++] = results[i].algo;
  return p;
}

}  // namespace

void set_math_mode(MathMode mode) { g_math_mode.store(mode); }
void set_gemm_tuning(bool on) { g_tuning.store(on ? std::max(1, g_tuning.load()) : 0); }
bool gemm_tuning() { return g_tuning.load() > 0; }
int64_t gemm_tuned_plans() { return g_tuned_plans.load(); }
MathMode math_mode() { return g_math_mode.load(); }

namespace {

// The scratch outputs and events of one tuning, released however tune_plan leaves.
struct TuneScratch {
  Allocator* alloc = nullptr;
  void* c = nullptr;
  void* v = nullptr;
  size_t c_bytes = 0, v_bytes = 0;
  cudaEvent_t start = nullptr, stop = nullptr;
  ~TuneScratch() {
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    if (c) alloc->deallocate(c, c_bytes);
    if (v) alloc->deallocate(v, v_bytes);
  }
};

// Times plan.algo and plan.candidates (best of 5 after one untimed call each) on the real operands
// with beta = 0 into scratch outputs (the caller's C and bias gradient are untouched) and keeps
// the fastest. Skipped while the stream is being captured (timing cannot run inside a capture);
// the next eager call tunes.
void tune_plan(const PlanKey& k, Plan& plan, Context& ctx, const void* alpha, const void* A,
               const void* B, int epilogue, const void* vec) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  LVIT_CUDA_CHECK(cudaStreamIsCapturing(ctx.stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  TuneScratch scratch;
  scratch.alloc = caching_allocator(k.device);
  // C spans (batch - 1) strides plus M rows of ldc (our row-major view). The bias gradient has
  // one entry per column of cuBLASLt's column-major D (N x M), i.e. per row of ours: M of them.
  scratch.c_bytes =
      static_cast<size_t>((k.batch - 1) * k.sc + (k.M - 1) * k.ldc + k.N) * dtype_size(k.c_dtype);
  scratch.v_bytes = epilogue == kBiasGrad ? static_cast<size_t>(k.M) * dtype_size(k.c_dtype) : 0;
  scratch.c = scratch.alloc->allocate(scratch.c_bytes);
  if (scratch.v_bytes) scratch.v = scratch.alloc->allocate(scratch.v_bytes);
  if (epilogue != kNoEpilogue) {
    const void* p = epilogue == kBiasGrad ? scratch.v : vec;
    LVIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &p, sizeof(p)));
  }
  const double zero64 = 0.0;
  const float zero32 = 0.0f;
  const void* beta = k.dtype == DType::f64 ? static_cast<const void*>(&zero64) : &zero32;
  LVIT_CUDA_CHECK(cudaEventCreate(&scratch.start));
  LVIT_CUDA_CHECK(cudaEventCreate(&scratch.stop));
  cublasLtMatmulAlgo_t all[kTuneCandidates];
  float best[kTuneCandidates];
  const int n = plan.n_candidates + 1;
  all[0] = plan.algo;
  for (int i = 1; i < n; ++i) all[i] = plan.candidates[i - 1];
  for (int i = 0; i < n; ++i) {
    best[i] = 1e30f;  // a candidate that fails stays here, behind any that ran
    for (int r = 0; r < 6; ++r) {
      LVIT_CUDA_CHECK(cudaEventRecord(scratch.start, ctx.stream));
      const cublasStatus_t st = cublasLtMatmul(ctx.cublaslt, plan.desc, alpha, B, plan.a, A, plan.b,
                                               beta, scratch.c, plan.c, scratch.c, plan.c, &all[i],
                                               ctx.workspace, ctx.workspace_bytes, ctx.stream);
      LVIT_CUDA_CHECK(cudaEventRecord(scratch.stop, ctx.stream));
      LVIT_CUDA_CHECK(cudaEventSynchronize(scratch.stop));
      if (st != CUBLAS_STATUS_SUCCESS) break;
      float ms = 0;
      LVIT_CUDA_CHECK(cudaEventElapsedTime(&ms, scratch.start, scratch.stop));
      if (r > 0) best[i] = std::min(best[i], ms);
    }
  }
  const int pick = static_cast<int>(std::min_element(best, best + n) - best);
  if (gemm_tuning_level() >= 2)
    std::fprintf(stderr,
                 "gemm tune %s %lldx%lldx%lld %c%c b%lld epi %d: heuristic %.1f us, best #%d of "
                 "%d %.1f us\n",
                 std::string(dtype_name(k.dtype)).c_str(), static_cast<long long>(k.M),
                 static_cast<long long>(k.N), static_cast<long long>(k.K), k.ta ? 'T' : 'N',
                 k.tb ? 'T' : 'N', static_cast<long long>(k.batch), epilogue, 1e3 * best[0], pick,
                 n, 1e3 * best[pick]);
  plan.algo = all[pick];
  plan.n_candidates = 0;
  ++g_tuned_plans;
}

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
  if (plan.n_candidates > 0 && gemm_tuning_level() > 0)
    tune_plan(key, plan, ctx, alpha, A, B, epilogue, vec);
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

}  // namespace lvit::cuda
