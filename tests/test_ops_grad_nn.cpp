// Gradchecks of the network ops (f64, central differences): cross-entropy, fused softmax
// attention (also against the composed ops) and patchify (also its token layout).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "grad_helpers.h"

using namespace lvit;
using autograd::GradcheckOptions;

using namespace lvit::gradtest;
namespace {

// Reference mean cross-entropy against targets q [B, C], from the definition.
double ce_reference(const std::vector<double>& z, const std::vector<double>& q, int64_t B,
                    int64_t C) {
  double total = 0;
  for (int64_t i = 0; i < B; ++i) {
    double mx = z[i * C];
    for (int64_t j = 1; j < C; ++j) mx = std::max(mx, z[i * C + j]);
    double s = 0;
    for (int64_t j = 0; j < C; ++j) s += std::exp(z[i * C + j] - mx);
    for (int64_t j = 0; j < C; ++j) total -= q[i * C + j] * (z[i * C + j] - mx - std::log(s));
  }
  return total / static_cast<double>(B);
}

std::vector<double> smoothed_onehot(const std::vector<int64_t>& y, int64_t C, double s) {
  std::vector<double> q(y.size() * C, s / static_cast<double>(C));
  for (size_t i = 0; i < y.size(); ++i) q[i * C + y[i]] += 1 - s;
  return q;
}

}  // namespace

TEST_CASE("gradcheck: cross_entropy with hard labels and label smoothing") {
  const int64_t B = 5, C = 7;
  const std::vector<int64_t> y{0, 3, 6, 2, 3};
  std::vector<int32_t> y32(y.begin(), y.end());
  uint64_t seed = 1200;
  for (double s : {0.0, 0.1}) {
    for (DType lt : {DType::i64, DType::i32}) {
      const std::string tag = std::string("smoothing ") + (s > 0 ? "0.1" : "0") + " labels " +
                              std::string(dtype_name(lt));
      Tensor labels =
          lt == DType::i64 ? Tensor::from_vector(y, {B}) : Tensor::from_vector(y32, {B});
      Tensor z = randn({B, C}, seed++);
      expect_grad("cross_entropy " + tag,
                  [labels, s](const std::vector<Tensor>& in) {
                    return ops::cross_entropy(in[0], labels, s);
                  },
                  {z});
      Tensor loss = ops::cross_entropy(z.detach(), labels, s);
      CHECK(loss.shape() == Shape{});
      CHECK(loss.item() ==
            doctest::Approx(ce_reference(z.to_vector<double>(), smoothed_onehot(y, C, s), B, C))
                .epsilon(1e-13));
    }
  }
  Tensor labels = Tensor::from_vector(y, {B});
  Tensor zt = randn({C, B}, seed++);
  expect_grad("cross_entropy of transposed logits",
              [labels](const std::vector<Tensor>& in) {
                return ops::mul_scalar(ops::cross_entropy(ops::transpose(in[0], 0, 1), labels, 0.1),
                                       3.0);
              },
              {zt});
  CHECK_THROWS_AS(ops::cross_entropy(Tensor::zeros({2, 3}, DType::f64),
                                     Tensor::from_vector<int64_t>({0, 3}, {2})),
                  Error);
  CHECK_THROWS_AS(ops::cross_entropy(Tensor::zeros({2, 3}, DType::f64),
                                     Tensor::from_vector<float>({0, 1}, {2})),
                  Error);
}

TEST_CASE("gradcheck: cross_entropy_soft") {
  const int64_t B = 4, C = 6;
  Tensor q;
  {
    autograd::NoGradGuard ng;
    q = ops::softmax(randn({B, C}, 1300, false));  // rows sum to 1
  }
  Tensor z = randn({B, C}, 1301);
  expect_grad("cross_entropy_soft",
              [q](const std::vector<Tensor>& in) { return ops::cross_entropy_soft(in[0], q); },
              {z});
  CHECK(ops::cross_entropy_soft(z.detach(), q).item() ==
        doctest::Approx(ce_reference(z.to_vector<double>(), q.to_vector<double>(), B, C))
            .epsilon(1e-13));
  // One-hot soft targets equal hard labels.
  const std::vector<int64_t> y{5, 0, 2, 2};
  Tensor onehot = Tensor::from_vector(smoothed_onehot(y, C, 0.0), {B, C});
  CHECK(ops::cross_entropy_soft(z.detach(), onehot).item() ==
        doctest::Approx(ops::cross_entropy(z.detach(), Tensor::from_vector(y, {B})).item())
            .epsilon(1e-14));
}

// ---- attention ----

namespace {

// softmax attention composed from the generic ops (the reference for the fused op).
Tensor attention_reference(const Tensor& qkv, int64_t H) {
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3, d = D / H;
  auto head_split = [&](int64_t part) {  // [B, N, D] slice -> [B, H, N, d]
    Tensor t = ops::reshape(ops::slice(qkv, 2, part * D, (part + 1) * D), {B, N, H, d});
    return ops::permute(t, {0, 2, 1, 3});
  };
  Tensor q = head_split(0), k = head_split(1), v = head_split(2);
  Tensor s =
      ops::mul_scalar(ops::matmul(q, k, false, true), 1.0 / std::sqrt(static_cast<double>(d)));
  Tensor o = ops::matmul(ops::softmax(s), v);  // [B, H, N, d]
  return ops::reshape(ops::permute(o, {0, 2, 1, 3}), {B, N, D});
}

}  // namespace

