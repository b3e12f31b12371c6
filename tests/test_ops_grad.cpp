// Gradchecks of every op's backward (f64, central differences), plus forward checks of the ops
// whose layout or statistics a gradcheck cannot see (patchify, dropout, fused attention).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "grad_helpers.h"

using namespace lvit;
using autograd::GradcheckOptions;

using namespace lvit::gradtest;

TEST_CASE("the derived tolerances catch a 1e-4 relative gradient error") {
  // y = 2x whose backward claims 2.0002: gradcheck must reject it, so the tolerances above are
  // tight enough to see errors far smaller than a wrong term or factor.
  const Fn bad = [](const std::vector<Tensor>& in) {
    Tensor y;
    {
      autograd::NoGradGuard ng;
      y = ops::mul_scalar(in[0], 2.0);
    }
    autograd::record(y, {in[0]}, "BadBackward", [](const Tensor& g, const autograd::Node&) {
      return std::vector<Tensor>{ops::mul_scalar(g, 2.0002)};
    });
    return y;
  };
  const Fn good = [](const std::vector<Tensor>& in) { return ops::mul_scalar(in[0], 2.0); };
  Tensor x = randn({3, 4}, 1600);
  const GradcheckOptions opt = derived_options(bad, {x});
  const autograd::GradcheckResult res = autograd::gradcheck(bad, {x}, opt);
  CHECK_FALSE(res.ok);
  CHECK(res.max_abs_err > 100 * opt.atol);
  CHECK(autograd::gradcheck(good, {x}, derived_options(good, {x})).ok);
}

// ---- elementwise ----

TEST_CASE("gradcheck: broadcasting binary ops") {
  struct Pattern {
    Shape a, b;
  };
  const std::vector<Pattern> patterns = {
      {{3, 4}, {3, 4}}, {{2, 3, 4}, {4}}, {{4}, {2, 3, 4}}, {{2, 1, 4}, {3, 1}},
      {{}, {2, 3}},     {{2, 3}, {}},     {{4, 1}, {1, 5}}, {{2, 3, 1}, {1, 3, 4}},
  };
  using Op = Tensor (*)(const Tensor&, const Tensor&);
  const std::vector<std::pair<const char*, Op>> binops = {
      {"add", ops::add}, {"sub", ops::sub}, {"mul", ops::mul}, {"div", ops::div}};
  uint64_t seed = 100;
  for (const auto& binop : binops) {
    const std::string name = binop.first;
    const Op op = binop.second;
    for (const Pattern& p : patterns) {
      Tensor a = randn(p.a, seed++);
      // Divisors stay away from zero; the others are plain normals.
      Tensor b = name == "div" ? rand_away(p.b, seed++) : randn(p.b, seed++);
      expect_grad(name + " " + shape_str(p.a) + " " + shape_str(p.b),
                  [op](const std::vector<Tensor>& in) { return op(in[0], in[1]); }, {a, b});
    }
    // Non-contiguous operands: a transposed left side, a sliced right side.
    Tensor a = randn({4, 3}, seed++);
    Tensor b = rand_away({2, 4}, seed++);
    expect_grad(name + " non-contiguous",
                [op](const std::vector<Tensor>& in) {
                  return op(ops::transpose(in[0], 0, 1), ops::slice(in[1], 0, 1, 2));
                },
                {a, b});
    // Only one side needs a gradient: the other gets none.
    Tensor c = randn({2, 3}, seed++);
    Tensor d = rand_away({3}, seed++, /*requires_grad=*/false);
    expect_grad(name + " rhs constant",
                [op](const std::vector<Tensor>& in) { return op(in[0], in[1]); }, {c, d});
    Tensor e = randn({3}, seed++, /*requires_grad=*/false);
    Tensor g = rand_away({2, 3}, seed++);
    expect_grad(name + " lhs constant",
                [op](const std::vector<Tensor>& in) { return op(in[0], in[1]); }, {e, g});
  }
}

