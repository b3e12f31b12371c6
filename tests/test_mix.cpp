// data/mix (mixup/CutMix), random erasing and the strong-augmentation Loader path: targets, the
// soft loss against its definition, determinism and independence of the worker count.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/rng.h"
#include "data/augment.h"
#include "data/loader.h"
#include "data/mix.h"
#include "models/nn/module.h"
#include "ops/ops.h"

using namespace lvit;
using namespace lvit::data;

namespace {

// n random 8x8 RGB images in 5 classes, posing as CIFAR-100.
ImageDataset small_dataset(int64_t n) {
  ImageDataset ds;
  ds.name = "cifar100";
  ds.size = n;
  ds.height = ds.width = 8;
  ds.num_classes = 5;
  ds.images.resize(static_cast<size_t>(n * ds.image_numel()));
  for (size_t i = 0; i < ds.images.size(); ++i)
    ds.images[i] = static_cast<uint8_t>(Philox::word(4, 0, i));
  for (int64_t i = 0; i < n; ++i) ds.labels.push_back(static_cast<int32_t>(i % 5));
  return ds;
}

LoaderConfig strong_config() {
  LoaderConfig c;
  c.batch_size = 6;
  c.seed = 11;
  c.randaugment.num_ops = 2;
  c.reprob = 0.5;
  c.mix.mixup_alpha = 0.8;
  c.mix.cutmix_alpha = 1.0;
  c.mix.label_smoothing = 0.1;
  c.mix.num_classes = 5;
  return c;
}

}  // namespace

TEST_CASE("mix_targets: rows sum to 1, smoothing and lam where expected") {
  const std::vector<int64_t> y = {0, 3, 1, 2};
  std::vector<float> t(4 * 5);
  mix_targets(y.data(), 4, 5, 0.7, 0.1, t.data());
  for (int i = 0; i < 4; ++i) {
    double s = 0;
    for (int k = 0; k < 5; ++k) s += t[i * 5 + k];
    CHECK(s == doctest::Approx(1.0).epsilon(1e-6));
  }
  // Row 0 pairs with row 3 (label 2): 0.7 * (0.9 + 0.02) + 0.3 * 0.02 on class 0, the mirror on 2.
  CHECK(t[0] == doctest::Approx(0.7 * 0.92 + 0.3 * 0.02));
  CHECK(t[2] == doctest::Approx(0.7 * 0.02 + 0.3 * 0.92));
  CHECK(t[1] == doctest::Approx(0.02));
  // lam = 1: the smoothed one-hot labels.
  mix_targets(y.data(), 4, 5, 1.0, 0.1, t.data());
  CHECK(t[5 + 3] == doctest::Approx(0.92));
  CHECK(t[5 + 0] == doctest::Approx(0.02));
}

TEST_CASE("soft loss on mixed targets == lam CE_s(y_a) + (1 - lam) CE_s(y_b)") {
  const int64_t B = 4, C = 5;
  Generator g(3);
  Tensor logits = Tensor::empty({B, C});
  nn::normal_(logits, g, 2.0);
  const std::vector<int64_t> y = {0, 3, 1, 2};
  std::vector<int64_t> y_rev(y.rbegin(), y.rend());
  const double lam = 0.37, s = 0.1;
  Tensor t = Tensor::empty({B, C});
  mix_targets(y.data(), B, C, lam, s, t.data<float>());
  const double got = ops::cross_entropy_soft(logits, t).item();
  const double ce_a = ops::cross_entropy(logits, Tensor::from_vector(y, {B}), s).item();
  const double ce_b = ops::cross_entropy(logits, Tensor::from_vector(y_rev, {B}), s).item();
  CHECK(got == doctest::Approx(lam * ce_a + (1 - lam) * ce_b).epsilon(1e-5));
}

TEST_CASE("mixup and CutMix on images") {
  const int64_t B = 3;
  const int C = 1, H = 4, W = 4;
  std::vector<float> img(B * 16);
  for (int64_t i = 0; i < B; ++i)
    for (int k = 0; k < 16; ++k) img[i * 16 + k] = static_cast<float>(i + 1);
  std::vector<float> x = img;
  MixParams mp;
  mp.lam = 0.25;
  mix_images(mp, x.data(), B, C, H, W);
  CHECK(x[0] == doctest::Approx(0.25 * 1 + 0.75 * 3));
  CHECK(x[16] == doctest::Approx(2.0));  // the middle of an odd batch mixes with itself
  CHECK(x[32] == doctest::Approx(0.25 * 3 + 0.75 * 1));
  // CutMix: the box [1, 3) x [0, 2) of sample 0 comes from sample 2 and back.
  x = img;
  mp.cutmix = true;
  mp.y0 = 1;
  mp.y1 = 3;
  mp.x0 = 0;
  mp.x1 = 2;
  mix_images(mp, x.data(), B, C, H, W);
  CHECK(x[0] == 1.0f);
  CHECK(x[1 * 4 + 0] == 3.0f);
  CHECK(x[2 * 4 + 1] == 3.0f);
  CHECK(x[2 * 4 + 2] == 1.0f);
  CHECK(x[32 + 1 * 4 + 1] == 1.0f);
}

