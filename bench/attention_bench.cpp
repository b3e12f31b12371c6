// Attention kernel microbenchmark (CUDA): the fused softmax attention launchers of
// cuda/attention.cuh on the ViT shapes, forward and backward timed separately, per dtype and
// kernel family, then the tensor-core Ripple kernels (cuda/ripple.cuh: dense for N <= 128, the
// linear form for head width 64). Prints milliseconds per call (CUDA events, median of 20 after 3
// warm-up calls) and the attention FLOP rate: forward 4 B H N^2 d (QK^T and PV), backward 2.5x that
// as FlashAttention-2 counts it (the tiled backward recomputes QK^T and dO V^T once more; the small
// one does exactly 2.5x, on N padded to a multiple of 16). Build: the `lvit-attention-bench` target
// (CUDA builds only).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "cuda/attention.cuh"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/ripple.cuh"

using namespace lvit;

namespace {

struct Case {
  int64_t B, N, H, d;
  const char* what;
};

template <typename Fn>
double median_ms(cudaStream_t stream, Fn&& fn) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t a, b;
  LVIT_CUDA_CHECK(cudaEventCreate(&a));
  LVIT_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < 20; ++i) {
    LVIT_CUDA_CHECK(cudaEventRecord(a, stream));
    fn();
    LVIT_CUDA_CHECK(cudaEventRecord(b, stream));
    LVIT_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    LVIT_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  LVIT_CUDA_CHECK(cudaEventDestroy(a));
  LVIT_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Times fwd and bwd (median_ms) and prints one row: milliseconds and the attention FLOP rate.
template <typename Fwd, typename Bwd>
void time_and_print(const Case& c, const char* name, cudaStream_t stream, Fwd&& fwd, Bwd&& bwd) {
  const double flop = 4.0 * c.B * c.H * c.N * c.N * c.d;
  const double f = median_ms(stream, fwd);
  const double b = median_ms(stream, bwd);
  std::printf(
      "%-15s B %4ld N %4ld H %ld d %3ld  %-10s  fwd %7.3f ms (%5.1f TFLOP/s)  "
      "bwd %7.3f ms (%5.1f TFLOP/s)\n",
      c.what, static_cast<long>(c.B), static_cast<long>(c.N), static_cast<long>(c.H),
      static_cast<long>(c.d), name, f, flop / f / 1e9, b, 2.5 * flop / b / 1e9);
}

// Uniform in [-scale, scale) from the Philox stream (seed, 0), on `dev` in bf16: the Ripple
// kernels' weights depend on the values (phi, the denominators), so no constant inputs.
Tensor random_bf16(const Shape& shape, uint64_t seed, double scale, Device dev) {
  std::vector<float> v(shape_numel(shape));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(scale * (2.0 * Philox::uniform(seed, 0, i) - 1.0));
  return Tensor::from_vector(v, shape).to(dev).to(DType::bf16);
}

}  // namespace