TEST_CASE("gradcheck: scalar and unary ops") {
  struct Unary {
    const char* name;
    std::function<Tensor(const Tensor&)> fn;
    bool positive;  // needs inputs > 0
  };
  const std::vector<Unary> unary = {
      {"add_scalar", [](const Tensor& x) { return ops::add_scalar(x, -1.75); }, false},
      {"mul_scalar", [](const Tensor& x) { return ops::mul_scalar(x, 2.5); }, false},
      {"neg", [](const Tensor& x) { return ops::neg(x); }, false},
      {"exp", [](const Tensor& x) { return ops::exp(x); }, false},
      {"log", [](const Tensor& x) { return ops::log(x); }, true},
      {"sqrt", [](const Tensor& x) { return ops::sqrt(x); }, true},
      {"square", [](const Tensor& x) { return ops::square(x); }, false},
  };
  uint64_t seed = 200;
  for (const Unary& u : unary) {
    Tensor x = u.positive ? rand_pos({3, 4}, seed++) : randn({3, 4}, seed++);
    expect_grad(u.name, [fn = u.fn](const std::vector<Tensor>& in) { return fn(in[0]); }, {x});
    Tensor xt = u.positive ? rand_pos({4, 3}, seed++) : randn({4, 3}, seed++);
    expect_grad(
        std::string(u.name) + " of a transpose",
        [fn = u.fn](const std::vector<Tensor>& in) { return fn(ops::transpose(in[0], 0, 1)); },
        {xt});
  }
  // A composition through the overloaded operators.
  Tensor a = randn({2, 3}, seed++), b = rand_away({3}, seed++);
  expect_grad(
      "operators",
      [](const std::vector<Tensor>& in) { return -(in[0] * in[1] + 0.5) / in[1] - in[0] * 3.0; },
      {a, b});
}

// ---- reductions ----

TEST_CASE("gradcheck: sum and mean over axes") {
  const std::vector<std::vector<int64_t>> axes_list = {{},     {0},    {1},      {-1},
                                                       {0, 2}, {1, 2}, {0, 1, 2}};
  uint64_t seed = 300;
  for (bool keepdim : {false, true}) {
    for (const auto& axes : axes_list) {
      const std::string tag = shape_str(axes) + (keepdim ? " keepdim" : "");
      Tensor x = randn({2, 3, 4}, seed++);
      expect_grad(
          "sum " + tag,
          [axes, keepdim](const std::vector<Tensor>& in) { return ops::sum(in[0], axes, keepdim); },
          {x});
      Tensor y = randn({2, 3, 4}, seed++);
      expect_grad("mean " + tag,
                  [axes, keepdim](const std::vector<Tensor>& in) {
                    return ops::mean(in[0], axes, keepdim);
                  },
                  {y});
      // A permuted (non-contiguous) input.
      Tensor z = randn({4, 2, 3}, seed++);
      expect_grad("sum of a permute " + tag,
                  [axes, keepdim](const std::vector<Tensor>& in) {
                    return ops::sum(ops::permute(in[0], {1, 2, 0}), axes, keepdim);
                  },
                  {z});
    }
  }
  // Shapes and values of a few reductions.
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(ops::sum(x, {0}).to_vector<double>() == std::vector<double>{5, 7, 9});
  CHECK(ops::sum(x, {1}, true).shape() == Shape{2, 1});
  CHECK(ops::sum(x, {1}, true).to_vector<double>() == std::vector<double>{6, 15});
  CHECK(ops::sum(x).shape() == Shape{});
  CHECK(ops::mean(x).item() == 3.5);
  CHECK(ops::mean(x, {-1}).to_vector<double>() == std::vector<double>{2, 5});
}

