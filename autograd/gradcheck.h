// Gradcheck: compares the autograd gradient of f at f64 inputs with central differences.
// f's output is projected onto fixed random weights r, L = sum(f(x) * r), so one backward
// (with grad = r) checks the full Jacobian-vector product for every input element.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lvit::autograd {

struct GradcheckOptions {
  double eps = 1e-6;   // central-difference step
  double atol = 1e-6;  // |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-5;
  uint64_t seed = 1234;  // projection weights r
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_err = 0;
  std::string report;  // first failures: input, index, analytic, numeric
};

// inputs: f64 CPU tensors; those with requires_grad are checked (they are perturbed in place
// and restored). f must be deterministic (reseed any RNG inside it).
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt = {});

}  // namespace lvit::autograd
