// Column sums (the bias gradients of linear layers) and the passes that produce a gradient and
// its column sums together; declared in cuda/column_sums.cuh.
//
// Every form splits the rows into chunks: one block per (column block, chunk) writes the
// chunk's partial sums, and column_final_kernel adds them in a fixed order. The plan depends on
// M, N, the form and, for the 16-byte form, the device (its SM count and the kernel's
// occupancy), so the sums are deterministic on one device and build, and the fused passes (a
// product, a dropout mask) give the sums of the plain form over the same matrix bit for bit;
// another GPU model may round them differently.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/allocator.cuh"
#include "cuda/check.cuh"
#include "cuda/column_sums.cuh"
#include "cuda/context.cuh"
#include "cuda/dropout.cuh"
#include "cuda/dropout_mask.cuh"
#include "cuda/launch.cuh"

namespace lvit::cuda {
namespace {

using bf16 = __nv_bfloat16;

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

// ---- the 16-byte form: 8 bf16 columns per thread ----
// What column_partial_vec8_kernel sums, 8 adjacent elements i .. i+7 of a row-major bf16 matrix
// (16-byte aligned): fetch(i) issues the loads (for kRows rows before any is used: as many as
// 64 registers hold without a spill), finish(i, raw, v) turns them into the 8 values as the
// matrix holds them (bf16, stored by the sources that write the matrix), in fp32. prepare() runs
// once per thread before the first fetch.

// The 8 bf16 of a 16-byte word, as floats.
__device__ __forceinline__ void unpack8(uint4 u, float (&f)[kVec]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 t = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[k]));
    f[2 * k] = t.x;
    f[2 * k + 1] = t.y;
  }
}

// f rounded to bf16 (nearest even, as st<bf16>) packed into a 16-byte word, for one 16-byte
// store (element-wise bf16 stores became four 4-byte ones); f takes the rounded values.
__device__ __forceinline__ uint4 pack8(float (&f)[kVec]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
    w[k] = *reinterpret_cast<const uint32_t*>(&h);
    const float2 t = __bfloat1622float2(h);
    f[2 * k] = t.x;
    f[2 * k + 1] = t.y;
  }
  return {w[0], w[1], w[2], w[3]};
}

// The loads go through the read-only path (__ldg): the kernel's pointers sit in a struct, where
// __restrict__ does not reach, and with plain loads the column sums took 10-50% longer (Nsight
// Compute, H200, vit-cifar shapes at batch 512).

// The matrix x itself.
struct SumOf {
  static constexpr int kRows = 4;
  const bf16* x;
  using Raw = uint4;
  __device__ void prepare() {}
  __device__ Raw fetch(int64_t i) const { return __ldg(reinterpret_cast<const uint4*>(x + i)); }
  __device__ void finish(int64_t, Raw r, float (&v)[kVec]) const { unpack8(r, v); }
};

// prod = x * d rounded to bf16 (as the elementwise multiply stores it), written and summed.
struct ProductOf {
  static constexpr int kRows = 3;  // 4 spilled
  const bf16* x;
  const bf16* d;
  bf16* prod;
  struct Raw {
    uint4 x, d;
  };
  __device__ void prepare() {}
  __device__ Raw fetch(int64_t i) const {
    return {__ldg(reinterpret_cast<const uint4*>(x + i)),
            __ldg(reinterpret_cast<const uint4*>(d + i))};
  }
  __device__ void finish(int64_t i, Raw r, float (&v)[kVec]) const {
    float dv[kVec];
    unpack8(r.x, v);
    unpack8(r.d, dv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] *= dv[k];
    __stcg(reinterpret_cast<uint4*>(prod + i), pack8(v));
  }
};

