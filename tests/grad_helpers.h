// Shared by the gradcheck suites: f64 random inputs from Philox, and gradcheck tolerances
// derived from the inputs (see derived_options).
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>
#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "core/rng.h"
#include "ops/ops.h"

#include <doctest/doctest.h>

namespace lvit::gradtest {

using autograd::GradcheckOptions;

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// ---- inputs ----

// Standard normal f64 values from Philox stream (seed, 0).
inline std::vector<double> normals(int64_t n, uint64_t seed) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = philox_normal(seed, 0, i);
  return v;
}

inline Tensor leaf(std::vector<double> v, const Shape& shape, bool requires_grad) {
  Tensor t = Tensor::from_vector(v, shape);
  t.set_requires_grad(requires_grad);
  return t;
}

inline Tensor randn(const Shape& shape, uint64_t seed, bool requires_grad = true) {
  return leaf(normals(shape_numel(shape), seed), shape, requires_grad);
}

// |z| + 0.5: inputs kept 0.5 away from the singularities of log, sqrt and 1/x.
inline Tensor rand_pos(const Shape& shape, uint64_t seed, bool requires_grad = true) {
  auto v = normals(shape_numel(shape), seed);
  for (double& x : v) x = std::abs(x) + 0.5;
  return leaf(v, shape, requires_grad);
}

// sign(z) (|z| + 0.5): random signs, magnitude at least 0.5 (divisors).
inline Tensor rand_away(const Shape& shape, uint64_t seed, bool requires_grad = true) {
  auto v = normals(shape_numel(shape), seed);
  for (double& x : v) x = std::copysign(std::abs(x) + 0.5, x);
  return leaf(v, shape, requires_grad);
}

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (double x : t.to_vector<double>()) m = std::max(m, std::abs(x));
  return m;
}

// ---- tolerances ----
//
// gradcheck compares, for every input element x_j, the analytic dL/dx_j with the central
// difference (L(x + h e_j) - L(x - h e_j)) / 2h of L = sum_i f_i r_i (r: fixed random weights),
// in f64 with h = 1e-6. The difference quotient has two error sources:
//
//  * rounding. Each evaluation of L carries an absolute error of at most F u S to first order,
//    with u = 2^-53 the unit roundoff, F the number of operations an error can accumulate
//    through and S the scale of the values involved. Every output of these ops is computed
//    from at most all n_in input elements with a few (<= 8) operations each, and the
//    projection adds n_out terms: F = 8 n_in + n_out. The intermediates of these ops are bounded
//    by the larger of their inputs and outputs (softmax-style ops subtract the row maximum), so
//    S = sum_i |r_i| (|f_i| + max_j |x_j|). Two evaluations, divided by 2h: F u S / h, the
//    "machine_eps |f| / eps" term (~1e-10 |f| per operation).
//  * truncation: h^2 / 6 |L'''| <= h^2 / 6 C3 sum_i |r_i|, where C3 bounds the third derivative
//    of an output along one input. Inputs are O(1) and kept 0.5 away from the singularities of
//    log, sqrt and 1/x, so C3 = 1e3 is generous (the largest is (a/b)''' = 6a/b^4 <= ~400).
//
// atol is their sum. The analytic gradient itself is computed with about F operations too:
// rtol = F u covers its relative rounding error.
constexpr double kStep = 1e-6;
constexpr double kUnitRoundoff = std::numeric_limits<double>::epsilon() / 2;
constexpr double kThirdDerivativeBound = 1e3;

inline GradcheckOptions derived_options(const Fn& f, const std::vector<Tensor>& inputs) {
  GradcheckOptions opt;
  opt.eps = kStep;
  Tensor y;
  {
    autograd::NoGradGuard ng;
    y = f(inputs);
  }
  std::vector<double> fv = y.to_vector<double>();
  double n_in = 0, max_x = 0;
  for (const Tensor& x : inputs) {
    n_in += static_cast<double>(x.numel());
    max_x = std::max(max_x, max_abs(x));
  }
  double S = 0, R = 0;
  for (size_t i = 0; i < fv.size(); ++i) {
    const double r = std::abs(philox_normal(opt.seed, 0, i));  // gradcheck's projection weights
    S += r * (std::abs(fv[i]) + max_x);
    R += r;
  }
  const double F = 8 * n_in + static_cast<double>(fv.size());
  opt.atol = F * kUnitRoundoff * S / kStep + kStep * kStep / 6 * kThirdDerivativeBound * R;
  opt.rtol = F * kUnitRoundoff;
  return opt;
}

// Gradchecks f at `inputs` and checks that the check was not vacuous: every input that
// requires grad received a gradient of its shape with a nonzero element.
inline void expect_grad(const std::string& name, const Fn& f, const std::vector<Tensor>& inputs) {
  INFO(name);
  const GradcheckOptions opt = derived_options(f, inputs);
  const autograd::GradcheckResult res = autograd::gradcheck(f, inputs, opt);
  INFO("max |analytic - numeric| = " << res.max_abs_err << ", atol = " << opt.atol << "\n"
                                     << res.report);
  CHECK(res.ok);
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.requires_grad()) {
      CHECK_FALSE(x.grad().defined());
      continue;
    }
    INFO("input " << k);
    REQUIRE(x.grad().defined());
    CHECK(x.grad().shape() == x.shape());
    CHECK(max_abs(x.grad()) > 0);
  }
}

}  // namespace lvit::gradtest
