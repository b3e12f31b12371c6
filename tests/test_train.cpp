// Training loop: checkpoint round trip, bitwise resume, bad checkpoints, schedule and clipping.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "apps/recipe.h"
#include "apps/trainer.h"
#include "core/safetensors.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "ops/ops.h"
#include "tests/test_util.h"

using namespace lvit;
namespace fs = std::filesystem;

namespace {

data::ImageDataset synthetic_dataset() { return test::synthetic_dataset(40, 9); }

ViTConfig tiny_config() {
  ViTConfig c = preset_config("vit-micro");
  c.image_size = 16;
  c.dim = 32;
  c.depth = 2;
  c.num_heads = 4;
  c.num_classes = 10;
  c.dropout = 0.1;  // exercises the dropout generator's saved state
  c.drop_path = 0.1;
  return c;
}

app::TrainOptions tiny_options() {
  app::TrainOptions o;
  o.epochs = 3;
  o.batch_size = 8;
  o.max_steps_per_epoch = 3;  // 4 steps cross an epoch boundary
  o.warmup_epochs = 0.5;
  o.workers = 2;
  o.progress = false;
  return o;
}

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("lvit_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void check_same_weights(const ViT& x, const ViT& y) {
  test::check_same_bits(test::parameter_values(x), test::parameter_values(y));
}

// 4 straight steps vs 2 steps + save + resume (with tiny_options() as the overrides: the saved
// options must win) + 2 steps: the same losses and weights, bitwise. Returns both trainers and
// leaves the checkpoint in `dir`.
std::pair<std::unique_ptr<app::Trainer>, std::unique_ptr<app::Trainer>> check_resume_bitwise(
    const data::ImageDataset& ds, const app::TrainOptions& o, const fs::path& dir) {
  auto straight = std::make_unique<app::Trainer>(tiny_config(), o, ds, nullptr);
  std::vector<double> losses_a, losses_b;
  for (int i = 0; i < 4; ++i) losses_a.push_back(straight->step());
  {
    app::Trainer first(tiny_config(), o, ds, nullptr);
    for (int i = 0; i < 2; ++i) losses_b.push_back(first.step());
    first.save_checkpoint(dir.string());
  }
  auto resumed = app::Trainer::resume(dir.string(), tiny_options(), ds, nullptr);
  CHECK(resumed->progress().global_step == 2);
  for (int i = 0; i < 2; ++i) losses_b.push_back(resumed->step());
  CHECK(resumed->progress().epoch == 1);  // crossed into the second epoch
  for (int i = 0; i < 4; ++i) CHECK(losses_a[i] == losses_b[i]);
  check_same_weights(straight->model(), resumed->model());
  return {std::move(straight), std::move(resumed)};
}

}  // namespace

TEST_CASE("resume: 2 steps + save + resume + 2 steps == 4 steps, bitwise") {
  data::ImageDataset ds = synthetic_dataset();
  fs::path dir = temp_dir("resume");
  check_resume_bitwise(ds, tiny_options(), dir);
  fs::remove_all(dir);
}

TEST_CASE("resume with the strong augmentations and EMA on == an uninterrupted run, bitwise") {
  data::ImageDataset ds = synthetic_dataset();
  app::TrainOptions o = tiny_options();
  o.randaugment_n = 2;
  o.reprob = 0.5;
  o.mixup = 0.8;
  o.cutmix = 1.0;
  o.ema_decay = 0.9;
  fs::path dir = temp_dir("resume_strong");
  auto [straight, resumed] = check_resume_bitwise(ds, o, dir);
  CHECK(fs::exists(dir / "model_ema.safetensors"));
  REQUIRE(resumed->ema_model() != nullptr);
  check_same_weights(*straight->ema_model(), *resumed->ema_model());
  // The EMA differs from the weights and from the initial weights (it moved, by less).
  app::Trainer fresh(tiny_config(), o, ds, nullptr);
  auto w = test::parameter_values(straight->model()),
       e = test::parameter_values(*straight->ema_model()),
       w0 = test::parameter_values(fresh.model());
  double dist_e = 0, dist_w = 0;
  for (size_t i = 0; i < w.size(); ++i)
    for (size_t k = 0; k < w[i].size(); ++k) {
      dist_e += std::abs(e[i][k] - w0[i][k]);
      dist_w += std::abs(w[i][k] - w0[i][k]);
    }
  CHECK(dist_e > 0);
  CHECK(dist_e < dist_w);
  // A missing EMA file or one from another step is refused.
  fs::remove(dir / "model_ema.safetensors");
  CHECK_THROWS_AS(app::Trainer::resume(dir.string(), tiny_options(), ds, nullptr), UserError);
  fs::remove_all(dir);
}

