// Whole training steps on the GPU: one step of every preset against the CPU in f32 (loss and
// every parameter gradient), and the trainer with CUDA graphs against the trainer without
// them (bit for bit: a replay runs the captured kernels on the same data), and the GPU data
// path (uint8 batches finished on the device) against the CPU's f32 batches, bit for bit.
// Skips cleanly without a GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <utility>

#include "apps/trainer.h"
#include "models/vit.h"
#include "ops/ops.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/gemm.cuh"
#endif

using namespace lvit;
using cudatest::Arith;
using cudatest::expect_close;
using cudatest::randn;
using cudatest::to_gpu;

namespace {

data::ImageDataset synthetic_dataset() { return test::synthetic_dataset(64, 5); }

// A two-block ViT for the 16x16 synthetic images, and trainer options for it on the GPU.
ViTConfig small_config(const char* attention = "softmax") {
  ViTConfig c = preset_config("vit-micro");
  c.attention_type = attention;
  c.image_size = 16;
  c.dim = 32;
  c.depth = 2;
  c.num_heads = 4;
  c.num_classes = 10;
  return c;
}

app::TrainOptions gpu_options(const char* precision) {
  app::TrainOptions o;
  o.batch_size = 16;
  o.epochs = 2;
  o.workers = 0;
  o.progress = false;
  o.log_every = 0;
  o.device = "cuda";
  o.precision = precision;
  return o;
}

// One bf16 epoch whose metrics go to metrics.jsonl / stdout as JSON (the run() cases).
app::TrainOptions one_epoch_jsonl_options() {
  app::TrainOptions o = gpu_options("bf16");
  o.epochs = 1;
  o.log_format = "jsonl";
  return o;
}

}  // namespace

TEST_CASE("one training step of every preset: GPU (fp32 GEMMs) against the CPU") {
  LVIT_SKIP_WITHOUT_GPU();
#ifdef LVIT_WITH_CUDA
  const cuda::MathMode saved = cuda::math_mode();
  cuda::set_math_mode(cuda::MathMode::fp32);
  for (const char* preset :
       {"vit-micro", "ripple-micro", "hydra-micro", "vit-cifar", "ripple-cifar", "hydra-cifar",
        "vit-tiny", "ripple-tiny", "hydra-tiny"}) {
    INFO(preset);
    ViTConfig c = preset_config(preset);
    c.drop_path = 0.1;  // the presets' dropout 0.1 stays on: both devices draw the same masks
    ViT cpu_model(c, 3), gpu_model(c, 3);
    gpu_model.to(Device::cuda(0));
    cpu_model.train();
    gpu_model.train();
    const int64_t B = 2;
    Tensor images = randn({B, c.in_chans, c.image_size, c.image_size}, 4);
    std::vector<int64_t> y = {1, c.num_classes - 1};
    Tensor labels = Tensor::from_vector(y, {B});
    Tensor lc = ops::cross_entropy(cpu_model.forward(images), labels, 0.1);
    Tensor lg = ops::cross_entropy(gpu_model.forward(to_gpu(images)), to_gpu(labels), 0.1);
    // The deepest reduction behind the loss: D-long dot products through every block.
    const int64_t K = c.dim * c.depth;
    expect_close(lc, lg, Arith::f32, K, "loss", 64.0);
    lc.backward();
    lg.backward();
    auto cp = cpu_model.named_parameters(), gp = gpu_model.named_parameters();
    REQUIRE(cp.size() == gp.size());
    const std::string last_logits = fmt::format("blocks.{}.attn.ripple_logits", c.depth - 1);
    for (size_t i = 0; i < cp.size(); ++i) {
      const std::string& name = cp[i].first;
      // The last block's stage logits have an exactly zero gradient in exact arithmetic (only
      // the class token reaches the head, and for its query alpha_{S-1} cancels between
      // numerator and denominator): both devices return rounding noise, which no tolerance
      // relative to that zero can bound.
      if (name == last_logits) continue;
      // A stage logit's gradient sums over every (image, query, key, channel) of its layer.
      const bool logits = name.find("ripple_logits") != std::string::npos;
      const int64_t n = c.tokens();
      expect_close(cp[i].second.grad(), gp[i].second.grad(), Arith::f32,
                   logits ? B * n * n * (c.dim / c.num_heads) : K,
                   std::string(preset) + " gradient of " + name, 64.0);
    }
  }
  cuda::set_math_mode(saved);
#endif
}

