// Hydra attention: the kernel against the definition written out here (1, 2 and 4 branches),
// gradients against finite differences (also through the max(norm, eps) clamp of an all-zero
// q or k), the error for a branch count that does not divide D, HydraViT models (all blocks
// Hydra, and the mixed model with softmax in the first blocks) and the PyTorch golden files
// (tests/data/golden_hydra*.safetensors, made by tests/data/make_golden.py).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "core/rng.h"
#include "models/nn/linear_attention.h"
#include "models/vit.h"
#include "ops/hydra.h"
#include "ops/ops.h"

using namespace lvit;

namespace {

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::f64) {
  std::vector<double> v(shape_numel(s));
  for (size_t i = 0; i < v.size(); ++i) v[i] = philox_normal(seed, 0, i);
  return Tensor::from_vector(v, s).to(dt);
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}
double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// The definition (DESIGN.md) with loops in f64: per branch of D / branches channels,
// phi(x) = x / max(||x||, 1e-6); kv = sum_t phi(k_t) * v_t; o_t = phi(q_t) * kv.
std::vector<double> hydra_by_definition(const Tensor& qkv, int64_t branches) {
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3;
  const int64_t C = D / branches;
  const std::vector<double> x = qkv.to_vector<double>();
  auto phi = [&](int64_t b, int64_t t, int64_t part, int64_t c) {
    const int64_t c0 = c / C * C;
    double s = 0;
    for (int64_t e = c0; e < c0 + C; ++e)
      s += x[(b * N + t) * 3 * D + part * D + e] * x[(b * N + t) * 3 * D + part * D + e];
    return x[(b * N + t) * 3 * D + part * D + c] / std::max(std::sqrt(s), 1e-6);
  };
  std::vector<double> out(B * N * D);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < D; ++c) {
      double kv = 0;
      for (int64_t t = 0; t < N; ++t) kv += phi(b, t, 1, c) * x[(b * N + t) * 3 * D + 2 * D + c];
      for (int64_t t = 0; t < N; ++t) out[(b * N + t) * D + c] = phi(b, t, 0, c) * kv;
    }
  return out;
}

// qkv [2, 5, 3 D] with token 2's q and token 3's k all zeros (norm 0 < eps: the clamp branch).
Tensor qkv_with_zero_rows(int64_t D, uint64_t seed) {
  std::vector<double> v = randn({2, 5, 3 * D}, seed).to_vector<double>();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t c = 0; c < D; ++c) {
      v[(b * 5 + 2) * 3 * D + c] = 0;      // q of token 2
      v[(b * 5 + 3) * 3 * D + D + c] = 0;  // k of token 3
    }
  return Tensor::from_vector(v, {2, 5, 3 * D});
}

}  // namespace

TEST_CASE("hydra: matches the definition for 1, 2 and 4 branches") {
  Tensor qkv = randn({2, 9, 3 * 16}, 3);
  for (int64_t br : {1, 2, 4}) {
    INFO("branches " << br);
    const std::vector<double> ref = hydra_by_definition(qkv, br);
    CHECK(max_abs_diff(ops::hydra_attention(qkv, br).to_vector<double>(), ref) <
          1e-13 * max_abs(ref));
  }
  // One branch is Bolya et al.'s Hydra: phi normalises each token's full D-vector.
  Tensor one = randn({1, 3, 3 * 4}, 4);
  const std::vector<double> x = one.to_vector<double>();
  std::vector<double> kv(4, 0.0);
  for (int64_t t = 0; t < 3; ++t) {
    const double* k = &x[t * 12 + 4];
    const double nk = std::sqrt(k[0] * k[0] + k[1] * k[1] + k[2] * k[2] + k[3] * k[3]);
    for (int64_t c = 0; c < 4; ++c) kv[c] += k[c] / nk * x[t * 12 + 8 + c];
  }
  const std::vector<double> y = ops::hydra_attention(one, 1).to_vector<double>();
  for (int64_t t = 0; t < 3; ++t) {
    const double* q = &x[t * 12];
    const double nq = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    for (int64_t c = 0; c < 4; ++c)
      CHECK(y[t * 4 + c] == doctest::Approx(q[c] / nq * kv[c]).epsilon(1e-13));
  }
}

