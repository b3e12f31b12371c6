#include "cuda/ripple_plan.cuh"

#include <algorithm>

#include "core/error.h"
#include "cuda/check.cuh"
#include "cuda/ripple.cuh"

namespace lvit::cuda::ripple_detail {

bool empty_batch_backward(int64_t B, int64_t heads, int64_t stages, float*& glogits,
                          cudaStream_t stream) {
  if (glogits && stages < 2) glogits = nullptr;
  if (B != 0) return false;
  if (glogits)
    LVIT_CUDA_CHECK(cudaMemsetAsync(glogits, 0, sizeof(float) * heads * (stages - 1), stream));
  return true;
}

Geom make_geom(int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages, int64_t grid) {
  LVIT_CHECK(B >= 0 && B <= 65535 && heads > 0 && heads <= 65535 && D > 0 && D % heads == 0,
             "ripple: unsupported sizes B {}, D {}, heads {}", B, D, heads);
  LVIT_CHECK(D / heads <= kRippleMaxHeadDim, "ripple: head width {} above the kernels' {}",
             D / heads, kRippleMaxHeadDim);
  LVIT_CHECK(stages >= 1 && stages <= kMaxStages, "ripple: {} stages", stages);
  LVIT_CHECK(grid > 0 && (grid & (grid - 1)) == 0 && grid <= 4096 && N == 1 + grid * grid,
             "ripple: {} tokens for a {}x{} grid", N, grid, grid);
  LVIT_CHECK(N * 3 * D < (int64_t{1} << 31), "ripple: an image of {} x {} floats", N, 3 * D);
  Geom m{};
  m.B = static_cast<int>(B);
  m.N = static_cast<int>(N);
  m.D = static_cast<int>(D);
  m.H = static_cast<int>(heads);
  m.d = static_cast<int>(D / heads);
  m.S = static_cast<int>(stages);
  m.g = static_cast<int>(grid);
  while ((1 << m.glog) < m.g) ++m.glog;
  m.cells = m.g * m.g;
  return m;
}

Plan make_plan(const Geom& m, int tile_rows) {
  const int64_t cells = m.cells, tile = std::min<int64_t>(tile_rows, cells);
  auto block = [&](int s) { return s >= m.glog ? cells : int64_t{1} << (2 * s); };
  Plan p{};
  p.main = Pass{0, 0, m.S - 1, -1, false, true};
  if (m.S < 2) return p;
  const int top = m.S - 2;   // the last level with a coefficient of its own
  if (block(top) <= tile) {  // every level in the tile: w = alpha_l - alpha_{S-1} locally
    p.main.mk = static_cast<int>(block(top));
    p.main.s_minus = m.S - 1;
    return p;
  }
  int lt = 0;  // tile = 4^lt cells
  while ((int64_t{4} << (2 * lt)) <= tile) ++lt;
  p.main.mk = static_cast<int>(tile);
  p.main.s_minus = lt + 1;
  p.main.finalize = false;
  for (int s = lt + 1; s <= top;) {
    int e = s;
    while (e < top && block(e + 1) == block(s)) ++e;
    p.extra.push_back(Pass{static_cast<int>(block(s)), 0, s, e + 1, true, false});
    s = e + 1;
  }
  p.extra.back().finalize = true;
  return p;
}

}  // namespace lvit::cuda::ripple_detail
