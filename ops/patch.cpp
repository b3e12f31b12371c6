#include "ops/patch.h"

#include "ops/shape.h"

namespace lvit::ops {

Tensor patchify(const Tensor& images, int64_t p) {
  LVIT_CHECK(images.dim() == 4, "patchify: images {} must be [B, C, H, W]",
             shape_str(images.shape()));
  const int64_t B = images.shape()[0], C = images.shape()[1], H = images.shape()[2],
                W = images.shape()[3];
  LVIT_CHECK(p > 0 && H % p == 0 && W % p == 0, "patchify: patch {} does not divide {}x{}", p, H,
             W);
  const int64_t gh = H / p, gw = W / p;
  // [B, C, gh, p, gw, p] -> [B, gh, gw, C, p, p]: a pure permutation, so the backward is the
  // inverse permutation, recorded by the shape ops.
  Tensor t = reshape(images, {B, C, gh, p, gw, p});
  t = permute(t, {0, 2, 4, 1, 3, 5});
  return reshape(t, {B, gh * gw, C * p * p});
}

}  // namespace lvit::ops