// --dropout-seed changes the dropout and drop-path masks and nothing else: the same initial
// weights and batches (with dropout off, the very same steps); -1 and seed + 1 are the default;
// a resumed run keeps its masks' seed.
TEST_CASE("--dropout-seed draws other masks on the same weights and batches") {
  data::ImageDataset ds = synthetic_dataset();
  auto losses = [&](const ViTConfig& c, int64_t dropout_seed) {
    app::TrainOptions o = tiny_options();
    o.seed = 5;
    o.dropout_seed = dropout_seed;
    app::Trainer t(c, o, ds, nullptr);
    std::vector<double> v;
    for (int i = 0; i < 3; ++i) v.push_back(t.step());
    return v;
  };
  {
    app::TrainOptions o = tiny_options();
    o.seed = 5;
    app::Trainer by_default(tiny_config(), o, ds, nullptr);
    o.dropout_seed = 77;
    app::Trainer other(tiny_config(), o, ds, nullptr);
    CHECK(by_default.model().dropout_generator().seed() == 6);
    CHECK(other.model().dropout_generator().seed() == 77);
    check_same_weights(by_default.model(), other.model());
  }
  const std::vector<double> base = losses(tiny_config(), -1);
  CHECK(losses(tiny_config(), 6) == base);
  const std::vector<double> other = losses(tiny_config(), 77);
  for (size_t i = 0; i < base.size(); ++i) CHECK(other[i] != base[i]);
  ViTConfig no_dropout = tiny_config();
  no_dropout.dropout = 0;
  no_dropout.drop_path = 0;
  CHECK(losses(no_dropout, 77) == losses(no_dropout, -1));

  app::TrainOptions o = tiny_options();
  o.dropout_seed = 77;
  fs::path dir = temp_dir("dropout_seed");
  {
    app::Trainer first(tiny_config(), o, ds, nullptr);
    first.step();
    first.save_checkpoint(dir.string());
  }
  auto resumed = app::Trainer::resume(dir.string(), tiny_options(), ds, nullptr);
  CHECK(resumed->model().dropout_generator().seed() == 77);
  fs::remove_all(dir);
  o.dropout_seed = -2;
  CHECK_THROWS_AS(o.validate(), UserError);
}

TEST_CASE("EMA with decay d after one step: d * w0 + (1 - d) * w1") {
  data::ImageDataset ds = synthetic_dataset();
  app::TrainOptions o = tiny_options();
  o.ema_decay = 0.75;
  app::Trainer t(tiny_config(), o, ds, nullptr);
  auto w0 = test::parameter_values(t.model());
  t.step();
  auto w1 = test::parameter_values(t.model()), e = test::parameter_values(*t.ema_model());
  for (size_t i = 0; i < w0.size(); ++i)
    for (size_t k = 0; k < w0[i].size(); ++k)
      CHECK(e[i][k] == doctest::Approx(0.75 * w0[i][k] + 0.25 * w1[i][k]).epsilon(1e-5));
}

