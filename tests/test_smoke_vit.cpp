// Smoke test: a tiny ViT runs forward and backward and every parameter receives a gradient.
#include <doctest/doctest.h>

#include <cmath>

#include "models/vit.h"
#include "ops/ops.h"

using namespace lvit;

TEST_CASE("tiny ViT forward/backward reaches every parameter") {
  ViTConfig cfg = preset_config("vit-micro");
  cfg.dim = 32;
  cfg.depth = 2;
  cfg.num_heads = 4;
  cfg.num_classes = 10;
  ViT model(cfg, 7);
  Tensor x = Tensor::empty({2, 3, 32, 32});
  nn::normal_(x, model.dropout_generator(), 1.0);
  Tensor logits = model.forward(x);
  CHECK(logits.shape() == Shape{2, 10});
  Tensor labels = Tensor::from_vector<int64_t>({3, 7}, {2});
  Tensor loss = ops::cross_entropy(logits, labels, 0.1);
  CHECK(std::isfinite(loss.item()));
  CHECK(loss.item() > 1.0);
  loss.backward();
  for (auto& [name, p] : model.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    CHECK(p.grad().shape() == p.shape());
  }
}

TEST_CASE("eval mode switches every dropout off: forward is deterministic") {
  ViTConfig cfg = preset_config("vit-micro");
  cfg.dim = 32;
  cfg.depth = 2;
  cfg.num_heads = 4;
  cfg.dropout = 0.5;
  cfg.drop_path = 0.5;
  ViT model(cfg, 3);
  Tensor x = Tensor::empty({2, 3, 32, 32});
  nn::normal_(x, model.dropout_generator(), 1.0);
  model.eval();
  CHECK(model.forward(x).to_vector<float>() == model.forward(x).to_vector<float>());
  model.train();
  CHECK(model.forward(x).to_vector<float>() != model.forward(x).to_vector<float>());
}
