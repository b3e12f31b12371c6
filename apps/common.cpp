#include "apps/common.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/allocator.cuh"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/gemm.cuh"
#endif

#include <sys/resource.h>

#include <chrono>
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

Device setup_device(const std::string& device, const std::string& precision, bool gemm_tune) {
  const Device d = parse_device(device);
  LVIT_USER_CHECK(precision == "fp32" || precision == "tf32" || precision == "bf16",
                  "--precision: '{}' is not fp32, tf32 or bf16", precision);
  LVIT_USER_CHECK(!gemm_tune || d.is_cuda(),
                  "--gemm-tune: tunes cuBLASLt GEMMs, needs --device cuda");
  if (d.is_cpu()) return d;  // the CPU computes tf32 as fp32
#ifdef LVIT_WITH_CUDA
  LVIT_USER_CHECK(cuda::available(), "--device {}: no CUDA device is visible", device);
  LVIT_USER_CHECK(d.index < cuda::device_count(), "--device {}: only {} CUDA device(s)", device,
                  cuda::device_count());
  cuda::set_math_mode(precision == "fp32" ? cuda::MathMode::fp32 : cuda::MathMode::tf32);
  if (gemm_tune) cuda::set_gemm_tuning(true);
  LVIT_CUDA_CHECK(cudaSetDevice(d.index));
#else
  throw UserError(fmt::format("--device {}: lvit was built without CUDA", device));
#endif
  return d;
}

bool gemm_tuning_on() {
#ifdef LVIT_WITH_CUDA
  return cuda::gemm_tuning();
#else
  return false;
#endif
}

DType autocast_dtype_for(Device d, const std::string& precision) {
  return d.is_cuda() && precision == "bf16" ? DType::bf16 : DType::f32;
}

double peak_memory_mb(Device d) {
#ifdef LVIT_WITH_CUDA
  if (d.is_cuda())
    return static_cast<double>(cuda::allocator_stats(d.index).peak_bytes) / (1 << 20);
#endif
  return peak_rss_mb();
}

void reset_peak_memory(Device d) {
#ifdef LVIT_WITH_CUDA
  if (d.is_cuda()) cuda::reset_peak(d.index);
#endif
}

void synchronize(Device d) {
#ifdef LVIT_WITH_CUDA
  if (d.is_cuda()) cuda::synchronize(d.index);
#endif
}

std::string device_profile_report() {
#ifdef LVIT_WITH_CUDA
  if (cuda::profiling()) return cuda::profile_report();
#endif
  return "";
}

std::string device_description(Device d) {
#ifdef LVIT_WITH_CUDA
  if (d.is_cuda()) return cuda::device_name(d.index);
#endif
  return d.str();
}

DeviceTimer::DeviceTimer(Device d) : device_(d) {
#ifdef LVIT_WITH_CUDA
  if (d.is_cuda()) {
    cudaEvent_t a = nullptr, b = nullptr;
    LVIT_CUDA_CHECK(cudaEventCreate(&a));
    LVIT_CUDA_CHECK(cudaEventCreate(&b));
    start_event_ = a;
    stop_event_ = b;
  }
#endif
}

DeviceTimer::~DeviceTimer() {
#ifdef LVIT_WITH_CUDA
  if (start_event_) cudaEventDestroy(static_cast<cudaEvent_t>(start_event_));
  if (stop_event_) cudaEventDestroy(static_cast<cudaEvent_t>(stop_event_));
#endif
}

static double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void DeviceTimer::start() {
#ifdef LVIT_WITH_CUDA
  if (start_event_) {
    LVIT_CUDA_CHECK(
        cudaEventRecord(static_cast<cudaEvent_t>(start_event_), cuda::stream(device_.index)));
    return;
  }
#endif
  host_start_s_ = now_s();
}

double DeviceTimer::stop_ms() {
#ifdef LVIT_WITH_CUDA
  if (stop_event_) {
    auto a = static_cast<cudaEvent_t>(start_event_), b = static_cast<cudaEvent_t>(stop_event_);
    LVIT_CUDA_CHECK(cudaEventRecord(b, cuda::stream(device_.index)));
    LVIT_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LVIT_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms;
  }
#endif
  return 1e3 * (now_s() - host_start_s_);
}

void apply_threads(int threads) {
  LVIT_USER_CHECK(threads >= 0, "--threads {} must be non-negative", threads);
  if (threads > 0) set_num_threads(threads);
}

}  // namespace lvit::app