TEST_CASE("hydra: gradcheck for 1, 2 and 4 branches") {
  for (int64_t br : {1, 2, 4}) {
    INFO("branches " << br);
    Tensor qkv = randn({2, 5, 3 * 8}, 10 + br);
    qkv.set_requires_grad(true);
    auto r = autograd::gradcheck(
        [&](const std::vector<Tensor>& in) { return ops::hydra_attention(in[0], br); }, {qkv});
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("hydra: an all-zero q or k takes the eps clamp, in forward and backward") {
  for (int64_t br : {1, 2}) {
    INFO("branches " << br);
    const int64_t D = 8;
    Tensor qkv = qkv_with_zero_rows(D, 20 + br);
    const std::vector<double> y = ops::hydra_attention(qkv, br).to_vector<double>();
    CHECK(max_abs_diff(y, hydra_by_definition(qkv, br)) < 1e-13 * max_abs(y));
    for (int64_t c = 0; c < D; ++c) CHECK(y[2 * D + c] == 0.0);  // phi(0) = 0
    qkv.set_requires_grad(true);
    // Steps of 1e-7 keep the perturbed zero rows below eps = 1e-6, where phi(x) = x / eps.
    autograd::GradcheckOptions opt;
    opt.eps = 1e-7;
    auto r = autograd::gradcheck(
        [&](const std::vector<Tensor>& in) { return ops::hydra_attention(in[0], br); }, {qkv}, opt);
    INFO(r.report);
    CHECK(r.ok);
    // On the clamp branch d o / d q = kv / eps: a gradient of order 1e6, not 0 or NaN.
    std::vector<double> gq = qkv.grad().to_vector<double>();
    CHECK(std::abs(gq[2 * 3 * D]) > 1e3);
  }
}

TEST_CASE("hydra: branch counts that do not divide D are user errors") {
  Tensor qkv = randn({1, 4, 3 * 8}, 1, DType::f32);
  CHECK_THROWS_WITH_AS(ops::hydra_attention(qkv, 3),
                       "hydra attention: 3 branches do not divide the width D = 8", UserError);
  CHECK_THROWS_AS(ops::hydra_attention(qkv, 0), UserError);
  ViTConfig cfg = preset_config("hydra-micro");
  cfg.dim = 32;
  cfg.num_heads = 4;
  cfg.hydra_branches = 5;
  CHECK_THROWS_WITH_AS(ViT(cfg, 0), "--hydra-branches 5 does not divide --dim 32", UserError);
}

TEST_CASE("HydraViT: all-Hydra and mixed models run forward/backward with timm's names") {
  ViTConfig cfg = preset_config("hydra-micro");
  cfg.image_size = 16;
  cfg.dim = 32;
  cfg.depth = 2;
  cfg.num_heads = 4;
  cfg.num_classes = 10;
  cfg.hydra_branches = 2;
  ViTConfig base = cfg;
  base.attention_type = "softmax";
  ViT softmax_model(base, 9);
  for (int64_t layers : {-1, 1}) {
    INFO("hydra_layers " << layers);
    cfg.hydra_layers = layers;
    ViT model(cfg, 9);
    // Hydra adds no parameters: same names, shapes and count as the softmax model.
    auto a = model.named_parameters(), b = softmax_model.named_parameters();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].first == b[i].first);
      CHECK(a[i].second.shape() == b[i].second.shape());
    }
    CHECK(model.num_parameters() == softmax_model.num_parameters());
    // Block 1 is Hydra in both; block 0 only when every layer is.
    CHECK(std::dynamic_pointer_cast<nn::HydraAttention>(model.blocks[1]->attn) != nullptr);
    if (layers == 1)
      CHECK(std::dynamic_pointer_cast<nn::SoftmaxAttention>(model.blocks[0]->attn) != nullptr);
    else
      CHECK(std::dynamic_pointer_cast<nn::HydraAttention>(model.blocks[0]->attn) != nullptr);

    Tensor x = randn({2, 3, 16, 16}, 5, DType::f32);
    Tensor logits = model.forward(x);
    CHECK(logits.shape() == Shape{2, 10});
    Tensor loss = ops::cross_entropy(logits, Tensor::from_vector<int64_t>({4, 2}, {2}), 0.1);
    CHECK(std::isfinite(loss.item()));
    loss.backward();
    for (auto& [name, p] : model.named_parameters()) {
      INFO(name);
      REQUIRE(p.grad().defined());
      CHECK(p.grad().shape() == p.shape());
    }
  }
}

// The whole-model comparison against PyTorch (logits, loss, every gradient and three AdamW
// steps) for this attention type is in tests/test_golden.cpp.