TEST_CASE("gradcheck: sum_to and broadcast_to") {
  const std::vector<Shape> targets = {{3, 1}, {4}, {1, 1, 4}, {}, {2, 3, 4}, {2, 1, 4}, {1, 3, 1}};
  uint64_t seed = 400;
  for (const Shape& t : targets) {
    Tensor x = randn({2, 3, 4}, seed++);
    expect_grad("sum_to " + shape_str(t),
                [t](const std::vector<Tensor>& in) { return ops::sum_to(in[0], t); }, {x});
    Tensor xt = randn({4, 3, 2}, seed++);
    expect_grad("sum_to of a permute " + shape_str(t),
                [t](const std::vector<Tensor>& in) {
                  return ops::sum_to(ops::permute(in[0], {2, 1, 0}), t);
                },
                {xt});
  }
  const std::vector<std::pair<Shape, Shape>> bc = {
      {{3, 1}, {2, 3, 4}}, {{}, {2, 2}}, {{4}, {3, 4}}, {{2, 1, 4}, {2, 3, 4}}, {{3}, {3}}};
  for (const auto& [from, to_shape] : bc) {
    const Shape to = to_shape;
    Tensor x = randn(from, seed++);
    expect_grad("broadcast_to " + shape_str(from) + " -> " + shape_str(to),
                [to](const std::vector<Tensor>& in) { return ops::broadcast_to(in[0], to); }, {x});
  }
  Tensor v = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(ops::sum_to(v, {3}).to_vector<double>() == std::vector<double>{5, 7, 9});
  CHECK(ops::sum_to(v, {2, 1}).to_vector<double>() == std::vector<double>{6, 15});
  CHECK(
      ops::broadcast_to(Tensor::from_vector<double>({1, 2}, {2, 1}), {2, 3}).to_vector<double>() ==
      std::vector<double>{1, 1, 1, 2, 2, 2});
}

// ---- shape ops ----

TEST_CASE("gradcheck: reshape, permute, transpose, contiguous") {
  uint64_t seed = 500;
  Tensor x = randn({2, 3, 4}, seed++);
  expect_grad("reshape",
              [](const std::vector<Tensor>& in) {
                return ops::reshape(in[0], {4, -1});
              },
              {x});
  Tensor xt = randn({4, 3, 2}, seed++);
  expect_grad("reshape of a transpose (copies)",
              [](const std::vector<Tensor>& in) {
                return ops::reshape(ops::transpose(in[0], 0, 2), {6, 4});
              },
              {xt});
  Tensor p = randn({2, 3, 4}, seed++);
  expect_grad("permute",
              [](const std::vector<Tensor>& in) {
                return ops::permute(in[0], {2, 0, 1});
              },
              {p});
  Tensor p2 = randn({2, 3, 4}, seed++);
  expect_grad("permute of a permute",
              [](const std::vector<Tensor>& in) {
                return ops::permute(ops::permute(in[0], {1, 2, 0}), {2, 0, 1});
              },
              {p2});
  Tensor t = randn({3, 5}, seed++);
  expect_grad("transpose",
              [](const std::vector<Tensor>& in) { return ops::transpose(in[0], -1, 0); }, {t});
  Tensor c = randn({3, 4}, seed++);
  expect_grad("contiguous of a transpose",
              [](const std::vector<Tensor>& in) {
                Tensor y = ops::contiguous(ops::transpose(in[0], 0, 1));
                REQUIRE(y.is_contiguous());
                return ops::mul(y, y);
              },
              {c});
  Tensor c2 = randn({3, 4}, seed++);
  expect_grad("contiguous of a contiguous tensor",
              [](const std::vector<Tensor>& in) { return ops::square(ops::contiguous(in[0])); },
              {c2});
}

