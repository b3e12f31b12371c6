// The finishing step of the GPU data path (the CUDA half of apps/gpu_data.cpp): uint8 images
// as the loader delivers them (data/loader.h, LoaderConfig::uint8_batches) -> cropped, flipped,
// normalised f32, bit for bit what data/augment.cpp's crop_flip_normalize computes on the CPU.
// Host-only header.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace lvit::cuda {

// Per-channel normalisation as out = fma(v, scale[c], bias[c]) (data::normalize_affine gives
// the values; channels beyond C are unused).
struct ChannelAffine {
  float scale[3];
  float bias[3];
};

// out[b, c, y, x] = fma(images[b, c, y + dy, x' + dx], scale[c], bias[c]) with x' = flip ?
// W-1-x : x and (dy, dx, flip) = crop_flip[b], or exactly bias[c] where the source pixel lies
// outside the image (the zero padding). images: u8 [B, C, H, W], crop_flip: i32 [B, 3] (flip
// nonzero = mirrored), out: f32 [B, C, H, W], all contiguous device memory of the current
// device; 1 <= C <= 3. Shifts are not range-checked here (the loader draws them in range; any
// out-of-range one reads as padding, never out of bounds). Queued on `stream`; capturable.
void crop_flip_normalize(const uint8_t* images, const int32_t* crop_flip, float* out, int64_t batch,
                         int channels, int height, int width, const ChannelAffine& affine,
                         cudaStream_t stream);

}  // namespace lvit::cuda
