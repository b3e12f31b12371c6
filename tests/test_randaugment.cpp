// data/randaugment: every op against torchvision bit for bit (tests/data/augment_golden.json from
// tests/data/make_augment_golden.py), hand-computed small cases, the magnitude tables, and the
// per-sample draws (deterministic, independent of other streams).
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/augment.h"
#include "data/randaugment.h"

using namespace lvit::data;

namespace {

std::vector<uint8_t> from_hex(const std::string& s) {
  std::vector<uint8_t> v(s.size() / 2);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<uint8_t>(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return v;
}

AugOp op_by_name(const std::string& name) {
  for (int k = 0; k < kNumAugOps; ++k)
    if (name == aug_op_name(static_cast<AugOp>(k))) return static_cast<AugOp>(k);
  FAIL("unknown op " << name);
  return AugOp::identity;
}

nlohmann::json golden() {
  std::ifstream f(std::string(LVIT_SOURCE_DIR) + "/tests/data/augment_golden.json");
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

// Applies `op` to a 1-channel or 3-channel image given row by row.
std::vector<uint8_t> apply(AugOp op, double m, const std::vector<uint8_t>& img, int C, int H,
                           int W) {
  std::vector<uint8_t> out(img.size());
  apply_aug_op(op, m, img.data(), C, H, W, out.data());
  return out;
}

}  // namespace

TEST_CASE("every op matches torchvision's _apply_op on uint8 bit for bit") {
  const nlohmann::json g = golden();
  int checked = 0;
  for (const auto& c : g["cases"]) {
    const std::vector<uint8_t> in = from_hex(c["input"]), want = from_hex(c["output"]);
    const int C = c["shape"][0], H = c["shape"][1], W = c["shape"][2];
    const std::string name = c["op"];
    const double m = c["magnitude"];
    INFO(name << " magnitude " << m << " on " << C << "x" << H << "x" << W);
    const std::vector<uint8_t> got = apply(op_by_name(name), m, in, C, H, W);
    int diff = 0;
    for (size_t i = 0; i < got.size(); ++i) diff += got[i] != want[i];
    CHECK(diff == 0);
    ++checked;
  }
  CHECK(checked >= 90);
}

TEST_CASE("magnitude tables are torchvision's (31 bins)") {
  const nlohmann::json g = golden();
  const int H = g["image_hw"][0], W = g["image_hw"][1];
  for (const bool trivial : {false, true}) {
    const auto& table = g["tables"][trivial ? "trivial" : "randaugment"];
    for (int k = 0; k < kNumAugOps; ++k) {
      const auto op = static_cast<AugOp>(k);
      const auto& e = table.at(aug_op_name(op));
      const std::string what = std::string(aug_op_name(op)) + (trivial ? " (trivial)" : " (ra)");
      INFO(what);
      CHECK(aug_signed(op) == e["signed"].get<bool>());
      const auto& vals = e["values"];
      if (vals.size() == 1) {  // no magnitude
        CHECK(aug_magnitude(op, 9, 31, trivial, H, W) == 0.0);
        continue;
      }
      REQUIRE(vals.size() == 31);
      for (int b = 0; b < 31; ++b)
        CHECK(aug_magnitude(op, b, 31, trivial, H, W) == vals[b].get<double>());
    }
  }
}

TEST_CASE("hand-computed small cases") {
  // One channel 2x4: solarize at 128 inverts the pixels >= 128.
  const std::vector<uint8_t> a = {0, 127, 128, 255, 10, 200, 130, 1};
  CHECK(apply(AugOp::solarize, 128, a, 1, 2, 4) ==
        std::vector<uint8_t>{0, 127, 127, 0, 10, 55, 125, 1});
  // Solarize at 255 (bin 0) still inverts 255; at 256 nothing.
  CHECK(apply(AugOp::solarize, 255, a, 1, 2, 4)[3] == 0);
  // Posterize 2 bits keeps the top two bits; 8 bits is the identity.
  CHECK(apply(AugOp::posterize, 2, a, 1, 2, 4) ==
        std::vector<uint8_t>{0, 64, 128, 192, 0, 192, 128, 0});
  CHECK(apply(AugOp::posterize, 8, a, 1, 2, 4) == a);
  // Autocontrast stretches [10, 60] to [0, 255]: (v - 10) * 255 / 50, truncated.
  const std::vector<uint8_t> b = {10, 20, 35, 60};
  CHECK(apply(AugOp::autocontrast, 0, b, 1, 2, 2) == std::vector<uint8_t>{0, 51, 127, 255});
  // A flat channel stays as it is.
  CHECK(apply(AugOp::autocontrast, 0, std::vector<uint8_t>(4, 7), 1, 2, 2) ==
        std::vector<uint8_t>(4, 7));
  // Equalize: histogram {10: 1, 20: 1, 30: 2}, step = floor((4 - 2) / 255) = 0 -> unchanged; a
  // 16x16 image with 128 zeros and 128 of value 100: step = floor(128 / 255) = 0 as well; with
  // 255 + 1 pixels: step 1, lut[0] = 0, lut[100] = 255.
  CHECK(apply(AugOp::equalize, 0, std::vector<uint8_t>{10, 20, 30, 30}, 1, 2, 2) ==
        std::vector<uint8_t>{10, 20, 30, 30});
  std::vector<uint8_t> e(256, 0);
  e[0] = 100;
  auto eq = apply(AugOp::equalize, 0, e, 1, 16, 16);
  CHECK(eq[0] == 255);
  CHECK(eq[1] == 0);
  // Brightness 1 + m with m = 0 is the identity; factor 0.5 halves (truncating).
  CHECK(apply(AugOp::brightness, 0.0, a, 1, 2, 4) == a);
  CHECK(apply(AugOp::brightness, -0.5, a, 1, 2, 4) ==
        std::vector<uint8_t>{0, 63, 64, 127, 5, 100, 65, 0});
}

TEST_CASE("geometric ops move whole pixels") {
  // 1 channel 4x4 holding 1..16 row-major.
  std::vector<uint8_t> img(16);
  for (int i = 0; i < 16; ++i) img[i] = static_cast<uint8_t>(i + 1);
  // Translate x by +1: every row moves right, column 0 gets the fill 0.
  CHECK(apply(AugOp::translate_x, 1.7, img, 1, 4, 4) ==  // int(1.7) = 1
        std::vector<uint8_t>{0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15});
  // Translate y by -2: rows move up.
  CHECK(apply(AugOp::translate_y, -2, img, 1, 4, 4) ==
        std::vector<uint8_t>{9, 10, 11, 12, 13, 14, 15, 16, 0, 0, 0, 0, 0, 0, 0, 0});
  // Rotate +90 degrees (counter-clockwise on screen): the top row becomes the left column,
  // read bottom to top.
  CHECK(apply(AugOp::rotate, 90, img, 1, 4, 4) ==
        std::vector<uint8_t>{4, 8, 12, 16, 3, 7, 11, 15, 2, 6, 10, 14, 1, 5, 9, 13});
  // Identity ops at magnitude 0.
  for (AugOp op :
       {AugOp::identity, AugOp::shear_x, AugOp::shear_y, AugOp::translate_x, AugOp::translate_y,
        AugOp::rotate, AugOp::color, AugOp::contrast, AugOp::sharpness}) {
    INFO(aug_op_name(op));
    CHECK(apply(op, 0.0, img, 1, 4, 4) == img);
  }
}

TEST_CASE("RandAugment draws: deterministic per (seed, epoch, index), varied, right count") {
  RandAugmentConfig cfg;
  cfg.num_ops = 2;
  cfg.magnitude = 9;
  AugChoice a[16], b[16];
  REQUIRE(draw_randaugment(cfg, 7, 3, 11, 32, 32, a) == 2);
  REQUIRE(draw_randaugment(cfg, 7, 3, 11, 32, 32, b) == 2);
  for (int k = 0; k < 2; ++k) {
    CHECK(a[k].op == b[k].op);
    CHECK(a[k].magnitude == b[k].magnitude);
  }
  // Over many samples: every op appears, both signs of a signed op, magnitude at bin 9.
  std::set<int> ops;
  bool neg = false, pos = false;
  for (int64_t i = 0; i < 2000; ++i) {
    draw_randaugment(cfg, 7, 0, i, 32, 32, a);
    for (int k = 0; k < 2; ++k) {
      ops.insert(static_cast<int>(a[k].op));
      if (a[k].op == AugOp::rotate) {
        CHECK(std::abs(a[k].magnitude) == doctest::Approx(9.0));
        (a[k].magnitude < 0 ? neg : pos) = true;
      }
    }
  }
  CHECK(ops.size() == static_cast<size_t>(kNumAugOps));
  CHECK((neg && pos));
  cfg.num_ops = 0;
  CHECK(draw_randaugment(cfg, 7, 0, 0, 32, 32, a) == 0);
  // TrivialAugment: one op, bins spread over [0, 31).
  cfg.trivial = true;
  std::set<double> rot;
  for (int64_t i = 0; i < 3000; ++i) {
    REQUIRE(draw_randaugment(cfg, 1, 0, i, 32, 32, a) == 1);
    if (a[0].op == AugOp::rotate) rot.insert(std::abs(a[0].magnitude));
  }
  CHECK(rot.size() > 20);
  CHECK(*rot.rbegin() <= 135.0);
}

TEST_CASE("randaugment_image: reproducible, shape and range kept, epochs differ") {
  const int C = 3, H = 32, W = 32;
  std::vector<uint8_t> img(C * H * W), scratch(img.size());
  for (size_t i = 0; i < img.size(); ++i) img[i] = static_cast<uint8_t>((i * 37) % 251);
  RandAugmentConfig cfg;
  cfg.num_ops = 2;
  auto run = [&](int64_t epoch, int64_t index) {
    std::vector<uint8_t> x = img;
    randaugment_image(cfg, 3, epoch, index, x.data(), C, H, W, scratch.data());
    return x;
  };
  CHECK(run(0, 5) == run(0, 5));
  int changed = 0;
  for (int64_t i = 0; i < 20; ++i) changed += run(0, i) != img;
  CHECK(changed >= 10);  // most samples get a non-identity op
  int differ = 0;
  for (int64_t i = 0; i < 20; ++i) differ += run(0, i) != run(1, i);
  CHECK(differ >= 10);
}

TEST_CASE("SampleRng: Beta(a, a) has mean 1/2 and the right variance") {
  for (double a : {0.8, 1.0, 2.5}) {
    double s = 0, s2 = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
      SampleRng r(1, kMixStream, 0, i);
      const double x = r.beta(a, a);
      REQUIRE(x >= 0.0);
      REQUIRE(x <= 1.0);
      s += x;
      s2 += x * x;
    }
    const double mean = s / n, var = s2 / n - mean * mean;
    INFO("alpha " << a);
    CHECK(mean == doctest::Approx(0.5).epsilon(0.02));
    CHECK(var == doctest::Approx(1.0 / (4.0 * (2.0 * a + 1.0))).epsilon(0.05));
  }
}