TEST_CASE("the trainer with CUDA graphs reproduces the eager trainer bit for bit") {
  LVIT_SKIP_WITHOUT_GPU();
  data::ImageDataset ds = synthetic_dataset();
  // Width 128 in bf16 with dropout takes the fused residual+dropout+LayerNorm kernel (rows a
  // multiple of 128), whose dropout offset must be replayed by the graph like the others.
  for (const char* attention : {"softmax", "ripple", "hydra"}) {
    for (const auto& [precision, dim] :
         {std::pair<const char*, int64_t>{"tf32", 32}, {"bf16", 32}, {"bf16", 128}}) {
      INFO(attention << " " << precision << " dim " << dim);
      ViTConfig c = small_config(attention);
      c.dim = dim;
      c.dropout = 0.1;
      c.drop_path = 0.1;
      app::TrainOptions o = gpu_options(precision);
      o.warmup_epochs = 0.5;
      auto run = [&](bool graphs) {
        app::TrainOptions og = o;
        og.cuda_graphs = graphs;
        app::Trainer t(c, og, ds, nullptr);
        std::vector<double> losses;
        for (int s = 0; s < 7; ++s) losses.push_back(t.step());
        return std::make_pair(losses, test::parameter_values(t.model()));
      };
      auto [eager_loss, eager_params] = run(false);
      auto [graph_loss, graph_params] = run(true);
      for (size_t s = 0; s < eager_loss.size(); ++s) CHECK(graph_loss[s] == eager_loss[s]);
      test::check_same_bits(eager_params, graph_params);
    }
  }
}

// The whole run() — epochs with an evaluation after each, which runs eagerly between graph
// replays — with CUDA graphs against without them: the same step losses, the same weights and
// the same dropout offsets at the end, bit for bit.
TEST_CASE("run() with CUDA graphs and evaluations between epochs reproduces the eager run") {
  LVIT_SKIP_WITHOUT_GPU();
  data::ImageDataset ds = synthetic_dataset();
  ViTConfig c = small_config();
  c.dim = 128;  // the fused residual + dropout + LayerNorm pass
  c.dropout = 0.1;
  app::TrainOptions o = gpu_options("bf16");
  o.epochs = 3;
  o.warmup_epochs = 1;
  o.log_every = 1;
  o.log_format = "jsonl";
  auto run = [&](bool graphs) {
    app::TrainOptions og = o;
    og.cuda_graphs = graphs;
    test::TempDir dir(graphs ? "lvit-run-graphs" : "lvit-run-eager");
    app::Trainer t(c, og, ds, &ds);
    t.run(dir.str());
    std::vector<std::string> lines;
    std::ifstream f(dir.str("steps.jsonl"));
    for (std::string line; std::getline(f, line);) lines.push_back(line);
    return std::make_tuple(lines, test::parameter_values(t.model()),
                           t.model().dropout_generator().offset());
  };
  const auto [eager_steps, eager_params, eager_offset] = run(false);
  const auto [graph_steps, graph_params, graph_offset] = run(true);
  REQUIRE(eager_steps.size() == 3 * 4);  // 64 images, batch 16, 3 epochs, a line per step
  CHECK(graph_steps == eager_steps);
  CHECK(graph_offset == eager_offset);
  test::check_same_bits(eager_params, graph_params);
}