// gy = keep ? g * scale : 0 from an f32 g, rounded to bf16 (add_dropout_bwd's values and mask:
// the backward of a residual branch's dropout), written and summed.
struct DropoutGradOf {
  static constexpr int kRows = 2;  // 4 spilled
  const float* g;
  bf16* gy;
  float p, scale;
  uint64_t seed, offset;
  const uint64_t* shift;  // the device's Philox offset shift (CUDA graph replays)
  struct Raw {
    float4 lo, hi;
  };
  __device__ void prepare() { offset += *shift; }
  __device__ Raw fetch(int64_t i) const {
    const float4* s = reinterpret_cast<const float4*>(g + i);
    return {__ldg(s), __ldg(s + 1)};
  }
  __device__ void finish(int64_t i, Raw r, float (&v)[kVec]) const {
    const unsigned keep = keep_bits8(i / kVec, p, seed, offset);
    const float a[kVec] = {r.lo.x, r.lo.y, r.lo.z, r.lo.w, r.hi.x, r.hi.y, r.hi.z, r.hi.w};
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = (keep >> k) & 1u ? a[k] * scale : 0.f;
    __stcg(reinterpret_cast<uint4*>(gy + i), pack8(v));
  }
};

// 256 threads a block: blockDim.x = L column lanes of 8 columns each (L = 32, 16 or 8, so that
// the blocks tile N without idle lanes where N allows: 48 lanes' worth of columns at N = 384
// left a quarter of the threads idle with L = 32) and 256 / L row lanes.
constexpr int kVec8Threads = 256;

// Block (bx, by) sums rows [by rows_per, ...) of columns [8 L bx, 8 L (bx + 1)) into
// part[by, col]: thread (x, y) takes columns 8 L bx + 8x .. +7 and rows y, y + Y, ... of the
// chunk (Y = blockDim.y), in increasing order, with Src::kRows rows' loads in flight (issued
// before the first is used: against 4 columns a thread, the column sums of a vit-cifar step at
// batch 512 took 7.8 instead of 9.1 ms per 5 steps on an H200), then the Y row sums are folded
// in order. The order of the adds is the same for every source and every kRows, which is what
// makes the fused sums equal the plain ones. 64 registers: 4 blocks per SM.
template <typename Src>
__global__ void __launch_bounds__(kVec8Threads, 4)
    column_partial_vec8_kernel(Src src, int64_t M, int64_t N, int64_t rows_per,
                               float* __restrict__ part) {
  constexpr int kRows = Src::kRows;
  __shared__ float tile[kVec8Threads * kVec];  // [Y][8 L]
  src.prepare();
  const int width = kVec * blockDim.x, Y = blockDim.y;
  const int64_t col0 = blockIdx.x * int64_t{width};
  const int64_t col = col0 + kVec * threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per;
  const int64_t r1 = min(M, r0 + rows_per);
  float acc[kVec] = {};
  if (col < N)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += Y * kRows) {
      typename Src::Raw raw[kRows];
#pragma unroll
      for (int j = 0; j < kRows; ++j)
        if (r + Y * j < r1) raw[j] = src.fetch((r + Y * j) * N + col);
#pragma unroll
      for (int j = 0; j < kRows; ++j)
        if (r + Y * j < r1) {
          float v[kVec];
          src.finish((r + Y * j) * N + col, raw[j], v);
#pragma unroll
          for (int k = 0; k < kVec; ++k) acc[k] += v[k];
        }
    }
#pragma unroll
  for (int k = 0; k < kVec; ++k) tile[threadIdx.y * width + kVec * threadIdx.x + k] = acc[k];
  __syncthreads();
  // The first 8 L threads fold the Y partial rows of the block's columns.
  const int t = threadIdx.y * blockDim.x + threadIdx.x;
  if (t < width && col0 + t < N) {
    float s = 0;
    for (int i = 0; i < Y; ++i) s += tile[i * width + t];
    part[blockIdx.y * N + col0 + t] = s;
  }
}

