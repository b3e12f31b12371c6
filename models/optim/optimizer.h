// Optimizers (SGD with momentum, AdamW), the warmup + cosine schedule and global grad-norm
// clipping. Updates run in place on the parameters' storage, outside autograd.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lvit::optim {

struct ParamRef {
  std::string name;
  Tensor param;
  bool decay = true;  // weight decay applies
};

// timm's rule: decay matrices only; biases, norm weights, position embedding, class token and
// ripple stage logits are not decayed.
bool default_decay(const std::string& name, const Tensor& p);
std::vector<ParamRef> make_param_refs(const std::vector<std::pair<std::string, Tensor>>& named);

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamRef> params) : params_(std::move(params)) {}
  virtual ~Optimizer() = default;
  // One update with learning rate lr: prepare(lr), then apply().
  void step(double lr) {
    prepare(lr);
    apply();
  }
  // The two halves of a step, apart for CUDA graphs: prepare counts the step and puts the
  // step's scalars (learning rate, bias corrections) where apply reads them (device memory on
  // a GPU); apply launches the update, reading nothing else from the host, so that a captured
  // apply replays correctly after each new prepare.
  virtual void prepare(double lr) = 0;
  virtual void apply() = 0;
  int64_t steps() const { return step_; }
  // Named state tensors (e.g. "exp_avg.<param>") and the step count, for checkpoints.
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  // Restores from `state` (same names); throws UserError naming `source` when incomplete.
  virtual void load_state(const std::map<std::string, Tensor>& state, int64_t step,
                          const std::string& source) = 0;
  const std::vector<ParamRef>& params() const { return params_; }
  // Gradient clipping folded into the update (clip_grad_norm_tensor with this optimizer):
  // whether apply() can multiply the gradients by a device scalar as it reads them, instead of
  // the clip scaling them in place (one pass over every gradient less); and that scalar, f32 on
  // the parameters' device, for the next apply() only: call apply() right after the clip (a
  // later folded clip replaces the scalar). AdamW on a GPU can.
  virtual bool folds_grad_scale() const { return false; }
  void set_grad_scale(Tensor coef) { grad_scale_ = std::move(coef); }

 protected:
  std::vector<ParamRef> params_;
  int64_t step_ = 0;
  Tensor grad_scale_;  // set_grad_scale's scalar until apply() uses it, else undefined
};

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.05;
};

// torch.optim.AdamW: p *= 1 - lr*wd; m, v moments; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) +
// eps).
class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<ParamRef> params, AdamWOptions opt);
  void prepare(double lr) override;
  void apply() override;
  bool folds_grad_scale() const override { return scalars_.defined(); }
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::map<std::string, Tensor>& state, int64_t step,
                  const std::string& source) override;

 private:
  AdamWOptions opt_;
  std::vector<Tensor> m_, v_;
  double lr_ = 0;
  Tensor scalars_;  // on a GPU: f32 [step_size, 1/sqrt(bias correction 2), lr * wd]
};

struct SGDOptions {
  double momentum = 0.9, weight_decay = 0.0;
  bool nesterov = false;
};

// torch.optim.SGD: g += wd*p; buf = momentum*buf + g; p -= lr * (nesterov ? g + momentum*buf :
// buf).
class SGD final : public Optimizer {
 public:
  SGD(std::vector<ParamRef> params, SGDOptions opt);
  void prepare(double lr) override;
  void apply() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::map<std::string, Tensor>& state, int64_t step,
                  const std::string& source) override;

 private:
  SGDOptions opt_;
  std::vector<Tensor> buf_;
  double lr_ = 0;
  Tensor scalars_;  // on a GPU: f32 [lr]
};

// Linear warmup from lr/warmup_steps to lr over warmup_steps, then cosine decay to min_lr at
// total_steps. Steps count from 0.
double warmup_cosine_lr(int64_t step, int64_t warmup_steps, int64_t total_steps, double lr,
                        double min_lr = 0.0);

// Scales all gradients so their global L2 norm is at most max_norm (as torch's
// clip_grad_norm_: coef = max_norm / (norm + 1e-6) when below 1). Returns the norm before.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// The same clip, returning the norm as a one-element f64 tensor on the gradients' device, so
// that on a GPU nothing waits for the result (read it with item() when needed). With `fold`,
// the optimizer about to update these parameters, and where it folds_grad_scale(): the
// gradients stay as they are and its next apply() multiplies them by the clip's coefficient
// (the same update bit for bit, without a pass that scales every gradient in place).
Tensor clip_grad_norm_tensor(const std::vector<Tensor>& params, double max_norm,
                             Optimizer* fold = nullptr);

}  // namespace lvit::optim
