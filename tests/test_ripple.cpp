// Ripple attention: the stage weights, both kernels against the definition written out here,
// gradients (qkv and stage logits) against finite differences, dense vs linear-time agreement in
// f32, S = 1 against plain linear attention, the error messages, the RippleViT model and the
// PyTorch golden file (tests/data/golden_ripple.safetensors, made by tests/data/make_golden.py).
#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "core/rng.h"
#include "models/nn/linear_attention.h"
#include "models/vit.h"
#include "ops/ops.h"
#include "ops/ripple.h"

using namespace lvit;
using ops::RippleImpl;

namespace {

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::f64, double scale = 1.0) {
  std::vector<double> v(shape_numel(s));
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * philox_normal(seed, 0, i);
  return Tensor::from_vector(v, s).to(dt);
}

// Random logits around the init (so alpha_s differ and alpha_s - alpha_{s+1} has both signs).
Tensor rand_logits(int64_t H, int64_t S, uint64_t seed, DType dt = DType::f64) {
  if (S == 1) return Tensor();
  std::vector<double> init = ops::ripple_init_logits(H, S, DType::f64).to_vector<double>();
  for (size_t i = 0; i < init.size(); ++i) init[i] += 0.75 * philox_normal(seed, 7, i);
  return Tensor::from_vector(init, {H, S - 1}).to(dt);
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

// The definition (DESIGN.md), written out with loops in f64: o_i = sum_j alpha_lambda(i,j)
// phi(q_i).phi(k_j) v_j / (sum_j alpha_lambda(i,j) phi(q_i).phi(k_j) + 1e-6), the level found
// by its definition (smallest s with the same floor(r / 2^s) and floor(c / 2^s)).
std::vector<double> ripple_by_definition(const Tensor& qkv, const std::vector<double>& alpha,
                                         int64_t H, int64_t S, int64_t g) {
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3, d = D / H;
  const std::vector<double> x = qkv.to_vector<double>();
  auto phi = [](double t) { return t > 0 ? t + 1 : std::exp(t); };
  auto stage = [&](int64_t i, int64_t j) -> int64_t {
    if (i == 0 || j == 0) return S - 1;
    const int64_t ri = (i - 1) / g, ci = (i - 1) % g, rj = (j - 1) / g, cj = (j - 1) % g;
    int64_t s = 0;
    while ((ri >> s) != (rj >> s) || (ci >> s) != (cj >> s)) ++s;
    return std::min(s, S - 1);
  };
  std::vector<double> out(B * N * D);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        std::vector<double> num(d, 0.0);
        double den = 0;
        for (int64_t j = 0; j < N; ++j) {
          double a = 0;
          for (int64_t c = 0; c < d; ++c)
            a += phi(x[(b * N + i) * 3 * D + h * d + c]) *
                 phi(x[(b * N + j) * 3 * D + D + h * d + c]);
          a *= alpha[h * S + stage(i, j)];
          den += a;
          for (int64_t c = 0; c < d; ++c) num[c] += a * x[(b * N + j) * 3 * D + 2 * D + h * d + c];
        }
        for (int64_t c = 0; c < d; ++c) out[(b * N + i) * D + h * d + c] = num[c] / (den + 1e-6);
      }
  return out;
}

// Output and gradients of one ripple call with upstream gradient `gout`.
struct RippleRun {
  std::vector<double> out, gqkv, glogits;
};
RippleRun run_ripple(const Tensor& qkv0, const Tensor& logits0, int64_t H, int64_t S, int64_t g,
                     RippleImpl impl, const Tensor& gout) {
  Tensor qkv = qkv0.clone();
  qkv.set_requires_grad(true);
  Tensor logits;
  if (logits0.defined()) {
    logits = logits0.clone();
    logits.set_requires_grad(true);
  }
  Tensor y = ops::ripple_attention(qkv, logits, H, S, g, g, impl);
  y.backward(gout);
  RippleRun r{y.to_vector<double>(), qkv.grad().to_vector<double>(), {}};
  if (logits.defined()) r.glogits = logits.grad().to_vector<double>();
  return r;
}

}  // namespace