// out[col] = the sum of part[0 .. chunks, col]. Block bx: columns [32 bx, 32 bx + 32) with
// 32 x 32 threads; thread (x, y) adds rows y, y + 32, ... of column 32 bx + x (4 loads in
// flight), then warp w adds the 32 row sums of column 32 bx + w with shuffles: a fixed order,
// and a short chain (with 8 row lanes and a serial fold it took 4 us for 512 x 384 partial
// sums, H200: a tenth of the bias gradients' time in the step).
template <typename T, typename Acc>
__global__ void __launch_bounds__(1024)
    column_final_kernel(const Acc* __restrict__ part, int64_t chunks, int64_t N,
                        T* __restrict__ out) {
  __shared__ Acc tile[32][33];
  const int64_t col = blockIdx.x * int64_t{32} + threadIdx.x;
  Acc s = 0;
  if (col < N) {
#pragma unroll 4
    for (int64_t r = threadIdx.y; r < chunks; r += 32) s += part[r * N + col];
  }
  tile[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  Acc t = tile[threadIdx.x][threadIdx.y];  // row sum x of column 32 bx + y
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  const int64_t c = blockIdx.x * int64_t{32} + threadIdx.y;
  if (threadIdx.x == 0 && c < N) out[c] = st<T>(t);
}

// The row chunks of an [M, N] sum over `col_blocks` column blocks: up to `max_blocks` blocks in
// all and at most one chunk per 64 rows (one chunk of no rows for M = 0).
struct ColumnPlan {
  int64_t col_blocks, chunks, rows_per;
};
ColumnPlan column_plan(int64_t M, int64_t col_blocks, int64_t max_blocks) {
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((M + 63) / 64, max_blocks / col_blocks));
  const int64_t rows_per = (M + chunks - 1) / chunks;
  chunks = M == 0 ? 1 : (M + rows_per - 1) / rows_per;
  return {col_blocks, chunks, rows_per};
}

// The partial sums of plan `pl` (part [chunks, N], Acc; from the caching allocator), written by
// partial(part), then their totals into out (TO): the common tail of every form.
template <typename Acc, typename TO, typename Partial>
void sum_in_chunks(const ColumnPlan& pl, int64_t M, int64_t N, void* out, cudaStream_t stream,
                   Partial&& partial) {
  Allocator* alloc = caching_allocator(current_device());
  const size_t bytes = static_cast<size_t>(pl.chunks * N) * sizeof(Acc);
  Acc* part = static_cast<Acc*>(alloc->allocate(bytes));
  if (M == 0) {
    LVIT_CUDA_CHECK(cudaMemsetAsync(part, 0, bytes, stream));
  } else {
    partial(part);
    after_launch("column_partial", stream);
  }
  column_final_kernel<TO, Acc><<<static_cast<unsigned>((N + 31) / 32), dim3(32, 32), 0, stream>>>(
      part, pl.chunks, N, static_cast<TO*>(out));
  after_launch("column_final", stream);
  alloc->deallocate(part, bytes);  // stream-ordered reuse: see cuda/allocator.cuh
}

// The 16-byte form over `src` (bf16 [M, N], N % 8 == 0), totals as f32 or bf16. One wave of
// blocks (as many as the device holds at once: no tail of a partial second wave), at most one
// chunk per 64 rows. The plan depends on M, N and the device only, so every source sums in the
// same order (the wave is that of the plain sums' kernel: 4 blocks per SM, as for the others).
template <typename Src>
void sum_vec8(const Src& src, int64_t M, int64_t N, DType out_dtype, void* out,
              cudaStream_t stream) {
  const int64_t groups = N / kVec;
  const int lanes = groups % 32 == 0 ? 32 : groups % 16 == 0 ? 16 : groups % 8 == 0 ? 8 : 32;
  const dim3 threads(lanes, kVec8Threads / lanes);
  const ColumnPlan pl =
      column_plan(M, (groups + lanes - 1) / lanes,
                  resident_blocks(&column_partial_vec8_kernel<SumOf>, dim3(kVec8Threads)));
  auto partial = [&](float* part) {
    column_partial_vec8_kernel<Src>
        <<<dim3(static_cast<unsigned>(pl.col_blocks), static_cast<unsigned>(pl.chunks)), threads, 0,
           stream>>>(src, M, N, pl.rows_per, part);
  };
  if (out_dtype == DType::f32)
    sum_in_chunks<float, float>(pl, M, N, out, stream, partial);
  else
    sum_in_chunks<float, bf16>(pl, M, N, out, stream, partial);
}

