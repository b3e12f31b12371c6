// The GPU data path's device half: cuda/augment.cu's crop + flip + normalise against the CPU
// reference (data::finish_images) bit for bit, on random uint8 images and parameters with the
// edge cases (largest shifts both ways, flips, odd sizes, one channel, batch 1, a -0.0 bias);
// uploads from pinned memory; and a whole uint8 loader epoch finished on the GPU against the
// f32 loader. Skips cleanly without a GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "apps/gpu_data.h"
#include "core/rng.h"
#include "data/augment.h"
#include "data/loader.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/pinned.cuh"
#endif

using namespace lvit;
using cudatest::to_cpu;
using cudatest::to_gpu;

namespace {

Tensor random_u8(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::u8);
  uint8_t* p = t.data<uint8_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<uint8_t>(Philox::word(seed, 2, i));
  return t;
}

// (dy, dx, flip) per sample: the first samples take the extremes |dy| = H-1, |dx| = W-1 in
// every sign and flip combination, then the loader's range [-pad, pad], then anything legal.
Tensor edge_params(int64_t B, int H, int W, uint64_t seed) {
  Tensor t = Tensor::empty({B, 3}, DType::i32);
  int32_t* p = t.data<int32_t>();
  for (int64_t i = 0; i < B; ++i) {
    const uint32_t w = Philox::word(seed, 3, static_cast<uint64_t>(i));
    int dy, dx;
    if (i < 8) {
      dy = (i & 1) ? H - 1 : -(H - 1);
      dx = (i & 2) ? W - 1 : -(W - 1);
    } else if (i < 16) {
      const int pad = std::min({4, H - 1, W - 1});
      dy = static_cast<int>(w % (2 * pad + 1)) - pad;
      dx = static_cast<int>((w >> 8) % (2 * pad + 1)) - pad;
    } else {
      dy = static_cast<int>(w % (2 * H - 1)) - (H - 1);
      dx = static_cast<int>((w >> 12) % (2 * W - 1)) - (W - 1);
    }
    p[3 * i] = dy;
    p[3 * i + 1] = dx;
    p[3 * i + 2] = i < 8 ? static_cast<int32_t>((i >> 2) & 1) : static_cast<int32_t>(w >> 31);
  }
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

}  // namespace

TEST_CASE("cuda crop_flip_normalize equals the CPU reference bit for bit") {
  LVIT_SKIP_WITHOUT_GPU();
  struct Case {
    int64_t B;
    int C, H, W;
  };
  const Case cases[] = {{1, 3, 32, 32},  {1, 1, 5, 7},    {3, 3, 16, 16}, {24, 3, 32, 32},
                        {24, 1, 15, 13}, {33, 3, 64, 64}, {20, 3, 1, 9},  {17, 3, 7, 1}};
  const data::Normalization norms[] = {data::normalization_for("cifar100"),
                                       data::normalization_for("tiny-imagenet"),
                                       // mean 0, std 1: bias -0.0 on the padding
                                       data::Normalization{{0.f, 0.f, 0.f}, {1.f, 1.f, 1.f}}};
  uint64_t seed = 11;
  for (const Case& k : cases)
    for (const data::Normalization& norm : norms) {
      INFO("B " << k.B << " C " << k.C << " H " << k.H << " W " << k.W << " mean " << norm.mean[0]);
      const Tensor images = random_u8({k.B, k.C, k.H, k.W}, ++seed);
      const Tensor params = edge_params(k.B, k.H, k.W, seed);
      const Tensor want = data::finish_images(images, params, norm);
      const Tensor got = to_cpu(app::finish_uint8_images(to_gpu(images), to_gpu(params), norm));
      CHECK(same_bits(want, got));
    }
}

TEST_CASE("cuda: uploads from pinned memory, and a loader epoch finished on the GPU") {
  LVIT_SKIP_WITHOUT_GPU();
#ifdef LVIT_WITH_CUDA
  const Device gpu = Device::cuda(0);
  Allocator* pinned = app::upload_allocator(gpu);
  REQUIRE(pinned == cuda::pinned_allocator(0));
  CHECK(app::upload_allocator(Device::cpu()) == nullptr);
  // Many uploads in a row from recycled pinned blocks: each arrives intact.
  for (int i = 0; i < 20; ++i) {
    Tensor host = Tensor::empty_host({5, 3, 9, 7}, DType::u8, pinned);
    REQUIRE(cuda::is_pinned(*host.storage()));
    const Tensor src = random_u8(host.shape(), 100 + i);
    host.copy_(src);
    const Tensor dev = host.to(gpu);
    host = Tensor();  // the block goes back to the cache only once the copy is done
    CHECK(same_bits(to_cpu(dev), src));
  }

  data::ImageDataset ds = test::synthetic_dataset(45, 4);
  data::LoaderConfig lc;
  lc.batch_size = 8;
  lc.drop_last = false;
  lc.seed = 99;
  lc.workers = 2;
  lc.norm = data::normalization_for(ds.name);
  for (bool randaugment : {false, true}) {
    INFO("randaugment " << randaugment);
    data::LoaderConfig l32 = lc;
    l32.randaugment.num_ops = randaugment ? 2 : 0;
    data::LoaderConfig lu = l32;
    lu.uint8_batches = true;
    lu.host_allocator = pinned;
    data::Loader f32(ds, l32), u8(ds, lu);
    f32.start_epoch(1);
    u8.start_epoch(1);
    data::Batch a, b;
    while (f32.next(a)) {
      REQUIRE(u8.next(b));
      CHECK(cuda::is_pinned(*b.images_u8.storage()));
      const Tensor got =
          app::finish_uint8_images(b.images_u8.to(gpu), b.crop_flip.to(gpu), lc.norm);
      CHECK(same_bits(a.images, to_cpu(got)));
    }
  }
#endif
}

TEST_CASE("cuda finish_uint8_images: bad input is a one-line error") {
  LVIT_SKIP_WITHOUT_GPU();
  const data::Normalization norm = data::normalization_for("cifar100");
  const Tensor u8 = to_gpu(Tensor::zeros({2, 3, 4, 4}, DType::u8));
  CHECK(
      test::error_message([&] {
        app::finish_uint8_images(u8, Tensor::zeros({2, 3}, DType::i32), norm);  // params on the CPU
      }).find("crop_flip must be contiguous i32 [2, 3] on cuda") != std::string::npos);
  CHECK(test::error_message([&] {
          app::finish_uint8_images(to_gpu(Tensor::zeros({2, 4, 4, 4}, DType::u8)),
                                   to_gpu(Tensor::zeros({2, 3}, DType::i32)), norm);
        }).find("4 channels") != std::string::npos);
}