TEST_CASE("draw_mix: deterministic; CutMix lam is the kept area; switch and prob respected") {
  MixConfig cfg;
  cfg.mixup_alpha = 0.8;
  cfg.cutmix_alpha = 1.0;
  int cut = 0, plain = 0;
  for (int64_t b = 0; b < 400; ++b) {
    const MixParams p = draw_mix(cfg, 5, 2, b, 32, 32);
    const MixParams q = draw_mix(cfg, 5, 2, b, 32, 32);
    CHECK(p.lam == q.lam);
    CHECK(p.lam >= 0.0);
    CHECK(p.lam <= 1.0);
    if (p.cutmix) {
      ++cut;
      CHECK(p.lam == doctest::Approx(1.0 - (p.y1 - p.y0) * (p.x1 - p.x0) / 1024.0));
      CHECK((p.y0 >= 0 && p.y1 <= 32 && p.x0 >= 0 && p.x1 <= 32));
    } else {
      ++plain;
    }
  }
  CHECK(cut > 150);
  CHECK(plain > 150);
  cfg.prob = 0.0;
  CHECK(draw_mix(cfg, 5, 2, 0, 32, 32).lam == 1.0);
  cfg = MixConfig{};
  cfg.cutmix_alpha = 1.0;  // CutMix only
  CHECK(draw_mix(cfg, 5, 0, 7, 32, 32).cutmix);
}

TEST_CASE("random_erase: probability, box inside the image, deterministic, const mode") {
  const int C = 3, H = 16, W = 16;
  int erased = 0;
  for (int64_t i = 0; i < 400; ++i) {
    std::vector<float> a(C * H * W, 5.0f), b = a;
    const bool ea = random_erase(a.data(), C, H, W, 0.25, EraseMode::pixel, 1, 0, i);
    const bool eb = random_erase(b.data(), C, H, W, 0.25, EraseMode::pixel, 1, 0, i);
    CHECK(ea == eb);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
    if (!ea) {
      CHECK(a == std::vector<float>(C * H * W, 5.0f));
      continue;
    }
    ++erased;
    int changed = 0;
    for (float v : a) changed += v != 5.0f;
    CHECK(changed >= static_cast<int>(0.02 * H * W * C * 0.5));  // at least ~2% of the area
    CHECK(changed <= H * W * C / 2);
  }
  CHECK(erased > 70);
  CHECK(erased < 130);
  std::vector<float> z(C * H * W, 5.0f);
  for (int64_t i = 0; !random_erase(z.data(), C, H, W, 1.0, EraseMode::constant, 2, 0, i); ++i) {
  }
  int zeros = 0;
  for (float v : z) zeros += v == 0.0f;
  CHECK(zeros > 0);
  CHECK(zeros % C == 0);  // the same box in every channel
}

TEST_CASE("Loader with the strong augmentations: the same for 0, 1 and 3 workers and skip_to") {
  ImageDataset ds = small_dataset(30);
  auto collect = [&](int workers, int64_t skip) {
    LoaderConfig c = strong_config();
    c.workers = workers;
    Loader l(ds, c);
    l.start_epoch(1);
    if (skip) l.skip_to(skip);
    std::vector<float> v;
    Batch b;
    while (l.next(b)) {
      REQUIRE(b.targets.defined());
      CHECK(b.targets.shape() == Shape{6, 5});
      for (float x : b.images.to_vector<float>()) v.push_back(x);
      for (float x : b.targets.to_vector<float>()) v.push_back(x);
    }
    return v;
  };
  const auto a = collect(0, 0), b = collect(1, 0), c = collect(3, 0);
  CHECK(a == b);
  CHECK(a == c);
  const auto tail = collect(2, 2);  // batches 2.. of the same epoch
  REQUIRE(tail.size() * 5 == a.size() * 3);
  CHECK(std::equal(tail.begin(), tail.end(), a.end() - static_cast<long>(tail.size())));
  // RandAugment changes the images; off, the crop+flip path is the plain one.
  LoaderConfig plain = strong_config();
  plain.randaugment.num_ops = 0;
  plain.reprob = 0;
  plain.mix = MixConfig{};
  plain.workers = 0;
  Loader l(ds, plain);
  l.start_epoch(1);
  Batch pb;
  REQUIRE(l.next(pb));
  CHECK(!pb.targets.defined());
}
