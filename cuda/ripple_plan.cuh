// Host-side planning of the Ripple kernels (cuda/ripple.cu): the problem's geometry and the
// passes the kernels make over it. Host-only header; the structs are kernel parameters.
//
// The telescoped weight (DESIGN.md, "Linear-time form") is w(i, j) = alpha_{S-1} + sum over
// levels s < S-1 of (alpha_s - alpha_{s+1}) [j in i's level-s block], a level-s block holding
// min(4^s, cells) grid cells. The main pass computes the global term and, densely inside each
// block, every level whose blocks fit in one tile of the kernel; each larger block size gets an
// extra pass of block-local linear attention added onto the main pass's results.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace lvit::cuda::ripple_detail {

inline constexpr int kMaxStages = 32;

struct Geom {
  int B, N, D, H, d, S;
  int g, glog, cells;  // grid side, log2(side), side^2 = N - 1
};

// One pass over every (image, head).
struct Pass {
  int seg_cells;    // 0: the main pass (all tokens, class token included); else an extra pass
                    // over blocks of seg_cells Morton-consecutive cells
  int mk;           // main pass: cells per block of the local term (0: none)
  int s_plus;       // the pass coefficient is alpha[s_plus] - alpha[s_minus] (extra passes) or
  int s_minus;      // alpha[S-1] (main pass, whose local weights are alpha[l] - alpha[s_minus])
  bool accumulate;  // add onto what earlier passes wrote
  bool finalize;    // forward: divide by den + eps when done (the last pass)
};

struct Plan {
  Pass main;
  std::vector<Pass> extra;  // in order; the last one finalizes
};

// The start of every Ripple backward launcher: glogits becomes nullptr for a single stage (there
// are no logits to differentiate), and for an empty batch d loss / d logits = 0 is written.
// Returns whether the batch is empty (then there is nothing else to do).
bool empty_batch_backward(int64_t B, int64_t heads, int64_t stages, float*& glogits,
                          cudaStream_t stream);

// Throws lvit::Error unless the kernels support the sizes: 0 <= B <= 65535, heads <= 65535,
// D / heads <= kRippleMaxHeadDim, 1 <= stages <= 32, N = 1 + grid^2 with grid a power of two.
Geom make_geom(int64_t B, int64_t N, int64_t D, int64_t heads, int64_t stages, int64_t grid);

// The passes for tiles of `tile_rows` grid cells (a power of 4). Consecutive levels whose
// blocks are all the whole grid share one extra pass, their coefficients summed.
Plan make_plan(const Geom& m, int tile_rows);

}  // namespace lvit::cuda::ripple_detail