TEST_CASE("ripple: stage weights are stick-breaking and start equal") {
  for (int64_t S = 2; S <= 5; ++S) {
    std::vector<double> a = ops::ripple_stage_weights(ops::ripple_init_logits(3, S), 3, S);
    REQUIRE(a.size() == static_cast<size_t>(3 * S));
    // f32 logits: each alpha is a product of S sigmoids of f32-rounded logits.
    for (double x : a) CHECK(x == doctest::Approx(1.0 / S).epsilon(4 * S * FLT_EPSILON));
  }
  Tensor logits = Tensor::from_vector<double>({0.3, -1.2, 2.0}, {1, 3});
  std::vector<double> a = ops::ripple_stage_weights(logits, 1, 4);
  auto sg = [](double x) { return 1 / (1 + std::exp(-x)); };
  CHECK(a[0] == doctest::Approx(sg(0.3)).epsilon(1e-14));
  CHECK(a[1] == doctest::Approx(sg(-1.2) * (1 - sg(0.3))).epsilon(1e-14));
  CHECK(a[2] == doctest::Approx(sg(2.0) * (1 - sg(-1.2)) * (1 - sg(0.3))).epsilon(1e-14));
  CHECK(a[0] + a[1] + a[2] + a[3] == doctest::Approx(1.0).epsilon(1e-14));
  CHECK(ops::ripple_stage_weights(Tensor(), 2, 1) == std::vector<double>{1.0, 1.0});
}

TEST_CASE("ripple: both kernels match the definition in f64") {
  // 8x8 grid, S = 1..5: stages below, at and beyond the grid's 3 dyadic levels.
  const int64_t B = 2, H = 2, d = 4, g = 8, N = 1 + g * g;
  Tensor qkv = randn({B, N, 3 * H * d}, 11);
  for (int64_t S = 1; S <= 5; ++S) {
    INFO("S = " << S);
    Tensor logits = rand_logits(H, S, 100 + S);
    std::vector<double> ref =
        ripple_by_definition(qkv, ops::ripple_stage_weights(logits, H, S), H, S, g);
    for (RippleImpl impl : {RippleImpl::dense, RippleImpl::linear}) {
      std::vector<double> y =
          ops::ripple_attention(qkv, logits, H, S, g, g, impl).to_vector<double>();
      CHECK(max_abs_diff(y, ref) < 1e-12 * max_abs(ref));
    }
  }
}

TEST_CASE("ripple: S = 1 is plain linear attention") {
  // Katharopoulos et al. with phi = elu + 1: o_i = phi(q_i)^T (sum_j phi(k_j) v_j^T)
  // / (phi(q_i)^T sum_j phi(k_j) + eps), written with loops.
  const int64_t B = 2, H = 3, d = 5, g = 4, N = 1 + g * g, D = H * d;
  Tensor qkv = randn({B, N, 3 * D}, 21);
  const std::vector<double> x = qkv.to_vector<double>();
  auto phi = [](double t) { return t > 0 ? t + 1 : std::exp(t); };
  std::vector<double> ref(B * N * D);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> kv(d * d, 0.0), z(d, 0.0);
      for (int64_t j = 0; j < N; ++j)
        for (int64_t a = 0; a < d; ++a) {
          const double fk = phi(x[(b * N + j) * 3 * D + D + h * d + a]);
          z[a] += fk;
          for (int64_t c = 0; c < d; ++c)
            kv[a * d + c] += fk * x[(b * N + j) * 3 * D + 2 * D + h * d + c];
        }
      for (int64_t i = 0; i < N; ++i) {
        double den = 0;
        std::vector<double> num(d, 0.0);
        for (int64_t a = 0; a < d; ++a) {
          const double fq = phi(x[(b * N + i) * 3 * D + h * d + a]);
          den += fq * z[a];
          for (int64_t c = 0; c < d; ++c) num[c] += fq * kv[a * d + c];
        }
        for (int64_t c = 0; c < d; ++c) ref[(b * N + i) * D + h * d + c] = num[c] / (den + 1e-6);
      }
    }
  for (RippleImpl impl : {RippleImpl::dense, RippleImpl::linear}) {
    std::vector<double> y =
        ops::ripple_attention(qkv, Tensor(), H, 1, g, g, impl).to_vector<double>();
    CHECK(max_abs_diff(y, ref) < 1e-12 * max_abs(ref));
  }
}

