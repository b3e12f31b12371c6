// Row iteration over broadcast/strided operands: calls fn(offsets, len) for every run of the
// innermost dimension, with offsets[k] the element offset of operand k at the row start.
// Rows are split over threads.
#pragma once
#include <array>
#include <cstdint>

#include "core/tensor.h"
#include "core/thread_pool.h"

namespace lvit::cpu {

template <size_t K, typename Fn>
void for_each_row(const Shape& shape, const std::array<const Shape*, K>& strides, Fn&& fn) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  if (shape_numel(shape) == 0) return;
  if (nd == 0) {
    std::array<int64_t, K> off{};
    fn(off, int64_t{1});
    return;
  }
  const int64_t inner = shape[nd - 1];
  const int64_t rows = shape_numel(shape) / inner;
  parallel_for(rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(inner, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r) {
                   std::array<int64_t, K> off{};
                   int64_t rem = r;
                   for (int64_t d = nd - 2; d >= 0; --d) {
                     int64_t idx = rem % shape[d];
                     rem /= shape[d];
                     for (size_t k = 0; k < K; ++k) off[k] += idx * (*strides[k])[d];
                   }
                   fn(off, inner);
                 }
               });
}

}  // namespace lvit::cpu
