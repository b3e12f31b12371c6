// The GPU data path: the loader delivers uint8 batches (data/loader.h, uint8_batches) in pinned
// host memory, the step uploads them with one asynchronous copy and finishes them (crop, flip,
// normalise) on the device, bit for bit the CPU's f32 batch. Used by the trainer and evaluate()
// on CUDA devices unless --no-gpu-data; configurations with f32-only augmentations (random
// erasing, mixup/CutMix) keep the f32 batches.
#pragma once
#include <string>

#include "core/storage.h"
#include "core/tensor.h"
#include "data/cifar.h"
#include "data/loader.h"

namespace lvit::app {

// The host memory uint8 batches for `device` should live in: pinned memory for a CUDA device,
// null (the CPU allocator) for the CPU.
Allocator* upload_allocator(Device device);

// The finished f32 images [B, C, H, W] of a uint8 batch (images_u8 u8 [B, C, H, W] and
// crop_flip i32 [B, 3]), on images_u8's device: cuda/augment.cuh on a GPU (capturable in a CUDA
// graph), data::finish_images on the CPU. Both on the same device.
Tensor finish_uint8_images(const Tensor& images_u8, const Tensor& crop_flip,
                           const data::Normalization& norm);

// Why a loader with config `lc` cannot deliver uint8 batches ("" when it can): the f32-only
// steps it has switched on.
std::string uint8_batches_blocker(const data::LoaderConfig& lc);

}  // namespace lvit::app