TEST_CASE("ripple: gradcheck of qkv and stage logits, both kernels") {
  // Small shapes so each check takes milliseconds. d = 4 and d = 8 on a 4x4 grid put level 1
  // (m = 4 tokens) on either side of the m < d switch of the linear kernel; the 8x8 grid with
  // S = 4 has every pair level 0..3, so blocks of 1, 4 and 16 cells cross each other.
  struct Case {
    int64_t B, H, d, g;
  };
  for (Case c : {Case{2, 2, 4, 4}, Case{1, 2, 8, 4}, Case{1, 2, 4, 8}, Case{2, 1, 4, 8}})
    for (int64_t S = 1; S <= 4; ++S)
      for (RippleImpl impl : {RippleImpl::dense, RippleImpl::linear}) {
        if (c.B == 2 && c.g == 8 && S != 4) continue;  // batch 2 on 8x8: only the deepest case
        INFO("B " << c.B << " H " << c.H << " d " << c.d << " grid " << c.g << " S " << S
                  << (impl == RippleImpl::dense ? " dense" : " linear"));
        const int64_t N = 1 + c.g * c.g;
        Tensor qkv = randn({c.B, N, 3 * c.H * c.d}, 31 + S);
        qkv.set_requires_grad(true);
        Tensor logits = rand_logits(c.H, S, 41 + S);
        std::vector<Tensor> inputs{qkv};
        if (logits.defined()) {
          logits.set_requires_grad(true);
          inputs.push_back(logits);
        }
        auto f = [&](const std::vector<Tensor>& in) {
          return ops::ripple_attention(in[0], in.size() > 1 ? in[1] : Tensor(), c.H, S, c.g, c.g,
                                       impl);
        };
        autograd::GradcheckResult r = autograd::gradcheck(f, inputs);
        INFO(r.report);
        CHECK(r.ok);
      }
}

TEST_CASE("ripple: dense and linear-time kernels agree in f32") {
  // Tolerance. The two kernels sum the same terms in different orders. A computed sum of m
  // terms is off by about sqrt(m) eps times the size of its terms (random-walk model of rounding;
  // m eps is the worst case). An output is a ratio of sums over n tokens of d-term dot products,
  // hence sqrt(n + d); the linear kernel forms it from S + 1 telescoped terms whose coefficients
  // alpha_s - alpha_{s+1} have either sign and may each be as large as the whole sum, and each
  // brings its own error, hence S + 1:
  //   |dense - linear| <= k (S + 1) sqrt(n + d) FLT_EPSILON scale,
  // scale = the tensor's largest magnitude (in f64; outputs are convex combinations of rows of v,
  // so it is also the size of their terms). The qkv gradients are sums of the same kind. The
  // logits gradient adds B n mixed-sign row terms; with random signs it is as large as sqrt(B n)
  // such terms, so its relative error follows the same law. Measured on these inputs, the ratio
  // |dense - linear| / ((S + 1) sqrt(n + d) FLT_EPSILON scale) stays below 0.23 (outputs), 0.04
  // (qkv gradients) and 0.10 (logits gradients): k = 2 leaves a margin of at least 8, while an
  // indexing or sign error is of the order of scale itself.
  const int64_t B = 2, H = 2;
  for (int64_t g : {4, 8, 16})
    for (int64_t d : {4, 16})  // d = 4: blocks of m >= 4 go through K^T V; d = 16: only m >= 16
      for (int64_t S = 1; S <= 5; ++S) {
        INFO("grid " << g << " d " << d << " S " << S);
        const int64_t N = 1 + g * g;
        Tensor qkv = randn({B, N, 3 * H * d}, 51 + S + g);
        Tensor logits = rand_logits(H, S, 61 + S);
        Tensor gout = randn({B, N, H * d}, 71 + S + g);
        RippleRun ref = run_ripple(qkv, logits, H, S, g, RippleImpl::dense, gout);
        RippleRun dn =
            run_ripple(qkv.to(DType::f32), logits.defined() ? logits.to(DType::f32) : logits, H, S,
                       g, RippleImpl::dense, gout.to(DType::f32));
        RippleRun ln =
            run_ripple(qkv.to(DType::f32), logits.defined() ? logits.to(DType::f32) : logits, H, S,
                       g, RippleImpl::linear, gout.to(DType::f32));
        const double k = 2, base = k * (S + 1) * FLT_EPSILON;
        const double rows = std::sqrt(static_cast<double>(N + d));
        auto check = [&](const char* what, const std::vector<double>& r,
                         const std::vector<double>& a, const std::vector<double>& b, double terms) {
          const double tol = base * terms * max_abs(r);
          INFO(what << ": dense-linear " << max_abs_diff(a, b) << " dense-f64 "
                    << max_abs_diff(a, r) << " linear-f64 " << max_abs_diff(b, r) << " tol "
                    << tol);
          CHECK(max_abs_diff(a, b) <= tol);
        };
        check("out", ref.out, dn.out, ln.out, rows);
        check("grad qkv", ref.gqkv, dn.gqkv, ln.gqkv, rows);
        if (S > 1) check("grad logits", ref.glogits, dn.glogits, ln.glogits, rows);
      }
}

