#include "data/augment.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "core/rng.h"
#include "data/randaugment.h"

namespace lvit::data {
namespace {

// Uniform integer in [0, n) from a 32-bit word (multiply-shift; the bias, n / 2^32, is far below
// anything a crop offset could show).
inline int bounded(uint32_t w, uint32_t n) {
  return static_cast<int>((static_cast<uint64_t>(w) * n) >> 32);
}

// out[x] = fma(in[x], scale, bias) for x in [0, n): the hot loop, contiguous on both sides so
// the compiler vectorises it (u8 -> f32 convert + FMA). The fused multiply-add is written out
// (one rounding, whatever -ffp-contract says), so the GPU's __fmaf_rn (cuda/augment.cu) gives the
// same bits; without hardware FMA (LVIT_CPU_ARCH='') std::fma is a slower library call.
inline void affine_row(const uint8_t* __restrict in, float* __restrict out, int n, float scale,
                       float bias) {
  for (int x = 0; x < n; ++x) out[x] = std::fma(static_cast<float>(in[x]), scale, bias);
}

// out[x] = fma(in[-x], scale, bias): the mirrored row (in points at the last source pixel).
inline void affine_row_reversed(const uint8_t* __restrict in, float* __restrict out, int n,
                                float scale, float bias) {
  for (int x = 0; x < n; ++x) out[x] = std::fma(static_cast<float>(in[-x]), scale, bias);
}

}  // namespace

AffineNorm normalize_affine(const Normalization& norm, int channel) {
  LVIT_CHECK(channel >= 0 && channel < 3, "channel {} outside [0, 3)", channel);
  return {1.0f / (255.0f * norm.std[channel]), -norm.mean[channel] / norm.std[channel]};
}

CropFlip draw_crop_flip(uint64_t seed, int64_t epoch, int64_t sample_index, int padding,
                        bool hflip) {
  LVIT_CHECK(padding >= 0, "crop padding {} < 0", padding);
  LVIT_CHECK(epoch >= 0 && sample_index >= 0, "epoch {} / sample {} < 0", epoch, sample_index);
  // One Philox block = the four words Philox::word(seed, kCropFlipStream | epoch,
  // sample_index * 4 + k): a stream of its own (data/randaugment.h).
  const auto idx = static_cast<uint64_t>(sample_index);
  const auto off = kCropFlipStream | static_cast<uint64_t>(epoch);
  uint32_t w[4];
  Philox::words(seed, off, idx, w);
  CropFlip cf;
  const auto range = static_cast<uint32_t>(2 * padding + 1);
  cf.dy = bounded(w[0], range) - padding;
  cf.dx = bounded(w[1], range) - padding;
  cf.flip = hflip && (w[2] >> 31) != 0;
  return cf;
}

void crop_flip_normalize(const uint8_t* src, int channels, int height, int width, CropFlip cf,
                         const Normalization& norm, float* dst) {
  LVIT_CHECK(channels == 1 || channels == 3, "{} channels (expected 1 or 3)", channels);
  LVIT_CHECK(std::abs(cf.dy) < height && std::abs(cf.dx) < width,
             "crop shift ({}, {}) too large for a {}x{} image", cf.dy, cf.dx, height, width);
  const int H = height, W = width, dx = cf.dx;
  // Output columns [x0, x1) read from the image; the rest are padding.
  //   no flip: source column x + dx  in [0, W)  <=>  x in [-dx, W - dx)
  //   flip:    source column W-1-x+dx in [0, W)  <=>  x in [dx, W + dx)
  const int x0 = std::max(0, cf.flip ? dx : -dx);
  const int x1 = std::min(W, cf.flip ? W + dx : W - dx);
  for (int c = 0; c < channels; ++c) {
    // (v/255 - mean) / std = v * scale + bias; padding pixels are v = 0, i.e. bias.
    const auto [scale, bias] = normalize_affine(norm, c);
    const uint8_t* plane = src + static_cast<int64_t>(c) * H * W;
    float* out = dst + static_cast<int64_t>(c) * H * W;
    for (int y = 0; y < H; ++y, out += W) {
      const int sy = y + cf.dy;
      if (sy < 0 || sy >= H) {
        std::fill(out, out + W, bias);
        continue;
      }
      const uint8_t* row = plane + static_cast<int64_t>(sy) * W;
      std::fill(out, out + x0, bias);
      if (cf.flip)
        affine_row_reversed(row + (W - 1 - x0 + dx), out + x0, x1 - x0, scale, bias);
      else
        affine_row(row + (x0 + dx), out + x0, x1 - x0, scale, bias);
      std::fill(out + x1, out + W, bias);
    }
  }
}

void crop_flip_u8(const uint8_t* src, int channels, int height, int width, CropFlip cf,
                  uint8_t* dst) {
  LVIT_CHECK(std::abs(cf.dy) < height && std::abs(cf.dx) < width,
             "crop shift ({}, {}) too large for a {}x{} image", cf.dy, cf.dx, height, width);
  const int H = height, W = width, dx = cf.dx;
  const int x0 = std::max(0, cf.flip ? dx : -dx);  // the same column range as above
  const int x1 = std::min(W, cf.flip ? W + dx : W - dx);
  for (int c = 0; c < channels; ++c) {
    const uint8_t* plane = src + static_cast<int64_t>(c) * H * W;
    uint8_t* out = dst + static_cast<int64_t>(c) * H * W;
    for (int y = 0; y < H; ++y, out += W) {
      const int sy = y + cf.dy;
      if (sy < 0 || sy >= H) {
        std::fill(out, out + W, uint8_t{0});
        continue;
      }
      const uint8_t* row = plane + static_cast<int64_t>(sy) * W;
      std::fill(out, out + x0, uint8_t{0});
      if (cf.flip) {
        const uint8_t* in = row + (W - 1 - x0 + dx);
        for (int x = 0; x < x1 - x0; ++x) out[x0 + x] = in[-x];
      } else {
        std::copy(row + x0 + dx, row + x1 + dx, out + x0);
      }
      std::fill(out + x1, out + W, uint8_t{0});
    }
  }
}

bool random_erase(float* img, int channels, int height, int width, double probability,
                  EraseMode mode, uint64_t seed, int64_t epoch, int64_t sample_index) {
  if (probability <= 0) return false;
  SampleRng rng(seed, kErasingStream, epoch, sample_index);
  if (rng.uniform_double() >= probability) return false;  // timm: skip if random() > p
  const double area = static_cast<double>(height) * width;
  const double log_lo = std::log(0.3), log_hi = std::log(1.0 / 0.3);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = (0.02 + (1.0 / 3.0 - 0.02) * rng.uniform_double()) * area;
    const double aspect = std::exp(log_lo + (log_hi - log_lo) * rng.uniform_double());
    const int h = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int w = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (w >= width || h >= height) continue;
    const int top = rng.randint(height - h + 1), left = rng.randint(width - w + 1);
    for (int c = 0; c < channels; ++c)
      for (int y = top; y < top + h; ++y) {
        float* row = img + (static_cast<int64_t>(c) * height + y) * width + left;
        for (int x = 0; x < w; ++x)
          row[x] = mode == EraseMode::pixel ? static_cast<float>(rng.normal()) : 0.0f;
      }
    return true;
  }
  return false;
}

void normalize_image(const uint8_t* src, int channels, int height, int width,
                     const Normalization& norm, float* dst) {
  crop_flip_normalize(src, channels, height, width, CropFlip{}, norm, dst);
}

void augment_image(const uint8_t* src, int channels, int height, int width, uint64_t seed,
                   int64_t epoch, int64_t sample_index, int padding, bool hflip,
                   const Normalization& norm, float* dst) {
  crop_flip_normalize(src, channels, height, width,
                      draw_crop_flip(seed, epoch, sample_index, padding, hflip), norm, dst);
}

void finish_images(const uint8_t* src, const int32_t* crop_flip, int64_t batch, int channels,
                   int height, int width, const Normalization& norm, float* dst) {
  const int64_t per = static_cast<int64_t>(channels) * height * width;
  for (int64_t i = 0; i < batch; ++i) {
    const int32_t* p = crop_flip + 3 * i;
    LVIT_CHECK(p[2] == 0 || p[2] == 1, "sample {}: flip flag {} is not 0 or 1", i, p[2]);
    crop_flip_normalize(src + i * per, channels, height, width, CropFlip{p[0], p[1], p[2] != 0},
                        norm, dst + i * per);
  }
}

}  // namespace lvit::data