TEST_CASE("gradcheck: slice, concat, split") {
  uint64_t seed = 600;
  Tensor x = randn({3, 5, 2}, seed++);
  expect_grad("slice dim 1",
              [](const std::vector<Tensor>& in) { return ops::slice(in[0], 1, 1, 4); }, {x});
  Tensor x0 = randn({3, 5, 2}, seed++);
  expect_grad("slice dim 0",
              [](const std::vector<Tensor>& in) { return ops::slice(in[0], 0, 2, 3); }, {x0});
  Tensor xt = randn({4, 6}, seed++);
  expect_grad("slice of a transpose",
              [](const std::vector<Tensor>& in) {
                return ops::slice(ops::transpose(in[0], 0, 1), 0, 2, 5);  // rows 2..4 of x^T
              },
              {xt});
  Tensor xs = randn({4, 6}, seed++);
  expect_grad("slice of a slice, through another op",
              [](const std::vector<Tensor>& in) {
                return ops::exp(ops::slice(ops::slice(in[0], 1, 1, 5), 0, 1, 3));
              },
              {xs});

  Tensor a = randn({2, 1, 3}, seed++), b = randn({2, 3, 3}, seed++), c = randn({3, 2}, seed++);
  expect_grad("concat dim 1 (three inputs, one transposed)",
              [](const std::vector<Tensor>& in) {
                Tensor ct = ops::reshape(ops::transpose(in[2], 0, 1), {2, 1, 3});
                return ops::concat({in[0], in[1], ct}, 1);
              },
              {a, b, c});
  Tensor d = randn({2, 4}, seed++), e = randn({1, 4}, seed++, /*requires_grad=*/false);
  Tensor f = randn({3, 4}, seed++);
  expect_grad("concat dim 0 with a constant input",
              [](const std::vector<Tensor>& in) {
                return ops::concat({in[0], in[1], in[2]}, 0);
              },
              {d, e, f});
  Tensor g = randn({3, 4}, seed++);
  expect_grad("concat of a tensor with itself",
              [](const std::vector<Tensor>& in) {
                return ops::concat({in[0], ops::mul_scalar(in[0], -2.0)}, -1);
              },
              {g});

  Tensor s = randn({2, 3, 7}, seed++);
  expect_grad("split",
              [](const std::vector<Tensor>& in) {
                std::vector<Tensor> parts = ops::split(in[0], {2, 4, 1}, -1);
                REQUIRE(parts.size() == 3);
                // Each piece through a different op, so every piece's gradient is distinct.
                return ops::concat({ops::reshape(ops::square(parts[0]), {-1}),
                                    ops::reshape(ops::mul_scalar(parts[1], 3.0), {-1}),
                                    ops::reshape(ops::exp(parts[2]), {-1})},
                                   0);
              },
              {s});
  Tensor s2 = randn({6, 2}, seed++);
  expect_grad("split of a transpose, one piece unused",
              [](const std::vector<Tensor>& in) {
                std::vector<Tensor> parts = ops::split(ops::transpose(in[0], 0, 1), {1, 3, 2}, 1);
                return ops::mul(parts[0], ops::sum(parts[2], {1}, true));
              },
              {s2});
  std::vector<Tensor> sp =
      ops::split(Tensor::from_vector<double>({0, 1, 2, 3, 4, 5}, {6}), {4, 2}, 0);
  CHECK(sp[0].to_vector<double>() == std::vector<double>{0, 1, 2, 3});
  CHECK(sp[1].to_vector<double>() == std::vector<double>{4, 5});
}

// ---- matrix products ----

