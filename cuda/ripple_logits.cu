// The stage logits' gradient of Ripple attention (declared in cuda/ripple.cuh): the batch sum
// of d loss / d alpha and the stick-breaking Jacobian of ops/ripple.cpp, on the device.
#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/check.cuh"
#include "cuda/ripple.cuh"
#include "cuda/ripple_alpha.cuh"
#include "cuda/smem.cuh"

namespace lvit::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxStages = 32;
constexpr int kMaxPartials = kRippleLogitsPartialRows;  // CTAs of the first level
constexpr int kRowsPerPartial = 32;                     // at least, per first-level CTA
// Up to this many rows, one level: the linear kernels' one row per image at batch 512 took
// 10 us longer in two; with the dense kernels' 2,560 rows the whole backward went from
// 0.122 to 0.120 ms (H200, batch 512).
constexpr int64_t kDirectRows = 1024;

// First level for many rows (the dense kernels write one row per warp: 2,560 rows at batch
// 512): CTA k adds rows [k R / K, (k+1) R / K) of galpha [R, C] (C = heads x stages) into
// partial[k][C]. Threads take columns t % W of a block of W = min(C, kThreads) columns and
// every L-th row (L = kThreads / W), so a warp reads consecutive doubles; the L row sums of a
// column are then added in a fixed order (deterministic). The one-CTA-per-head kernel below
// alone took 12 us on 2,560 rows (H200): 6 CTAs, 144-byte strided loads.
__global__ void __launch_bounds__(kThreads)
    galpha_partials_kernel(const double* __restrict__ galpha, int64_t R, int C,
                           double* __restrict__ partial) {
  __shared__ double red[kThreads];
  const int k = blockIdx.x, K = gridDim.x, t = threadIdx.x;
  const int64_t r0 = R * k / K, r1 = R * (k + 1) / K;
  const int W = min(C, kThreads), L = kThreads / W, col = t % W, lane = t / W;
  for (int c0 = 0; c0 < C; c0 += W) {
    double v = 0.0;
    if (lane < L && c0 + col < C)
      for (int64_t r = r0 + lane; r < r1; r += L) v += galpha[r * C + c0 + col];
    red[t] = v;
    __syncthreads();
    if (t < W && c0 + t < C) {
      double sum = 0.0;
      for (int l = 0; l < L; ++l) sum += red[l * W + t];
      partial[static_cast<int64_t>(k) * C + c0 + t] = sum;
    }
    __syncthreads();
  }
}

// glogits[h] = d loss / d beta_h from galpha summed over the batch, then the stick-breaking
// Jacobian of ops/ripple.cpp (d alpha_t / d beta_t = rem_t sig_t (1 - sig_t), d alpha_s / d
// beta_t = -sig_t alpha_s for s > t), in f64. One CTA per head: thread i sums rows i, i + 256,
// ... of every stage (all loads independent, in flight together), warp shuffles, then thread 0
// adds the warps' sums in a fixed order: deterministic, with a single barrier (the first
// version had a barrier tree per stage). It runs once per layer and backward on a few KB, so
// latency is all there is to it.
__global__ void __launch_bounds__(kThreads)
    ripple_logits_grad_kernel(const double* __restrict__ galpha, const float* __restrict__ logits,
                              int B, int H, int S, float* __restrict__ glogits) {
  __shared__ double red[kWarps][kMaxStages];
  const int h = blockIdx.x, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  float beta[kMaxStages];  // thread 0: the logits, loaded first so that the sums overlap them
  if (tid == 0)
    for (int s = 0; s + 1 < S; ++s) beta[s] = logits[h * (S - 1) + s];
  for (int s = 0; s < S; ++s) {
    double v = 0.0;
    for (int b = tid; b < B; b += kThreads) v += galpha[(static_cast<int64_t>(b) * H + h) * S + s];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) red[warp][s] = v;
  }
  __syncthreads();
  if (tid != 0) return;
  double ga[kMaxStages], sig[kMaxStages], alpha[kMaxStages], rem[kMaxStages];
  for (int s = 0; s < S; ++s) {
    ga[s] = 0.0;
    for (int w = 0; w < kWarps; ++w) ga[s] += red[w][s];
  }
  rem[0] = 1.0;
  for (int s = 0; s + 1 < S; ++s) {
    const double x = beta[s];
    sig[s] = ripple_detail::sigmoid_f64(x);
    alpha[s] = sig[s] * rem[s];
    rem[s + 1] = rem[s] * (1 - sig[s]);
  }
  alpha[S - 1] = rem[S - 1];
  double tail = ga[S - 1] * alpha[S - 1];  // sum_{s > t} g_alpha_s alpha_s
  for (int t = S - 2; t >= 0; --t) {
    glogits[h * (S - 1) + t] =
        static_cast<float>(ga[t] * rem[t] * sig[t] * (1 - sig[t]) - sig[t] * tail);
    tail += ga[t] * alpha[t];
  }
}

}  // namespace

void ripple_logits_grad(double* galpha, const float* logits, int64_t rows, int64_t heads,
                        int64_t stages, float* glogits, cudaStream_t stream) {
  if (rows < 0 || heads <= 0 || heads > 65535 || stages < 2 || stages > kMaxStages ||
      heads * stages > (int64_t{1} << 30))
    fail("ripple_logits_grad: unsupported sizes rows " + std::to_string(rows) + ", heads " +
         std::to_string(heads) + ", stages " + std::to_string(stages));
  const int C = static_cast<int>(heads * stages);
  const double* sums = galpha;
  int64_t sum_rows = rows;
  if (rows > kDirectRows) {
    const int K = static_cast<int>(std::min<int64_t>(kMaxPartials, rows / kRowsPerPartial));
    double* partial = galpha + rows * C;  // the workspace's room after the rows
    galpha_partials_kernel<<<static_cast<unsigned>(K), kThreads, 0, stream>>>(galpha, rows, C,
                                                                              partial);
    after_launch("galpha_partials_kernel", stream);
    sums = partial;
    sum_rows = K;
  }
  ripple_logits_grad_kernel<<<static_cast<unsigned>(heads), kThreads, 0, stream>>>(
      sums, logits, static_cast<int>(sum_rows), static_cast<int>(heads), static_cast<int>(stages),
      glogits);
  after_launch("ripple_logits_grad_kernel", stream);
}

}  // namespace lvit::cuda