TEST_CASE("recipes: strong/seed values, explicit flags win in any order, bad names") {
  app::TrainOptions o;
  app::ModelFlags mf;
  app::apply_recipe(
      "strong", [](const std::string&) { return false; }, o, mf);
  CHECK(o.randaugment_n == 2);
  CHECK(o.randaugment_m == 9);
  CHECK(o.mixup == 0.8);
  CHECK(o.cutmix == 1.0);
  CHECK(o.reprob == 0.25);
  CHECK(o.warmup_epochs == 5.0);
  CHECK(o.lr == 3e-4);
  CHECK(o.epochs == 200);
  CHECK(o.label_smoothing == 0.1);
  CHECK(*mf.drop_path == 0.1);
  CHECK(*mf.dropout == 0.0);
  CHECK(o.recipe == "strong");
  o.validate();
  // Flags given on the command line keep their values.
  app::TrainOptions p;
  p.mixup = 0.2;
  p.epochs = 3;
  p.trivial_augment = true;
  app::ModelFlags mg;
  mg.drop_path = 0.3;
  const std::set<std::string> given = {"--mixup", "--epochs", "--trivial-augment", "--drop-path"};
  app::apply_recipe(
      "strong", [&](const std::string& f) { return given.count(f) > 0; }, p, mg);
  CHECK(p.mixup == 0.2);
  CHECK(p.epochs == 3);
  CHECK(p.randaugment_n == 0);  // TrivialAugment takes its place
  CHECK(*mg.drop_path == 0.3);
  CHECK(p.cutmix == 1.0);
  p.validate();
  app::TrainOptions q;
  app::ModelFlags mq;
  app::apply_recipe(
      "seed", [](const std::string&) { return false; }, q, mq);
  CHECK(q.randaugment_n == 0);
  CHECK(q.mixup == 0.0);
  CHECK(*mq.dropout == 0.1);
  CHECK(!mq.drop_path);
  CHECK(q.batch_size == 128);
  CHECK_THROWS_AS(app::apply_recipe(
                      "deit", [](const std::string&) { return false; }, q, mq),
                  UserError);
  // Options round-trip through JSON (they are the run's identity on resume).
  CHECK(app::TrainOptions::from_json(o.to_json()).to_json() == o.to_json());
}

TEST_CASE("checkpoint: model round trip keeps config and weights; loads by timm names") {
  fs::path dir = temp_dir("ckpt");
  ViTConfig c = tiny_config();
  c.attention_type = "softmax";
  ViT m(c, 3);
  const std::string path = (dir / "model.safetensors").string();
  save_model(path, m);
  SafetensorsFile f = load_safetensors(path);
  CHECK(f.contains("blocks.1.attn.qkv.weight"));
  CHECK(f.at("blocks.1.attn.qkv.weight").shape() == Shape{96, 32});
  CHECK(f.at("patch_embed.proj.weight").shape() == Shape{32, 3, 4, 4});
  CHECK(f.at("pos_embed").shape() == Shape{1, 17, 32});
  auto loaded = load_model(path);
  CHECK(loaded->config().to_json() == m.config().to_json());
  auto a = test::parameter_values(m), b = test::parameter_values(*loaded);
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == b[i]);
  fs::remove_all(dir);
}

TEST_CASE("checkpoint: bad files give one-line errors naming the file") {
  fs::path dir = temp_dir("badckpt");
  ViT m(tiny_config(), 1);
  const std::string path = (dir / "model.safetensors").string();
  save_model(path, m);
  // Truncated copy.
  const std::string trunc = (dir / "trunc.safetensors").string();
  {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream out(trunc, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  auto expect_user_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      FAIL("no error");
    } catch (const UserError& e) {
      const std::string msg = e.what();
      INFO(msg);
      CHECK(msg.find(needle) != std::string::npos);
      CHECK(msg.find('\n') == std::string::npos);
    }
  };
  expect_user_error([&] { load_model(trunc); }, trunc);
  expect_user_error([&] { load_model((dir / "missing.safetensors").string()); },
                    "missing.safetensors");
  // A weights file without our config metadata.
  const std::string bare = (dir / "bare.safetensors").string();
  save_safetensors(bare, m.named_parameters());
  expect_user_error([&] { load_model(bare); }, "config");
  // A shape mismatch.
  ViTConfig wide = tiny_config();
  wide.dim = 64;
  ViT w(wide, 1);
  std::map<std::string, Tensor> state;
  for (auto& [n, p] : w.named_parameters()) state[n] = p;
  expect_user_error([&] { m.load_state_dict(state, "wide.safetensors"); }, "wide.safetensors");
  fs::remove_all(dir);
}

