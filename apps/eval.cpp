// lvit-eval: evaluates a checkpoint on a dataset's test split.
#include <algorithm>
#include <cstdio>
#include <numeric>

#include "apps/common.h"
#include "apps/trainer.h"
#include "autograd/engine.h"
#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "ops/autocast.h"

using namespace lvit;

int main(int argc, char** argv) {
  return app::run_main("lvit-eval", [&] {
    CLI::App cli{"lvit-eval: top-1/top-5, per-class accuracy and throughput of a checkpoint"};
    std::string checkpoint, dataset, data_dir = data::default_data_dir(), device = "cpu",
                                     precision = "fp32";
    int64_t batch_size = 256, limit = -1;
    int threads = 0, workers = 2;
    std::vector<std::string> dump;
    std::string tta = "none";
    app::DataFlags df;
    app::add_data_flags(cli, df);
    cli.add_option("--tta", tta,
                   "Test-time augmentation: none or flip (mean of the image's and "
                   "its mirror's logits)")
        ->check(CLI::IsMember({"none", "flip"}));
    cli.add_option("--checkpoint", checkpoint, "model.safetensors written by lvit-train")
        ->required();
    cli.add_option("--dataset", dataset,
                   "cifar100, cifar10 or tiny-imagenet (default: the checkpoint's)");
    cli.add_option("--data-dir", data_dir,
                   "Folder holding the dataset folders, or a dataset folder");
    cli.add_option("--batch-size", batch_size, "Evaluation batch size");
    cli.add_option("--limit", limit, "Evaluate the first N test images only");
    cli.add_option("--threads", threads, "Compute threads (0: all cores)");
    cli.add_option("--workers", workers, "Data loader threads");
    cli.add_option("--device", device, "cpu or cuda[:N]");
    bool gpu_data = true;
    cli.add_flag("!--no-gpu-data", gpu_data,
                 "GPU: normalise on the CPU and upload f32 instead of uploading uint8 images");
    cli.add_option("--precision", precision,
                   "GPU arithmetic: fp32 (default), tf32, or bf16 (mixed precision)");
    cli.add_option("--dump-logits", dump,
                   "N FILE: write the logits of the first N test images as raw little-endian "
                   "float32 [N, classes]")
        ->expected(2);
    try {
      cli.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return cli.exit(e);
    }
    app::apply_threads(threads);
    const Device dev = app::setup_device(device, precision);
    LVIT_USER_CHECK(batch_size >= 1, "--batch-size {} must be at least 1", batch_size);
    if (dataset.empty()) {
      SafetensorsFile f = load_safetensors(checkpoint);
      auto it = f.metadata.find("dataset");
      dataset = it != f.metadata.end() ? it->second : "cifar100";
    }
    std::unique_ptr<ViT> model = load_model(checkpoint);
    model->to(dev);
    data::ImageDataset test = app::load_split(data_dir, dataset, false, df);
    const ViTConfig& c = model->config();
    LVIT_USER_CHECK(test.height == c.image_size && test.num_classes <= c.num_classes,
                    "{}: the model ({}x{} input, {} classes) does not fit {} ({}x{}, {} classes)",
                    checkpoint, c.image_size, c.image_size, c.num_classes, test.name, test.height,
                    test.width, test.num_classes);
    const data::Normalization norm = data::normalization_for(test.name);

    if (!dump.empty()) {
      int64_t n = 0;
      try {
        n = std::stoll(dump[0]);
      } catch (const std::exception&) {
        throw UserError(fmt::format("--dump-logits: '{}' is not a number of images", dump[0]));
      }
      LVIT_USER_CHECK(n >= 1 && n <= test.size, "--dump-logits: N = {} not in [1, {}]", n,
                      test.size);
      data::LoaderConfig lc;
      lc.batch_size = n;
      lc.shuffle = lc.drop_last = lc.augment = false;
      lc.norm = norm;
      lc.workers = 0;
      data::Loader loader(test, lc);
      loader.start_epoch(0);
      data::Batch b;
      loader.next(b);
      model->eval();
      autograd::NoGradGuard ng;
      ops::AutocastGuard autocast(app::autocast_dtype_for(dev, precision));
      std::vector<float> logits = model->forward(b.images.to(dev)).to_vector<float>();
      write_file_atomic(dump[1], std::string_view(reinterpret_cast<const char*>(logits.data()),
                                                  logits.size() * sizeof(float)));
      std::printf("wrote logits [%lld, %lld] to %s\n", static_cast<long long>(n),
                  static_cast<long long>(c.num_classes), dump[1].c_str());
    }

    ops::AutocastGuard autocast(app::autocast_dtype_for(dev, precision));
    app::EvalResult r =
        app::evaluate(*model, test, norm, batch_size, limit, workers, tta == "flip", gpu_data);
    std::printf(
        "%s on %s test (%lld images%s): loss %.4f  top-1 %.2f%%  top-5 %.2f%%  %.0f img/s\n",
        c.preset.c_str(), test.name.c_str(), static_cast<long long>(r.images),
        tta == "flip" ? ", flip TTA" : "", r.loss, r.top1, r.top5, r.img_per_s);
    // Per-class accuracy: spread, best and worst classes.
    const int64_t C = test.num_classes;
    std::vector<int64_t> order;
    std::vector<double> acc(C, 0.0);
    for (int64_t k = 0; k < C; ++k) {
      if (r.class_total[k] == 0) continue;
      acc[k] = 100.0 * r.class_correct[k] / r.class_total[k];
      order.push_back(k);
    }
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return acc[a] > acc[b]; });
    auto name = [&](int64_t k) {
      return k < static_cast<int64_t>(test.class_names.size()) ? test.class_names[k]
                                                               : std::to_string(k);
    };
    if (!order.empty()) {
      std::printf("per-class accuracy: median %.1f%%, min %.1f%%, max %.1f%%\n",
                  acc[order[order.size() / 2]], acc[order.back()], acc[order.front()]);
      std::printf("  best: ");
      for (size_t i = 0; i < std::min<size_t>(5, order.size()); ++i)
        std::printf("%s %.0f%%%s", name(order[i]).c_str(), acc[order[i]], i + 1 < 5 ? ", " : "\n");
      std::printf("  worst: ");
      for (size_t i = 0; i < std::min<size_t>(5, order.size()); ++i) {
        int64_t k = order[order.size() - 1 - i];
        std::printf("%s %.0f%%%s", name(k).c_str(), acc[k], i + 1 < 5 ? ", " : "\n");
      }
    }
    // Confusion summary: the most frequent off-diagonal (true -> predicted) pairs.
    std::vector<int64_t> idx;
    for (int64_t t = 0; t < C; ++t)
      for (int64_t p = 0; p < c.num_classes && p < C; ++p)
        if (t != p && r.confusion[t * c.num_classes + p] > 0) idx.push_back(t * c.num_classes + p);
    std::sort(idx.begin(), idx.end(),
              [&](int64_t a, int64_t b) { return r.confusion[a] > r.confusion[b]; });
    if (!idx.empty()) {
      std::printf("most confused (true -> predicted):\n");
      for (size_t i = 0; i < std::min<size_t>(5, idx.size()); ++i)
        std::printf("  %s -> %s: %lld\n", name(idx[i] / c.num_classes).c_str(),
                    name(idx[i] % c.num_classes).c_str(),
                    static_cast<long long>(r.confusion[idx[i]]));
    }
    return 0;
  });
}
