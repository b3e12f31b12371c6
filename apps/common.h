// Flag plumbing shared by lvit-train, lvit-eval and lvit-bench.
#pragma once
#include <functional>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "data/cifar.h"
#include "models/vit.h"

namespace lvit::app {

// Model flags: a preset plus per-field overrides (unset fields keep the preset's value).
struct ModelFlags {
  std::string preset;  // empty: vit-cifar, or vit-tiny for tiny-imagenet
  std::optional<std::string> attention_type;
  std::optional<int64_t> image_size, patch_size, dim, depth, heads, num_classes;
  std::optional<int64_t> ripple_stages, hydra_branches, hydra_layers;
  std::optional<double> mlp_ratio, dropout, drop_path;
};

void add_model_flags(CLI::App& app, ModelFlags& f);
// The preset named by the flags with the overrides applied; validated.
ViTConfig build_config(const ModelFlags& f, const std::string& dataset);

// Data flags shared by lvit-train and lvit-eval (Tiny ImageNet's decode cache and bad images).
struct DataFlags {
  std::string cache_dir;  // empty: data::default_cache_dir()
  bool skip_bad_images = false;
};
void add_data_flags(CLI::App& app, DataFlags& f);
// One split of `dataset` from `data_dir`; Tiny ImageNet with the flags' cache folder and
// bad-image policy. Bad images left out are counted into *skipped (when given) and reported on
// stderr as one line naming the split.
data::ImageDataset load_split(const std::string& data_dir, const std::string& dataset, bool train,
                              const DataFlags& f, int64_t* skipped = nullptr);

// Runs a main body: prints UserErrors as one line "lvit-X: error: ..." (exit 2), internal errors
// as "lvit-X: internal error: ..." (exit 1).
int run_main(const char* prog, const std::function<int()>& body);

// Peak resident memory of this process in MiB (getrusage), for metrics and benchmarks.
double peak_rss_mb();

// "--device cpu|cuda[:N]" and "--precision fp32|tf32|bf16": checks that the device exists and
// the precision is implemented (UserError naming the flag otherwise), sets the GEMM math mode of
// the CUDA backend, and turns GEMM tuning on when `gemm_tune` (--gemm-tune; a CUDA device only).
// Returns the device.
Device setup_device(const std::string& device, const std::string& precision,
                    bool gemm_tune = false);
// Whether GEMM tuning is on, by --gemm-tune or LVIT_GEMM_TUNE (false in a build without CUDA).
bool gemm_tuning_on();
// The autocast dtype of a --precision: bf16 for "bf16" on a GPU, else f32 (no autocast).
DType autocast_dtype_for(Device d, const std::string& precision);

// Peak memory for the metrics: the CUDA allocator's peak on a GPU, the peak RSS on the CPU.
double peak_memory_mb(Device d);
// Resets the peak that peak_memory_mb reports (GPU only; the RSS peak cannot be reset).
void reset_peak_memory(Device d);
// Waits for the device's queued work (no-op on the CPU).
void synchronize(Device d);
// With LVIT_CUDA_PROFILE=1: the GPU time per kernel name since the last call (see
// cuda/check.cuh), as a table; else empty.
std::string device_profile_report();

// "NVIDIA H100 80GB HBM3" or "cpu".
std::string device_description(Device d);

// Wall time of device work: CUDA events on the device's stream for a GPU (what the GPU spent,
// start to stop, without the host's launch overhead hidden behind it), a steady clock on the
// CPU. stop_ms() waits for the work queued before it.
class DeviceTimer {
 public:
  explicit DeviceTimer(Device d);
  ~DeviceTimer();
  DeviceTimer(const DeviceTimer&) = delete;
  DeviceTimer& operator=(const DeviceTimer&) = delete;
  void start();
  double stop_ms();

 private:
  Device device_;
  void* start_event_ = nullptr;
  void* stop_event_ = nullptr;
  double host_start_s_ = 0;
};

// "--threads N": 0 keeps the default (hardware threads or $LVIT_THREADS).
void apply_threads(int threads);

}  // namespace lvit::app