TEST_CASE("schedule and clipping") {
  // Warmup ramps linearly to lr, the cosine ends at min_lr.
  CHECK(optim::warmup_cosine_lr(0, 10, 100, 1.0) == doctest::Approx(0.1));
  CHECK(optim::warmup_cosine_lr(9, 10, 100, 1.0) == doctest::Approx(1.0));
  CHECK(optim::warmup_cosine_lr(10, 10, 100, 1.0) == doctest::Approx(1.0));
  CHECK(optim::warmup_cosine_lr(55, 10, 100, 1.0) == doctest::Approx(0.5));
  CHECK(optim::warmup_cosine_lr(100, 10, 100, 1.0, 0.01) == doctest::Approx(0.01));
  Tensor p = Tensor::zeros({3});
  p.set_requires_grad(true);
  p.set_grad(Tensor::from_vector<float>({3, 4, 0}, {3}));
  CHECK(optim::clip_grad_norm({p}, 1.0) == doctest::Approx(5.0));
  auto g = p.grad().to_vector<float>();
  CHECK(std::sqrt(g[0] * g[0] + g[1] * g[1]) == doctest::Approx(1.0).epsilon(1e-5));
}

TEST_CASE("SGD with momentum matches the closed form") {
  Tensor p = Tensor::from_vector<float>({1.0f}, {1});
  p.set_requires_grad(true);
  optim::SGD opt({{"w", p, false}}, {0.9, 0.0, false});
  // Constant gradient 1: buf = 1, 1.9, 2.71; p = 1 - 0.1 * (1 + 1.9 + 2.71)
  for (int i = 0; i < 3; ++i) {
    p.set_grad(Tensor::from_vector<float>({1.0f}, {1}));
    opt.step(0.1);
  }
  CHECK(p.item() == doctest::Approx(1.0 - 0.1 * 5.61));
}

TEST_CASE("run(): metrics.jsonl per epoch, steps.jsonl per N steps, checkpoints in the run dir") {
  data::ImageDataset ds = synthetic_dataset();
  app::TrainOptions o = tiny_options();
  o.epochs = 2;
  o.log_every = 2;
  o.ema_decay = 0.5;
  o.randaugment_n = 1;
  o.mixup = 0.5;
  fs::path dir = temp_dir("run");
  app::Trainer t(tiny_config(), o, ds, &ds);
  t.run(dir.string());
  auto lines = [](const fs::path& p) {
    std::ifstream in(p);
    std::vector<nlohmann::json> v;
    for (std::string l; std::getline(in, l);) v.push_back(nlohmann::json::parse(l));
    return v;
  };
  auto metrics = lines(dir / "metrics.jsonl");
  REQUIRE(metrics.size() == 2);
  for (const char* k :
       {"epoch", "train_loss", "train_acc", "test_top1", "test_top5", "lr", "img_per_s",
        "peak_mem_mb", "wall_time_s", "test_top1_ema", "test_top5_ema"})
    CHECK(metrics[1].contains(k));
  CHECK(metrics[1]["epoch"] == 2);
  auto steps = lines(dir / "steps.jsonl");
  CHECK(steps.size() == 3);  // 6 steps, every 2nd logged
  CHECK(steps.back()["step"] == 6);
  CHECK(fs::exists(dir / "model.safetensors"));
  CHECK(fs::exists(dir / "train_state.safetensors"));
  CHECK(fs::exists(dir / "model_ema.safetensors"));
  CHECK(load_model((dir / "model_ema.safetensors").string())->config().to_json() ==
        t.model().config().to_json());
  fs::remove_all(dir);
}

TEST_CASE("evaluate: flip TTA averages the logits of the image and its mirror") {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {1, 1, 2, 3});
  CHECK(app::flip_width(x).to_vector<float>() == std::vector<float>{3, 2, 1, 6, 5, 4});
  data::ImageDataset ds = synthetic_dataset();
  ViT m(tiny_config(), 2);
  const data::Normalization norm = data::normalization_for("cifar100");
  app::EvalResult plain = app::evaluate(m, ds, norm, 16, -1, 0);
  app::EvalResult tta = app::evaluate(m, ds, norm, 16, -1, 0, true);
  CHECK(tta.images == plain.images);
  CHECK(tta.loss != plain.loss);  // a random model is not mirror-symmetric
}
