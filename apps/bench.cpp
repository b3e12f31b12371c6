// lvit-bench: training-step and inference throughput per preset, (--flops) the analytical
// parameter and FLOP accounting of each model, and (--loader) the data loader's throughput.

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "apps/common.h"
#include "apps/graph_step.h"
#include "autograd/engine.h"
#include "core/thread_pool.h"
#include "data/loader.h"
#include "models/flops.h"
#include "models/optim/optimizer.h"
#include "ops/ops.h"

using namespace lvit;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

struct BenchResult {
  double train_img_s = 0, train_step_ms = 0, infer_img_s = 0, gflops_per_img = 0, peak_mb = 0;
};

// Times `steps` training steps (forward, loss, backward, clip, AdamW) after `warmup` untimed
// ones, then inference, on `device`: GPU time from CUDA events on the device's stream.
BenchResult bench_one(const ViTConfig& cfg, int64_t batch, int warmup, int steps, Device device,
                      DType autocast_dtype, bool graphs) {
  ViT model(cfg, 0);
  model.to(device);
  Generator g(123);
  Tensor x = Tensor::empty({batch, cfg.in_chans, cfg.image_size, cfg.image_size});
  nn::normal_(x, g, 1.0);
  std::vector<int64_t> y(batch);
  for (auto& v : y) v = g.randint(cfg.num_classes);
  Tensor labels = Tensor::from_vector(y, {batch}).to(device);
  x = x.to(device);
  optim::AdamW opt(optim::make_param_refs(model.named_parameters()), {});
  auto body = [&](const std::vector<Tensor>& in) {
    Tensor loss;
    {
      ops::AutocastGuard autocast(autocast_dtype);
      loss = ops::cross_entropy(model.forward(in[0]), in[1], 0.1);
    }
    model.zero_grad();
    loss.backward();
    optim::clip_grad_norm_tensor(model.parameters(), 1.0, &opt);  // as lvit-train: folded
    opt.apply();
    return std::vector<Tensor>{loss};
  };
  std::unique_ptr<app::GraphStep> graph;
  int eager = 0;
  // As lvit-train: one eager step, then (GPU, graphs on) capture and replay.
  auto train_step = [&] {
    if (graphs && device.is_cuda() && eager >= 1) {
      if (!graph) graph = std::make_unique<app::GraphStep>(device, model.dropout_generator());
      graph->run(
          {x, labels}, [&] { opt.prepare(1e-4); }, body);
    } else {
      opt.prepare(1e-4);
      body({x, labels});
      ++eager;
    }
  };
  BenchResult r;
  model.train();
  app::reset_peak_memory(device);
  for (int i = 0; i < warmup; ++i) train_step();
  (void)app::device_profile_report();  // the profile covers the timed steps only
  app::DeviceTimer timer(device);
  app::synchronize(device);
  timer.start();
  for (int i = 0; i < steps; ++i) train_step();
  double secs = timer.stop_ms() / 1e3;
  r.train_step_ms = 1e3 * secs / steps;
  r.train_img_s = batch * steps / secs;
  const std::string profile = app::device_profile_report();
  if (!profile.empty())
    std::printf("GPU time of %d training steps by kernel:\n%s", steps, profile.c_str());
  r.peak_mb = app::peak_memory_mb(device);
  model.eval();
  {
    autograd::NoGradGuard ng;
    ops::AutocastGuard autocast(autocast_dtype);
    for (int i = 0; i < std::max(1, warmup); ++i) model.forward(x);
    app::synchronize(device);
    timer.start();
    for (int i = 0; i < steps; ++i) model.forward(x);
    secs = timer.stop_ms() / 1e3;
  }
  r.infer_img_s = batch * steps / secs;
  r.gflops_per_img = forward_flops(cfg).total() / 1e9;
  return r;
}

// ---- --loader: data-loader throughput ----

