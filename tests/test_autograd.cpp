// The autograd engine: accumulation, graph shapes, pruning, grad mode, retain_graph, deep graphs.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "tests/test_util.h"

using namespace lvit;
using lvit::test::error_message;

namespace {

Tensor vec(const std::vector<double>& v, bool requires_grad = true) {
  Tensor t = Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  t.set_requires_grad(requires_grad);
  return t;
}

std::vector<double> grad_of(const Tensor& t) {
  REQUIRE(t.grad().defined());
  return t.grad().to_vector<double>();
}

}  // namespace

TEST_CASE("a tensor used twice accumulates both uses: d(x*x)/dx = 2x") {
  Tensor x = vec({1.5, -2.0, 0.25});
  Tensor y = ops::sum(ops::mul(x, x));
  CHECK(y.item() == doctest::Approx(1.5 * 1.5 + 4.0 + 0.0625));
  y.backward();
  CHECK(grad_of(x) == std::vector<double>{3.0, -4.0, 0.5});
  // x * x * x through two nodes that share x: 3x^2.
  Tensor x2 = vec({2.0, -1.0});
  ops::sum(ops::mul(ops::mul(x2, x2), x2)).backward();
  CHECK(grad_of(x2) == std::vector<double>{12.0, 3.0});
}

TEST_CASE("diamond graph: gradients from both branches meet") {
  // a -> b = 3a, c = a^2 -> d = b * c = 3 a^3 -> dd/da = 9 a^2.
  Tensor a = vec({1.0, 2.0, -3.0});
  Tensor b = ops::mul_scalar(a, 3.0);
  Tensor c = ops::square(a);
  Tensor d = ops::sum(ops::mul(b, c));
  d.backward();
  CHECK(grad_of(a) == std::vector<double>{9.0, 36.0, 81.0});

  // A diamond whose branches reconverge after several steps: e = exp(a); f = e + 2e; g = f*e.
  Tensor p = vec({0.5, -0.5});
  Tensor e = ops::exp(p);
  Tensor f = ops::add(e, ops::mul_scalar(e, 2.0));  // 3e
  Tensor g = ops::sum(ops::mul(f, e));              // 3 e^2 -> d/dp = 6 e^(2p)
  g.backward();
  auto gp = grad_of(p);
  CHECK(gp[0] == doctest::Approx(6.0 * std::exp(1.0)).epsilon(1e-14));
  CHECK(gp[1] == doctest::Approx(6.0 * std::exp(-1.0)).epsilon(1e-14));
}

TEST_CASE("a backward may add its gradient into the partial sum the engine lends it") {
  // y = 3x through a node that adds 3g into the lent partial gradient of x when there is one.
  bool lent = false;
  auto triple = [&lent](const Tensor& x) {
    Tensor out = ops::mul_scalar(x.detach(), 3.0);
    autograd::record(out, {x}, "TripleBackward", [&lent](const Tensor& g, const autograd::Node& n) {
      Tensor part = n.partial_grad(0);
      lent = part.defined();
      Tensor g3 = ops::mul_scalar(g, 3.0);
      if (!lent) return std::vector<Tensor>{g3};
      autograd::grad_accumulate_(part, g3);
      return std::vector<Tensor>{part};
    });
    return out;
  };
  // x's other consumer (2x) runs first and leaves a gradient only the engine holds: lent.
  Tensor x = vec({1.0, -2.0});
  ops::sum(ops::add(triple(x), ops::mul_scalar(x, 2.0))).backward();
  CHECK(lent);
  CHECK(grad_of(x) == std::vector<double>{5.0, 5.0});
  // x's other use is the add itself, which hands the same tensor to both of its inputs: that
  // gradient is referenced twice, so it is not lent, and the engine sums as usual.
  Tensor z = vec({1.0, -2.0});
  ops::sum(ops::add(triple(z), z)).backward();
  CHECK_FALSE(lent);
  CHECK(grad_of(z) == std::vector<double>{4.0, 4.0});
}

