#include "apps/gpu_data.h"

#include "data/augment.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/augment.cuh"
#include "cuda/context.cuh"
#include "cuda/pinned.cuh"
#endif

namespace lvit::app {

Allocator* upload_allocator(Device device) {
#ifdef LVIT_WITH_CUDA
  if (device.is_cuda()) return cuda::pinned_allocator(device.index);
#endif
  (void)device;
  return nullptr;
}

Tensor finish_uint8_images(const Tensor& images_u8, const Tensor& crop_flip,
                           const data::Normalization& norm) {
  if (images_u8.device().is_cpu()) return data::finish_images(images_u8, crop_flip, norm);
  LVIT_CHECK(images_u8.dim() == 4 && images_u8.dtype() == DType::u8 && images_u8.is_contiguous(),
             "finish_uint8_images: images must be contiguous u8 [B, C, H, W], got {} {}",
             dtype_name(images_u8.dtype()), shape_str(images_u8.shape()));
  const Shape& s = images_u8.shape();
  LVIT_CHECK(crop_flip.dtype() == DType::i32 && crop_flip.shape() == Shape({s[0], 3}) &&
                 crop_flip.is_contiguous() && crop_flip.device() == images_u8.device(),
             "finish_uint8_images: crop_flip must be contiguous i32 [{}, 3] on {}, got {} {} on {}",
             s[0], images_u8.device().str(), dtype_name(crop_flip.dtype()),
             shape_str(crop_flip.shape()), crop_flip.device().str());
  LVIT_CHECK(s[1] == 1 || s[1] == 3, "finish_uint8_images: {} channels (expected 1 or 3)", s[1]);
#ifdef LVIT_WITH_CUDA
  Tensor out = Tensor::empty(s, DType::f32, images_u8.device());
  cuda::ChannelAffine affine{};
  for (int c = 0; c < static_cast<int>(s[1]); ++c) {
    const data::AffineNorm a = data::normalize_affine(norm, c);
    affine.scale[c] = a.scale;
    affine.bias[c] = a.bias;
  }
  const int dev = images_u8.device().index;
  cuda::DeviceGuard guard(dev);
  cuda::crop_flip_normalize(images_u8.data<uint8_t>(), crop_flip.data<int32_t>(), out.data<float>(),
                            s[0], static_cast<int>(s[1]), static_cast<int>(s[2]),
                            static_cast<int>(s[3]), affine, cuda::stream(dev));
  return out;
#else
  throw Error("lvit was built without CUDA");
#endif
}

std::string uint8_batches_blocker(const data::LoaderConfig& lc) {
  if (!lc.augment) return "";
  const bool erase = lc.reprob > 0, mix = lc.mix.enabled();
  if (erase && mix) return "random erasing and mixup/CutMix";
  if (erase) return "random erasing";
  if (mix) return "mixup/CutMix";
  return "";
}

}  // namespace lvit::app
