#include "ops/dropout.h"

#include "autograd/engine.h"
#include "core/thread_pool.h"
#include "ops/dispatch.h"

namespace lvit::ops {

namespace {

// out[i] = keep(i) ? x[i] * scale : 0, with keep(i) = uniform(seed, offset, i / group) >= p.
// group = 1 for dropout, the per-sample size for drop-path.
Tensor apply_mask(const Tensor& x_in, double p, uint64_t seed, uint64_t offset, int64_t group) {
  require_cpu("dropout", {x_in});
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  LVIT_DISPATCH_FLOAT(x.dtype(), "dropout", [&] {
    using T = scalar_t;
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    const float pf = static_cast<float>(p);
    parallel_for(x.numel(), 1 << 14, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        bool keep = Philox::uniform(seed, offset, static_cast<uint64_t>(i / group)) >= pf;
        py[i] = keep ? px[i] * scale : T(0);
      }
    });
  });
  return y;
}

Tensor masked(const Tensor& x, double p, bool training, Generator& gen, int64_t group,
              const char* name) {
  LVIT_CHECK(p >= 0 && p < 1, "{}: probability {} not in [0, 1)", name, p);
  if (!training || p == 0) return x;
  const uint64_t seed = gen.seed(), offset = gen.next_offset();
  Tensor y = apply_mask(x, p, seed, offset, group);
  autograd::record(y, {x}, name, [p, seed, offset, group](const Tensor& g, const autograd::Node&) {
    return std::vector<Tensor>{apply_mask(g, p, seed, offset, group)};
  });
  return y;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  return masked(x, p, training, gen, 1, "DropoutBackward");
}

Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen) {
  LVIT_CHECK(x.dim() >= 1, "drop_path of a scalar");
  return masked(x, p, training, gen, std::max<int64_t>(1, x.numel() / x.shape()[0]),
                "DropPathBackward");
}

}  // namespace lvit::ops
