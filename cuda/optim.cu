// Multi-tensor optimizer and grad-norm kernels with their launchers (declared in cuda/optim.cuh).
#include <cuda_bf16.h>

#include <cmath>

#include "core/storage.h"
#include "cuda/allocator.cuh"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/launch.cuh"
#include "cuda/optim.cuh"

namespace lvit::cuda {
namespace {

constexpr int64_t kChunk = 4096;  // elements per block: 16 per thread at 256 threads

// Which (tensor, chunk) each block of one launch works on.
struct BlockMap {
  uint8_t tensor[kBlocksPerLaunch];
  int32_t chunk[kBlocksPerLaunch];
};

template <typename Table>
struct Launch {
  Table table;
  BlockMap map;
};

// Packs tensors 0..count-1 (numel(i) elements each) into launches of at most
// kTensorsPerLaunch tensors and kBlocksPerLaunch blocks; fill(slot, i) copies tensor i into the
// launch's table at `slot`; run(launch, blocks, first_block) launches. first_block counts blocks
// over all launches (for per-block outputs).
template <typename Table, typename NumelFn, typename FillFn, typename RunFn>
void for_each_launch(int count, NumelFn numel, FillFn fill, RunFn run) {
  Launch<Table> l{};
  int tensors = 0, blocks = 0;
  int slot_tensor = -1;  // the tensor in the table's last slot (-1: none since the flush)
  int64_t first_block = 0;
  auto flush = [&] {
    if (blocks > 0) run(l, blocks, first_block);
    first_block += blocks;
    tensors = blocks = 0;
    slot_tensor = -1;
  };
  for (int i = 0; i < count; ++i) {
    const int64_t chunks = (numel(i) + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      if (blocks == kBlocksPerLaunch) flush();
      if (slot_tensor != i) {  // tensor i needs a slot in this launch
        if (tensors == kTensorsPerLaunch) flush();
        fill(l.table, tensors++, i);
        slot_tensor = i;
      }
      l.map.tensor[blocks] = static_cast<uint8_t>(tensors - 1);
      l.map.chunk[blocks] = static_cast<int32_t>(c);
      ++blocks;
    }
  }
  flush();
}

struct AdamWTable {
  float* p[kTensorsPerLaunch];
  const float* g[kTensorsPerLaunch];
  float* m[kTensorsPerLaunch];
  float* v[kTensorsPerLaunch];
  int64_t n[kTensorsPerLaunch];
  bool decay[kTensorsPerLaunch];
  bool vec4[kTensorsPerLaunch];  // p, g, m, v all 16-byte aligned: float4 accesses
};

// One element's AdamW update, in place. The roundings are spelled out (__fmul_rn is never
// contracted into an fma): left to the compiler, writing g as g * c moved its choice of which
// product to fuse in m and v, and with it every step's rounding. These are the ones it chose
// before the clip was folded in: m = fma(1 - b1, g, b1 m), v = fma(g, (1 - b2) g, b2 v).
__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v, float c,
                                              float b1, float b2, float eps, float step_size,
                                              float inv_sqrt_bc2, float decay) {
  const float gj = __fmul_rn(g, c);
  m = fmaf(1.0f - b1, gj, __fmul_rn(b1, m));
  v = fmaf(gj, __fmul_rn(1.0f - b2, gj), __fmul_rn(b2, v));
  p = __fsub_rn(__fmul_rn(p, decay),
                __fdiv_rn(__fmul_rn(step_size, m), fmaf(inv_sqrt_bc2, sqrtf(v), eps)));
}

__global__ void adamw_kernel(Launch<AdamWTable> l, float b1, float b2, float eps,
                             const AdamWScalars* __restrict__ scalars,
                             const float* __restrict__ grad_scale) {
  const float step_size = scalars->step_size, inv_sqrt_bc2 = scalars->inv_sqrt_bc2;
  const float c = grad_scale != nullptr ? *grad_scale : 1.0f;  // scale_kernel's multiply
  const int t = l.map.tensor[blockIdx.x];
  const int64_t begin = l.map.chunk[blockIdx.x] * kChunk;
  const int64_t end = min(l.table.n[t], begin + kChunk);
  float* __restrict__ p = l.table.p[t];
  const float* __restrict__ g = l.table.g[t];
  float* __restrict__ m = l.table.m[t];
  float* __restrict__ v = l.table.v[t];
  const float decay = l.table.decay[t] ? scalars->decay : 1.0f;
  int64_t j = begin + threadIdx.x;
  if (l.table.vec4[t]) {
    // 4 elements a thread an iteration through 16-byte accesses (chunks start at multiples of
    // kChunk, so aligned): four times the bytes in flight of the scalar loop. The same
    // arithmetic per element, so the same values.
    const int64_t vend = begin + ((end - begin) & ~int64_t{3});
    for (int64_t q = begin + 4 * threadIdx.x; q < vend; q += 4 * blockDim.x) {
      float4 p4 = *reinterpret_cast<const float4*>(p + q);
      const float4 g4 = *reinterpret_cast<const float4*>(g + q);
      float4 m4 = *reinterpret_cast<const float4*>(m + q);
      float4 v4 = *reinterpret_cast<const float4*>(v + q);
      adamw_element(p4.x, g4.x, m4.x, v4.x, c, b1, b2, eps, step_size, inv_sqrt_bc2, decay);
      adamw_element(p4.y, g4.y, m4.y, v4.y, c, b1, b2, eps, step_size, inv_sqrt_bc2, decay);
      adamw_element(p4.z, g4.z, m4.z, v4.z, c, b1, b2, eps, step_size, inv_sqrt_bc2, decay);
      adamw_element(p4.w, g4.w, m4.w, v4.w, c, b1, b2, eps, step_size, inv_sqrt_bc2, decay);
      *reinterpret_cast<float4*>(p + q) = p4;
      *reinterpret_cast<float4*>(m + q) = m4;
      *reinterpret_cast<float4*>(v + q) = v4;
    }
    j = vend + threadIdx.x;  // the last chunk's 0-3 trailing elements
  }
  for (; j < end; j += blockDim.x) {
    float pj = p[j], mj = m[j], vj = v[j];
    adamw_element(pj, g[j], mj, vj, c, b1, b2, eps, step_size, inv_sqrt_bc2, decay);
    m[j] = mj;
    v[j] = vj;
    p[j] = pj;
  }
}

struct SGDTable {
  float* p[kTensorsPerLaunch];
  const float* g[kTensorsPerLaunch];
  float* buf[kTensorsPerLaunch];
  int64_t n[kTensorsPerLaunch];
  float wd[kTensorsPerLaunch];
};

__global__ void sgd_kernel(Launch<SGDTable> l, const float* __restrict__ lr_ptr, float mom,
                           bool nesterov, bool first) {
  const float lr = *lr_ptr;
  const int t = l.map.tensor[blockIdx.x];
  const int64_t begin = l.map.chunk[blockIdx.x] * kChunk;
  const int64_t end = min(l.table.n[t], begin + kChunk);
  float* __restrict__ p = l.table.p[t];
  const float* __restrict__ g = l.table.g[t];
  float* __restrict__ buf = l.table.buf[t];
  const float wd = l.table.wd[t];
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const float gj = g[j] + wd * p[j];
    const float b = mom == 0.0f ? gj : (first ? gj : mom * buf[j] + gj);
    buf[j] = b;
    p[j] -= lr * (nesterov ? gj + mom * b : b);
  }
}

