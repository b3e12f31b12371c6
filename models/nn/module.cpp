#include "models/nn/module.h"

#include <set>

namespace lvit::nn {

void Module::collect(const std::string& prefix,
                     std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [name, t] : params_) out.emplace_back(prefix + name, t);
  for (const auto& [name, m] : children_) m->collect(prefix + name + ".", out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, m] : children_) m->train(on);
}

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  t.set_requires_grad(true);
  params_.emplace_back(name, std::move(t));
  return params_.back().second;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state,
                             const std::string& source) {
  std::set<std::string> seen;
  for (auto& [name, p] : named_parameters()) {
    auto it = state.find(name);
    LVIT_USER_CHECK(it != state.end(), "{}: missing tensor '{}'", source, name);
    LVIT_USER_CHECK(it->second.shape() == p.shape(), "{}: '{}' has shape {}, the model expects {}",
                    source, name, shape_str(it->second.shape()), shape_str(p.shape()));
    p.copy_(it->second);
    seen.insert(name);
  }
  for (auto& [name, t] : state)
    LVIT_USER_CHECK(seen.count(name), "{}: unexpected tensor '{}' (not a parameter of this model)",
                    source, name);
}

void Module::zero_grad() {
  for (auto& [n, p] : named_parameters()) p.impl()->grad.reset();
}

void Module::to(Device device) {
  for (auto& [n, p] : named_parameters()) {
    if (p.device() == device) continue;
    Tensor moved = p.to(device);
    // Swap the storage under the existing handle so every holder sees the moved tensor.
    p.impl()->storage = moved.storage();
    p.impl()->strides = moved.strides();
    p.impl()->offset = 0;
    p.impl()->grad.reset();
  }
}

void trunc_normal_(Tensor& t, Generator& gen, double std, double a, double b) {
  std::vector<double> v(t.numel());
  const uint64_t seed = gen.seed(), off = gen.next_offset();
  fill_normal(v.data(), v.size(), seed, off);
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] *= std;
    // Rejection: redraw out-of-range values from positions past the first n (rare: for
    // timm's std 0.02 and bounds +-2 it never happens).
    for (uint64_t k = 1; (v[i] < a || v[i] > b) && k < 64; ++k)
      v[i] = std * philox_normal(seed, off, k * v.size() + i);
    v[i] = std::min(std::max(v[i], a), b);
  }
  t.copy_(Tensor::from_vector(v, t.shape()));
}

void normal_(Tensor& t, Generator& gen, double std) {
  std::vector<double> v(t.numel());
  fill_normal(v.data(), v.size(), gen.seed(), gen.next_offset());
  for (double& x : v) x *= std;
  t.copy_(Tensor::from_vector(v, t.shape()));
}

void uniform_(Tensor& t, Generator& gen, double lo, double hi) {
  std::vector<double> v(t.numel());
  const uint64_t seed = gen.seed(), off = gen.next_offset();
  for (size_t i = 0; i < v.size(); ++i) v[i] = lo + (hi - lo) * Philox::uniform(seed, off, i);
  t.copy_(Tensor::from_vector(v, t.shape()));
}

}  // namespace lvit::nn