TEST_CASE("gradcheck: matmul") {
  const int64_t M = 3, K = 4, N = 5;
  uint64_t seed = 700;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const std::string tag = std::string(ta ? "A^T" : "A") + (tb ? " B^T" : " B");
      const Shape as = ta ? Shape{K, M} : Shape{M, K};
      const Shape bs = tb ? Shape{N, K} : Shape{K, N};
      Tensor a = randn(as, seed++), b = randn(bs, seed++);
      auto fn = [ta, tb](const std::vector<Tensor>& in) {
        return ops::matmul(in[0], in[1], ta, tb);
      };
      expect_grad("matmul " + tag, fn, {a, b});
      Tensor y = ops::matmul(a.detach(), b.detach(), ta, tb);
      CHECK(y.shape() == Shape{M, N});
      // Forward against the definition.
      auto av = a.to_vector<double>(), bv = b.to_vector<double>(), yv = y.to_vector<double>();
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k)
            s += av[ta ? k * M + i : i * K + k] * bv[tb ? j * K + k : k * N + j];
          CHECK(yv[i * N + j] == doctest::Approx(s).epsilon(1e-13));
        }

      Tensor ba = randn({2, 3, as[0], as[1]}, seed++), bb = randn({2, 3, bs[0], bs[1]}, seed++);
      expect_grad("batched matmul " + tag, fn, {ba, bb});
    }
  }
  // 3-D a with a shared 2-D b (plain and transposed).
  for (bool tb : {false, true}) {
    Tensor a = randn({2, 3, K}, seed++), b = randn(tb ? Shape{N, K} : Shape{K, N}, seed++);
    expect_grad(
        std::string("3-D a, shared 2-D b") + (tb ? "^T" : ""),
        [tb](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1], false, tb); },
        {a, b});
  }
  // Non-contiguous operands.
  Tensor a = randn({K, M}, seed++), b = randn({2, N, K}, seed++);
  expect_grad("matmul of transposed views",
              [](const std::vector<Tensor>& in) {
                Tensor bt = ops::slice(ops::transpose(in[1], 1, 2), 0, 1, 2);  // [1, K, N]
                return ops::matmul(ops::reshape(ops::transpose(in[0], 0, 1), {1, 3, 4}), bt);
              },
              {a, b});
  CHECK_THROWS_AS(ops::matmul(Tensor::zeros({2, 3}, DType::f64), Tensor::zeros({4, 5}, DType::f64)),
                  Error);
}

TEST_CASE("gradcheck: linear") {
  uint64_t seed = 800;
  Tensor x = randn({4, 5}, seed++), w = randn({3, 5}, seed++), b = randn({3}, seed++);
  expect_grad("linear with bias",
              [](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1], in[2]); },
              {x, w, b});
  Tensor x2 = randn({4, 5}, seed++), w2 = randn({3, 5}, seed++);
  expect_grad("linear without bias",
              [](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1]); }, {x2, w2});
  Tensor x3 = randn({2, 3, 5}, seed++), w3 = randn({4, 5}, seed++), b3 = randn({4}, seed++);
  expect_grad("linear with 3-D input",
              [](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1], in[2]); },
              {x3, w3, b3});
  Tensor x4 = randn({5, 4}, seed++), w4 = randn({5, 3}, seed++), b4 = randn({3}, seed++);
  expect_grad("linear of transposed x and w",
              [](const std::vector<Tensor>& in) {
                return ops::linear(ops::transpose(in[0], 0, 1), ops::transpose(in[1], 0, 1), in[2]);
              },
              {x4, w4, b4});
  Tensor x5 = randn({4, 5}, seed++, false), w5 = randn({3, 5}, seed++), b5 = randn({3}, seed++);
  expect_grad("linear, constant input",
              [](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1], in[2]); },
              {x5, w5, b5});
  // Forward: linear(x, w, b) == x w^T + b.
  Tensor ref = ops::add(ops::matmul(x.detach(), w.detach(), false, true), b.detach());
  auto yv = ops::linear(x.detach(), w.detach(), b.detach()).to_vector<double>();
  auto rv = ref.to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) CHECK(yv[i] == doctest::Approx(rv[i]).epsilon(1e-13));
}

// ---- normalisation and activations ----