struct GradTable {
  float* g[kTensorsPerLaunch];
  int64_t n[kTensorsPerLaunch];
};

__global__ void sumsq_kernel(Launch<GradTable> l, double* __restrict__ partial) {
  const int t = l.map.tensor[blockIdx.x];
  const int64_t begin = l.map.chunk[blockIdx.x] * kChunk;
  const int64_t end = min(l.table.n[t], begin + kChunk);
  const float* __restrict__ g = l.table.g[t];
  double s = 0;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const double x = g[j];
    s += x * x;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block: norm = sqrt(sum of partials), coef = min(1, max_norm / (norm + 1e-6)).
__global__ void norm_kernel(const double* __restrict__ partial, int64_t n, double max_norm,
                            double* __restrict__ norm_out, float* __restrict__ coef) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) {
    const double norm = sqrt(s);
    *norm_out = norm;
    const double c = max_norm / (norm + 1e-6);
    *coef = c < 1.0 ? static_cast<float>(c) : 1.0f;
  }
}

__global__ void scale_kernel(Launch<GradTable> l, const float* __restrict__ coef) {
  const float c = *coef;
  if (c == 1.0f) return;
  const int t = l.map.tensor[blockIdx.x];
  const int64_t begin = l.map.chunk[blockIdx.x] * kChunk;
  const int64_t end = min(l.table.n[t], begin + kChunk);
  float* __restrict__ g = l.table.g[t];
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) g[j] *= c;
}

}  // namespace

