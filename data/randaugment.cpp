#include "data/randaugment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "core/error.h"
#include "core/rng.h"

namespace lvit::data {

// ---- SampleRng ----

SampleRng::SampleRng(uint64_t seed, uint64_t tag, int64_t epoch, int64_t index)
    : seed_(seed),
      offset_(tag | static_cast<uint64_t>(epoch)),
      block_(static_cast<uint64_t>(index) << 20) {
  LVIT_CHECK(epoch >= 0 && epoch < (int64_t{1} << 32), "epoch {} outside [0, 2^32)", epoch);
  LVIT_CHECK(index >= 0 && index < (int64_t{1} << 40), "sample index {} outside [0, 2^40)", index);
}

uint32_t SampleRng::next() {
  if (used_ == 4) {
    Philox::words(seed_, offset_, block_, w_);
    ++block_;
    used_ = 0;
  }
  return w_[used_++];
}

float SampleRng::uniform() { return static_cast<float>(next() >> 8) * (1.0f / 16777216.0f); }

double SampleRng::uniform_double() {
  const uint64_t hi = next() >> 5, lo = next() >> 6;  // 27 + 26 = 53 bits
  return static_cast<double>((hi << 26) | lo) * (1.0 / 9007199254740992.0);
}

int SampleRng::randint(int n) {
  return static_cast<int>((static_cast<uint64_t>(next()) * static_cast<uint32_t>(n)) >> 32);
}

double SampleRng::normal() {
  const double u1 = 1.0 - uniform_double();  // (0, 1]: log is finite
  const double u2 = uniform_double();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

double SampleRng::gamma(double alpha) {
  LVIT_CHECK(alpha > 0, "gamma: alpha {} <= 0", alpha);
  if (alpha < 1.0) {  // Gamma(a) = Gamma(a + 1) * U^(1/a)
    const double g = gamma(alpha + 1.0);
    return g * std::pow(1.0 - uniform_double(), 1.0 / alpha);
  }
  // Marsaglia & Tsang (2000).
  const double d = alpha - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    const double x = normal();
    double v = 1.0 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    const double u = 1.0 - uniform_double();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

double SampleRng::beta(double a, double b) {
  const double x = gamma(a), y = gamma(b);
  return x + y > 0 ? x / (x + y) : 0.5;
}

// ---- single ops ----

const char* aug_op_name(AugOp op) {
  static const char* names[kNumAugOps] = {"identity",     "shear_x",   "shear_y",    "translate_x",
                                          "translate_y",  "rotate",    "brightness", "color",
                                          "contrast",     "sharpness", "posterize",  "solarize",
                                          "autocontrast", "equalize"};
  return names[static_cast<int>(op)];
}

namespace {

// torchvision.transforms.functional._get_inverse_affine_matrix (in double, as Python does),
// stored as float32 like the theta tensor torchvision builds from it.
void inverse_affine(double cx, double cy, double angle_deg, double tx, double ty,
                    double shear_x_deg, double shear_y_deg, float out[6]) {
  const double rad = std::numbers::pi / 180.0;
  const double rot = angle_deg * rad, sx = shear_x_deg * rad, sy = shear_y_deg * rad;
  const double a = std::cos(rot - sy) / std::cos(sy);
  const double b = -std::cos(rot - sy) * std::tan(sx) / std::cos(sy) - std::sin(rot);
  const double c = std::sin(rot - sy) / std::cos(sy);
  const double d = -std::sin(rot - sy) * std::tan(sx) / std::cos(sy) + std::cos(rot);
  double m[6] = {d, -b, 0.0, -c, a, 0.0};  // scale = 1
  m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
  m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
  m[2] += cx;
  m[5] += cy;
  for (int i = 0; i < 6; ++i) out[i] = static_cast<float>(m[i]);
}

// torchvision's _blend on uint8: trunc(clamp(r * a + (1 - r) * b, 0, 255)) in float32.
inline uint8_t blend(float r, float r1, float a, float b) {
  const float v = std::clamp(r * a + r1 * b, 0.0f, 255.0f);
  return static_cast<uint8_t>(v);
}

// rgb_to_grayscale on uint8: trunc(0.2989 r + 0.587 g + 0.114 b) in float32; one channel: itself.
void grayscale(const uint8_t* src, int C, int64_t n, uint8_t* gray) {
  if (C == 1) {
    std::memcpy(gray, src, static_cast<size_t>(n));
    return;
  }
  const uint8_t *r = src, *g = src + n, *b = src + 2 * n;
  for (int64_t i = 0; i < n; ++i)
    gray[i] =
        static_cast<uint8_t>(0.2989f * static_cast<float>(r[i]) +
                             0.587f * static_cast<float>(g[i]) + 0.114f * static_cast<float>(b[i]));
}

void autocontrast(const uint8_t* src, int C, int64_t n, uint8_t* dst) {
  for (int c = 0; c < C; ++c) {
    const uint8_t* s = src + c * n;
    uint8_t* d = dst + c * n;
    const auto [mn_it, mx_it] = std::minmax_element(s, s + n);
    // torch evaluates `255 / (max - min)` as reciprocal(max - min) * 255: two roundings.
    float mn = *mn_it, scale = (1.0f / static_cast<float>(*mx_it - *mn_it)) * 255.0f;
    if (*mx_it == *mn_it) {  // torchvision: a flat channel keeps its values
      mn = 0.0f;
      scale = 1.0f;
    }
    for (int64_t i = 0; i < n; ++i)
      d[i] =
          static_cast<uint8_t>(std::clamp((static_cast<float>(s[i]) - mn) * scale, 0.0f, 255.0f));
  }
}

void equalize(const uint8_t* src, int C, int64_t n, uint8_t* dst) {
  for (int c = 0; c < C; ++c) {
    const uint8_t* s = src + c * n;
    uint8_t* d = dst + c * n;
    int64_t hist[256] = {};
    for (int64_t i = 0; i < n; ++i) ++hist[s[i]];
    // step = floor(sum of the non-zero bins but the last non-zero one / 255)
    int last = 255;
    while (last > 0 && hist[last] == 0) --last;
    const int64_t step = (n - hist[last]) / 255;
    if (step == 0) {
      std::memcpy(d, s, static_cast<size_t>(n));
      continue;
    }
    // lut[0] = 0, lut[v] = min(255, (cumsum[v - 1] + step / 2) / step)
    uint8_t lut[256];
    int64_t cum = 0;
    lut[0] = 0;
    for (int v = 1; v < 256; ++v) {
      cum += hist[v - 1];
      lut[v] = static_cast<uint8_t>(std::min<int64_t>(255, (cum + step / 2) / step));
    }
    for (int64_t i = 0; i < n; ++i) d[i] = lut[s[i]];
  }
}

// adjust_sharpness: blend with the 3x3 [[1,1,1],[1,5,1],[1,1,1]]/13 blur, rounded to uint8,
// whose border pixels are the image's own.
void sharpness(const uint8_t* src, int C, int H, int W, double factor, uint8_t* dst) {
  const int64_t n = int64_t{H} * W;
  if (H <= 2 || W <= 2) {
    std::memcpy(dst, src, static_cast<size_t>(C * n));
    return;
  }
  const float r = static_cast<float>(factor), r1 = static_cast<float>(1.0 - factor);
  for (int c = 0; c < C; ++c) {
    const uint8_t* s = src + c * n;
    uint8_t* d = dst + c * n;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const int v = s[y * W + x];
        int degenerate = v;
        if (y > 0 && y < H - 1 && x > 0 && x < W - 1) {
          int sum = 4 * v;  // 5 v at the centre + the 9 pixels of the window
          for (int dy = -1; dy <= 1; ++dy)
            for (int dx = -1; dx <= 1; ++dx) sum += s[(y + dy) * W + x + dx];
          degenerate = (2 * sum + 13) / 26;  // round(sum / 13): never a tie
        }
        d[y * W + x] = blend(r, r1, static_cast<float>(v), static_cast<float>(degenerate));
      }
  }
}

// linspace(start, end, steps)[i] the way torch computes it in float32 (from both ends, fused
// multiply-add).
double torch_linspace(double start, double end, int steps, int i) {
  const float st = static_cast<float>(start), en = static_cast<float>(end);
  const float step = (en - st) / static_cast<float>(steps - 1);
  const float v = i < steps / 2 ? std::fma(step, static_cast<float>(i), st)
                                : std::fma(-step, static_cast<float>(steps - i - 1), en);
  return static_cast<double>(v);
}

}  // namespace

void affine_nearest(const uint8_t* src, int C, int H, int W, const float inv[6], uint8_t fill,
                    uint8_t* dst) {
  // As torchvision's _gen_affine_grid + grid_sample(nearest, align_corners=False): theta is
  // divided by (W/2, H/2) first, the normalised grid is mapped back to pixel indices.
  const float hw = 0.5f * static_cast<float>(W), hh = 0.5f * static_cast<float>(H);
  const float a = inv[0] / hw, b = inv[1] / hw, c = inv[2] / hw;
  const float d = inv[3] / hh, e = inv[4] / hh, f = inv[5] / hh;
  const int64_t n = int64_t{H} * W;
  for (int y = 0; y < H; ++y) {
    const float Y = -hh + 0.5f + static_cast<float>(y);
    for (int x = 0; x < W; ++x) {
      const float X = -hw + 0.5f + static_cast<float>(x);
      const float gx = X * a + Y * b + c, gy = X * d + Y * e + f;
      const float ix = std::nearbyint(((gx + 1.0f) * static_cast<float>(W) - 1.0f) / 2.0f);
      const float iy = std::nearbyint(((gy + 1.0f) * static_cast<float>(H) - 1.0f) / 2.0f);
      const int64_t o = int64_t{y} * W + x;
      if (ix >= 0 && ix < static_cast<float>(W) && iy >= 0 && iy < static_cast<float>(H)) {
        const int64_t i = static_cast<int64_t>(iy) * W + static_cast<int64_t>(ix);
        for (int ch = 0; ch < C; ++ch) dst[ch * n + o] = src[ch * n + i];
      } else {
        for (int ch = 0; ch < C; ++ch) dst[ch * n + o] = fill;
      }
    }
  }
}

void apply_aug_op(AugOp op, double m, const uint8_t* src, int C, int H, int W, uint8_t* dst) {
  LVIT_CHECK(C == 1 || C == 3, "augmentation of a {}-channel image", C);
  LVIT_CHECK(src != dst, "apply_aug_op: src and dst must differ");
  const int64_t n = int64_t{H} * W, total = C * n;
  const double rad2deg = 180.0 / std::numbers::pi;
  float inv[6];
  switch (op) {
    case AugOp::identity:
      std::memcpy(dst, src, static_cast<size_t>(total));
      return;
    case AugOp::shear_x:  // F.affine(shear=[degrees(atan(m)), 0], center=[0, 0])
      inverse_affine(-0.5 * W, -0.5 * H, 0.0, 0.0, 0.0, std::atan(m) * rad2deg, 0.0, inv);
      return affine_nearest(src, C, H, W, inv, 0, dst);
    case AugOp::shear_y:
      inverse_affine(-0.5 * W, -0.5 * H, 0.0, 0.0, 0.0, 0.0, std::atan(m) * rad2deg, inv);
      return affine_nearest(src, C, H, W, inv, 0, dst);
    case AugOp::translate_x:  // F.affine(translate=[int(m), 0])
      inverse_affine(0.0, 0.0, 0.0, std::trunc(m), 0.0, 0.0, 0.0, inv);
      return affine_nearest(src, C, H, W, inv, 0, dst);
    case AugOp::translate_y:
      inverse_affine(0.0, 0.0, 0.0, 0.0, std::trunc(m), 0.0, 0.0, inv);
      return affine_nearest(src, C, H, W, inv, 0, dst);
    case AugOp::rotate:  // F.rotate(angle=m): inverse matrix of -m about the centre
      inverse_affine(0.0, 0.0, -m, 0.0, 0.0, 0.0, 0.0, inv);
      return affine_nearest(src, C, H, W, inv, 0, dst);
    case AugOp::brightness: {  // blend with black
      const float r = static_cast<float>(1.0 + m), r1 = static_cast<float>(1.0 - (1.0 + m));
      for (int64_t i = 0; i < total; ++i) dst[i] = blend(r, r1, static_cast<float>(src[i]), 0.0f);
      return;
    }
    case AugOp::color: {  // adjust_saturation: blend with the grey image (one channel: itself)
      if (C == 1) {
        std::memcpy(dst, src, static_cast<size_t>(total));
        return;
      }
      const float r = static_cast<float>(1.0 + m), r1 = static_cast<float>(1.0 - (1.0 + m));
      grayscale(src, C, n, dst);  // dst's first plane as scratch: read before it is written
      for (int64_t i = 0; i < n; ++i) {
        const float g = dst[i];
        for (int c = 0; c < C; ++c)
          dst[c * n + i] = blend(r, r1, static_cast<float>(src[c * n + i]), g);
      }
      return;
    }
    case AugOp::contrast: {  // blend with the mean of the grey image
      grayscale(src, C, n, dst);
      int64_t sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += dst[i];
      const float mean = static_cast<float>(sum) / static_cast<float>(n);  // exact sum in f32
      const float r = static_cast<float>(1.0 + m), r1 = static_cast<float>(1.0 - (1.0 + m));
      for (int64_t i = 0; i < total; ++i) dst[i] = blend(r, r1, static_cast<float>(src[i]), mean);
      return;
    }
    case AugOp::sharpness:
      return sharpness(src, C, H, W, 1.0 + m, dst);
    case AugOp::posterize: {  // keep the top `bits` bits
      const int bits = std::clamp(static_cast<int>(m), 0, 8);
      const auto mask = static_cast<uint8_t>(0xFF << (8 - bits));
      for (int64_t i = 0; i < total; ++i) dst[i] = src[i] & mask;
      return;
    }
    case AugOp::solarize: {  // invert the pixels >= threshold
      const auto t = static_cast<float>(m);
      for (int64_t i = 0; i < total; ++i)
        dst[i] = static_cast<float>(src[i]) >= t ? static_cast<uint8_t>(255 - src[i]) : src[i];
      return;
    }
    case AugOp::autocontrast:
      return autocontrast(src, C, n, dst);
    case AugOp::equalize:
      return equalize(src, C, n, dst);
  }
}

bool aug_signed(AugOp op) {
  switch (op) {
    case AugOp::shear_x:
    case AugOp::shear_y:
    case AugOp::translate_x:
    case AugOp::translate_y:
    case AugOp::rotate:
    case AugOp::brightness:
    case AugOp::color:
    case AugOp::contrast:
    case AugOp::sharpness:
      return true;
    default:
      return false;
  }
}

double aug_magnitude(AugOp op, int bin, int num_bins, bool trivial, int H, int W) {
  LVIT_CHECK(num_bins >= 2 && bin >= 0 && bin < num_bins, "magnitude bin {} of {}", bin, num_bins);
  auto lin = [&](double end) { return torch_linspace(0.0, end, num_bins, bin); };
  switch (op) {
    case AugOp::shear_x:
    case AugOp::shear_y:
      return lin(trivial ? 0.99 : 0.3);
    case AugOp::translate_x:
      return lin(trivial ? 32.0 : 150.0 / 331.0 * W);
    case AugOp::translate_y:
      return lin(trivial ? 32.0 : 150.0 / 331.0 * H);
    case AugOp::rotate:
      return lin(trivial ? 135.0 : 30.0);
    case AugOp::brightness:
    case AugOp::color:
    case AugOp::contrast:
    case AugOp::sharpness:
      return lin(trivial ? 0.99 : 0.9);
    case AugOp::posterize: {  // 8 - round(bin / ((bins - 1) / k)), k = 4 (RA) or 6 (TA)
      const float q =
          static_cast<float>(bin) / (static_cast<float>(num_bins - 1) / (trivial ? 6.0f : 4.0f));
      return 8 - static_cast<int>(std::nearbyint(q));
    }
    case AugOp::solarize:
      return torch_linspace(255.0, 0.0, num_bins, bin);
    default:
      return 0.0;
  }
}

int draw_randaugment(const RandAugmentConfig& cfg, uint64_t seed, int64_t epoch, int64_t index,
                     int H, int W, AugChoice out[16]) {
  if (!cfg.enabled()) return 0;
  SampleRng rng(seed, kRandAugmentStream, epoch, index);
  const int count = cfg.trivial ? 1 : std::min(cfg.num_ops, 16);
  for (int k = 0; k < count; ++k) {
    // Three words per op whether or not they are used, so op k's choice does not depend on the
    // ops before it.
    const uint32_t w_op = rng.next(), w_bin = rng.next(), w_sign = rng.next();
    const auto op = static_cast<AugOp>((static_cast<uint64_t>(w_op) * kNumAugOps) >> 32);
    const int bin = cfg.trivial
                        ? static_cast<int>((static_cast<uint64_t>(w_bin) * cfg.num_bins) >> 32)
                        : cfg.magnitude;
    double m = aug_magnitude(op, bin, cfg.num_bins, cfg.trivial, H, W);
    if (aug_signed(op) && (w_sign >> 31) != 0) m = -m;
    out[k] = {op, m};
  }
  return count;
}

void randaugment_image(const RandAugmentConfig& cfg, uint64_t seed, int64_t epoch, int64_t index,
                       uint8_t* img, int C, int H, int W, uint8_t* scratch) {
  AugChoice ops[16];
  const int count = draw_randaugment(cfg, seed, epoch, index, H, W, ops);
  const auto total = static_cast<size_t>(int64_t{C} * H * W);
  uint8_t *cur = img, *other = scratch;
  for (int k = 0; k < count; ++k) {
    if (ops[k].op == AugOp::identity) continue;
    apply_aug_op(ops[k].op, ops[k].magnitude, cur, C, H, W, other);
    std::swap(cur, other);
  }
  if (cur != img) std::memcpy(img, cur, total);
}

}  // namespace lvit::data