// column_sums, or with d (and prod) column_sums_of_product.
void column_sums_impl(DType dtype, DType out_dtype, const void* x, const void* d, void* prod,
                      int64_t M, int64_t N, void* out, cudaStream_t stream) {
  if (N == 0) return;
  // Whether x, d and prod (the latter two when given) all start on a multiple of `bytes`.
  auto all_aligned = [&](uintptr_t bytes) {
    for (const void* p : {x, d, static_cast<const void*>(prod)})
      if (p != nullptr && reinterpret_cast<uintptr_t>(p) % bytes != 0) return false;
    return true;
  };
  if (dtype == DType::bf16 && (out_dtype == DType::f32 || out_dtype == DType::bf16) &&
      N % kVec == 0 && all_aligned(16)) {
    const bf16* px = static_cast<const bf16*>(x);
    if (d == nullptr)
      sum_vec8(SumOf{px}, M, N, out_dtype, out, stream);
    else
      sum_vec8(ProductOf{px, static_cast<const bf16*>(d), static_cast<bf16*>(prod)}, M, N,
               out_dtype, out, stream);
    return;
  }
  auto run = [&](auto t_zero, auto acc_zero, auto out_zero) {
    using T = decltype(t_zero);
    using Acc = decltype(acc_zero);
    using TO = decltype(out_zero);
    const bool vec = N % 4 == 0 && all_aligned(4 * sizeof(T));
    const T* px = static_cast<const T*>(x);
    const T* pd = static_cast<const T*>(d);
    T* pp = static_cast<T*>(prod);
    // About 1024 blocks (8 per SM of an H100/H200).
    const int64_t col_blocks = vec ? (N + 127) / 128 : (N + 31) / 32;
    const ColumnPlan pl = column_plan(M, col_blocks, 1024 + col_blocks);
    const dim3 grid(static_cast<unsigned>(pl.col_blocks), static_cast<unsigned>(pl.chunks));
    sum_in_chunks<Acc, TO>(pl, M, N, out, stream, [&](Acc* part) {
      if (vec)
        column_partial_vec_kernel<T, Acc>
            <<<grid, dim3(32, 8), 0, stream>>>(px, pd, pp, M, N, pl.rows_per, part);
      else
        column_partial_kernel<T, Acc>
            <<<grid, dim3(32, 8), 0, stream>>>(px, pd, pp, M, N, pl.rows_per, part);
    });
  };
  if (dtype == DType::f32 && out_dtype == DType::f32)
    run(float{}, float{}, float{});
  else if (dtype == DType::f64 && out_dtype == DType::f64)
    run(double{}, double{}, double{});
  else if (dtype == DType::bf16 && out_dtype == DType::f32)
    run(bf16{}, float{}, float{});
  else if (dtype == DType::bf16 && out_dtype == DType::bf16)
    run(bf16{}, float{}, bf16{});
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

void dropout_grad_column_sums(DType gdtype, const void* g, DType ydtype, void* gy, int64_t M,
                              int64_t N, double p, uint64_t seed, uint64_t offset, DType out_dtype,
                              void* out, cudaStream_t stream) {
  if (N == 0) return;
  if (gdtype == DType::f32 && ydtype == DType::bf16 &&
      (out_dtype == DType::f32 || out_dtype == DType::bf16) && N % kVec == 0 && aligned16(g) &&
      aligned16(gy)) {
    const DropoutGradOf src{static_cast<const float*>(g),
                            static_cast<bf16*>(gy),
                            static_cast<float>(p),
                            static_cast<float>(1.0 / (1.0 - p)),
                            seed,
                            offset,
                            current_philox_shift()};
    sum_vec8(src, M, N, out_dtype, out, stream);
    return;
  }
  add_dropout_bwd(gdtype, g, ydtype, gy, M * N, p, seed, offset, stream);
  column_sums(ydtype, out_dtype, gy, M, N, out, stream);
}

}  // namespace lvit::cuda
