// The autograd graph. Every op output that needs a gradient holds a Node (its grad_fn); a Node
// holds one edge per op input: the input's own grad_fn, the AccumulateGrad node of a leaf that
// requires grad, or null where no gradient is needed (those inputs are pruned).
// All ops have a single output, so a Node receives one gradient and returns one per input.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lvit::autograd {

class Node {
 public:
  // Frees the chain of nodes only this one keeps alive without recursing through it, so that
  // dropping a very deep graph cannot overflow the stack.
  virtual ~Node();
  // grad_out has the shape of the op's output. Returns one gradient per input, in input order;
  // an undefined Tensor where the input needs none (needs_input_grad(i) false).
  virtual std::vector<Tensor> apply(const Tensor& grad_out) = 0;
  // Drops saved tensors once the node has run (unless the graph is retained).
  virtual void release() {}
  virtual const char* name() const = 0;

  bool needs_input_grad(size_t i) const { return i < next.size() && next[i] != nullptr; }
  // While the node runs: the gradient the engine has already summed for input i from the
  // input's other consumers, where nothing else references it (not its TensorImpl, not its
  // storage); undefined otherwise. A backward may add its own gradient for input i into it in
  // place and return that same tensor, which saves the engine's separate sum (a pass over both);
  // a backward that ignores it loses nothing (the engine adds the two as usual).
  const Tensor& partial_grad(size_t i) const {
    static const Tensor kNone;
    return i < partial_grads.size() ? partial_grads[i] : kNone;
  }
  std::vector<std::shared_ptr<Node>> next;
  std::vector<Tensor> partial_grads;  // lent by the engine around apply (see partial_grad)
};

// Adds incoming gradients into a leaf's .grad.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::weak_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::vector<Tensor> apply(const Tensor& grad_out) override;
  const char* name() const override { return "AccumulateGrad"; }

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

// A node whose backward is a closure: the closure's captures are exactly what the forward saves.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out, const Node& node)>;

class FunctionNode final : public Node {
 public:
  FunctionNode(const char* name, BackwardFn fn) : name_(name), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(const Tensor& grad_out) override;
  void release() override { fn_ = nullptr; }
  const char* name() const override { return name_; }

 private:
  const char* name_;
  BackwardFn fn_;
};

// ---- grad mode ----
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when grad mode is on and some input requires grad: then the op must record a node.
bool needs_grad(std::initializer_list<Tensor> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Records `out` as the result of an op on `inputs` whose backward is `fn` (no-op when no input
// needs a gradient). Typical use:
//   autograd::record(y, {x, w}, "LinearBackward", [x = x.detach(), w = w.detach()](
//       const Tensor& g, const autograd::Node& n) { ... return {gx, gw}; });
void record(Tensor& out, const std::vector<Tensor>& inputs, const char* name, BackwardFn fn);

// The edge through which a gradient reaches `t`: its grad_fn, its leaf accumulator, or null.
std::shared_ptr<Node> gradient_edge(const Tensor& t);

}  // namespace lvit::autograd