TEST_CASE("gradcheck: layer_norm") {
  uint64_t seed = 900;
  auto weight = [&](int64_t D) {
    auto v = normals(D, seed++);
    for (double& x : v) x = 1.0 + 0.3 * x;
    return leaf(v, {D}, true);
  };
  Tensor x = randn({2, 3, 8}, seed++), w = weight(8), b = randn({8}, seed++);
  auto fn = [](const std::vector<Tensor>& in) { return ops::layer_norm(in[0], in[1], in[2]); };
  expect_grad("layer_norm x, weight, bias", fn, {x, w, b});
  Tensor xt = randn({8, 6}, seed++), wt = weight(8), bt = randn({8}, seed++);
  expect_grad("layer_norm of a transpose",
              [](const std::vector<Tensor>& in) {
                return ops::layer_norm(ops::transpose(in[0], 0, 1), in[1], in[2]);
              },
              {xt, wt, bt});
  Tensor xc = randn({3, 5}, seed++), wc = weight(5), bc = randn({5}, seed++, false);
  expect_grad("layer_norm, constant bias", fn, {xc, wc, bc});
  // x's other use (2x) delivers its gradient first, so the engine lends it to the LayerNorm
  // backward, which adds x's gradient into it in place (Node::partial_grad).
  expect_grad("layer_norm in a residual, 2x + layer_norm(x)",
              [](const std::vector<Tensor>& in) {
                return ops::add(ops::layer_norm(in[0], in[1], in[2]), ops::mul_scalar(in[0], 2.0));
              },
              {x, w, b});
  // Forward: zero mean and unit variance (up to eps) before the affine part.
  Tensor ones = Tensor::ones({8}, DType::f64), zeros = Tensor::zeros({8}, DType::f64);
  auto y = ops::layer_norm(x.detach(), ones, zeros).to_vector<double>();
  for (int r = 0; r < 6; ++r) {
    double m = 0, v = 0;
    for (int j = 0; j < 8; ++j) m += y[r * 8 + j] / 8;
    for (int j = 0; j < 8; ++j) v += (y[r * 8 + j] - m) * (y[r * 8 + j] - m) / 8;
    CHECK(std::abs(m) < 1e-14);
    CHECK(v == doctest::Approx(1.0).epsilon(1e-5));  // var / (var + 1e-6)
  }
}

TEST_CASE("gradcheck: gelu and softmax") {
  uint64_t seed = 1000;
  Tensor x = randn({3, 5}, seed++);
  expect_grad("gelu", [](const std::vector<Tensor>& in) { return ops::gelu(in[0]); }, {x});
  Tensor xt = randn({5, 3}, seed++);
  expect_grad("gelu of a transpose",
              [](const std::vector<Tensor>& in) { return ops::gelu(ops::transpose(in[0], 0, 1)); },
              {xt});
  Tensor s = randn({2, 3, 5}, seed++);
  expect_grad("softmax", [](const std::vector<Tensor>& in) { return ops::softmax(in[0]); }, {s});
  Tensor st = randn({5, 4}, seed++);
  expect_grad(
      "softmax of a transpose",
      [](const std::vector<Tensor>& in) { return ops::softmax(ops::transpose(in[0], 0, 1)); },
      {st});
  // Forward values: GELU(1) = Phi(1), rows of softmax sum to 1 and are shift invariant.
  CHECK(ops::gelu(Tensor::scalar(1.0, DType::f64)).item() ==
        doctest::Approx(0.5 * (1 + std::erf(1 / std::sqrt(2.0)))).epsilon(1e-15));
  auto p = ops::softmax(s.detach()).to_vector<double>();
  auto q = ops::softmax(ops::add_scalar(s.detach(), 100.0)).to_vector<double>();
  for (int r = 0; r < 6; ++r) {
    double sum = 0;
    for (int j = 0; j < 5; ++j) sum += p[r * 5 + j];
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-14));
  }
  for (size_t i = 0; i < p.size(); ++i) CHECK(p[i] == doctest::Approx(q[i]).epsilon(1e-12));
}

// ---- dropout / drop path ----

