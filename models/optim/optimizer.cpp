#include "models/optim/optimizer.h"

#include <cmath>

#include "core/thread_pool.h"
#include "ops/cpu/lanes.h"
#include "ops/dispatch.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/optim.cuh"
#endif

namespace lvit::optim {

bool default_decay(const std::string& name, const Tensor& p) {
  auto ends_with = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  if (p.dim() < 2) return false;
  return !(name == "pos_embed" || name == "cls_token" || ends_with("ripple_logits"));
}

std::vector<ParamRef> make_param_refs(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<ParamRef> v;
  for (auto& [n, p] : named) v.push_back({n, p, default_decay(n, p)});
  return v;
}

namespace {

void load_named(std::vector<Tensor>& dst, const std::vector<ParamRef>& params, const char* prefix,
                const std::map<std::string, Tensor>& state, const std::string& source) {
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string key = std::string(prefix) + params[i].name;
    auto it = state.find(key);
    LVIT_USER_CHECK(it != state.end(), "{}: optimizer state '{}' is missing", source, key);
    LVIT_USER_CHECK(it->second.shape() == dst[i].shape(),
                    "{}: optimizer state '{}' has shape {}, expected {}", source, key,
                    shape_str(it->second.shape()), shape_str(dst[i].shape()));
    dst[i].copy_(it->second);
  }
}

#ifdef LVIT_WITH_CUDA
// The multi-tensor CUDA updates take raw f32 pointers of one device.
void check_cuda_param(const char* optimizer, const Tensor& p, const Tensor& g, Device device) {
  LVIT_CHECK(p.dtype() == DType::f32 && p.is_contiguous() && g.dtype() == DType::f32 &&
                 g.is_contiguous() && p.device() == device,
             "{} on CUDA: parameters and gradients must be contiguous f32 on one device",
             optimizer);
}
#endif

}  // namespace

AdamW::AdamW(std::vector<ParamRef> params, AdamWOptions opt)
    : Optimizer(std::move(params)), opt_(opt) {
  for (auto& p : params_) {
    m_.push_back(Tensor::zeros(p.param.shape(), DType::f32, p.param.device()));
    v_.push_back(Tensor::zeros(p.param.shape(), DType::f32, p.param.device()));
  }
  if (!params_.empty() && params_[0].param.device().is_cuda())
    scalars_ = Tensor::zeros({3}, DType::f32, params_[0].param.device());
}

namespace {
// The step's scalars of torch.optim.AdamW, rounded to f32 once (both devices use these).
struct AdamWStepScalars {
  float step_size, inv_sqrt_bc2, decay;
};
AdamWStepScalars adamw_scalars(const AdamWOptions& o, int64_t step, double lr) {
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
  return {static_cast<float>(lr / bc1), static_cast<float>(1.0 / std::sqrt(bc2)),
          static_cast<float>(1.0 - lr * o.weight_decay)};
}
}  // namespace

void AdamW::prepare(double lr) {
  ++step_;
  lr_ = lr;
  if (scalars_.defined()) {
    const AdamWStepScalars s = adamw_scalars(opt_, step_, lr);
    scalars_.copy_(Tensor::from_vector<float>({s.step_size, s.inv_sqrt_bc2, s.decay}, {3}));
  }
}