double cpu_seconds() {  // user + system time of the whole process (all threads)
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

// The loader settings of lvit-train's plain (crop + flip) and strong recipes, and of the strong
// recipe's RandAugment alone ("randaug"). uint8: the GPU data path's batches (apps/gpu_data.h),
// which leave crop/flip/normalise to the GPU (here in ordinary host memory: the CPU's share).
data::LoaderConfig loader_recipe(const std::string& recipe, bool uint8,
                                 const data::ImageDataset& ds) {
  data::LoaderConfig c;
  c.batch_size = 128;
  c.norm = data::normalization_for(ds.name);
  c.uint8_batches = uint8;
  if (recipe == "strong" || recipe == "randaug") {
    c.randaugment.num_ops = 2;
    c.randaugment.magnitude = 9;
  }
  if (recipe == "strong") {
    c.reprob = 0.25;
    c.mix.mixup_alpha = 0.8;
    c.mix.cutmix_alpha = 1.0;
    c.mix.label_smoothing = 0.1;
    c.mix.num_classes = ds.num_classes;
  }
  return c;
}

struct LoaderResult {
  int64_t images = 0;
  double img_s = 0, img_per_cpu_s = 0;
};

// Pulls at least `images` images through a Loader with `workers` threads (epochs 0, 1, ...).
LoaderResult bench_loader(const data::ImageDataset& ds, data::LoaderConfig c, int workers,
                          int64_t images) {
  c.workers = workers;
  data::Loader loader(ds, c);
  data::Batch b;
  loader.start_epoch(0);
  LVIT_CHECK(loader.next(b), "{}: empty loader", ds.name);  // warm-up batch, threads started
  LoaderResult r;
  const double cpu0 = cpu_seconds();
  const auto t0 = Clock::now();
  for (int64_t epoch = 0; r.images < images; ++epoch) {
    if (epoch > 0) loader.start_epoch(epoch);
    while (r.images < images && loader.next(b)) r.images += b.labels.shape()[0];
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  r.img_s = r.images / secs;
  r.img_per_cpu_s = r.images / std::max(cpu_seconds() - cpu0, 1e-9);
  return r;
}

int run_loader_bench(const std::string& data_dir, const std::string& datasets,
                     const std::string& workers_list, int64_t images, std::ofstream& json) {
  std::vector<int> workers;
  for (const std::string& w : split_list(workers_list)) workers.push_back(std::stoi(w));
  std::printf("lvit-bench --loader: batch 128, %lld images per measurement, %u hardware threads\n",
              static_cast<long long>(images), std::thread::hardware_concurrency());
  std::printf("%-14s %-8s %-7s %8s %12s %16s %16s\n", "dataset", "recipe", "batches", "workers",
              "img/s", "img/s per worker", "img per CPU-s");
  struct Row {
    const char* recipe;
    bool uint8;
  };
  // The strong recipe's erasing and mixing need f32 batches: no uint8 row for it.
  const Row rows[] = {
      {"plain", false}, {"plain", true}, {"randaug", false}, {"randaug", true}, {"strong", false}};
  for (const std::string& name : split_list(datasets)) {
    const data::ImageDataset ds = data::load_dataset(data_dir, name, true);
    for (const Row& row : rows)
      for (int w : workers) {
        LVIT_USER_CHECK(w >= 1, "--loader-workers: {} must be at least 1", w);
        const LoaderResult r =
            bench_loader(ds, loader_recipe(row.recipe, row.uint8, ds), w, images);
        const char* batches = row.uint8 ? "uint8" : "f32";
        std::printf("%-14s %-8s %-7s %8d %12.0f %16.0f %16.0f\n", ds.name.c_str(), row.recipe,
                    batches, w, r.img_s, r.img_s / w, r.img_per_cpu_s);
        std::fflush(stdout);
        nlohmann::json j = {{"dataset", ds.name},
                            {"recipe", row.recipe},
                            {"batches", batches},
                            {"workers", w},
                            {"images", r.images},
                            {"img_per_s", r.img_s},
                            {"img_per_s_per_worker", r.img_s / w},
                            {"img_per_cpu_s", r.img_per_cpu_s}};
        if (json.is_open()) json << j.dump() << "\n";
      }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return app::run_main("lvit-bench", [&] {
    CLI::App cli{"lvit-bench: throughput and complexity of the model presets"};
    std::string presets = "vit-micro,vit-cifar", device = "cpu", json_path, batches = "64",
                precisions = "fp32";
    int warmup = 2, steps = 5, threads = 0;
    bool flops = false, loader = false, graphs = true, gemm_tune = false;
    std::string data_dir = data::default_data_dir(), loader_datasets = "cifar100,tiny-imagenet";
    std::string loader_workers =
        "1," + std::to_string(std::max(1u, std::thread::hardware_concurrency()));
    int64_t loader_images = 20480;
    cli.add_option("--presets", presets, "Comma-separated presets");
    cli.add_option("--batch-size", batches, "Batch size(s), comma-separated");
    cli.add_option(
        "--precision", precisions,
        "Precision(s), comma-separated: fp32, tf32 (GPU GEMMs on TF32 tensor cores), bf16 "
        "(mixed precision)");
    cli.add_option("--warmup", warmup, "Untimed steps first");
    cli.add_option("--steps", steps, "Timed steps");
    cli.add_option("--threads", threads, "Compute threads (0: all cores)");
    cli.add_option("--device", device, "cpu or cuda[:N]");
    cli.add_flag("!--no-cuda-graphs", graphs, "GPU: eager steps instead of a replayed CUDA graph");
    cli.add_flag(
        "--gemm-tune", gemm_tune,
        "GPU: time up to 8 of cuBLASLt's algorithms for each GEMM on its first call and keep "
        "the fastest");
    cli.add_option("--json", json_path, "Also append one JSON line per result to this file");
    cli.add_flag("--flops", flops,
                 "Print parameter counts and analytical forward FLOPs instead of timing");
    cli.add_flag("--loader", loader,
                 "Measure the data loader instead: img/s for the plain (crop+flip) and strong "
                 "(RandAugment n2 m9, erasing 0.25, mixup/CutMix) recipes and RandAugment alone, "
                 "with f32 batches and with the GPU data path's uint8 batches");
    cli.add_option("--data-dir", data_dir, "Folder holding the dataset folders (--loader)");
    cli.add_option("--loader-datasets", loader_datasets, "Comma-separated datasets (--loader)");
    cli.add_option("--loader-workers", loader_workers,
                   "Comma-separated worker counts (--loader; default 1 and all hardware threads)");
    cli.add_option("--loader-images", loader_images, "Images per measurement (--loader)");
    try {
      cli.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return cli.exit(e);
    }
    app::apply_threads(threads);
    std::vector<int64_t> batch_list;
    for (const std::string& b : split_list(batches)) {
      int64_t v = 0;
      try {
        v = std::stoll(b);
      } catch (const std::exception&) {
        throw UserError(fmt::format("--batch-size: '{}' is not a number", b));
      }
      LVIT_USER_CHECK(v >= 1, "--batch-size {} must be at least 1", v);
      batch_list.push_back(v);
    }
    const std::vector<std::string> precision_list = split_list(precisions);
    LVIT_USER_CHECK(!batch_list.empty() && !precision_list.empty(),
                    "--batch-size and --precision need at least one value");
    LVIT_USER_CHECK(steps >= 1 && warmup >= 0, "--steps must be positive, --warmup non-negative");
    const Device dev = app::setup_device(device, precision_list.front(), gemm_tune);
    std::ofstream json;
    if (!json_path.empty()) {
      json.open(json_path, std::ios::app);
      LVIT_USER_CHECK(json.good(), "--json {}: cannot open for writing", json_path);
    }
    if (loader) {
      LVIT_USER_CHECK(loader_images >= 1, "--loader-images {} must be at least 1", loader_images);
      return run_loader_bench(data_dir, loader_datasets, loader_workers, loader_images, json);
    }
    if (flops) {
      std::printf("FLOPs per image, forward pass, multiply-add = 2 FLOPs\n");
      std::printf("%-14s %6s %12s %12s %9s %9s %9s %9s %9s\n", "preset", "image", "params",
                  "allocated", "GFLOPs", "mixing", "proj", "mlp", "other");
      for (const std::string& p : split_list(presets)) {
        ViTConfig c = preset_config(p);
        FlopCount f = forward_flops(c);
        const int64_t allocated = ViT(c).num_parameters();
        std::printf("%-14s %6lld %12lld %12lld %9.3f %9.3f %9.3f %9.3f %9.3f\n", p.c_str(),
                    static_cast<long long>(c.image_size),
                    static_cast<long long>(parameter_count(c)), static_cast<long long>(allocated),
                    f.total() / 1e9, f.attention_mixing / 1e9, f.projections / 1e9, f.mlp / 1e9,
                    f.other / 1e9);
        nlohmann::json j = {{"preset", p},
                            {"image_size", c.image_size},
                            {"params", parameter_count(c)},
                            {"params_allocated", allocated},
                            {"gflops", f.total() / 1e9},
                            {"mixing_gflops", f.attention_mixing / 1e9},
                            {"proj_gflops", f.projections / 1e9},
                            {"mlp_gflops", f.mlp / 1e9},
                            {"other_gflops", f.other / 1e9}};
        if (json.is_open()) json << j.dump() << "\n";
        LVIT_CHECK(allocated == parameter_count(c), "{}: parameter count {} != allocated {}", p,
                   parameter_count(c), allocated);
      }
      return 0;
    }
    std::printf("lvit-bench: %s, %d threads, %d warmup + %d timed steps\n",
                app::device_description(dev).c_str(), num_threads(), warmup, steps);
    std::printf("%-14s %6s %6s %12s %10s %12s %14s %10s\n", "preset", "prec", "batch",
                "train img/s", "step ms", "infer img/s", "train GFLOP/s", "peak MB");
    for (const std::string& precision : precision_list) {
      app::setup_device(device, precision, gemm_tune);
      for (int64_t batch : batch_list)
        for (const std::string& p : split_list(presets)) {
          ViTConfig c = preset_config(p);
          BenchResult r = bench_one(c, batch, warmup, steps, dev,
                                    app::autocast_dtype_for(dev, precision), graphs);
          // A training step costs ~3x the forward FLOPs (backward: two products per GEMM).
          const double gflops = 3.0 * r.gflops_per_img * r.train_img_s;
          std::printf("%-14s %6s %6lld %12.1f %10.2f %12.1f %14.1f %10.0f\n", p.c_str(),
                      precision.c_str(), static_cast<long long>(batch), r.train_img_s,
                      r.train_step_ms, r.infer_img_s, gflops, r.peak_mb);
          std::fflush(stdout);
          nlohmann::json j = {{"preset", p},
                              {"device", app::device_description(dev)},
                              {"threads", num_threads()},
                              {"batch", batch},
                              {"precision", dev.is_cpu() ? "fp32" : precision},
                              {"train_img_per_s", r.train_img_s},
                              {"train_step_ms", r.train_step_ms},
                              {"infer_img_per_s", r.infer_img_s},
                              {"train_gflop_per_s", gflops},
                              {"peak_mem_mb", r.peak_mb},
                              {"cuda_graphs", graphs && dev.is_cuda()},
                              {"gemm_tune", dev.is_cuda() && app::gemm_tuning_on()}};
          std::printf("%s\n", j.dump().c_str());  // one machine-readable line per result
          if (json.is_open()) json << j.dump() << "\n";
        }
    }
    return 0;
  });
}