TEST_CASE("gradcheck: dropout and drop_path in training mode") {
  // The generator is created inside f, so every evaluation draws the same mask.
  Tensor x = randn({4, 6}, 1100);
  expect_grad("dropout",
              [](const std::vector<Tensor>& in) {
                Generator g(5);
                return ops::dropout(in[0], 0.3, true, g);
              },
              {x});
  Tensor xt = randn({6, 4}, 1101);
  expect_grad("dropout of a transpose",
              [](const std::vector<Tensor>& in) {
                Generator g(5);
                return ops::dropout(ops::transpose(in[0], 0, 1), 0.5, true, g);
              },
              {xt});
  Tensor d = randn({6, 2, 3}, 1102);
  expect_grad("drop_path",
              [](const std::vector<Tensor>& in) {
                Generator g(5);
                return ops::drop_path(in[0], 0.4, true, g);
              },
              {d});
}

TEST_CASE("dropout: kept fraction, scaling, mask reuse in backward, eval identity") {
  const int64_t n = 200000;
  const double p = 0.3;
  Tensor x = Tensor::ones({n}, DType::f32);
  Generator g(11);
  Tensor y = ops::dropout(x, p, true, g);
  CHECK(g.offset() == 1);
  auto v = y.to_vector<float>();
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  int64_t kept = 0;
  double sum = 0;
  int64_t bad_values = 0;
  for (float e : v) {
    kept += e != 0.0f;
    bad_values += e != 0.0f && e != scale;  // kept values are scaled by exactly 1 / (1 - p)
    sum += e;
  }
  CHECK(bad_values == 0);
  // Binomial: the kept fraction is 1 - p within 5 standard deviations sqrt(p (1 - p) / n);
  // so is the mean output (1 in expectation) in units of the scale.
  const double sd = std::sqrt(p * (1 - p) / n);
  CHECK(std::abs(static_cast<double>(kept) / n - (1 - p)) < 5 * sd);
  CHECK(std::abs(sum / n - 1.0) < 5 * sd * scale);
  // The mask is the documented one: element i is kept iff uniform(seed, offset 0, i) >= p.
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i)
    mismatches += (v[i] != 0.0f) != (Philox::uniform(11, 0, i) >= static_cast<float>(p));
  CHECK(mismatches == 0);
  // Also for probabilities whose threshold p 2^24 is not an integer (the kernel compares the
  // word's 24 bits with its ceiling).
  for (double q : {0.1, 1.0 / 3.0, 0.5, 0.9}) {
    Generator gq(21);
    const auto vq = ops::dropout(x, q, true, gq).to_vector<float>();
    int64_t off = 0;
    for (int64_t i = 0; i < n; ++i)
      off += (vq[i] != 0.0f) != (Philox::uniform(21, 0, i) >= static_cast<float>(q));
    CHECK_MESSAGE(off == 0, "p = " << q);
  }

  // Same generator state, same mask; the next call gets a fresh offset and a new mask.
  Generator g2(11);
  CHECK(ops::dropout(x, p, true, g2).to_vector<float>() == v);
  CHECK(ops::dropout(x, p, true, g2).to_vector<float>() != v);

  // The backward regenerates the same mask: d sum(dropout(x)) / dx = mask * scale = y for x = 1.
  Tensor xg = Tensor::ones({1000}, DType::f64);
  xg.set_requires_grad(true);
  Generator g3(12);
  Tensor yg = ops::dropout(xg, p, true, g3);
  ops::sum(yg).backward();
  CHECK(xg.grad().to_vector<double>() == yg.to_vector<double>());

  // Eval mode and p = 0 are the identity and draw nothing.
  Generator ge(13);
  Tensor xe = Tensor::from_vector<double>({1.5, -2.0, 3.0}, {3});
  Tensor ye = ops::dropout(xe, 0.5, false, ge);
  CHECK(ye.to_vector<double>() == xe.to_vector<double>());
  CHECK(ops::dropout(xe, 0.0, true, ge).to_vector<double>() == xe.to_vector<double>());
  CHECK(ops::drop_path(xe, 0.5, false, ge).to_vector<double>() == xe.to_vector<double>());
  CHECK(ge.offset() == 0);
  CHECK_THROWS_AS(ops::dropout(xe, 1.0, true, ge), Error);
  CHECK_THROWS_AS(ops::dropout(xe, -0.1, true, ge), Error);
  // Below 1 as a double but 1 as the float the masks compare against (keep_threshold would wrap).
  CHECK_THROWS_AS(ops::dropout(xe, 1.0 - 1e-9, true, ge), Error);
  CHECK_THROWS_AS(ops::drop_path(xe, 1.0 - 1e-9, true, ge), Error);
  CHECK_THROWS_AS(ops::add_dropout(xe, xe, 1.0 - 1e-9, true, ge), Error);
  CHECK_NOTHROW(ops::dropout(xe, 1.0 - 1e-7, true, ge));
}

