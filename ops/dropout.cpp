#include "ops/dropout.h"

#include "autograd/engine.h"
#include "core/thread_pool.h"
#include "ops/activation.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/dropout.cuh"
#endif

namespace lvit::ops {

void check_probability(const char* op, double p) {
  LVIT_CHECK(p >= 0 && p < 1, "{}: probability {} not in [0, 1)", op, p);
  LVIT_CHECK(static_cast<float>(p) < 1.0f,
             "{}: probability {} rounds to 1 in fp32, where the masks compare against it", op, p);
}

namespace {

constexpr int64_t kLanes = 64;  // 8 vectors in flight hide the 64-bit multiply latency

// Dropout on lane groups [g0, g1): each group covers kLanes Philox blocks = 4 kLanes elements. The
// blocks are generated in lane order so the rounds vectorise; element i still gets word i of
// the stream, as Philox::word defines it. A free function with restrict pointers and values
// (not lambda captures by reference), so the compiler can keep everything in registers.
template <typename T>
void dropout_range(const T* __restrict__ px, T* __restrict__ py, int64_t n, int64_t g0, int64_t g1,
                   uint64_t seed, uint64_t offset, float pf, T scale) {
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
  uint32_t w[4 * kLanes];
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const uint64_t blk = static_cast<uint64_t>(g * kLanes + l);
      c0[l] = static_cast<uint32_t>(blk);
      c1[l] = static_cast<uint32_t>(blk >> 32);
      c2[l] = static_cast<uint32_t>(offset);
      c3[l] = static_cast<uint32_t>(offset >> 32);
    }
    Philox::blocks<kLanes>(c0, c1, c2, c3, k0, k1);
    for (int64_t l = 0; l < kLanes; ++l) {  // stream order: word 4l + k is lane l's word k
      w[4 * l] = c0[l];
      w[4 * l + 1] = c1[l];
      w[4 * l + 2] = c2[l];
      w[4 * l + 3] = c3[l];
    }
    const int64_t i0 = g * kLanes * 4;
    const int64_t len = std::min<int64_t>(n - i0, kLanes * 4);
    const T* __restrict__ xs = px + i0;
    T* __restrict__ ys = py + i0;
    for (int64_t j = 0; j < len; ++j) {
      const float u = static_cast<float>(w[j] >> 8) * (1.0f / 16777216.0f);
      ys[j] = u >= pf ? xs[j] * scale : T(0);
    }
  }
}

// out[i] = keep(i) ? x[i] * scale : 0, with keep(i) = uniform(seed, offset, i / group) >= p.
// group = 1 for dropout, the per-sample size for drop-path.
Tensor apply_mask(const Tensor& x_in, double p, uint64_t seed, uint64_t offset, int64_t group) {
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (on_cuda("dropout", {x})) {
#ifdef LVIT_WITH_CUDA
    cuda::apply_mask(x.dtype(), x.raw_data(), y.raw_data(), x.numel(), p, seed, offset, group,
                     cuda_stream(x));
#endif
    return y;
  }
  LVIT_DISPATCH_FLOAT(x.dtype(), "dropout", [&] {
    using T = scalar_t;
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    const float pf = static_cast<float>(p);
    const int64_t n = x.numel();
    if (group == 1) {
      const int64_t groups = ((n + 3) / 4 + kLanes - 1) / kLanes;
      parallel_for(groups, 64, [&](int64_t s, int64_t e) {
        dropout_range<T>(px, py, n, s, e, seed, offset, pf, scale);
      });
    } else {
      // Drop-path: one uniform per sample of `group` elements.
      parallel_for(n / group, 1, [&](int64_t s, int64_t e) {
        for (int64_t b = s; b < e; ++b) {
          const bool keep = Philox::uniform(seed, offset, static_cast<uint64_t>(b)) >= pf;
          for (int64_t i = b * group; i < (b + 1) * group; ++i) py[i] = keep ? px[i] * scale : T(0);
        }
      });
    }
  });
  return y;
}

Tensor masked(const Tensor& x, double p, bool training, Generator& gen, int64_t group,
              const char* name) {
  check_probability(name, p);
  if (!training || p == 0) return x;
  const uint64_t seed = gen.seed(), offset = gen.next_offset();
  Tensor y = apply_mask(x, p, seed, offset, group);
  autograd::record(y, {x}, name, [p, seed, offset, group](const Tensor& g, const autograd::Node&) {
    return std::vector<Tensor>{apply_mask(g, p, seed, offset, group)};
  });
  return y;
}

}  // namespace

