// data/loader.h uint8 batches (the GPU data path's CPU half): the uint8 images and crop/flip
// parameters, finished by the CPU reference (data::finish_images), equal the f32 batches bit for
// bit, for any worker count, seed and after skip_to; and the bad-input errors.
#include <doctest/doctest.h>

#include "test_util.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "apps/gpu_data.h"
#include "core/error.h"
#include "data/augment.h"
#include "data/loader.h"

using namespace lvit;
using namespace lvit::data;

namespace {

// Random images of any shape (the synthetic set is 16x16 RGB).
ImageDataset random_dataset(int64_t size, int channels, int height, int width, uint64_t seed) {
  ImageDataset ds = test::synthetic_dataset(size, seed);
  ds.channels = channels;
  ds.height = height;
  ds.width = width;
  ds.images.resize(static_cast<size_t>(size * ds.image_numel()));
  for (size_t i = 0; i < ds.images.size(); ++i)
    ds.images[i] = static_cast<uint8_t>(Philox::word(seed, 1, i));
  return ds;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// Every batch of epochs 0 and 1 from the f32 loader and from the uint8 loader (finished on the
// CPU) with the same config, `workers` threads for the uint8 one.
void check_epochs_equal(const ImageDataset& ds, LoaderConfig lc, int workers) {
  LoaderConfig lu = lc;
  lu.uint8_batches = true;
  lu.workers = workers;
  Loader f32(ds, lc), u8(ds, lu);
  for (int64_t epoch : {0, 1}) {
    f32.start_epoch(epoch);
    u8.start_epoch(epoch);
    Batch a, b;
    int64_t n = 0;
    while (f32.next(a)) {
      INFO("epoch " << epoch << " batch " << a.index << " workers " << workers);
      REQUIRE(u8.next(b));
      CHECK_FALSE(b.images.defined());
      REQUIRE(b.images_u8.dtype() == DType::u8);
      REQUIRE(b.crop_flip.shape() == Shape({b.images_u8.shape()[0], 3}));
      CHECK(b.index == a.index);
      CHECK(same_bits(a.labels, b.labels));
      CHECK(same_bits(a.images, finish_images(b.images_u8, b.crop_flip, lc.norm)));
      // The apps' dispatcher takes the CPU reference for CPU tensors.
      CHECK(same_bits(a.images, app::finish_uint8_images(b.images_u8, b.crop_flip, lc.norm)));
      ++n;
    }
    CHECK_FALSE(u8.next(b));
    CHECK(n == f32.batches_per_epoch());
  }
}

LoaderConfig base_config(uint64_t seed, const ImageDataset& ds) {
  LoaderConfig lc;
  lc.batch_size = 7;  // the last batch is partial
  lc.drop_last = false;
  lc.seed = seed;
  lc.workers = 0;
  lc.norm = normalization_for("cifar100");
  lc.crop_padding = std::min(4, std::min(ds.height, ds.width) - 1);
  return lc;
}

}  // namespace

TEST_CASE("uint8 batches, finished on the CPU, equal the f32 batches bit for bit") {
  const ImageDataset rgb = random_dataset(30, 3, 16, 16, 5);
  const ImageDataset odd = random_dataset(23, 3, 15, 13, 6);
  const ImageDataset gray = random_dataset(17, 1, 9, 11, 7);
  for (const ImageDataset* ds : {&rgb, &odd, &gray}) {
    for (uint64_t seed : {0ull, 7ull, 0x123456789abcdefull}) {
      for (int workers : {0, 1, 2}) {
        INFO(ds->channels << "x" << ds->height << "x" << ds->width << " seed " << seed);
        LoaderConfig plain = base_config(seed, *ds);
        check_epochs_equal(*ds, plain, workers);

        LoaderConfig no_norm = plain;  // bias -0.0: the padding must stay -0.0
        no_norm.norm = Normalization{};
        no_norm.hflip = false;
        check_epochs_equal(*ds, no_norm, workers);

        LoaderConfig ra = plain;  // RandAugment: the CPU crops and flips, the finish normalises
        ra.randaugment.num_ops = 2;
        ra.randaugment.magnitude = 9;
        check_epochs_equal(*ds, ra, workers);

        LoaderConfig ta = plain;
        ta.randaugment.trivial = true;
        check_epochs_equal(*ds, ta, workers);

        LoaderConfig eval = plain;  // normalise only
        eval.augment = false;
        eval.shuffle = false;
        check_epochs_equal(*ds, eval, workers);
      }
    }
  }
}

TEST_CASE("uint8 batches: crop/flip parameters, identity under RandAugment, skip_to") {
  const ImageDataset ds = random_dataset(40, 3, 16, 16, 9);
  LoaderConfig lc = base_config(3, ds);
  lc.uint8_batches = true;
  lc.crop_padding = 4;
  Loader loader(ds, lc);
  loader.start_epoch(2);
  std::vector<Batch> all;
  Batch b;
  while (loader.next(b)) all.push_back(b);
  bool any_flip = false, any_shift = false;
  for (const Batch& x : all) {
    const std::vector<int32_t> p = x.crop_flip.to_vector<int32_t>();
    for (size_t i = 0; i < p.size(); i += 3) {
      CHECK(std::abs(p[i]) <= 4);
      CHECK(std::abs(p[i + 1]) <= 4);
      CHECK((p[i + 2] == 0 || p[i + 2] == 1));
      any_shift |= p[i] != 0 || p[i + 1] != 0;
      any_flip |= p[i + 2] == 1;
    }
  }
  CHECK(any_shift);
  CHECK(any_flip);
  // skip_to(k) continues with exactly batch k, whatever the worker count.
  for (int workers : {0, 2}) {
    LoaderConfig lw = lc;
    lw.workers = workers;
    Loader resumed(ds, lw);
    resumed.start_epoch(2);
    resumed.skip_to(3);
    for (size_t k = 3; k < all.size(); ++k) {
      REQUIRE(resumed.next(b));
      CHECK(b.index == static_cast<int64_t>(k));
      CHECK(same_bits(b.images_u8, all[k].images_u8));
      CHECK(same_bits(b.crop_flip, all[k].crop_flip));
    }
  }
  // With RandAugment the images come cropped and flipped: the parameters are the identity.
  lc.randaugment.num_ops = 2;
  Loader ra(ds, lc);
  ra.start_epoch(0);
  REQUIRE(ra.next(b));
  for (int32_t v : b.crop_flip.to_vector<int32_t>()) CHECK(v == 0);
}

TEST_CASE("uint8 batches: host_allocator places the images") {
  struct CountingAllocator final : Allocator {
    int allocs = 0;
    void* allocate(size_t n) override {
      ++allocs;
      return cpu_allocator()->allocate(n);
    }
    void deallocate(void* p, size_t n) override { cpu_allocator()->deallocate(p, n); }
  } counting;
  const ImageDataset ds = random_dataset(14, 3, 8, 8, 1);
  {
    LoaderConfig lc = base_config(0, ds);
    lc.uint8_batches = true;
    lc.host_allocator = &counting;
    Loader loader(ds, lc);
    loader.start_epoch(0);
    Batch b;
    REQUIRE(loader.next(b));
    CHECK(b.images_u8.storage()->allocator() == &counting);
    CHECK(b.crop_flip.storage()->allocator() == cpu_allocator());
  }
  CHECK(counting.allocs >= 1);
}

TEST_CASE("uint8 batches: bad input is a one-line error naming the problem") {
  const ImageDataset ds = random_dataset(14, 3, 8, 8, 1);
  LoaderConfig lc = base_config(0, ds);
  lc.uint8_batches = true;
  lc.reprob = 0.25;
  CHECK(test::error_message([&] { Loader l(ds, lc); }).find("random erasing") != std::string::npos);
  lc.reprob = 0;
  lc.mix.mixup_alpha = 0.8;
  lc.mix.num_classes = 10;
  CHECK(test::error_message([&] { Loader l(ds, lc); }).find("mixup/CutMix") != std::string::npos);
  CHECK(app::uint8_batches_blocker(lc) == "mixup/CutMix");
  lc.reprob = 0.1;
  CHECK(app::uint8_batches_blocker(lc) == "random erasing and mixup/CutMix");
  lc.augment = false;
  CHECK(app::uint8_batches_blocker(lc).empty());

  const Normalization norm = normalization_for("cifar100");
  const Tensor u8 = Tensor::zeros({2, 3, 4, 4}, DType::u8);
  CHECK(test::error_message([&] {
          finish_images(Tensor::zeros({2, 3, 4, 4}), Tensor::zeros({2, 3}, DType::i32), norm);
        }).find("must be u8") != std::string::npos);
  CHECK(test::error_message([&] {
          finish_images(u8, Tensor::zeros({3, 3}, DType::i32), norm);
        }).find("crop_flip must be i32 [2, 3]") != std::string::npos);
  Tensor bad_flip = Tensor::zeros({2, 3}, DType::i32);
  bad_flip.data<int32_t>()[5] = 2;
  CHECK(test::error_message([&] { finish_images(u8, bad_flip, norm); }).find("flip flag 2") !=
        std::string::npos);
  Tensor far = Tensor::zeros({2, 3}, DType::i32);
  far.data<int32_t>()[0] = 4;  // |dy| must be below the height
  CHECK(test::error_message([&] { finish_images(u8, far, norm); }).find("too large") !=
        std::string::npos);
}