void AdamW::apply() {
  const float b1 = static_cast<float>(opt_.beta1), b2 = static_cast<float>(opt_.beta2);
  const float eps = static_cast<float>(opt_.eps);
  if (!params_.empty() && ops::on_cuda("AdamW", {params_[0].param})) {
#ifdef LVIT_WITH_CUDA
    std::vector<cuda::AdamWParam> list;
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor& p = params_[i].param;
      Tensor g = p.grad();
      if (!g.defined()) continue;
      check_cuda_param("AdamW", p, g, params_[0].param.device());
      list.push_back({p.data<float>(), g.data<float>(), m_[i].data<float>(), v_[i].data<float>(),
                      p.numel(), params_[i].decay});
    }
    cuda::adamw_step(list, b1, b2, eps,
                     reinterpret_cast<const cuda::AdamWScalars*>(scalars_.data<float>()),
                     grad_scale_.defined() ? grad_scale_.data<float>() : nullptr,
                     ops::cuda_stream(params_[0].param));
    grad_scale_ = Tensor();
#endif
    return;
  }
  const AdamWStepScalars sc = adamw_scalars(opt_, step_, lr_);
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].param;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    ops::require_cpu("AdamW", {p, g});
    LVIT_CHECK(p.dtype() == DType::f32 && p.is_contiguous(),
               "AdamW: parameters must be contiguous f32");
    g = g.contiguous();
    const float decay = params_[i].decay ? sc.decay : 1.0f;
    const float step_size = sc.step_size, inv_sqrt_bc2 = sc.inv_sqrt_bc2;
    float* pp = p.data<float>();
    const float* pg = g.data<float>();
    float* pm = m_[i].data<float>();
    float* pv = v_[i].data<float>();
    parallel_for(p.numel(), 1 << 14, [&](int64_t s, int64_t e) {
      for (int64_t j = s; j < e; ++j) {
        const float gj = pg[j];
        pm[j] = b1 * pm[j] + (1.0f - b1) * gj;
        pv[j] = b2 * pv[j] + (1.0f - b2) * gj * gj;
        const float denom = std::sqrt(pv[j]) * inv_sqrt_bc2 + eps;
        pp[j] = pp[j] * decay - step_size * pm[j] / denom;
      }
    });
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t i = 0; i < params_.size(); ++i) {
    s.emplace_back("exp_avg." + params_[i].name, m_[i]);
    s.emplace_back("exp_avg_sq." + params_[i].name, v_[i]);
  }
  return s;
}

void AdamW::load_state(const std::map<std::string, Tensor>& state, int64_t step,
                       const std::string& source) {
  load_named(m_, params_, "exp_avg.", state, source);
  load_named(v_, params_, "exp_avg_sq.", state, source);
  step_ = step;
}

SGD::SGD(std::vector<ParamRef> params, SGDOptions opt) : Optimizer(std::move(params)), opt_(opt) {
  for (auto& p : params_)
    buf_.push_back(Tensor::zeros(p.param.shape(), DType::f32, p.param.device()));
  if (!params_.empty() && params_[0].param.device().is_cuda())
    scalars_ = Tensor::zeros({1}, DType::f32, params_[0].param.device());
}

void SGD::prepare(double lr) {
  ++step_;
  lr_ = lr;
  if (scalars_.defined()) scalars_.copy_(Tensor::from_vector<float>({static_cast<float>(lr)}, {1}));
}

void SGD::apply() {
  const float mom = static_cast<float>(opt_.momentum), lrf = static_cast<float>(lr_);
  const bool first = step_ == 1;
  if (!params_.empty() && ops::on_cuda("SGD", {params_[0].param})) {
#ifdef LVIT_WITH_CUDA
    std::vector<cuda::SGDParam> list;
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor& p = params_[i].param;
      Tensor g = p.grad();
      if (!g.defined()) continue;
      check_cuda_param("SGD", p, g, params_[0].param.device());
      list.push_back({p.data<float>(), g.data<float>(), buf_[i].data<float>(), p.numel(),
                      params_[i].decay ? static_cast<float>(opt_.weight_decay) : 0.0f});
    }
    cuda::sgd_step(list, scalars_.data<float>(), mom, opt_.nesterov, first,
                   ops::cuda_stream(params_[0].param));
#endif
    return;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].param;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    ops::require_cpu("SGD", {p, g});
    g = g.contiguous();
    const float wd = params_[i].decay ? static_cast<float>(opt_.weight_decay) : 0.0f;
    float* pp = p.data<float>();
    const float* pg = g.data<float>();
    float* pb = buf_[i].data<float>();
    parallel_for(p.numel(), 1 << 14, [&](int64_t s, int64_t e) {
      for (int64_t j = s; j < e; ++j) {
        const float gj = pg[j] + wd * pp[j];
        // torch initialises the buffer with the first gradient (no dampening).
        pb[j] = mom == 0.0f ? gj : (first ? gj : mom * pb[j] + gj);
        const float d = opt_.nesterov ? gj + mom * pb[j] : pb[j];
        pp[j] -= lrf * d;
      }
    });
  }
}