void adamw_step(const std::vector<AdamWParam>& params, float beta1, float beta2, float eps,
                const AdamWScalars* scalars, const float* grad_scale, cudaStream_t stream) {
  for_each_launch<AdamWTable>(
      static_cast<int>(params.size()), [&](int i) { return params[i].numel; },
      [&](AdamWTable& t, int slot, int i) {
        const AdamWParam& q = params[i];
        t.p[slot] = q.param;
        t.g[slot] = q.grad;
        t.m[slot] = q.exp_avg;
        t.v[slot] = q.exp_avg_sq;
        t.n[slot] = q.numel;
        t.decay[slot] = q.decay;
        t.vec4[slot] = aligned16(q.param) && aligned16(q.grad) && aligned16(q.exp_avg) &&
                       aligned16(q.exp_avg_sq);
      },
      [&](const Launch<AdamWTable>& l, int blocks, int64_t) {
        adamw_kernel<<<blocks, kThreads, 0, stream>>>(l, beta1, beta2, eps, scalars, grad_scale);
        after_launch("adamw", stream);
      });
}

void sgd_step(const std::vector<SGDParam>& params, const float* lr, float momentum, bool nesterov,
              bool first_step, cudaStream_t stream) {
  for_each_launch<SGDTable>(
      static_cast<int>(params.size()), [&](int i) { return params[i].numel; },
      [&](SGDTable& t, int slot, int i) {
        const SGDParam& q = params[i];
        t.p[slot] = q.param;
        t.g[slot] = q.grad;
        t.buf[slot] = q.momentum_buffer;
        t.n[slot] = q.numel;
        t.wd[slot] = q.weight_decay;
      },
      [&](const Launch<SGDTable>& l, int blocks, int64_t) {
        sgd_kernel<<<blocks, kThreads, 0, stream>>>(l, lr, momentum, nesterov, first_step);
        after_launch("sgd", stream);
      });
}

void clip_grad_norm(const std::vector<float*>& grads, const std::vector<int64_t>& numels,
                    double max_norm, double* norm_out, float* coef_out, cudaStream_t stream) {
  int64_t total_blocks = 0;
  for (int64_t n : numels) total_blocks += (n + kChunk - 1) / kChunk;
  Allocator* alloc = caching_allocator(current_device());
  const size_t bytes = static_cast<size_t>(total_blocks + 1) * sizeof(double) + sizeof(float);
  char* scratch = static_cast<char*>(alloc->allocate(bytes));
  double* partial = reinterpret_cast<double*>(scratch);
  float* coef = coef_out != nullptr
                    ? coef_out
                    : reinterpret_cast<float*>(scratch + (total_blocks + 1) * sizeof(double));
  const int count = static_cast<int>(grads.size());
  auto fill = [&](GradTable& t, int slot, int i) {
    t.g[slot] = grads[i];
    t.n[slot] = numels[i];
  };
  auto numel = [&](int i) { return numels[i]; };
  for_each_launch<GradTable>(count, numel, fill,
                             [&](const Launch<GradTable>& l, int blocks, int64_t first) {
                               sumsq_kernel<<<blocks, kThreads, 0, stream>>>(l, partial + first);
                               after_launch("grad_sumsq", stream);
                             });
  norm_kernel<<<1, 1024, 0, stream>>>(partial, total_blocks, max_norm, norm_out, coef);
  after_launch("grad_norm", stream);
  if (coef_out == nullptr)
    for_each_launch<GradTable>(count, numel, fill,
                               [&](const Launch<GradTable>& l, int blocks, int64_t) {
                                 scale_kernel<<<blocks, kThreads, 0, stream>>>(l, coef);
                                 after_launch("grad_scale", stream);
                               });
  alloc->deallocate(scratch, bytes);  // stream-ordered reuse: see cuda/allocator.cuh
}

namespace {
struct CastTable {
  const float* src[kTensorsPerLaunch];
  __nv_bfloat16* dst[kTensorsPerLaunch];
  int64_t n[kTensorsPerLaunch];
};

__global__ void cast_bf16_kernel(Launch<CastTable> l) {
  const int t = l.map.tensor[blockIdx.x];
  const int64_t begin = l.map.chunk[blockIdx.x] * kChunk;
  const int64_t end = min(l.table.n[t], begin + kChunk);
  const float* __restrict__ src = l.table.src[t];
  __nv_bfloat16* __restrict__ dst = l.table.dst[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}
}  // namespace

void cast_to_bf16_many(const std::vector<CastPair>& pairs, cudaStream_t stream) {
  for_each_launch<CastTable>(
      static_cast<int>(pairs.size()), [&](int i) { return pairs[i].numel; },
      [&](CastTable& t, int slot, int i) {
        t.src[slot] = pairs[i].src;
        t.dst[slot] = static_cast<__nv_bfloat16*>(pairs[i].dst_bf16);
        t.n[slot] = pairs[i].numel;
      },
      [&](const Launch<CastTable>& l, int blocks, int64_t) {
        cast_bf16_kernel<<<blocks, kThreads, 0, stream>>>(l);
        after_launch("cast_to_bf16_many", stream);
      });
}

}  // namespace lvit::cuda
