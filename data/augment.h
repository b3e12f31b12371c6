// Training augmentation on uint8 CHW images: random crop with zero padding, random horizontal
// flip, and normalisation to f32 ((x/255 - mean) / std), fused into one pass per image.
//
// Reproducibility: every random choice is a pure function of (seed, epoch, sample index), drawn
// from one Philox block (counter = sample index, offset = epoch, key = seed; i.e. the words
// Philox::word(seed, epoch, sample_index * 4 + k) for k = 0..3). So the output does not depend on
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

// The random choices for `sample_index` in `epoch`. padding = 0 gives no shift; hflip = false
// never flips (the other choice does not change: the words are drawn independently).
CropFlip draw_crop_flip(uint64_t seed, int64_t epoch, int64_t sample_index, int padding,
                        bool hflip);

// dst[c, y, x] = (src[c, y + dy, x' + dx] / 255 - mean[c]) / std[c] with x' = flip ? W-1-x : x,
// and (0 - mean[c]) / std[c] where the source pixel is outside the image.
// src: [C, H, W] uint8, dst: [C, H, W] f32 (not overlapping). C is 1 (uses channel 0's
// statistics) or 3. |dy| < H and |dx| < W.
void crop_flip_normalize(const uint8_t* src, int channels, int height, int width, CropFlip cf,
                         const Normalization& norm, float* dst);

// Plain normalisation (evaluation): crop_flip_normalize with no shift and no flip.
void normalize_image(const uint8_t* src, int channels, int height, int width,
                     const Normalization& norm, float* dst);

// draw_crop_flip + crop_flip_normalize.
void augment_image(const uint8_t* src, int channels, int height, int width, uint64_t seed,
                   int64_t epoch, int64_t sample_index, int padding, bool hflip,
                   const Normalization& norm, float* dst);

}  // namespace lvit::data
