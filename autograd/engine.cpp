#include "autograd/engine.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace lvit::autograd {

namespace {
thread_local bool t_grad_enabled = true;
}

Node::~Node() {
  std::vector<std::shared_ptr<Node>> stack = std::move(next);
  while (!stack.empty()) {
    std::shared_ptr<Node> n = std::move(stack.back());
    stack.pop_back();
    // If this is the last reference, take over n's edges so that n dies with none of its own.
    if (n && n.use_count() == 1) {
      for (auto& child : n->next) stack.push_back(std::move(child));
      n->next.clear();
    }
  }
}

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}
bool needs_grad(std::initializer_list<Tensor> inputs) {
  return needs_grad(std::vector<Tensor>(inputs));
}

std::shared_ptr<Node> gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  TensorImpl* impl = t.impl();
  if (impl->grad_fn) return impl->grad_fn;
  auto acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    impl->grad_accumulator = acc;
  }
  return acc;
}

void record(Tensor& out, const std::vector<Tensor>& inputs, const char* name, BackwardFn fn) {
  if (!needs_grad(inputs)) return;
  auto node = std::make_shared<FunctionNode>(name, std::move(fn));
  node->next.reserve(inputs.size());
  for (const Tensor& t : inputs) node->next.push_back(gradient_edge(t));
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

std::vector<Tensor> FunctionNode::apply(const Tensor& grad_out) {
  LVIT_CHECK(fn_ != nullptr,
             "{}: backward through a graph a second time (its saved tensors were freed; pass "
             "retain_graph=true to the first backward)",
             name_);
  return fn_(grad_out, *this);
}

namespace {

// Whether only the engine's one handle references t: no other Tensor shares its TensorImpl or its
// storage, so it may be changed in place or handed on without a copy.
bool engine_owned(const Tensor& t) {
  return t.impl_ptr().use_count() == 1 && t.impl()->storage.use_count() == 1;
}

}  // namespace

std::vector<Tensor> AccumulateGrad::apply(const Tensor& g) {
  auto leaf = leaf_.lock();
  if (!leaf || !g.defined()) return {};
  LVIT_CHECK(g.shape() == leaf->shape, "gradient of shape {} for a leaf of shape {}",
             shape_str(g.shape()), shape_str(leaf->shape));
  if (!leaf->grad) {
    // A gradient that nothing but the engine references (not its TensorImpl, not its storage)
    // becomes the leaf's .grad as it is, as PyTorch's AccumulateGrad does: no copy per parameter
    // and step (with the gradients reset every step, that was one device copy per parameter).
    // Anything else may alias another gradient in flight, so the leaf owns a copy.
    if (g.dtype() == leaf->dtype && engine_owned(g) && g.is_contiguous()) {
      leaf->grad = g.impl_ptr();
      return {};
    }
    Tensor own = g.dtype() == leaf->dtype ? g.clone() : g.to(leaf->dtype);
    if (own.impl() == g.impl()) own = g.clone();
    leaf->grad = own.impl_ptr();
  } else {
    Tensor dst(leaf->grad);
    grad_accumulate_(dst, g);
  }
  return {};
}

namespace {

// Moves into node.partial_grads[i] the gradient already summed for input i where only the
// engine's buffer references it (Node::partial_grad); apply's caller takes them back. An input
// whose node appears twice among the edges (x + x) is not lent: both uses would see it.
void lend_partial_grads(Node& node, std::unordered_map<Node*, Tensor>& buffers) {
  node.partial_grads.clear();
  for (size_t i = 0; i < node.next.size(); ++i) {
    Node* child = node.next[i].get();
    if (!child) continue;
    auto it = buffers.find(child);
    if (it == buffers.end() || !it->second.defined()) continue;
    if (!engine_owned(it->second)) continue;
    if (std::count_if(node.next.begin(), node.next.end(),
                      [child](const auto& e) { return e.get() == child; }) != 1)
      continue;
    node.partial_grads.resize(node.next.size());
    node.partial_grads[i] = std::move(it->second);
    buffers.erase(it);
  }
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad_in, bool retain_graph) {
  LVIT_CHECK(root.defined(), "backward on an undefined tensor");
  LVIT_CHECK(root.requires_grad(), "backward on a tensor that does not require grad");
  Tensor grad = grad_in;
  if (!grad.defined()) {
    LVIT_CHECK(root.numel() == 1, "backward without a gradient needs a one-element root, got {}",
               shape_str(root.shape()));
    grad = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  LVIT_CHECK(grad.shape() == root.shape(), "backward: gradient {} for root {}",
             shape_str(grad.shape()), shape_str(root.shape()));
  std::shared_ptr<Node> start = gradient_edge(root);
  NoGradGuard no_grad;  // backward closures build no graph of their own

  // Count, for every node reachable from the root, how many edges point at it.
  std::unordered_map<Node*, int> deps;
  {
    std::vector<Node*> stack{start.get()};
    std::unordered_map<Node*, bool> seen{{start.get(), true}};
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      for (auto& child : n->next) {
        if (!child) continue;
        ++deps[child.get()];
        if (!seen[child.get()]) {
          seen[child.get()] = true;
          stack.push_back(child.get());
        }
      }
    }
  }

  // Run nodes whose every consumer has delivered its gradient.
  std::unordered_map<Node*, Tensor> buffers;
  std::vector<std::shared_ptr<Node>> ready{start};
  buffers[start.get()] = grad;
  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    Tensor g;
    if (auto it = buffers.find(node.get()); it != buffers.end()) {
      g = std::move(it->second);
      buffers.erase(it);
    }
    std::vector<Tensor> grads;
    if (g.defined()) {
      lend_partial_grads(*node, buffers);
      grads = node->apply(g);
    }
    if (!retain_graph) node->release();
    for (size_t i = 0; i < node->next.size(); ++i) {
      const auto& child = node->next[i];
      if (!child) continue;
      Tensor lent = i < node->partial_grads.size() ? std::move(node->partial_grads[i]) : Tensor();
      const bool has = i < grads.size() && grads[i].defined();
      if (lent.defined()) {  // the child's buffer, lent to the node: take it back
        Tensor& buf = buffers[child.get()];
        buf = !has                             ? std::move(lent)
              : grads[i].impl() == lent.impl() ? grads[i]  // the node added into it
                                               : grad_sum(lent, grads[i]);
      } else if (has) {
        Tensor& buf = buffers[child.get()];
        buf = buf.defined() ? grad_sum(buf, grads[i]) : grads[i];
      }
      if (--deps[child.get()] == 0) ready.push_back(child);
    }
    node->partial_grads.clear();
  }
}

}  // namespace lvit::autograd