// run() keeps the epoch's loss and top-1 sums on the device (no per-step sync): its train_loss
// must be the mean of the losses the same steps return one by one.
TEST_CASE("cuda trainer: epoch metrics accumulated on the device") {
  LVIT_SKIP_WITHOUT_GPU();
  data::ImageDataset ds = synthetic_dataset();
  const ViTConfig c = small_config();
  app::TrainOptions o = one_epoch_jsonl_options();
  double mean = 0;
  {
    app::Trainer t(c, o, ds, nullptr);
    const int64_t spe = t.steps_per_epoch();
    for (int64_t s = 0; s < spe; ++s) mean += t.step() / static_cast<double>(spe);
  }
  test::TempDir dir("lvit-cuda-metrics");
  app::Trainer t(c, o, ds, nullptr);
  t.run(dir.str());
  std::ifstream f(dir.str("metrics.jsonl"));
  std::string line;
  REQUIRE(std::getline(f, line));
  const auto m = nlohmann::json::parse(line);
  CHECK(m.at("train_loss").get<double>() == doctest::Approx(mean).epsilon(1e-6));
  const double acc = m.at("train_acc").get<double>();
  CHECK(acc >= 0);
  CHECK(acc <= 100);
  const double hits = acc * static_cast<double>(ds.size) / 100;  // a whole number of images
  CHECK(hits == doctest::Approx(std::round(hits)).epsilon(1e-9));
}

// With the loss read only at print time and at the epoch's end, divergence is still an error.
TEST_CASE("cuda trainer: a diverging run stops with an error") {
  LVIT_SKIP_WITHOUT_GPU();
  data::ImageDataset ds = synthetic_dataset();
  const ViTConfig c = small_config();
  app::TrainOptions o = one_epoch_jsonl_options();
  o.lr = 1e30;
  o.warmup_epochs = 0;
  o.clip_grad = 0;
  app::Trainer t(c, o, ds, nullptr);
  const std::string msg = test::error_message([&] { t.run(""); });
  CHECK(msg.find("training diverged") != std::string::npos);
}

TEST_CASE("the GPU data path trains exactly as the CPU's f32 batches; resume; fallback") {
  LVIT_SKIP_WITHOUT_GPU();
  data::ImageDataset ds = synthetic_dataset();
  const ViTConfig c = small_config();
  app::TrainOptions o = gpu_options("bf16");
  o.workers = 2;
  for (bool graphs : {false, true})
    for (int randaugment_n : {0, 2}) {
      INFO("graphs " << graphs << " randaugment " << randaugment_n);
      auto run = [&](bool gpu_data) {
        app::TrainOptions og = o;
        og.cuda_graphs = graphs;
        og.gpu_data = gpu_data;
        og.randaugment_n = randaugment_n;
        app::Trainer t(c, og, ds, nullptr);
        CHECK(t.data_path().find(gpu_data ? "on the GPU" : "--no-gpu-data") != std::string::npos);
        std::vector<double> losses;
        for (int s = 0; s < 5; ++s) losses.push_back(t.step());  // crosses into epoch 1
        const app::EvalResult r = app::evaluate(t.model(), ds, data::normalization_for(ds.name), 16,
                                                40, 2, false, gpu_data);
        losses.push_back(r.loss);
        return losses;
      };
      const std::vector<double> cpu = run(false), gpu = run(true);
      for (size_t s = 0; s < cpu.size(); ++s) CHECK(gpu[s] == cpu[s]);  // bit for bit
    }

  // --resume on the GPU data path: 2 steps + save + resume + 2 steps == 4 steps, bitwise.
  test::TempDir dir("lvit_test_gpu_data_");
  std::vector<double> straight, resumed;
  {
    app::Trainer t(c, o, ds, nullptr);
    for (int s = 0; s < 4; ++s) straight.push_back(t.step());
  }
  {
    app::Trainer t(c, o, ds, nullptr);
    for (int s = 0; s < 2; ++s) resumed.push_back(t.step());
    t.save_checkpoint(dir.str());
  }
  auto t = app::Trainer::resume(dir.str(), o, ds, nullptr);
  for (int s = 0; s < 2; ++s) resumed.push_back(t->step());
  for (size_t s = 0; s < straight.size(); ++s) CHECK(resumed[s] == straight[s]);

  // Random erasing needs f32 batches: the trainer keeps the CPU path and says why.
  app::TrainOptions oe = o;
  oe.reprob = 0.25;
  app::Trainer te(c, oe, ds, nullptr);
  CHECK(te.data_path() == "f32 batches from the CPU (random erasing run on the CPU)");
  te.step();
}