int main() {
  if (!cuda::available()) {
    std::printf("no CUDA device\n");
    return 0;
  }
  std::printf("%s\n", cuda::device_name(0).c_str());
  const Case cases[] = {{256, 65, 6, 64, "vit-cifar"},
                        {128, 257, 6, 64, "vit-tiny"},
                        {512, 65, 6, 64, "vit-cifar b512"},
                        {256, 65, 4, 32, "vit-micro"}};
  struct Variant {
    DType dtype;
    cuda::AttentionKernel kernel;
    const char* name;
  };
  // "bf16 mma" is what the op runs (small for N <= 128 and d <= 64, else tiled); the two after
  // it force each tensor-core family.
  const Variant variants[] = {{DType::f32, cuda::AttentionKernel::simt, "f32 simt"},
                              {DType::bf16, cuda::AttentionKernel::simt, "bf16 simt"},
                              {DType::bf16, cuda::AttentionKernel::mma, "bf16 mma"},
                              {DType::bf16, cuda::AttentionKernel::mma_tiled, "bf16 tiled"},
                              {DType::bf16, cuda::AttentionKernel::mma_small, "bf16 small"}};
  const Device dev = Device::cuda(0);
  const cudaStream_t stream = cuda::stream(0);
  for (const Case& c : cases) {
    const cuda::AttentionDims dims{c.B, c.N, c.H, c.d};
    for (const Variant& v : variants) {
      if (v.kernel == cuda::AttentionKernel::mma_small && (c.N > 128 || c.d > 64)) continue;
      Tensor qkv = Tensor::full({c.B, c.N, 3 * c.H * c.d}, 0.01, v.dtype, dev);
      Tensor out = Tensor::empty({c.B, c.N, c.H * c.d}, v.dtype, dev);
      Tensor gout = Tensor::full(out.shape(), 0.01, v.dtype, dev);
      Tensor gqkv = Tensor::empty(qkv.shape(), v.dtype, dev);
      Tensor lse = Tensor::empty({c.B, c.H, c.N}, DType::f32, dev);
      Tensor delta = Tensor::empty(lse.shape(), DType::f32, dev);
      auto fwd = [&] {
        cuda::attention_fwd(v.dtype, qkv.raw_data(), out.raw_data(), lse.data<float>(), dims,
                            stream, v.kernel);
      };
      auto bwd = [&] {
        cuda::attention_bwd(v.dtype, gout.raw_data(), qkv.raw_data(), out.raw_data(),
                            lse.data<float>(), delta.data<float>(), gqkv.raw_data(), dims, stream,
                            v.kernel);
      };
      time_and_print(c, v.name, stream, fwd, bwd);
    }
  }
  // Ripple (S = 3, as the presets): the dense tensor-core form (N <= 128) and the linear one
  // (head width 64), each where it applies. The TFLOP/s columns count the softmax kernels'
  // FLOPs (forward 2 products, backward 5), so they compare times, not the work each form does.
  for (const Case& c : cases)
    for (const bool dense : {true, false}) {
      const int64_t S = 3, grid = c.N == 65 ? 8 : c.N == 257 ? 16 : 4;
      if (dense ? !cuda::ripple_small_supported(c.N, c.d)
                : !cuda::ripple_linear_mma_supported(c.N, c.d, S))
        continue;
      Tensor qkv = random_bf16({c.B, c.N, 3 * c.H * c.d}, 1, 1.0, dev);
      Tensor out = Tensor::empty({c.B, c.N, c.H * c.d}, DType::bf16, dev);
      Tensor gout = random_bf16(out.shape(), 2, 1.0, dev);
      Tensor gqkv = Tensor::empty(qkv.shape(), DType::bf16, dev);
      Tensor den = Tensor::empty({c.B, c.H, c.N}, DType::f32, dev);
      Tensor logits = Tensor::zeros({c.H, S - 1}, DType::f32, dev);
      Tensor glogits = Tensor::empty(logits.shape(), DType::f32, dev);
      Tensor work =
          Tensor::empty({cuda::ripple_bwd_workspace_doubles(c.B, c.H, S)}, DType::f64, dev);
      auto fwd = [&] {
        (dense ? cuda::ripple_small_fwd : cuda::ripple_linear_mma_fwd)(
            qkv.raw_data(), logits.data<float>(), c.B, c.N, c.H * c.d, c.H, S, grid, out.raw_data(),
            den.data<float>(), stream);
      };
      auto bwd = [&] {
        (dense ? cuda::ripple_small_bwd : cuda::ripple_linear_mma_bwd)(
            gout.raw_data(), qkv.raw_data(), logits.data<float>(), den.data<float>(), c.B, c.N,
            c.H * c.d, c.H, S, grid, gqkv.raw_data(), glogits.data<float>(), work.data<double>(),
            stream);
      };
      time_and_print(c, dense ? "ripple S3 dense" : "ripple S3 lin", stream, fwd, bwd);
    }
  return 0;
}