// The masks are uncorrelated: between neighbouring elements (inside a Philox block of four
// words and across blocks), between rows of a [M, 384] activation, and between the masks of
// consecutive calls (offsets), which the model's dropout sites and steps draw in sequence.
TEST_CASE("dropout masks: no correlation between elements, rows or consecutive calls") {
  const int64_t n = int64_t{1} << 20;
  const double p = 0.1;
  Tensor x = Tensor::ones({n}, DType::f32);
  Generator g(5);
  std::vector<std::vector<float>> masks;
  for (int k = 0; k < 3; ++k) masks.push_back(ops::dropout(x, p, true, g).to_vector<float>());
  // Pearson correlation of keep(a, i) and keep(b, i + shift) over i.
  auto corr = [&](int a, int b, int64_t shift) {
    double sa = 0, sb = 0, sab = 0;
    const int64_t m = n - shift;
    for (int64_t i = 0; i < m; ++i) {
      const double u = masks[a][i] != 0.f, v = masks[b][i + shift] != 0.f;
      sa += u;
      sb += v;
      sab += u * v;
    }
    const double ma = sa / m, mb = sb / m;
    return (sab / m - ma * mb) / std::sqrt(ma * (1 - ma) * mb * (1 - mb));
  };
  const double bound = 5 / std::sqrt(static_cast<double>(n));  // 5 standard errors
  for (int64_t shift : {1, 2, 3, 4, 5, 8, 384}) {
    INFO("shift " << shift);
    CHECK(std::abs(corr(0, 0, shift)) < bound);
  }
  for (auto [a, b] : {std::pair{0, 1}, std::pair{1, 2}, std::pair{0, 2}})
    for (int64_t shift : {0, 1, 4}) {
      INFO("calls " << a << ", " << b << ", shift " << shift);
      CHECK(std::abs(corr(a, b, shift)) < bound);
    }
}

TEST_CASE("drop_path: whole samples dropped, kept fraction and scaling") {
  const int64_t B = 20000, F = 6;
  const double p = 0.25;
  Generator g(21);
  auto v = ops::drop_path(Tensor::ones({B, 2, 3}, DType::f32), p, true, g).to_vector<float>();
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  int64_t kept = 0;
  for (int64_t b = 0; b < B; ++b) {
    const float first = v[b * F];
    REQUIRE((first == 0.0f || first == scale));
    for (int64_t j = 1; j < F; ++j) REQUIRE(v[b * F + j] == first);  // one decision per sample
    kept += first != 0.0f;
    // One uniform per sample: sample b is kept iff uniform(seed, offset 0, b) >= p.
    REQUIRE((first != 0.0f) == (Philox::uniform(21, 0, b) >= static_cast<float>(p)));
  }
  const double sd = std::sqrt(p * (1 - p) / B);
  CHECK(std::abs(static_cast<double>(kept) / B - (1 - p)) < 5 * sd);
}

// ---- losses ----
