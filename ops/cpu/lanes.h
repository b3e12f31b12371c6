// Row reductions the compiler can vectorise. Without -ffast-math a running sum is a chain of
// dependent adds that must stay in source order, one add every few cycles; kLanes interleaved
// partial sums (term j goes to lane j mod kLanes), added pairwise at the end, become vector adds
// in a fixed order, so results stay reproducible run to run and thread count to thread count.
#pragma once
#include <cstdint>

namespace lvit::cpu {

inline constexpr int kLanes = 16;

// body(j, lane) for j = 0 .. n-1 with lane = j mod kLanes, in blocks of kLanes consecutive j
// (the shape the vectoriser wants), then the tail.
template <typename F>
inline void for_lanes(int64_t n, F&& body) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) body(j + l, l);
  for (int l = 0; j < n; ++j, ++l) body(j, l);
}

// The sum of the lanes, pairwise.
template <typename T>
inline T lanes_total(const T (&lanes)[kLanes]) {
  T t[kLanes];
  for (int l = 0; l < kLanes; ++l) t[l] = lanes[l];
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  return t[0];
}

}  // namespace lvit::cpu
