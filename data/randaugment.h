// RandAugment (Cubuk et al. 2020) and TrivialAugmentWide (Müller & Hutter 2021) on uint8 planar
// images [C, H, W], C = 1 or 3, following torchvision's definitions on uint8 tensors exactly:
// the op set, the magnitude tables (31 bins), nearest-neighbour resampling with fill 0 (what
// torchvision does with its default fill=None) and the integer rounding of each op.
//
//   op            RandAugment magnitude (bin m of 31)       TrivialAugmentWide   signed
//   identity      -                                          -                    -
//   shear_x/y     linspace(0, 0.3)   (shear factor)          linspace(0, 0.99)    yes
//   translate_x/y linspace(0, 150/331 * W or H) pixels,      linspace(0, 32)      yes
//                 truncated to an integer
//   rotate        linspace(0, 30) degrees                    linspace(0, 135)     yes
//   brightness,   factor 1 + linspace(0, 0.9)                1 + linspace(0,0.99) yes
//   color, contrast, sharpness
//   posterize     8 - round(bin / 7.5) bits                  8 - round(bin / 5)   no
//   solarize      threshold linspace(255, 0)                 the same             no
//   autocontrast, equalize   -                               -                    -
//
// Note the scale: torchvision's magnitude m indexes 31 bins (m = 9 is rotate 9 degrees); timm's
// "rand-m9" scales to 10 levels (m9 = 27 degrees). We follow torchvision.
//
// Reproducibility: the choices for one image (op, sign, TrivialAugment's bin) are a pure function
// of (seed, epoch, sample index), drawn from a stream of their own (SampleRng, tag "RAUG"), so
// they do not depend on worker count, batch order or a resume, and turning RandAugment on does not
// change the crop/flip of any sample.
#pragma once
#include <cstdint>
#include <string>

namespace lvit::data {

// Sequential random words for one sample: word k is word (k mod 4) of Philox block
// (sample_index << 20) + k / 4 of the stream (seed, tag | epoch). Each user of per-sample or
// per-batch randomness has its own tag (the top 32 bits of the offset), so the streams never
// share numbers with each other, with the crop/flip words or with the shuffle, nor with a
// Generator of the same seed (the model's initialisation draws offsets 0, 1, 2, ...).
class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t tag, int64_t epoch, int64_t index);
  uint32_t next();
  float uniform();                  // [0, 1), 24 bits
  double uniform_double();          // [0, 1), 53 bits
  int randint(int n);               // [0, n)
  double normal();                  // standard normal (Box-Muller)
  double gamma(double alpha);       // Gamma(alpha, 1), Marsaglia-Tsang (alpha > 0)
  double beta(double a, double b);  // Beta(a, b) = X / (X + Y)

 private:
  uint64_t seed_, offset_, block_;
  uint32_t w_[4];
  int used_ = 4;
};

// Stream tags ("RAUG", "RERA", "MIX\0", "CROP").
inline constexpr uint64_t kRandAugmentStream = 0x5241554700000000ull;
inline constexpr uint64_t kErasingStream = 0x5245524100000000ull;
inline constexpr uint64_t kMixStream = 0x4d49580000000000ull;
// draw_crop_flip's words (data/augment.h). Until 2026-11-28 they used tag 0, i.e. the offsets
// the model's initialisation (Generator(seed)) draws: the crops of epoch e were made of the same
// numbers as the e-th initialised tensor.
inline constexpr uint64_t kCropFlipStream = 0x43524f5000000000ull;

enum class AugOp {
  identity,
  shear_x,
  shear_y,
  translate_x,
  translate_y,
  rotate,
  brightness,
  color,
  contrast,
  sharpness,
  posterize,
  solarize,
  autocontrast,
  equalize,
};
inline constexpr int kNumAugOps = 14;  // in torchvision's order of its augmentation space
const char* aug_op_name(AugOp op);

// ---- the single ops on uint8 [C, H, W]; src and dst must not overlap ----

// Affine resampling with nearest neighbour and fill outside the image. `inv` is torchvision's
// inverse affine matrix [a, b, c, d, e, f] in centred coordinates (output pixel (x, y) has
// centre X = x - W/2 + 0.5, Y = y - H/2 + 0.5 and reads the source at (aX + bY + c, dX + eY + f),
// rounded half to even after going back to pixel indices).
void affine_nearest(const uint8_t* src, int C, int H, int W, const float inv[6], uint8_t fill,
                    uint8_t* dst);
// The ops with torchvision's magnitude semantics (shear factor, pixels, degrees, enhance factor,
// bits, threshold). Colour ops on C = 1 treat the single channel as the grey image.
void apply_aug_op(AugOp op, double magnitude, const uint8_t* src, int C, int H, int W,
                  uint8_t* dst);

struct RandAugmentConfig {
  int num_ops = 0;       // RandAugment N (0: off)
  int magnitude = 9;     // RandAugment M, a bin index in [0, num_bins)
  bool trivial = false;  // TrivialAugmentWide instead (one op, uniform bin)
  int num_bins = 31;     // torchvision's num_magnitude_bins
  bool enabled() const { return trivial || num_ops > 0; }
};

// The magnitude of `op` at bin `bin` (unsigned) of the RandAugment (trivial = false) or the
// TrivialAugmentWide table for an H x W image; 0 for ops without a magnitude.
double aug_magnitude(AugOp op, int bin, int num_bins, bool trivial, int H, int W);
bool aug_signed(AugOp op);

// One op chosen for one image.
struct AugChoice {
  AugOp op = AugOp::identity;
  double magnitude = 0;  // signed
};
// The choices for sample `index` of `epoch` (num_ops of them, or one for TrivialAugment).
// Returns how many were written to out (at most 16).
int draw_randaugment(const RandAugmentConfig& cfg, uint64_t seed, int64_t epoch, int64_t index,
                     int H, int W, AugChoice out[16]);

// Applies the drawn ops in place on img [C, H, W]; scratch holds C*H*W bytes.
void randaugment_image(const RandAugmentConfig& cfg, uint64_t seed, int64_t epoch, int64_t index,
                       uint8_t* img, int C, int H, int W, uint8_t* scratch);

}  // namespace lvit::data
