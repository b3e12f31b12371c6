#include "core/rng.h"

#include <cmath>

namespace lvit {

double philox_normal(uint64_t seed, uint64_t offset, uint64_t i) {
  // Words 2i and 2i+1 of the stream; u1 in (0, 1] so log(u1) is finite.
  uint64_t a = Philox::word(seed, offset, 2 * i), b = Philox::word(seed, offset, 2 * i + 1);
  double u1 = (static_cast<double>(a) + 1.0) / 4294967296.0;
  double u2 = static_cast<double>(b) / 4294967296.0;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

float Generator::uniform() { return Philox::uniform(seed_, next_offset(), 0); }

uint64_t Generator::next_u64() {
  uint64_t off = next_offset();
  return (static_cast<uint64_t>(Philox::word(seed_, off, 0)) << 32) | Philox::word(seed_, off, 1);
}

int64_t Generator::randint(int64_t n) { return static_cast<int64_t>(next_u64() % static_cast<uint64_t>(n)); }

double Generator::normal(double mean, double std) {
  return mean + std * philox_normal(seed_, next_offset(), 0);
}

}  // namespace lvit
