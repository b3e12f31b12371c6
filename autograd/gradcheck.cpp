#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/engine.h"
#include "core/rng.h"

namespace lvit::autograd {

namespace {
double project(const Tensor& y, const std::vector<double>& r) {
  std::vector<double> v = y.to_vector<double>();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += v[i] * r[i];
  return s;
}
}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  for (const Tensor& t : inputs) {
    LVIT_CHECK(t.dtype() == DType::f64 && t.device().is_cpu() && t.is_contiguous(),
               "gradcheck inputs must be contiguous f64 CPU tensors");
    if (t.requires_grad()) t.impl()->grad.reset();
  }
  Tensor y = f(inputs);
  std::vector<double> r(y.numel());
  for (size_t i = 0; i < r.size(); ++i) r[i] = philox_normal(opt.seed, 0, i);
  Tensor rt = Tensor::from_vector(r, y.shape());
  y.backward(rt);

  GradcheckResult res;
  int reported = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    std::vector<double> analytic =
        x.grad().defined() ? x.grad().to_vector<double>() : std::vector<double>(x.numel(), 0.0);
    double* p = x.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      double orig = p[i];
      double fp, fm;
      {
        NoGradGuard ng;
        p[i] = orig + opt.eps;
        fp = project(f(inputs), r);
        p[i] = orig - opt.eps;
        fm = project(f(inputs), r);
        p[i] = orig;
      }
      double numeric = (fp - fm) / (2 * opt.eps);
      double err = std::abs(analytic[i] - numeric);
      res.max_abs_err = std::max(res.max_abs_err, err);
      if (!(err <= opt.atol + opt.rtol * std::abs(numeric))) {
        res.ok = false;
        if (reported++ < 8)
          res.report += fmt::format("input {} [{}]: analytic {:.10g} numeric {:.10g}\n", k, i,
                                    analytic[i], numeric);
      }
    }
  }
  return res;
}

}  // namespace lvit::autograd
