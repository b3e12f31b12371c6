#include "data/mix.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "data/randaugment.h"

namespace lvit::data {

MixParams draw_mix(const MixConfig& cfg, uint64_t seed, int64_t epoch, int64_t batch_index,
                   int height, int width) {
  MixParams p;
  if (!cfg.enabled()) return p;
  SampleRng rng(seed, kMixStream, epoch, batch_index);
  // Fixed word positions for the coin flips, so the Beta draw (a variable number of words) comes
  // last.
  const double u_mix = rng.uniform_double(), u_switch = rng.uniform_double();
  const int cy = rng.randint(height), cx = rng.randint(width);
  if (u_mix >= cfg.prob) return p;
  if (cfg.mixup_alpha > 0 && cfg.cutmix_alpha > 0)
    p.cutmix = u_switch < cfg.switch_prob;
  else
    p.cutmix = cfg.cutmix_alpha > 0;
  const double alpha = p.cutmix ? cfg.cutmix_alpha : cfg.mixup_alpha;
  p.lam = rng.beta(alpha, alpha);
  if (p.cutmix) {
    const double ratio = std::sqrt(1.0 - p.lam);
    const int cut_h = static_cast<int>(height * ratio), cut_w = static_cast<int>(width * ratio);
    p.y0 = std::clamp(cy - cut_h / 2, 0, height);
    p.y1 = std::clamp(cy + cut_h / 2, 0, height);
    p.x0 = std::clamp(cx - cut_w / 2, 0, width);
    p.x1 = std::clamp(cx + cut_w / 2, 0, width);
    p.lam = 1.0 - static_cast<double>((p.y1 - p.y0) * (p.x1 - p.x0)) /
                      (static_cast<double>(height) * width);
  }
  return p;
}

void mix_images(const MixParams& p, float* images, int64_t B, int C, int H, int W) {
  if (p.lam == 1.0) return;
  const int64_t per = int64_t{C} * H * W;
  if (p.cutmix) {
    // Pairs (i, B-1-i) swap their boxes; the middle sample of an odd batch keeps its own.
    for (int64_t i = 0; i < B / 2; ++i) {
      float* a = images + i * per;
      float* b = images + (B - 1 - i) * per;
      for (int c = 0; c < C; ++c)
        for (int y = p.y0; y < p.y1; ++y) {
          const int64_t o = (int64_t{c} * H + y) * W;
          std::swap_ranges(a + o + p.x0, a + o + p.x1, b + o + p.x0);
        }
    }
    return;
  }
  // x_i = lam x_i + (1 - lam) x_{B-1-i}, computed pairwise from the originals.
  const auto lam = static_cast<float>(p.lam), lam1 = static_cast<float>(1.0 - p.lam);
  for (int64_t i = 0; i < (B + 1) / 2; ++i) {
    float* a = images + i * per;
    float* b = images + (B - 1 - i) * per;
    if (a == b) {  // middle of an odd batch: mixed with itself
      for (int64_t k = 0; k < per; ++k) a[k] = lam * a[k] + lam1 * a[k];
      continue;
    }
    for (int64_t k = 0; k < per; ++k) {
      const float va = a[k], vb = b[k];
      a[k] = lam * va + lam1 * vb;
      b[k] = lam * vb + lam1 * va;
    }
  }
}

void mix_targets(const int64_t* labels, int64_t B, int64_t num_classes, double lam,
                 double smoothing, float* targets) {
  LVIT_CHECK(num_classes >= 1, "mix_targets: {} classes", num_classes);
  const double off = smoothing / static_cast<double>(num_classes), on = 1.0 - smoothing + off;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t ya = labels[i], yb = labels[B - 1 - i];
    LVIT_CHECK(ya >= 0 && ya < num_classes, "label {} outside [0, {})", ya, num_classes);
    float* t = targets + i * num_classes;
    std::fill(t, t + num_classes, static_cast<float>(off));
    t[ya] = static_cast<float>(lam * on + (1.0 - lam) * off);
    t[yb] = ya == yb ? static_cast<float>(on) : static_cast<float>(lam * off + (1.0 - lam) * on);
  }
}

}  // namespace lvit::data