std::vector<std::pair<std::string, Tensor>> SGD::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t i = 0; i < params_.size(); ++i)
    s.emplace_back("momentum_buffer." + params_[i].name, buf_[i]);
  return s;
}

void SGD::load_state(const std::map<std::string, Tensor>& state, int64_t step,
                     const std::string& source) {
  load_named(buf_, params_, "momentum_buffer.", state, source);
  step_ = step;
}

double warmup_cosine_lr(int64_t step, int64_t warmup_steps, int64_t total_steps, double lr,
                        double min_lr) {
  if (warmup_steps > 0 && step < warmup_steps)
    return lr * static_cast<double>(step + 1) / warmup_steps;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  const double t = std::min(1.0, static_cast<double>(step - warmup_steps) / decay_steps);
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * t));
}

Tensor clip_grad_norm_tensor(const std::vector<Tensor>& params, double max_norm, Optimizer* fold) {
  Tensor first;
  for (const Tensor& p : params)
    if (p.grad().defined()) {
      first = p.grad();
      break;
    }
  if (first.defined() && ops::on_cuda("clip_grad_norm", {first})) {
    Tensor norm = Tensor::empty({}, DType::f64, first.device());
#ifdef LVIT_WITH_CUDA
    std::vector<float*> grads;
    std::vector<int64_t> numels;
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      LVIT_CHECK(g.dtype() == DType::f32 && g.is_contiguous() && g.device() == first.device(),
                 "clip_grad_norm on CUDA: gradients must be contiguous f32 on one device");
      grads.push_back(g.data<float>());
      numels.push_back(g.numel());
    }
    Tensor coef;  // the folded coefficient
    if (fold != nullptr && fold->folds_grad_scale())
      coef = Tensor::empty({}, DType::f32, first.device());
    cuda::clip_grad_norm(grads, numels, max_norm, norm.data<double>(),
                         coef.defined() ? coef.data<float>() : nullptr, ops::cuda_stream(first));
    if (coef.defined()) fold->set_grad_scale(coef);
#endif
    return norm;
  }
  return Tensor::full({}, clip_grad_norm(params, max_norm), DType::f64);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  for (const Tensor& p : params)
    if (p.grad().defined() && p.grad().device().is_cuda())
      return clip_grad_norm_tensor(params, max_norm).item();
  // Per-parameter sums of squares in double, over fixed chunks (thread-count independent).
  double sq = 0;
  constexpr int64_t kChunks = 16;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    ops::require_cpu("clip_grad_norm", {g});
    LVIT_CHECK(g.is_contiguous(), "clip_grad_norm: non-contiguous gradient");
    LVIT_DISPATCH_FLOAT(g.dtype(), "clip_grad_norm", [&] {
      const scalar_t* d = g.data<scalar_t>();
      double part[kChunks] = {};
      parallel_chunks(g.numel(), kChunks, [&](int64_t k, int64_t b, int64_t e) {
        double s[cpu::kLanes] = {};
        cpu::for_lanes(e - b,
                       [&](int64_t i, int l) { s[l] += static_cast<double>(d[b + i]) * d[b + i]; });
        part[k] = cpu::lanes_total(s);
      });
      for (double s : part) sq += s;
    });
  }
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      LVIT_DISPATCH_FLOAT(g.dtype(), "clip_grad_norm", [&] {
        scalar_t* d = g.data<scalar_t>();
        const scalar_t c = static_cast<scalar_t>(coef);
        parallel_for(g.numel(), 1 << 15, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) d[i] *= c;
        });
      });
    }
  }
  return norm;
}

}  // namespace lvit::optim
