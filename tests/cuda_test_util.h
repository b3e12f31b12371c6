// Shared by the CUDA op suites (test_cuda_*.cpp): skipping without a GPU, random inputs, and the
// CUDA-vs-CPU comparison with tolerances derived from the dtype and the length of the longest
// reduction behind each output element.
//
// The tolerance model: a sum of K rounded terms carries a relative error of order u sqrt(K)
// (u = unit roundoff of the arithmetic: 2^-24 for f32, 2^-11 for TF32 GEMM operands, 2^-8
// for bf16), relative to the magnitude of the terms, not of the result (cancellation). So an
// element passes when |got - want| <= c u sqrt(K) * scale, with scale the largest |want| of the
// tensor (the terms' magnitude is at most of that order for our normalised ops) and c a small
// safety factor for the few roundings per term. Outputs are poisoned (NaN) before each op runs,
// so an element a kernel forgot to write fails.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "ops/ops.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/allocator.cuh"
#include "cuda/context.cuh"
#endif

#ifdef LVIT_WITH_CUDA
// Returns from the test case (which then passes) when no GPU is present.
#define LVIT_SKIP_WITHOUT_GPU()           \
  do {                                    \
    if (!::lvit::cuda::available()) {     \
      MESSAGE("no CUDA device: skipped"); \
      return;                             \
    }                                     \
    ::lvit::cuda::set_poison(true);       \
  } while (0)
#else
#define LVIT_SKIP_WITHOUT_GPU()             \
  do {                                      \
    MESSAGE("built without CUDA: skipped"); \
    return;                                 \
  } while (0)
#endif

namespace lvit::cudatest {

// Unit roundoff of the arithmetic behind a result of `dtype` (tf32 = f32 storage with TF32
// GEMM operands).
enum class Arith { f64, f32, tf32, bf16 };
inline double unit_roundoff(Arith a) {
  switch (a) {
    case Arith::f64:
      return std::ldexp(1.0, -53);
    case Arith::f32:
      return std::ldexp(1.0, -24);
    case Arith::tf32:
      return std::ldexp(1.0, -11);
    case Arith::bf16:
      return std::ldexp(1.0, -8);
  }
  return 1;
}

// Host tensor of standard normals (Philox stream (seed, 0)) scaled by `scale`, in `dtype`.
inline Tensor randn(const Shape& shape, uint64_t seed, double scale = 1.0,
                    DType dtype = DType::f32) {
  std::vector<double> v(shape_numel(shape));
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * philox_normal(seed, 0, i);
  return Tensor::from_vector(v, shape).to(dtype);
}

inline Tensor to_gpu(const Tensor& t) { return t.to(Device::cuda(0)); }
inline Tensor to_cpu(const Tensor& t) { return t.to(Device::cpu()).contiguous(); }

// Checks got (any device) against the CPU reference `want`: same shape, every element finite and
// within c * u(arith) * sqrt(K) * max|want| (+ the smallest normal, for all-tiny tensors).
// Reports the worst element.
inline void expect_close(const Tensor& want_in, const Tensor& got_in, Arith arith, int64_t K,
                         const std::string& what, double c = 8.0) {
  INFO(what);
  REQUIRE(got_in.defined());
  REQUIRE(want_in.shape() == got_in.shape());
  const std::vector<double> want = to_cpu(want_in).to_vector<double>();
  const std::vector<double> got = to_cpu(got_in).to_vector<double>();
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  const double tol =
      c * unit_roundoff(arith) * std::sqrt(static_cast<double>(std::max<int64_t>(K, 1))) * scale +
      1e-30;
  double worst = 0;
  size_t worst_i = 0, bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::isfinite(got[i]) ? std::abs(got[i] - want[i]) : INFINITY;
    if (err > tol) ++bad;
    if (err > worst || !std::isfinite(err)) {
      worst = err;
      worst_i = i;
    }
  }
  INFO("worst element " << worst_i << ": got " << (want.empty() ? 0 : got[worst_i]) << ", want "
                        << (want.empty() ? 0 : want[worst_i]) << ", |err| " << worst
                        << ", tolerance " << tol << " (scale " << scale << ", K " << K << ")");
  CHECK(bad == 0);
}

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs f on CPU copies and on GPU copies of `inputs` (all requiring grad unless listed in
// `no_grad`), backpropagates the same random upstream gradient through both, and compares the
// output and each input gradient. K: the longest reduction behind an output element (forward)
// and behind a gradient element (backward).
inline void compare_op(const std::string& name, const OpFn& f, const std::vector<Tensor>& inputs,
                       Arith arith, int64_t k_fwd, int64_t k_bwd, std::vector<size_t> no_grad = {},
                       double c = 8.0) {
  auto needs_grad = [&](size_t i) {
    return is_floating(inputs[i].dtype()) &&
           std::find(no_grad.begin(), no_grad.end(), i) == no_grad.end();
  };
  std::vector<Tensor> cpu_in, gpu_in;
  for (size_t i = 0; i < inputs.size(); ++i) {
    cpu_in.push_back(inputs[i].clone());
    gpu_in.push_back(to_gpu(inputs[i]));
    if (needs_grad(i)) {
      cpu_in.back().set_requires_grad(true);
      gpu_in.back().set_requires_grad(true);
    }
  }
  Tensor y_cpu = f(cpu_in), y_gpu = f(gpu_in);
  REQUIRE(y_gpu.device().is_cuda());
  expect_close(y_cpu, y_gpu, arith, k_fwd, name + ": forward", c);
  if (!y_cpu.requires_grad()) return;
  Tensor g = randn(y_cpu.shape(), 977, 1.0, y_cpu.dtype());
  y_cpu.backward(g);
  y_gpu.backward(to_gpu(g));
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!needs_grad(i)) continue;
    REQUIRE(gpu_in[i].grad().defined());
    CHECK(gpu_in[i].grad().device().is_cuda());
    expect_close(cpu_in[i].grad(), gpu_in[i].grad(), arith, k_bwd,
                 fmt::format("{}: gradient of input {}", name, i), c);
  }
}

}  // namespace lvit::cudatest