TEST_CASE("a leaf takes an unshared gradient as its .grad, and copies a shared one") {
  // y = 3x through a node whose gradient tensor the test can see (data pointer) and, in the
  // second case, keeps a handle to.
  const void* made = nullptr;
  Tensor kept;
  bool keep = false;
  auto triple = [&](const Tensor& x) {
    Tensor out = ops::mul_scalar(x.detach(), 3.0);
    autograd::record(out, {x}, "TripleBackward", [&](const Tensor& g, const autograd::Node&) {
      Tensor g3 = ops::mul_scalar(g, 3.0);
      made = g3.raw_data();
      if (keep) kept = g3;
      return std::vector<Tensor>{g3};
    });
    return out;
  };
  Tensor x = vec({1.0, -2.0});
  ops::sum(triple(x)).backward();
  CHECK(grad_of(x) == std::vector<double>{3.0, 3.0});
  CHECK(x.grad().raw_data() == made);  // taken over, not copied
  keep = true;
  Tensor z = vec({1.0, -2.0});
  ops::sum(triple(z)).backward();
  CHECK(grad_of(z) == std::vector<double>{3.0, 3.0});
  CHECK(z.grad().raw_data() != made);  // someone else holds it: a copy
  // Writing into the kept tensor leaves the leaf's gradient alone.
  kept.copy_(Tensor::from_vector(std::vector<double>{7.0, 7.0}, {2}));
  CHECK(grad_of(z) == std::vector<double>{3.0, 3.0});
}

TEST_CASE("leaves that do not require grad get none, and are pruned from the graph") {
  Tensor a = vec({1.0, 2.0}, false);
  Tensor b = vec({3.0, 4.0}, false);
  Tensor y = ops::mul(a, b);
  CHECK_FALSE(y.requires_grad());
  CHECK(y.grad_fn() == nullptr);  // no node is created when no input needs a gradient
  CHECK(y.is_leaf());
  CHECK_THROWS_AS(y.backward(Tensor::ones({2}, DType::f64)), Error);

  // Mixed: only w requires grad, so the node's edge to a is null and a gets no .grad.
  Tensor w = vec({5.0, -6.0});
  Tensor z = ops::mul(a, w);
  REQUIRE(z.grad_fn() != nullptr);
  CHECK(z.requires_grad());
  CHECK_FALSE(z.grad_fn()->needs_input_grad(0));
  CHECK(z.grad_fn()->needs_input_grad(1));
  ops::sum(z).backward();
  CHECK_FALSE(a.grad().defined());
  CHECK(grad_of(w) == std::vector<double>{1.0, 2.0});

  // A whole subgraph built from constants records nothing.
  Tensor k = ops::exp(ops::add(a, b));
  CHECK(k.grad_fn() == nullptr);
  Tensor out = ops::sum(ops::mul(k, w));
  out.backward();
  CHECK_FALSE(k.grad().defined());
}

TEST_CASE("NoGradGuard disables recording and nests") {
  Tensor x = vec({1.0, 2.0});
  CHECK(autograd::grad_enabled());
  {
    autograd::NoGradGuard ng;
    CHECK_FALSE(autograd::grad_enabled());
    Tensor y = ops::mul_scalar(x, 2.0);
    CHECK(y.grad_fn() == nullptr);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.to_vector<double>() == std::vector<double>{2.0, 4.0});
    {
      autograd::NoGradGuard inner;
      CHECK_FALSE(autograd::grad_enabled());
    }
    CHECK_FALSE(autograd::grad_enabled());  // the inner guard restores "off", not "on"
  }
  CHECK(autograd::grad_enabled());
  Tensor y = ops::mul_scalar(x, 2.0);
  CHECK(y.grad_fn() != nullptr);
  // Backward closures run under no-grad: the gradient it produces has no history.
  ops::sum(ops::square(x)).backward();
  CHECK(x.grad().grad_fn() == nullptr);
  CHECK_FALSE(x.grad().requires_grad());
}

TEST_CASE("backward twice: error without retain_graph, accumulation with it") {
  Tensor x = vec({1.0, -2.0});
  {
    Tensor y = ops::sum(ops::mul(x, x));
    y.backward();
    CHECK(grad_of(x) == std::vector<double>{2.0, -4.0});
    const std::string msg = error_message([&] { y.backward(); });
    CHECK(msg.find("second time") != std::string::npos);
    CHECK(msg.find("retain_graph") != std::string::npos);
  }
  x.impl()->grad.reset();
  {
    Tensor y = ops::sum(ops::mul(x, x));
    y.backward(Tensor(), /*retain_graph=*/true);
    CHECK(grad_of(x) == std::vector<double>{2.0, -4.0});
    y.backward(Tensor(), /*retain_graph=*/true);
    CHECK(grad_of(x) == std::vector<double>{4.0, -8.0});  // accumulated
    y.backward();                                         // a final one may free the graph
    CHECK(grad_of(x) == std::vector<double>{6.0, -12.0});
    CHECK_THROWS_AS(y.backward(), Error);
  }
}

