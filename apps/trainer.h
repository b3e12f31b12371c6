// The training loop behind lvit-train (and the resume test): data, model, optimizer, schedule,
// evaluation, metrics and checkpoints.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/cifar.h"
#include "data/loader.h"
#include "models/checkpoint.h"
#include "models/optim/optimizer.h"
#include "models/vit.h"

namespace lvit::app {

struct TrainOptions {
  std::string dataset = "cifar100";
  int64_t epochs = 1;
  int64_t batch_size = 128;
  int64_t eval_batch_size = 256;
  std::string optimizer = "adamw";  // adamw | sgd
  double lr = 1e-3, min_lr = 0.0, weight_decay = 0.05, momentum = 0.9;
  double warmup_epochs = 0.0;
  double label_smoothing = 0.1;
  double clip_grad = 1.0;  // <= 0: off
  int crop_padding = 4;
  bool hflip = true;
  uint64_t seed = 0;
  // The dropout and drop-path masks' Philox key; -1: seed + 1, the model's own. Another value
  // keeps the initial weights, data order and augmentation of `seed` and draws other masks.
  int64_t dropout_seed = -1;
  // Strong augmentation and regularisation, all off by default (data/randaugment.h,
  // data/augment.h random_erase, data/mix.h). With mixup or CutMix on, the loss is
  // cross_entropy_soft on the mixed, label-smoothed targets.
  int randaugment_n = 0;             // RandAugment ops per image (0: off)
  int randaugment_m = 9;             // RandAugment magnitude bin in [0, 30] (torchvision's 31 bins)
  bool trivial_augment = false;      // TrivialAugmentWide instead of RandAugment
  double reprob = 0.0;               // random-erasing probability
  std::string remode = "pixel";      // random-erasing fill: pixel (per-pixel normal) | const (0)
  double mixup = 0.0, cutmix = 0.0;  // Beta alphas (0: off)
  double mixup_prob = 1.0, mixup_switch_prob = 0.5;
  double ema_decay = 0.0;  // model EMA after every step (0: off), RUN_DIR/model_ema.safetensors
  std::string recipe;      // the --recipe the run started from ("" none); informational
  int64_t max_steps_per_epoch = -1;  // cap for smoke runs (-1: whole epoch)
  int64_t eval_limit = -1;           // evaluate on the first N test images (-1: all)
  // Not part of the run's identity (may change on resume):
  int workers = 2;
  int64_t log_every = 10;  // per-step loss line in RUN_DIR/steps.jsonl every N steps (0: off)
  std::string log_format = "text";  // text | jsonl
  bool progress = true;
  std::string device = "cpu";  // cpu | cuda[:N]
  // GPU arithmetic: fp32 | tf32 | bf16 (mixed precision, the default); the CPU computes fp32.
  std::string precision = "bf16";
  bool cuda_graphs = true;  // GPU: capture the step once, replay it (apps/graph_step.h)
  bool gemm_tune = false;   // GPU: time cuBLASLt's candidate algorithms per GEMM (cuda/gemm.cuh)
  // GPU: uint8 batches uploaded from pinned memory and finished on the device (apps/gpu_data.h);
  // the same numbers as the CPU's f32 batches. Ignored on the CPU.
  bool gpu_data = true;

  nlohmann::json to_json() const;  // identity fields only
  static TrainOptions from_json(const nlohmann::json& j);
  void validate() const;  // UserError naming the flag
};

struct EvalResult {
  int64_t images = 0;
  double loss = 0, top1 = 0, top5 = 0;  // accuracies in percent
  double img_per_s = 0;
  std::vector<int64_t> class_total, class_correct;
  // confusion[true * C + predicted]
  std::vector<int64_t> confusion;
};

// tta_flip: the logits are the mean of the image's and its left-right mirror's. gpu_data: on a
// CUDA model, normalise on the GPU (apps/gpu_data.h; same logits).
EvalResult evaluate(ViT& model, const data::ImageDataset& ds, const data::Normalization& norm,
                    int64_t batch_size, int64_t limit = -1, int workers = 2, bool tta_flip = false,
                    bool gpu_data = true);

// images [B, C, H, W] f32 (CPU) mirrored left-right.
Tensor flip_width(const Tensor& images);

class GraphStep;

class Trainer {
 public:
  // A fresh run. `test` may be null (no evaluation).
  Trainer(const ViTConfig& cfg, const TrainOptions& opt, const data::ImageDataset& train,
          const data::ImageDataset* test);
  // Continues the run saved in run_dir (model.safetensors + train_state.safetensors); the saved
  // model config and options win, except epochs, workers, logging.
  ~Trainer();
  static std::unique_ptr<Trainer> resume(const std::string& run_dir, const TrainOptions& overrides,
                                         const data::ImageDataset& train,
                                         const data::ImageDataset* test);

  // One optimisation step on the next batch (starting the next epoch when one ends). Returns
  // the batch loss; on a GPU reading it waits for the step to finish.
  double step();
  // The same step without waiting for the device: the batch loss as a scalar tensor on the
  // model's device. The epoch's loss and top-1 sums are kept on the device too, so a GPU never
  // idles between steps; run() reads them when it prints and at the epoch's end.
  Tensor step_async();
  // Trains to the end of the configured epochs, evaluating, logging metrics to
  // out_dir/metrics.jsonl and checkpointing after every epoch. out_dir may be empty (no files).
  void run(const std::string& out_dir);
  void save_checkpoint(const std::string& run_dir) const;

  ViT& model() { return *model_; }
  ViT* ema_model() { return ema_.get(); }  // null unless --ema-decay > 0
  const TrainProgress& progress() const { return progress_; }
  const TrainOptions& options() const { return opt_; }  // the run's (a resume's saved ones)
  int64_t steps_per_epoch() const;
  // How training batches reach a GPU model, for the log: e.g. "uint8 batches, crop/flip/normalise
  // on the GPU" ("" on the CPU).
  const std::string& data_path() const { return data_path_; }
  double current_lr() const;

 private:
  Trainer(std::unique_ptr<ViT> model, const TrainOptions& opt, const data::ImageDataset& train,
          const data::ImageDataset* test);
  void begin_epoch_if_needed();
  void update_ema();
  void reset_epoch_stats();
  void read_epoch_stats();  // device sums -> epoch_loss_ / epoch_correct_ (a sync on a GPU)
  // The value of a step's loss (a sync on a GPU); a non-finite loss is the divergence error.
  double loss_value(const Tensor& loss) const;

  TrainOptions opt_;
  const data::ImageDataset& train_;
  const data::ImageDataset* test_;
  data::Normalization norm_;
  Device device_ = Device::cpu();
  std::unique_ptr<GraphStep> graph_step_;
  bool gpu_data_ = false;  // the loader delivers uint8 batches, finished on the device
  std::string data_path_;
  int64_t eager_steps_ = 0;
  std::unique_ptr<ViT> model_;
  std::unique_ptr<ViT> ema_;  // exponential moving average of model_'s weights (or null)
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<data::Loader> loader_;
  TrainProgress progress_;
  int64_t loader_epoch_ = -1;
  // running sums over the current epoch; on a GPU the loss and top-1 sums accumulate in the
  // device scalars and are copied into epoch_loss_ / epoch_correct_ by read_epoch_stats()
  double epoch_loss_ = 0;
  int64_t epoch_correct_ = 0, epoch_seen_ = 0, epoch_batches_ = 0;
  Tensor epoch_loss_dev_, epoch_correct_dev_;
};

}  // namespace lvit::app
