#include "core/rng.h"

#include <cmath>

namespace lvit {

namespace {
// Box-Muller on words (a, b): returns the cosine and sine normals.
inline void box_muller(uint32_t a, uint32_t b, double* c, double* s) {
  const double u1 = (static_cast<double>(a) + 1.0) / 4294967296.0;  // (0, 1]: log finite
  const double u2 = static_cast<double>(b) / 4294967296.0;
  const double r = std::sqrt(-2.0 * std::log(u1));
  *c = r * std::cos(2.0 * M_PI * u2);
  *s = r * std::sin(2.0 * M_PI * u2);
}

// The four normals of Philox block `blk` of stream (seed, offset): words (0,1) and (2,3).
inline void block_normals(uint64_t seed, uint64_t offset, uint64_t blk, double z[4]) {
  uint32_t c[4];
  Philox::words(seed, offset, blk, c);
  box_muller(c[0], c[1], &z[0], &z[1]);
  box_muller(c[2], c[3], &z[2], &z[3]);
}
}  // namespace

// Element i uses Philox block i/4: words (0,1) give elements 4k, 4k+1 (cos, sin), words (2,3)
// give 4k+2, 4k+3, so fill_normal needs one block per 4 normals.
double philox_normal(uint64_t seed, uint64_t offset, uint64_t i) {
  double z[4];
  block_normals(seed, offset, i >> 2, z);
  return z[i & 3];
}

void fill_normal(double* out, uint64_t n, uint64_t seed, uint64_t offset) {
  for (uint64_t blk = 0; blk * 4 < n; ++blk) {
    double z[4];
    block_normals(seed, offset, blk, z);
    for (uint64_t k = 0; k < 4 && blk * 4 + k < n; ++k) out[blk * 4 + k] = z[k];
  }
}

float Generator::uniform() { return Philox::uniform(seed_, next_offset(), 0); }

uint64_t Generator::next_u64() {
  uint64_t off = next_offset();
  return (static_cast<uint64_t>(Philox::word(seed_, off, 0)) << 32) | Philox::word(seed_, off, 1);
}

int64_t Generator::randint(int64_t n) {
  return static_cast<int64_t>(next_u64() % static_cast<uint64_t>(n));
}

double Generator::normal(double mean, double std) {
  return mean + std * philox_normal(seed_, next_offset(), 0);
}

}  // namespace lvit
