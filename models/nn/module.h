// Module: a tree of named parameters and submodules with train/eval mode and a state dict.
// Parameter names join the path with dots, as PyTorch does ("blocks.0.attn.qkv.weight").
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace lvit::nn {

class Module {
 public:
  virtual ~Module() = default;

  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Copies every tensor of `state` into the parameter of the same name (shapes must match;
  // dtype converted). Missing or unexpected names throw a UserError naming them, with `source`
  // (e.g. the checkpoint path) in the message.
  void load_state_dict(const std::map<std::string, Tensor>& state, const std::string& source);
  void zero_grad();
  // Moves every parameter to `device` in place (the handles held by layers stay valid).
  void to(Device device);

 protected:
  Tensor& register_parameter(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const;

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// ---- initialisation (in place, from a Generator) ----
// Truncated normal on [mean + a, mean + b] (a, b absolute, as timm's trunc_normal_), by rejection.
void trunc_normal_(Tensor& t, Generator& gen, double std, double a = -2.0, double b = 2.0);
void normal_(Tensor& t, Generator& gen, double std);
void uniform_(Tensor& t, Generator& gen, double lo, double hi);

}  // namespace lvit::nn
