// Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) at batch level, with timm's Mixup
// semantics (mode "batch", correct_lam = True):
//   - with probability `prob` the batch is mixed, else lam = 1 (targets are then the smoothed
//     one-hot labels);
//   - when both alphas are > 0, CutMix is chosen with probability `switch_prob`, else mixup;
//     lam ~ Beta(alpha, alpha) of the chosen method;
//   - mixup: x_i = lam x_i + (1 - lam) x_{B-1-i} (the batch mixed with its reverse);
//   - CutMix: a box of (int(H sqrt(1-lam)), int(W sqrt(1-lam))) centred at a uniform pixel,
//     clipped to the image, is pasted from x_{B-1-i}; lam becomes 1 - box area / (H W);
//   - targets: y_i = lam t(y_i) + (1 - lam) t(y_{B-1-i}), t(y) = (1 - s) onehot(y) + s / classes,
//     i.e. smoothed labels mixed with the same lam. These go into ops::cross_entropy_soft, which
//     then equals lam CE_s(y_i) + (1 - lam) CE_s(y_{B-1-i}).
// An odd batch pairs its middle sample with itself (timm asserts an even batch instead).
//
// Reproducibility: lam, the method and the box are a pure function of (seed, epoch, batch index)
// on a stream of their own (tag "MIX", data/randaugment.h SampleRng), so they do not depend on the
// worker count or on a resume.
#pragma once
#include <cstdint>

namespace lvit::data {

struct MixConfig {
  double mixup_alpha = 0.0;   // Beta(alpha, alpha) for mixup (0: off)
  double cutmix_alpha = 0.0;  // Beta(alpha, alpha) for CutMix (0: off)
  double prob = 1.0;          // probability of mixing a batch
  double switch_prob = 0.5;   // CutMix instead of mixup when both are on
  double label_smoothing = 0.0;
  int64_t num_classes = 0;  // width of the soft targets
  bool enabled() const { return mixup_alpha > 0 || cutmix_alpha > 0; }
};

struct MixParams {
  double lam = 1.0;  // weight of the sample's own label
  bool cutmix = false;
  int y0 = 0, y1 = 0, x0 = 0, x1 = 0;  // CutMix box [y0, y1) x [x0, x1)
};

MixParams draw_mix(const MixConfig& cfg, uint64_t seed, int64_t epoch, int64_t batch_index,
                   int height, int width);
// images: f32 [B, C, H, W], mixed in place.
void mix_images(const MixParams& p, float* images, int64_t B, int C, int H, int W);
// targets: f32 [B, num_classes] from labels [B].
void mix_targets(const int64_t* labels, int64_t B, int64_t num_classes, double lam,
                 double smoothing, float* targets);

}  // namespace lvit::data
