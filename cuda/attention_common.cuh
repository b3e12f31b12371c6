// Shared by cuda/attention.cu and cuda/attention_mma.cu (kernel files only): head-dim
// dispatch, the softmax scales, block geometry and the dynamic shared memory opt-in.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cuda/attention.cuh"
#include "cuda/check.cuh"

namespace lvit::cuda::attn {

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

// Kernels build no fmt strings (fmt does not compile under nvcc), so an impossible argument
// that got past the op's checks is reported through the status-error path of cuda/check.cuh.
[[noreturn]] inline void unsupported(const char* what, int64_t value, const char* expected,
                                     const char* where, const char* file, int line) {
  throw_status_error("lvit attention", static_cast<int>(value), what, expected, where, file, line);
}

// fn(std::integral_constant<int, d>{}) for the supported head dims.
template <typename Fn>
void with_head_dim(int64_t d, const char* where, Fn&& fn) {
  switch (d) {
    case 8:
      return fn(std::integral_constant<int, 8>{});
    case 16:
      return fn(std::integral_constant<int, 16>{});
    case 32:
      return fn(std::integral_constant<int, 32>{});
    case 64:
      return fn(std::integral_constant<int, 64>{});
    case 128:
      return fn(std::integral_constant<int, 128>{});
    default:
      unsupported("unsupported head dim", d, "head dim must be 8, 16, 32, 64 or 128", where,
                  __FILE__, __LINE__);
  }
}

// Scores are scaled by 1/sqrt(d) (as the CPU op); the kernels fold log2(e) in as well so that
// the softmax runs on exp2 (one MUFU instruction).
struct Scales {
  float scale;       // 1/sqrt(d)
  float scale_log2;  // log2(e)/sqrt(d)
};
inline Scales scales_for(int64_t d) {
  const double s = 1.0 / std::sqrt(static_cast<double>(d));
  return {static_cast<float>(s), static_cast<float>(s * 1.4426950408889634)};
}

// Tile geometry of the tiled tensor-core kernels: a block runs `warps` warps of 16 rows each
// (query rows in the forward and dq kernels, key rows in the dk/dv kernel). The row count per
// block is chosen so that the last tile wastes as few 16-row groups as possible with at most
// kTiledMaxWarps warps: N = 65 gives one tile of 5 warps (80 rows), N = 257 three tiles of 6.
inline constexpr int kTiledMaxWarps = 6;
struct RowTiling {
  int warps;
  int tiles;
};
inline RowTiling row_tiling(int64_t n) {
  const int64_t groups = (n + 15) / 16;
  const int64_t tiles = (groups + kTiledMaxWarps - 1) / kTiledMaxWarps;
  return {static_cast<int>((groups + tiles - 1) / tiles), static_cast<int>(tiles)};
}

inline unsigned grid_blocks(int64_t tiles, const AttentionDims& d) {
  return static_cast<unsigned>(tiles * d.batch * d.heads);
}

}  // namespace lvit::cuda::attn