TEST_CASE("ripple: bad configurations give one-line user errors") {
  Tensor qkv = randn({1, 37, 12}, 1, DType::f32);
  CHECK_THROWS_WITH_AS(ops::ripple_attention(qkv, Tensor(), 2, 1, 6, 6),
                       "ripple attention needs a power-of-two square patch grid, got 6x6",
                       UserError);
  Tensor qkv2 = randn({1, 33, 12}, 1, DType::f32);
  CHECK_THROWS_WITH_AS(ops::ripple_attention(qkv2, Tensor(), 2, 1, 4, 8),
                       "ripple attention needs a power-of-two square patch grid, got 4x8",
                       UserError);
  Tensor qkv3 = randn({1, 17, 12}, 1, DType::f32);
  CHECK_THROWS_WITH_AS(ops::ripple_attention(qkv3, Tensor(), 2, 0, 4, 4),
                       "ripple attention needs at least 1 stage, got 0", UserError);
  CHECK_THROWS_WITH_AS(ops::ripple_attention(qkv3, Tensor(), 2, 33, 4, 4),
                       "ripple attention supports at most 32 stages, got 33", UserError);
  // logits of the wrong shape are a programming error (lvit::Error, not a UserError)
  CHECK_THROWS_AS(ops::ripple_attention(qkv3, ops::ripple_init_logits(2, 2), 2, 3, 4, 4), Error);
}

TEST_CASE("RippleViT: forward/backward, parameter names and counts") {
  ViTConfig cfg = preset_config("ripple-micro");
  cfg.image_size = 16;  // 4x4 grid
  cfg.dim = 32;
  cfg.depth = 2;
  cfg.num_heads = 4;
  cfg.num_classes = 10;
  cfg.ripple_stages = 3;
  ViTConfig base = cfg;
  base.attention_type = "softmax";
  ViT model(cfg, 3), softmax_model(base, 3);
  // Ripple adds H (S-1) logits per block and nothing else.
  CHECK(model.num_parameters() ==
        softmax_model.num_parameters() + cfg.depth * cfg.num_heads * (cfg.ripple_stages - 1));
  std::map<std::string, Tensor> params;
  for (auto& [name, p] : model.named_parameters()) params[name] = p;
  for (int64_t blk = 0; blk < cfg.depth; ++blk) {
    const std::string pre = "blocks." + std::to_string(blk) + ".attn.";
    for (const char* n : {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"})
      CHECK(params.count(pre + n) == 1);
    REQUIRE(params.count(pre + "ripple_logits") == 1);
    CHECK(params[pre + "ripple_logits"].shape() == Shape{cfg.num_heads, cfg.ripple_stages - 1});
    std::vector<double> beta = params[pre + "ripple_logits"].to_vector<double>();
    CHECK(beta[0] == doctest::Approx(-std::log(2.0)));
    CHECK(beta[1] == doctest::Approx(0.0));
  }
  // S = 1 registers no logits.
  ViTConfig one = cfg;
  one.ripple_stages = 1;
  CHECK(ViT(one, 3).num_parameters() == softmax_model.num_parameters());

  Tensor x = randn({2, 3, 16, 16}, 5, DType::f32);
  Tensor logits = model.forward(x);
  CHECK(logits.shape() == Shape{2, 10});
  Tensor loss = ops::cross_entropy(logits, Tensor::from_vector<int64_t>({1, 8}, {2}), 0.1);
  CHECK(std::isfinite(loss.item()));
  loss.backward();
  for (auto& [name, p] : model.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    CHECK(p.grad().shape() == p.shape());
  }
  // The first block's logits reach the loss through the class token's path (only the last
  // block's cancel, see tests/data/make_golden.py), so their gradient is not zero.
  CHECK(max_abs(params["blocks.0.attn.ripple_logits"].grad().to_vector<double>()) > 0);
}

// The whole-model comparison against PyTorch (logits, loss, every gradient and three AdamW
// steps) for this attention type is in tests/test_golden.cpp.