TEST_CASE("gradients accumulate across separate graphs until reset") {
  Tensor x = vec({1.0, 2.0, 3.0});
  ops::sum(ops::mul_scalar(x, 2.0)).backward();
  ops::sum(ops::mul_scalar(x, 3.0)).backward();
  CHECK(grad_of(x) == std::vector<double>{5.0, 5.0, 5.0});
  // zero_grad: dropping the .grad makes the next backward start from scratch.
  x.impl()->grad.reset();
  CHECK_FALSE(x.grad().defined());
  ops::sum(ops::mul_scalar(x, 3.0)).backward();
  CHECK(grad_of(x) == std::vector<double>{3.0, 3.0, 3.0});
  // The leaf owns its gradient: it is a fresh contiguous tensor, not an alias of a temporary.
  Tensor g = x.grad();
  CHECK(g.is_contiguous());
  CHECK(g.storage() != x.storage());
}

TEST_CASE("a deep chain of 20,000 ops does not overflow the stack") {
  Tensor x = vec({0.5, -1.0});
  Tensor c = Tensor::from_vector<double>({1e-3, 2e-3}, {2});
  Tensor y = x;
  const int depth = 20000;
  for (int i = 0; i < depth; ++i) y = ops::add(y, c);
  auto yv = y.to_vector<double>();
  CHECK(yv[0] == doctest::Approx(0.5 + depth * 1e-3));
  Tensor loss = ops::sum(ops::mul(y, Tensor::from_vector<double>({2.0, -3.0}, {2})));
  loss.backward();
  CHECK(grad_of(x) == std::vector<double>{2.0, -3.0});
}

TEST_CASE("dropping a 200,000-node graph does not recurse through it") {
  // Graph teardown must be as stack-safe as the backward sweep: a recursive chain of node
  // destructors this deep overflows an 8 MiB stack.
  Tensor x = vec({1.0});
  Tensor y = x;
  for (int i = 0; i < 200000; ++i) y = ops::add_scalar(y, 1.0);
  REQUIRE(y.grad_fn() != nullptr);
  std::weak_ptr<autograd::Node> first = y.grad_fn();
  y = Tensor();  // frees the whole chain
  CHECK(first.expired());
  CHECK(x.requires_grad());
}

TEST_CASE("a non-scalar root needs an explicit gradient") {
  Tensor x = vec({1.0, 2.0, 3.0});
  Tensor y = ops::mul_scalar(x, 4.0);
  const std::string msg = error_message([&] { y.backward(); });
  CHECK(msg.find("one-element root") != std::string::npos);
  CHECK_FALSE(x.grad().defined());
  // Wrong gradient shape.
  CHECK_THROWS_AS(y.backward(Tensor::ones({2}, DType::f64)), Error);
  // The graph survives failed calls (they throw before running any node).
  y.backward(Tensor::from_vector<double>({1.0, 0.5, -1.0}, {3}));
  CHECK(grad_of(x) == std::vector<double>{4.0, 2.0, -4.0});
  // A one-element non-scalar root defaults to a gradient of one.
  Tensor z = vec({2.0});
  ops::mul(z, z).backward();
  CHECK(grad_of(z) == std::vector<double>{4.0});
}

TEST_CASE("backward from a leaf, and leaf bookkeeping") {
  Tensor x = vec({1.0, 2.0});
  CHECK(x.is_leaf());
  x.backward(Tensor::from_vector<double>({3.0, 4.0}, {2}));
  CHECK(grad_of(x) == std::vector<double>{3.0, 4.0});

  // Only leaves may change requires_grad; integer tensors may not require grad.
  Tensor y = ops::mul_scalar(x, 2.0);
  CHECK_FALSE(y.is_leaf());
  CHECK_THROWS_AS(y.set_requires_grad(false), Error);
  Tensor i = Tensor::zeros({2}, DType::i64);
  CHECK_THROWS_AS(i.set_requires_grad(true), Error);

  // Every use of one leaf goes through the same accumulator node.
  Tensor u = ops::mul_scalar(x, 1.0), v = ops::mul_scalar(x, 2.0);
  REQUIRE(u.grad_fn());
  REQUIRE(v.grad_fn());
  CHECK(u.grad_fn()->next[0] == v.grad_fn()->next[0]);
  CHECK(std::string(u.grad_fn()->next[0]->name()) == "AccumulateGrad");

  // detach() cuts the history.
  Tensor d = y.detach();
  CHECK(d.grad_fn() == nullptr);
  CHECK_FALSE(d.requires_grad());
  CHECK(d.storage() == y.storage());
}

TEST_CASE("f32 graph: gradient dtype follows the leaf") {
  Tensor x = Tensor::from_vector<float>({1.0f, -2.0f}, {2});
  x.set_requires_grad(true);
  ops::sum(ops::square(x)).backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().dtype() == DType::f32);
  CHECK(x.grad().to_vector<float>() == std::vector<float>{2.0f, -4.0f});
}