GeluDropoutPass gelu_dropout_cuda_pass(const Tensor& x_in, double p, Generator& gen,
                                       bool with_grad) {
#ifdef LVIT_WITH_CUDA
  const uint64_t seed = gen.seed(), offset = gen.next_offset();
  const Tensor x = x_in.contiguous();
  GeluDropoutPass r{Tensor::empty(x.shape(), x.dtype(), x.device()),
                    with_grad ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor()};
  cuda::gelu_dropout_fwd(x.dtype(), x.raw_data(), r.y.raw_data(),
                         with_grad ? r.dydx.raw_data() : nullptr, x.numel(), p, seed, offset,
                         cuda_stream(x));
  return r;
#else
  (void)x_in, (void)p, (void)gen, (void)with_grad;
  throw Error("gelu_dropout_cuda_pass: lvit was built without CUDA");
#endif
}

Tensor gelu_dropout(const Tensor& x_in, double p, bool training, Generator& gen) {
  check_probability("gelu_dropout", p);
  if (!training || p == 0 || !on_cuda("gelu_dropout", {x_in}))
    return dropout(gelu(x_in), p, training, gen);
  // The backward needs only d y / d x (keep ? gelu'(x) / (1 - p) : 0), made in the same pass
  // and saved instead of x: the backward is then one multiply, with no Philox or erf.
  const bool grad = autograd::needs_grad({x_in});
  GeluDropoutPass f = gelu_dropout_cuda_pass(x_in, p, gen, grad);
  if (grad)
    autograd::record(f.y, {x_in}, "GeluDropoutBackward",
                     [dydx = f.dydx](const Tensor& g, const autograd::Node&) {
                       const Tensor gc = g.dtype() == dydx.dtype() ? g : g.to(dydx.dtype());
                       return std::vector<Tensor>{mul(gc, dydx)};
                     });
  return f.y;
}

Tensor add_dropout(const Tensor& x_in, const Tensor& y_in, double p, bool training,
                   Generator& gen) {
  check_probability("add_dropout", p);
  LVIT_CHECK(x_in.device() == y_in.device(), "add_dropout: residual on {}, branch on {}",
             x_in.device().str(), y_in.device().str());
  if (!training || p == 0) return add(x_in, y_in);
  if (!on_cuda("add_dropout", {x_in, y_in}) || x_in.shape() != y_in.shape())
    return add(x_in, dropout(y_in, p, training, gen));
  AddDropoutPass f = add_dropout_cuda_pass(x_in, y_in, p, gen);
  autograd::record(f.out, {x_in, y_in}, "AddDropoutBackward",
                   [p, seed = f.seed, offset = f.offset, ydt = y_in.dtype()](
                       const Tensor& g, const autograd::Node& n) {
                     return std::vector<Tensor>{n.needs_input_grad(0) ? g : Tensor(),
                                                n.needs_input_grad(1)
                                                    ? add_dropout_cuda_grad(g, ydt, p, seed, offset)
                                                    : Tensor()};
                   });
  return f.out;
}

AddDropoutPass add_dropout_cuda_pass(const Tensor& x_in, const Tensor& y_in, double p,
                                     Generator& gen) {
#ifdef LVIT_WITH_CUDA
  AddDropoutPass r{Tensor(), gen.seed(), gen.next_offset()};
  const Tensor x = x_in.contiguous(), y = y_in.contiguous();
  r.out = Tensor::empty(x.shape(), x.dtype(), x.device());
  cuda::add_dropout_fwd(x.dtype(), x.raw_data(), y.dtype(), y.raw_data(), r.out.raw_data(),
                        x.numel(), p, r.seed, r.offset, cuda_stream(x));
  return r;
#else
  (void)x_in, (void)y_in, (void)p, (void)gen;
  throw Error("add_dropout_cuda_pass: lvit was built without CUDA");
#endif
}

Tensor add_dropout_cuda_grad(const Tensor& g_in, DType ydtype, double p, uint64_t seed,
                             uint64_t offset) {
#ifdef LVIT_WITH_CUDA
  const Tensor g = g_in.contiguous();
  Tensor gy = Tensor::empty(g.shape(), ydtype, g.device());
  cuda::add_dropout_bwd(g.dtype(), g.raw_data(), ydtype, gy.raw_data(), g.numel(), p, seed, offset,
                        cuda_stream(g));
  return gy;
#else
  (void)g_in, (void)ydtype, (void)p, (void)seed, (void)offset;
  throw Error("add_dropout_cuda_grad: lvit was built without CUDA");
#endif
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  return masked(x, p, training, gen, 1, "DropoutBackward");
}

Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen) {
  LVIT_CHECK(x.dim() >= 1, "drop_path of a scalar");
  return masked(x, p, training, gen, std::max<int64_t>(1, x.numel() / x.shape()[0]),
                "DropPathBackward");
}

}  // namespace lvit::ops
