// Crop + flip + normalise kernel and launcher (declared in cuda/augment.cuh).
//
// Why on the GPU: the loader's f32 batch is 4x the bytes of its uint8 images and its
// normalisation is most of the loader's per-pixel work; uploading uint8 from pinned memory and
// finishing here keeps the CPU workers ahead of the step.
//
// Bit-exactness with the CPU (data/augment.cpp): the CPU computes std::fma(float(v), scale,
// bias) with scale and bias from data::normalize_affine, and writes bias itself for padding
// pixels (not fma(0, scale, bias), which turns a bias of -0.0 into +0.0). Here: __fmaf_rn (one
// rounding, never split by the compiler) on the same host-computed scale and bias, and bias
// for padding.
#include "cuda/augment.cuh"
#include "cuda/check.cuh"
#include "cuda/launch.cuh"

namespace lvit::cuda {
namespace {

// One thread per output element (grid-stride); consecutive threads write consecutive x, so the
// stores coalesce and the byte loads of a row hit the same cache lines (mirrored or not).
__global__ void crop_flip_normalize_kernel(const uint8_t* __restrict__ images,
                                           const int32_t* __restrict__ crop_flip,
                                           float* __restrict__ out, int64_t n, int C, int H, int W,
                                           ChannelAffine affine) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int x = static_cast<int>(i % W);
    int64_t r = i / W;
    const int y = static_cast<int>(r % H);
    r /= H;
    const int c = static_cast<int>(r % C);
    const int64_t b = r / C;
    const int dy = __ldg(crop_flip + 3 * b), dx = __ldg(crop_flip + 3 * b + 1);
    const bool flip = __ldg(crop_flip + 3 * b + 2) != 0;
    const int sy = y + dy;
    const int sx = (flip ? W - 1 - x : x) + dx;
    float v = affine.bias[c];
    if (sy >= 0 && sy < H && sx >= 0 && sx < W) {
      const uint8_t u = __ldg(images + ((b * C + c) * H + sy) * W + sx);
      v = __fmaf_rn(static_cast<float>(u), affine.scale[c], affine.bias[c]);
    }
    out[i] = v;
  }
}

}  // namespace

void crop_flip_normalize(const uint8_t* images, const int32_t* crop_flip, float* out, int64_t batch,
                         int channels, int height, int width, const ChannelAffine& affine,
                         cudaStream_t stream) {
  if (channels < 1 || channels > 3 || height < 1 || width < 1 || batch < 0)
    fail("crop_flip_normalize: bad shape [" + std::to_string(batch) + ", " +
         std::to_string(channels) + ", " + std::to_string(height) + ", " + std::to_string(width) +
         "] (1 to 3 channels)");
  const int64_t n = batch * channels * height * width;
  if (n == 0) return;
  crop_flip_normalize_kernel<<<grid_for(n), kThreads, 0, stream>>>(images, crop_flip, out, n,
                                                                   channels, height, width, affine);
  after_launch("crop_flip_normalize", stream);
}

}  // namespace lvit::cuda
