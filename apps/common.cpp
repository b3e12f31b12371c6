#include "apps/common.h"

#include <sys/resource.h>

#include <cstdio>

#include "core/thread_pool.h"
#include "data/tiny_imagenet.h"

namespace lvit::app {

void add_model_flags(CLI::App& app, ModelFlags& f) {
  app.add_option("--preset", f.preset,
                 "Model preset: vit|ripple|hydra - cifar|tiny|micro (default vit-cifar, vit-tiny "
                 "for Tiny ImageNet)");
  app.add_option("--attention-type,--attention_type", f.attention_type,
                 "softmax, ripple or hydra (overrides the preset's)")
      ->check(CLI::IsMember({"softmax", "ripple", "hydra"}));
  app.add_option("--image-size", f.image_size, "Input resolution");
  app.add_option("--patch-size", f.patch_size, "Patch size");
  app.add_option("--dim", f.dim, "Model width D");
  app.add_option("--depth", f.depth, "Number of blocks");
  app.add_option("--heads", f.heads, "Attention heads");
  app.add_option("--mlp-ratio", f.mlp_ratio, "MLP hidden width / D");
  app.add_option("--num-classes", f.num_classes, "Classifier outputs (default: the dataset's)");
  app.add_option("--dropout", f.dropout,
                 "Dropout after attention projection, MLP and position embedding");
  app.add_option("--drop-path", f.drop_path, "Stochastic depth rate of the last block");
  app.add_option("--ripple-stages", f.ripple_stages, "Ripple attention stages S");
  app.add_option("--hydra-branches", f.hydra_branches,
                 "Hydra attention branches B (must divide --dim)");
  app.add_option("--hydra-layers", f.hydra_layers,
                 "Hydra in the last L blocks, softmax before (default all)");
}

ViTConfig build_config(const ModelFlags& f, const std::string& dataset) {
  const bool tiny = dataset == "tiny-imagenet";
  ViTConfig c = preset_config(f.preset.empty() ? (tiny ? "vit-tiny" : "vit-cifar") : f.preset);
  if (f.attention_type && *f.attention_type != c.attention_type) {
    // "vit-micro" + ripple -> "ripple-micro"
    const auto dash = c.preset.find('-');
    c.attention_type = *f.attention_type;
    c.preset = (c.attention_type == "softmax" ? std::string("vit") : c.attention_type) +
               (dash == std::string::npos ? "" : c.preset.substr(dash));
  }
  if (!f.num_classes) {
    if (dataset == "cifar10")
      c.num_classes = 10;
    else if (dataset == "cifar100")
      c.num_classes = 100;
  }
  auto set = [](auto& field, const auto& opt) {
    if (opt) field = *opt;
  };
  set(c.image_size, f.image_size);
  set(c.patch_size, f.patch_size);
  set(c.dim, f.dim);
  set(c.depth, f.depth);
  set(c.num_heads, f.heads);
  set(c.num_classes, f.num_classes);
  set(c.mlp_ratio, f.mlp_ratio);
  set(c.dropout, f.dropout);
  set(c.drop_path, f.drop_path);
  set(c.ripple_stages, f.ripple_stages);
  set(c.hydra_branches, f.hydra_branches);
  set(c.hydra_layers, f.hydra_layers);
  c.validate();
  return c;
}

void add_data_flags(CLI::App& app, DataFlags& f) {
  app.add_option("--cache-dir", f.cache_dir,
                 "Folder of the Tiny ImageNet decode cache (default $LVIT_CACHE_DIR, "
                 "$XDG_CACHE_HOME/lvit or ~/.cache/lvit)");
  app.add_flag("--skip-bad-images", f.skip_bad_images,
               "Leave out (and count) Tiny ImageNet images that do not decode or are not 64x64 "
               "instead of stopping");
}

data::ImageDataset load_split(const std::string& data_dir, const std::string& dataset, bool train,
                              const DataFlags& f, int64_t* skipped) {
  const std::string name = data::canonical_dataset_name(dataset);
  if (name != "tiny-imagenet") return data::load_dataset(data_dir, name, train);
  data::TinyImageNetOptions opt;
  opt.cache_dir = f.cache_dir;
  opt.skip_bad_images = f.skip_bad_images;
  data::TinyImageNetLoadInfo info;
  data::ImageDataset ds =
      data::load_tiny_imagenet(data::resolve_dataset_dir(data_dir, name), train, opt, &info);
  if (!info.cache_note.empty()) std::fprintf(stderr, "warning: %s\n", info.cache_note.c_str());
  if (info.skipped > 0)
    std::fprintf(stderr, "skipped %lld bad images of the Tiny ImageNet %s split\n",
                 static_cast<long long>(info.skipped), train ? "train" : "val");
  if (skipped) *skipped += info.skipped;
  return ds;
}

int run_main(const char* prog, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UserError& e) {
    std::fprintf(stderr, "%s: error: %s\n", prog, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", prog, e.what());
    return 1;
  }
}

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

void apply_threads(int threads) {
  LVIT_USER_CHECK(threads >= 0, "--threads {} must be non-negative", threads);
  if (threads > 0) set_num_threads(threads);
}

}  // namespace lvit::app