TEST_CASE("softmax_attention: gradcheck and agreement with the composed ops") {
  const int64_t B = 2, N = 5, D = 8, H = 2, d = D / H;
  Tensor qkv = randn({B, N, 3 * D}, 1400);
  expect_grad("softmax_attention",
              [](const std::vector<Tensor>& in) { return ops::softmax_attention(in[0], 2); },
              {qkv});
  Tensor wide = randn({B, N, 3 * D + 4}, 1401);
  expect_grad("softmax_attention of a slice (non-contiguous qkv)",
              [](const std::vector<Tensor>& in) {
                return ops::softmax_attention(ops::slice(in[0], 2, 3, 3 + 24), 2);
              },
              {wide});

  // Forward and input gradient against the composition. Both are f64 evaluations of the same
  // formula in a different order: each output is a sum of ~F = 2dN + 5N operations on values
  // bounded by max|qkv| (scores up to sqrt(d) max|qkv|^2 enter through exp, whose relative
  // error is the absolute error of its argument), so they agree to F u (1 + max|s|) max|qkv|.
  const double m = max_abs(qkv);
  const double F = static_cast<double>(2 * d * N + 5 * N);
  const double max_score = std::sqrt(static_cast<double>(d)) * m * m;
  const double tol = F * kUnitRoundoff * (1 + max_score) * m;
  Tensor a = qkv.detach(), b = qkv.detach().clone();
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor ya = ops::softmax_attention(a, H), yb = attention_reference(b, H);
  REQUIRE(ya.shape() == Shape{B, N, D});
  REQUIRE(yb.shape() == Shape{B, N, D});
  auto va = ya.to_vector<double>(), vb = yb.to_vector<double>();
  for (size_t i = 0; i < va.size(); ++i) CHECK(std::abs(va[i] - vb[i]) <= tol);
  // Gradients for the same upstream gradient r: the backward adds a few times F operations on
  // values scaled by max|r|.
  Tensor r = randn({B, N, D}, 1402, false);
  ya.backward(r);
  yb.backward(r);
  auto ga = a.grad().to_vector<double>(), gb = b.grad().to_vector<double>();
  const double gtol = 4 * tol * max_abs(r) * (1 + max_score);
  for (size_t i = 0; i < ga.size(); ++i) CHECK(std::abs(ga[i] - gb[i]) <= gtol);
  CHECK(max_abs(a.grad()) > 0);

  // Heads are independent: with 2 heads equal to one 1-head attention per channel half.
  Tensor qkv1 = qkv.detach();
  auto whole = ops::softmax_attention(qkv1, H).to_vector<double>();
  for (int64_t h = 0; h < H; ++h) {
    std::vector<Tensor> parts;
    for (int64_t part = 0; part < 3; ++part)
      parts.push_back(ops::slice(qkv1, 2, part * D + h * d, part * D + (h + 1) * d));
    auto one = ops::softmax_attention(ops::concat(parts, 2), 1).to_vector<double>();
    for (int64_t i = 0; i < B * N; ++i)
      for (int64_t c = 0; c < d; ++c)
        CHECK(std::abs(one[i * d + c] - whole[i * D + h * d + c]) <= tol);
  }
  CHECK_THROWS_AS(ops::softmax_attention(Tensor::zeros({1, 2, 9}, DType::f64), 2), Error);
}

// ---- patchify ----

TEST_CASE("patchify: layout and gradcheck") {
  // images [B=2, C=2, H=4, W=6] holding their own flat index; patch 2: a 2 x 3 grid of tokens
  // with C p p = 8 features each.
  const int64_t B = 2, C = 2, Hh = 4, W = 6, p = 2, gh = 2, gw = 3;
  std::vector<double> img(B * C * Hh * W);
  for (size_t i = 0; i < img.size(); ++i) img[i] = static_cast<double>(i);
  Tensor x = Tensor::from_vector(img, {B, C, Hh, W});
  Tensor t = ops::patchify(x, p);
  REQUIRE(t.shape() == Shape{B, gh * gw, C * p * p});
  auto tv = t.to_vector<double>();
  // Token r * gw + c holds the patch at grid row r, column c; feature (ch, py, px) is
  // ch * p * p + py * p + px.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < gh; ++r)
      for (int64_t c = 0; c < gw; ++c)
        for (int64_t ch = 0; ch < C; ++ch)
          for (int64_t py = 0; py < p; ++py)
            for (int64_t px = 0; px < p; ++px) {
              const double want =
                  static_cast<double>(((b * C + ch) * Hh + r * p + py) * W + c * p + px);
              CHECK(tv[(b * gh * gw + r * gw + c) * C * p * p + ch * p * p + py * p + px] == want);
            }
  // Spot values by hand: token 4 = (row 1, col 1) of image 0; feature 5 = (ch 1, py 0, px 1)
  // is pixel (ch 1, y 2, x 3): 1 * 24 + 2 * 6 + 3 = 39. Token 0 starts with pixels 0, 1, 6, 7.
  CHECK(tv[4 * 8 + 5] == 39.0);
  CHECK(std::vector<double>(tv.begin(), tv.begin() + 4) == std::vector<double>{0, 1, 6, 7});

  Tensor xi = randn({B, C, Hh, W}, 1500);
  expect_grad("patchify", [](const std::vector<Tensor>& in) { return ops::patchify(in[0], 2); },
              {xi});
  Tensor nhwc = randn({B, Hh, W, C}, 1501);
  expect_grad("patchify of an NHWC permute",
              [](const std::vector<Tensor>& in) {
                return ops::patchify(ops::permute(in[0], {0, 3, 1, 2}), 2);
              },
              {nhwc});
  CHECK_THROWS_AS(ops::patchify(Tensor::zeros({1, 3, 5, 4}, DType::f64), 2), Error);
}
