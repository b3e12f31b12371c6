// Training augmentation on uint8 CHW images: random crop with zero padding, random horizontal
// flip, and normalisation to f32 ((x/255 - mean) / std), fused into one pass per image; the
// unfused uint8 crop/flip for the RandAugment path (data/randaugment.h), and random erasing on
// the normalised f32 image.
//
// Reproducibility: every random choice is a pure function of (seed, epoch, sample index), drawn
// from one Philox block (counter = sample index, offset = kCropFlipStream | epoch, key = seed;
// i.e. the words Philox::word(seed, kCropFlipStream | epoch, sample_index * 4 + k) for k = 0..3:
// a stream of its own, data/randaugment.h). So the output does not depend on
// the number of worker threads, on batch order, or on where a resumed run picks up.
//
// Semantics match torchvision's RandomCrop(H, padding=p) + RandomHorizontalFlip() + ToTensor() +
// Normalize(mean, std): pad p zero pixels (uint8 0, i.e. -mean/std once normalised) on each side,
// crop H x W at offset (oy, ox) in [0, 2p]^2, then mirror left-right.
#pragma once
#include <cstdint>

#include "data/cifar.h"

namespace lvit::data {

// One sample's random choices. dy = oy - p and dx = ox - p are the crop shifts in [-p, p]: output
// pixel (y, x) of the un-flipped crop is input pixel (y + dy, x + dx), zero where that falls
// outside the image.
struct CropFlip {
  int dy = 0;
  int dx = 0;
  bool flip = false;
};

// Normalisation as one affine map per channel: (v/255 - mean) / std computed as
// fma(v, scale, bias) with scale = 1 / (255 std) and bias = -mean / std (f32, these expressions:
// the GPU finishing step takes them from here). Padding pixels are exactly `bias`.
struct AffineNorm {
  float scale;
  float bias;
};
AffineNorm normalize_affine(const Normalization& norm, int channel);

// The random choices for `sample_index` in `epoch`. padding = 0 gives no shift; hflip = false
// never flips (the other choice does not change: the words are drawn independently).
CropFlip draw_crop_flip(uint64_t seed, int64_t epoch, int64_t sample_index, int padding,
                        bool hflip);

// dst[c, y, x] = (src[c, y + dy, x' + dx] / 255 - mean[c]) / std[c] with x' = flip ? W-1-x : x,
// and (0 - mean[c]) / std[c] where the source pixel is outside the image (as normalize_affine
// computes them).
// src: [C, H, W] uint8, dst: [C, H, W] f32 (not overlapping). C is 1 (uses channel 0's
// statistics) or 3. |dy| < H and |dx| < W.
void crop_flip_normalize(const uint8_t* src, int channels, int height, int width, CropFlip cf,
                         const Normalization& norm, float* dst);

// Plain normalisation (evaluation): crop_flip_normalize with no shift and no flip.
void normalize_image(const uint8_t* src, int channels, int height, int width,
                     const Normalization& norm, float* dst);

// The crop and flip of crop_flip_normalize on uint8, without normalising: dst[c, y, x] =
// src[c, y + dy, x' + dx], 0 outside the image. For the uint8 ops that follow (RandAugment).
void crop_flip_u8(const uint8_t* src, int channels, int height, int width, CropFlip cf,
                  uint8_t* dst);

// Random erasing as timm's RandomErasing (probability p, count 1, area fraction uniform in
// [0.02, 1/3], log aspect ratio uniform in [log 0.3, log 1/0.3], up to 10 attempts to fit the
// box strictly inside the image), on the normalised f32 image [C, H, W] in place. The box gets
// per-pixel standard normals (mode "pixel", timm's and DeiT's choice) or zeros (mode "const",
// the normalised mean, as torchvision's value=0). Its choices are a pure function of (seed,
// epoch, sample index) on a stream of their own (tag "RERA", data/randaugment.h SampleRng).
// Returns whether it erased.
enum class EraseMode { pixel, constant };
bool random_erase(float* img, int channels, int height, int width, double probability,
                  EraseMode mode, uint64_t seed, int64_t epoch, int64_t sample_index);

// The finishing step of uint8 batches (LoaderConfig::uint8_batches), on the CPU: for each of
// `batch` samples, crop_flip_normalize of src[i] ([C, H, W] uint8) with crop_flip[i] = (dy, dx,
// flip 0/1) into dst[i] ([C, H, W] f32). The reference for cuda/augment.cu.
void finish_images(const uint8_t* src, const int32_t* crop_flip, int64_t batch, int channels,
                   int height, int width, const Normalization& norm, float* dst);

// draw_crop_flip + crop_flip_normalize.
void augment_image(const uint8_t* src, int channels, int height, int width, uint64_t seed,
                   int64_t epoch, int64_t sample_index, int padding, bool hflip,
                   const Normalization& norm, float* dst);

}  // namespace lvit::data
