#include "apps/trainer.h"

#include "apps/common.h"
#include "apps/gpu_data.h"
#include "apps/graph_step.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "autograd/engine.h"
#include "core/safetensors.h"
#include "core/thread_pool.h"
#include "ops/ops.h"

namespace lvit::app {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// ---- options ----

nlohmann::json TrainOptions::to_json() const {
  return {{"dataset", dataset},
          {"epochs", epochs},
          {"batch_size", batch_size},
          {"eval_batch_size", eval_batch_size},
          {"optimizer", optimizer},
          {"lr", lr},
          {"min_lr", min_lr},
          {"weight_decay", weight_decay},
          {"momentum", momentum},
          {"warmup_epochs", warmup_epochs},
          {"label_smoothing", label_smoothing},
          {"clip_grad", clip_grad},
          {"crop_padding", crop_padding},
          {"hflip", hflip},
          {"seed", std::to_string(seed)},
          {"dropout_seed", dropout_seed},
          {"randaugment_n", randaugment_n},
          {"randaugment_m", randaugment_m},
          {"trivial_augment", trivial_augment},
          {"reprob", reprob},
          {"remode", remode},
          {"mixup", mixup},
          {"cutmix", cutmix},
          {"mixup_prob", mixup_prob},
          {"mixup_switch_prob", mixup_switch_prob},
          {"ema_decay", ema_decay},
          {"recipe", recipe},
          {"max_steps_per_epoch", max_steps_per_epoch},
          {"eval_limit", eval_limit}};
}

TrainOptions TrainOptions::from_json(const nlohmann::json& j) {
  TrainOptions o;
  auto get = [&](const char* k, auto& v) {
    if (j.contains(k)) j.at(k).get_to(v);
  };
  get("dataset", o.dataset);
  get("epochs", o.epochs);
  get("batch_size", o.batch_size);
  get("eval_batch_size", o.eval_batch_size);
  get("optimizer", o.optimizer);
  get("lr", o.lr);
  get("min_lr", o.min_lr);
  get("weight_decay", o.weight_decay);
  get("momentum", o.momentum);
  get("warmup_epochs", o.warmup_epochs);
  get("label_smoothing", o.label_smoothing);
  get("clip_grad", o.clip_grad);
  get("crop_padding", o.crop_padding);
  get("hflip", o.hflip);
  get("randaugment_n", o.randaugment_n);
  get("randaugment_m", o.randaugment_m);
  get("trivial_augment", o.trivial_augment);
  get("reprob", o.reprob);
  get("remode", o.remode);
  get("mixup", o.mixup);
  get("cutmix", o.cutmix);
  get("mixup_prob", o.mixup_prob);
  get("mixup_switch_prob", o.mixup_switch_prob);
  get("ema_decay", o.ema_decay);
  get("recipe", o.recipe);
  get("max_steps_per_epoch", o.max_steps_per_epoch);
  get("eval_limit", o.eval_limit);
  get("dropout_seed", o.dropout_seed);
  if (j.contains("seed")) o.seed = std::stoull(j.at("seed").get<std::string>());
  return o;
}

void TrainOptions::validate() const {
  LVIT_USER_CHECK(epochs >= 1, "--epochs {} must be at least 1", epochs);
  LVIT_USER_CHECK(batch_size >= 1, "--batch-size {} must be at least 1", batch_size);
  LVIT_USER_CHECK(eval_batch_size >= 1, "--eval-batch-size {} must be at least 1", eval_batch_size);
  LVIT_USER_CHECK(optimizer == "adamw" || optimizer == "sgd",
                  "--optimizer: '{}' is not adamw or sgd", optimizer);
  LVIT_USER_CHECK(lr > 0 && std::isfinite(lr), "--lr {} must be positive", lr);
  LVIT_USER_CHECK(min_lr >= 0 && min_lr <= lr, "--min-lr {} not in [0, lr]", min_lr);
  LVIT_USER_CHECK(weight_decay >= 0, "--weight-decay {} must be non-negative", weight_decay);
  LVIT_USER_CHECK(warmup_epochs >= 0, "--warmup-epochs {} must be non-negative", warmup_epochs);
  LVIT_USER_CHECK(label_smoothing >= 0 && label_smoothing < 1, "--label-smoothing {} not in [0, 1)",
                  label_smoothing);
  LVIT_USER_CHECK(crop_padding >= 0, "--crop-padding {} must be non-negative", crop_padding);
  LVIT_USER_CHECK(randaugment_n >= 0 && randaugment_n <= 16, "--randaugment-n {} not in [0, 16]",
                  randaugment_n);
  LVIT_USER_CHECK(randaugment_m >= 0 && randaugment_m <= 30,
                  "--randaugment-m {} not in [0, 30] (torchvision's 31 magnitude bins)",
                  randaugment_m);
  LVIT_USER_CHECK(!(trivial_augment && randaugment_n > 0),
                  "--trivial-augment replaces RandAugment: drop --randaugment-n {}", randaugment_n);
  LVIT_USER_CHECK(reprob >= 0 && reprob <= 1, "--reprob {} not in [0, 1]", reprob);
  LVIT_USER_CHECK(remode == "pixel" || remode == "const", "--remode: '{}' is not pixel or const",
                  remode);
  LVIT_USER_CHECK(mixup >= 0 && std::isfinite(mixup), "--mixup {} must be non-negative", mixup);
  LVIT_USER_CHECK(cutmix >= 0 && std::isfinite(cutmix), "--cutmix {} must be non-negative", cutmix);
  LVIT_USER_CHECK(mixup_prob >= 0 && mixup_prob <= 1, "--mixup-prob {} not in [0, 1]", mixup_prob);
  LVIT_USER_CHECK(mixup_switch_prob >= 0 && mixup_switch_prob <= 1,
                  "--mixup-switch-prob {} not in [0, 1]", mixup_switch_prob);
  LVIT_USER_CHECK(ema_decay >= 0 && ema_decay < 1, "--ema-decay {} not in [0, 1)", ema_decay);
  LVIT_USER_CHECK(recipe.empty() || recipe == "seed" || recipe == "strong",
                  "--recipe: '{}' is not seed or strong", recipe);
  LVIT_USER_CHECK(dropout_seed >= -1, "--dropout-seed {} must be non-negative (-1: --seed + 1)",
                  dropout_seed);
  LVIT_USER_CHECK(workers >= 0, "--workers {} must be non-negative", workers);
  LVIT_USER_CHECK(log_every >= 0, "--log-every {} must be non-negative", log_every);
  LVIT_USER_CHECK(log_format == "text" || log_format == "jsonl",
                  "--log-format: '{}' is not text or jsonl", log_format);
}

// ---- evaluation ----

Tensor flip_width(const Tensor& images) {
  if (images.device().is_cuda())  // evaluation only: a round trip through the host is fine
    return flip_width(images.to(Device::cpu())).to(images.device());
  LVIT_CHECK(images.dim() == 4 && images.dtype() == DType::f32,
             "flip_width: images must be f32 [B, C, H, W], got {}", shape_str(images.shape()));
  Tensor x = images.contiguous();
  Tensor out = Tensor::empty(x.shape(), DType::f32);
  const int64_t W = x.shape()[3], rows = x.numel() / W;
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t w = 0; w < W; ++w) dst[r * W + w] = src[r * W + W - 1 - w];
  return out;
}

EvalResult evaluate(ViT& model, const data::ImageDataset& ds, const data::Normalization& norm,
                    int64_t batch_size, int64_t limit, int workers, bool tta_flip, bool gpu_data) {
  const bool was_training = model.is_training();
  const Device device = model.parameters().front().device();
  model.eval();
  autograd::NoGradGuard no_grad;
  data::LoaderConfig lc;
  lc.batch_size = batch_size;
  lc.shuffle = false;
  lc.drop_last = false;
  lc.augment = false;
  lc.norm = norm;
  lc.workers = workers;
  gpu_data = gpu_data && device.is_cuda();
  if (gpu_data) {
    lc.uint8_batches = true;
    lc.host_allocator = upload_allocator(device);
  }
  data::Loader loader(ds, lc);
  loader.start_epoch(0);
  EvalResult r;
  const int64_t C = model.config().num_classes;
  r.class_total.assign(C, 0);
  r.class_correct.assign(C, 0);
  r.confusion.assign(C * C, 0);
  double loss_sum = 0;
  int64_t top1 = 0, top5 = 0;
  auto t0 = Clock::now();
  data::Batch b;
  while ((limit < 0 || r.images < limit) && loader.next(b)) {
    Tensor images = gpu_data
                        ? finish_uint8_images(b.images_u8.to(device), b.crop_flip.to(device), norm)
                        : b.images.to(device);
    Tensor labels = b.labels;
    if (limit >= 0 && r.images + images.shape()[0] > limit) {
      const int64_t keep = limit - r.images;
      images = ops::slice(images, 0, 0, keep).contiguous();
      labels = ops::slice(labels, 0, 0, keep).contiguous();
    }
    labels = labels.to(device);
    const int64_t n = images.shape()[0];
    Tensor logits = model.forward(images);
    if (tta_flip) logits = ops::mul_scalar(logits + model.forward(flip_width(images)), 0.5);
    loss_sum += ops::cross_entropy(logits, labels, 0.0).item() * n;
    top1 += ops::topk_correct(logits, labels, 1);
    top5 += ops::topk_correct(logits, labels, std::min<int64_t>(5, C));
    std::vector<int64_t> pred = ops::argmax_rows(logits), y = labels.to_vector<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      ++r.class_total[y[i]];
      r.class_correct[y[i]] += pred[i] == y[i];
      ++r.confusion[y[i] * C + pred[i]];
    }
    r.images += n;
  }
  const double secs = seconds_since(t0);
  if (r.images > 0) {
    r.loss = loss_sum / r.images;
    r.top1 = 100.0 * top1 / r.images;
    r.top5 = 100.0 * top5 / r.images;
    r.img_per_s = r.images / std::max(secs, 1e-9);
  }
  model.train(was_training);
  return r;
}

// ---- trainer ----

static std::unique_ptr<optim::Optimizer> make_optimizer(const TrainOptions& o, const ViT& model) {
  auto refs = optim::make_param_refs(model.named_parameters());
  if (o.optimizer == "sgd")
    return std::make_unique<optim::SGD>(refs, optim::SGDOptions{o.momentum, o.weight_decay, false});
  return std::make_unique<optim::AdamW>(refs,
                                        optim::AdamWOptions{0.9, 0.999, 1e-8, o.weight_decay});
}

Trainer::Trainer(std::unique_ptr<ViT> model, const TrainOptions& opt,
                 const data::ImageDataset& train, const data::ImageDataset* test)
    : opt_(opt), train_(train), test_(test), model_(std::move(model)) {
  opt_.validate();
  const ViTConfig& c = model_->config();
  LVIT_USER_CHECK(
      train.height == c.image_size && train.width == c.image_size && train.channels == c.in_chans,
      "dataset {} has {}x{}x{} images, the model expects {}x{}x{} (--image-size)", train.name,
      train.channels, train.height, train.width, c.in_chans, c.image_size, c.image_size);
  LVIT_USER_CHECK(train.num_classes <= c.num_classes,
                  "dataset {} has {} classes, the model only {} (--num-classes)", train.name,
                  train.num_classes, c.num_classes);
  LVIT_USER_CHECK(train.size >= opt_.batch_size, "--batch-size {} exceeds the {} training images",
                  opt_.batch_size, train.size);
  norm_ = data::normalization_for(train.name);
  device_ = setup_device(opt_.device, opt_.precision, opt_.gemm_tune);
  model_->to(device_);  // before the optimizer, whose state lives beside the parameters
  optimizer_ = make_optimizer(opt_, *model_);
  data::LoaderConfig lc;
  lc.batch_size = opt_.batch_size;
  lc.shuffle = true;
  lc.drop_last = true;
  lc.augment = true;
  lc.crop_padding = opt_.crop_padding;
  lc.hflip = opt_.hflip;
  lc.norm = norm_;
  lc.seed = opt_.seed;
  lc.workers = opt_.workers;
  lc.randaugment.num_ops = opt_.randaugment_n;
  lc.randaugment.magnitude = opt_.randaugment_m;
  lc.randaugment.trivial = opt_.trivial_augment;
  lc.reprob = opt_.reprob;
  lc.erase_mode = opt_.remode == "const" ? data::EraseMode::constant : data::EraseMode::pixel;
  lc.mix.mixup_alpha = opt_.mixup;
  lc.mix.cutmix_alpha = opt_.cutmix;
  lc.mix.prob = opt_.mixup_prob;
  lc.mix.switch_prob = opt_.mixup_switch_prob;
  lc.mix.label_smoothing = opt_.label_smoothing;
  lc.mix.num_classes = c.num_classes;
  // The GPU data path where the recipe allows it (one log line says which path and why).
  const std::string blocker = uint8_batches_blocker(lc);
  gpu_data_ = device_.is_cuda() && opt_.gpu_data && blocker.empty();
  if (gpu_data_) {
    lc.uint8_batches = true;
    lc.host_allocator = upload_allocator(device_);
    data_path_ = lc.randaugment.enabled()
                     ? "uint8 batches (RandAugment on the CPU), normalised on the GPU"
                     : "uint8 batches, crop/flip/normalise on the GPU";
  } else if (device_.is_cuda()) {
    data_path_ = opt_.gpu_data ? "f32 batches from the CPU (" + blocker + " run on the CPU)"
                               : "f32 batches from the CPU (--no-gpu-data)";
  }
  loader_ = std::make_unique<data::Loader>(train_, lc);
  if (opt_.ema_decay > 0) {  // starts as a copy of the initial weights (timm's ModelEmaV2)
    ema_ = std::make_unique<ViT>(c, opt_.seed);
    std::map<std::string, Tensor> state;
    for (auto& [name, p] : model_->named_parameters()) state[name] = p;
    ema_->to(device_);
    ema_->load_state_dict(state, "the model");
    ema_->eval();
  }
  if (opt_.dropout_seed >= 0)
    model_->dropout_generator().set_state(static_cast<uint64_t>(opt_.dropout_seed), 0);
  progress_.options = opt_.to_json();
  progress_.dropout_seed = model_->dropout_generator().seed();
}

Trainer::Trainer(const ViTConfig& cfg, const TrainOptions& opt, const data::ImageDataset& train,
                 const data::ImageDataset* test)
    : Trainer(std::make_unique<ViT>(cfg, opt.seed), opt, train, test) {}

Trainer::~Trainer() = default;

std::unique_ptr<Trainer> Trainer::resume(const std::string& run_dir, const TrainOptions& overrides,
                                         const data::ImageDataset& train,
                                         const data::ImageDataset* test) {
  const std::string model_path = (fs::path(run_dir) / "model.safetensors").string();
  const std::string state_path = (fs::path(run_dir) / "train_state.safetensors").string();
  LVIT_USER_CHECK(fs::exists(model_path), "--resume {}: no model.safetensors there", run_dir);
  LVIT_USER_CHECK(fs::exists(state_path), "--resume {}: no train_state.safetensors there", run_dir);
  SafetensorsFile state_file = load_safetensors(state_path);
  auto it = state_file.metadata.find("train_state");
  LVIT_USER_CHECK(it != state_file.metadata.end(), "{}: no 'train_state' metadata", state_path);
  nlohmann::json saved = nlohmann::json::parse(it->second, nullptr, false);
  LVIT_USER_CHECK(!saved.is_discarded() && saved.contains("options"),
                  "{}: bad 'train_state' metadata", state_path);
  TrainOptions o = TrainOptions::from_json(saved["options"]);
  o.epochs = std::max(o.epochs, overrides.epochs);
  o.workers = overrides.workers;
  o.log_every = overrides.log_every;
  o.log_format = overrides.log_format;
  o.progress = overrides.progress;
  o.device = overrides.device;
  o.precision = overrides.precision;
  o.cuda_graphs = overrides.cuda_graphs;
  o.gemm_tune = overrides.gemm_tune;
  o.gpu_data = overrides.gpu_data;
  std::unique_ptr<ViT> model = load_model(model_path);
  std::unique_ptr<Trainer> t(new Trainer(std::move(model), o, train, test));
  t->progress_ = load_train_state(state_path, *t->optimizer_);
  t->progress_.options = o.to_json();
  // Each model file records the step it was saved at; a crash between the writes would leave
  // them out of step, which must not resume silently.
  auto load_at_step = [&](const char* file) {
    SafetensorsFile f = load_safetensors((fs::path(run_dir) / file).string());
    auto gs = f.metadata.find("global_step");
    LVIT_USER_CHECK(gs != f.metadata.end() && std::stoll(gs->second) == t->progress_.global_step,
                    "--resume {}: {} and train_state.safetensors are from different steps", run_dir,
                    file);
    return f;
  };
  load_at_step("model.safetensors");
  t->model_->dropout_generator().set_state(t->progress_.dropout_seed, t->progress_.dropout_offset);
  if (t->ema_) {
    LVIT_USER_CHECK(fs::exists(fs::path(run_dir) / "model_ema.safetensors"),
                    "--resume {}: --ema-decay is on but there is no model_ema.safetensors",
                    run_dir);
    t->ema_->load_state_dict(load_at_step("model_ema.safetensors").tensors,
                             (fs::path(run_dir) / "model_ema.safetensors").string());
  }
  return t;
}

int64_t Trainer::steps_per_epoch() const {
  int64_t n = loader_->batches_per_epoch();
  return opt_.max_steps_per_epoch > 0 ? std::min(n, opt_.max_steps_per_epoch) : n;
}

double Trainer::current_lr() const {
  const int64_t spe = steps_per_epoch();
  const auto warm = static_cast<int64_t>(std::llround(opt_.warmup_epochs * spe));
  return optim::warmup_cosine_lr(progress_.global_step, warm, opt_.epochs * spe, opt_.lr,
                                 opt_.min_lr);
}

void Trainer::begin_epoch_if_needed() {
  if (progress_.batch_in_epoch >= steps_per_epoch()) {
    ++progress_.epoch;
    progress_.batch_in_epoch = 0;
  }
  if (loader_epoch_ != progress_.epoch) {
    loader_->start_epoch(progress_.epoch);
    if (progress_.batch_in_epoch > 0) loader_->skip_to(progress_.batch_in_epoch);
    loader_epoch_ = progress_.epoch;
  }
}

void Trainer::update_ema() {
  // ema = decay * ema + (1 - decay) * w, as ema += (1 - decay) * (w - ema).
  autograd::NoGradGuard no_grad;
  const auto src = model_->named_parameters();
  auto dst = ema_->named_parameters();
  LVIT_CHECK(src.size() == dst.size(), "EMA model has {} parameters, the model {}", dst.size(),
             src.size());
  for (size_t i = 0; i < src.size(); ++i)
    ops::axpy_(dst[i].second, ops::sub(src[i].second, dst[i].second), 1.0 - opt_.ema_decay);
}

void Trainer::reset_epoch_stats() {
  epoch_loss_ = 0;
  epoch_correct_ = epoch_seen_ = epoch_batches_ = 0;
  if (device_.is_cuda()) {
    epoch_loss_dev_ = Tensor::zeros({}, DType::f32, device_);
    epoch_correct_dev_ = Tensor::zeros({}, DType::i64, device_);
  }
}

void Trainer::read_epoch_stats() {
  if (!epoch_loss_dev_.defined()) return;
  epoch_loss_ = epoch_loss_dev_.item();
  epoch_correct_ = static_cast<int64_t>(epoch_correct_dev_.item());
  LVIT_USER_CHECK(std::isfinite(epoch_loss_),
                  "training diverged: the loss became {} by step {} (lower --lr?)", epoch_loss_,
                  progress_.global_step);
}

double Trainer::loss_value(const Tensor& loss) const {
  const double l = loss.item();
  LVIT_USER_CHECK(std::isfinite(l), "training diverged: loss is {} at step {} (lower --lr?)", l,
                  progress_.global_step);
  return l;
}

double Trainer::step() { return loss_value(step_async()); }

Tensor Trainer::step_async() {
  begin_epoch_if_needed();
  data::Batch b;
  LVIT_CHECK(loader_->next(b), "loader ran dry at batch {} of epoch {}", progress_.batch_in_epoch,
             progress_.epoch);
  model_->train();
  const double lr = current_lr();
  const DType autocast_dtype = autocast_dtype_for(device_, opt_.precision);
  // The step on device tensors (images, or uint8 images and their crop/flip; then the targets):
  // finishing the images, forward, loss, backward, clip, optimizer update.
  auto body = [&](const std::vector<Tensor>& in) {
    const Tensor images = gpu_data_ ? finish_uint8_images(in[0], in[1], norm_) : in[0];
    const Tensor& y = in.back();
    Tensor logits, loss;
    {
      ops::AutocastGuard autocast(autocast_dtype);
      logits = model_->forward(images);
      // Mixed batches carry soft targets (f32, label smoothing already in them).
      loss = is_floating(y.dtype()) ? ops::cross_entropy_soft(logits, y)
                                    : ops::cross_entropy(logits, y, opt_.label_smoothing);
    }
    model_->zero_grad();
    loss.backward();
    // On a GPU, AdamW applies the clip's coefficient as it reads the gradients.
    if (opt_.clip_grad > 0)
      optim::clip_grad_norm_tensor(model_->parameters(), opt_.clip_grad, optimizer_.get());
    optimizer_->apply();
    if (ema_) update_ema();
    return std::vector<Tensor>{loss, logits};
  };
  const Tensor target = b.targets.defined() ? b.targets : b.labels;
  const std::vector<Tensor> inputs = gpu_data_
                                         ? std::vector<Tensor>{b.images_u8, b.crop_flip, target}
                                         : std::vector<Tensor>{b.images, target};
  std::vector<Tensor> out;
  // One eager step first (it creates the cuBLASLt plans and fills the allocator's cache), then
  // the step is captured as a CUDA graph and replayed.
  if (device_.is_cuda() && opt_.cuda_graphs && eager_steps_ >= 1) {
    if (!graph_step_)
      graph_step_ = std::make_unique<GraphStep>(device_, model_->dropout_generator());
    out = graph_step_->run(
        inputs, [&] { optimizer_->prepare(lr); }, body);
  } else {
    optimizer_->prepare(lr);
    std::vector<Tensor> on_device;
    for (const Tensor& t : inputs) on_device.push_back(t.to(device_));
    out = body(on_device);
    ++eager_steps_;
  }
  const Tensor& loss = out[0];
  const Tensor& logits = out[1];
  ++progress_.global_step;
  ++progress_.batch_in_epoch;
  progress_.dropout_offset = model_->dropout_generator().offset();
  epoch_seen_ += b.labels.numel();
  ++epoch_batches_;
  if (device_.is_cuda()) {
    // Queued behind the step; nothing here waits for the GPU.
    autograd::NoGradGuard no_grad;
    if (!epoch_loss_dev_.defined()) reset_epoch_stats();
    ops::axpy_(epoch_loss_dev_, loss.detach().view({}), 1.0);
    ops::add_top1_correct_(logits.detach(), b.labels.to(device_), epoch_correct_dev_);
  } else {
    epoch_loss_ += loss_value(loss);
    epoch_correct_ += ops::topk_correct(logits, b.labels, 1);
  }
  return loss;
}

void Trainer::save_checkpoint(const std::string& run_dir) const {
  fs::create_directories(run_dir);
  nlohmann::json extra = {{"global_step", std::to_string(progress_.global_step)},
                          {"epoch", std::to_string(progress_.epoch)},
                          {"dataset", opt_.dataset}};
  save_train_state((fs::path(run_dir) / "train_state.safetensors").string(), *optimizer_,
                   progress_);
  save_model((fs::path(run_dir) / "model.safetensors").string(), *model_, extra);
  if (ema_) {
    extra["ema_decay"] = std::to_string(opt_.ema_decay);
    save_model((fs::path(run_dir) / "model_ema.safetensors").string(), *ema_, extra);
  }
}

namespace {
std::string fmt_duration(double s) {
  auto t = static_cast<int64_t>(s);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                   : fmt::format("{}:{:02}", t / 60, t % 60);
}
}  // namespace

void Trainer::run(const std::string& out_dir) {
  const bool text = opt_.log_format == "text";
  const bool tty = isatty(fileno(stderr));
  std::ofstream metrics, steps;
  if (!out_dir.empty()) {
    fs::create_directories(out_dir);
    metrics.open(fs::path(out_dir) / "metrics.jsonl", std::ios::app);
    LVIT_USER_CHECK(metrics.good(), "--out {}: cannot write metrics.jsonl", out_dir);
    if (opt_.log_every > 0) {
      steps.open(fs::path(out_dir) / "steps.jsonl", std::ios::app);
      LVIT_USER_CHECK(steps.good(), "--out {}: cannot write steps.jsonl", out_dir);
    }
  }
  const auto run_start = Clock::now();
  const int64_t spe = steps_per_epoch();
  if (progress_.batch_in_epoch >= spe) {  // a checkpoint taken at an epoch's end
    ++progress_.epoch;
    progress_.batch_in_epoch = 0;
  }
  while (progress_.epoch < opt_.epochs) {
    const int64_t epoch = progress_.epoch;
    reset_epoch_stats();
    const auto t0 = Clock::now();
    auto last_print = Clock::now() - std::chrono::seconds(10);
    int64_t last_decile = -1;
    while (progress_.batch_in_epoch < spe) {
      const double lr_used = current_lr();
      const Tensor loss = step_async();
      const int64_t done = progress_.batch_in_epoch;
      // The loss is read (on a GPU: waited for) only where it is printed or logged.
      std::optional<double> l;
      auto read_loss = [&] {
        if (!l) l = loss_value(loss);
        return *l;
      };
      if (steps.is_open() && progress_.global_step % opt_.log_every == 0) {
        steps << nlohmann::json{{"step", progress_.global_step},
                                {"epoch",
                                 static_cast<double>(epoch) + static_cast<double>(done) / spe},
                                {"loss", read_loss()},
                                {"lr", lr_used}}
                     .dump()
              << "\n";
      }
      const double secs = seconds_since(t0);
      const double ips = epoch_seen_ / std::max(secs, 1e-9);
      const double eta = secs / epoch_batches_ * (spe - done);
      if (text && opt_.progress) {
        const int64_t decile = done * 10 / spe;
        const bool due =
            tty ? seconds_since(last_print) > 0.5 || done == spe : decile != last_decile;
        if (due) {
          const int width = 30;
          const int filled = static_cast<int>(width * done / spe);
          std::string bar(filled, '#');
          bar += std::string(width - filled, '.');
          std::fprintf(stderr,
                       "%sepoch %lld/%lld [%s] %lld/%lld loss %.4f lr %.2e %.0f img/s ETA %s%s",
                       tty ? "\r" : "", static_cast<long long>(epoch + 1),
                       static_cast<long long>(opt_.epochs), bar.c_str(),
                       static_cast<long long>(done), static_cast<long long>(spe), read_loss(),
                       current_lr(), ips, fmt_duration(eta).c_str(), tty ? "" : "\n");
          std::fflush(stderr);
          last_print = Clock::now();
          last_decile = decile;
        }
      }
    }
    if (text && opt_.progress && tty) std::fprintf(stderr, "\n");
    read_epoch_stats();
    const double train_secs = seconds_since(t0);
    nlohmann::json m = {{"epoch", epoch + 1},
                        {"step", progress_.global_step},
                        {"train_loss", epoch_batches_ ? epoch_loss_ / epoch_batches_ : 0.0},
                        {"train_acc", epoch_seen_ ? 100.0 * epoch_correct_ / epoch_seen_ : 0.0},
                        {"lr", current_lr()},
                        {"img_per_s", epoch_seen_ / std::max(train_secs, 1e-9)},
                        {"epoch_time_s", train_secs}};
    if (test_) {
      // test_loss/top1/top5 of the weights, then test_*_ema of the EMA weights.
      auto evaluate_into = [&](ViT& model, const std::string& suffix) {
        ops::AutocastGuard autocast(autocast_dtype_for(device_, opt_.precision));
        EvalResult r = evaluate(model, *test_, norm_, opt_.eval_batch_size, opt_.eval_limit,
                                opt_.workers, false, opt_.gpu_data);
        m["test_loss" + suffix] = r.loss;
        m["test_top1" + suffix] = r.top1;
        m["test_top5" + suffix] = r.top5;
        return r.images;
      };
      m["test_images"] = evaluate_into(*model_, "");
      if (ema_) evaluate_into(*ema_, "_ema");
    }
    m["peak_mem_mb"] = peak_memory_mb(device_);  // the allocator peak on a GPU, RSS on the CPU
    m["wall_time_s"] = seconds_since(run_start);
    if (metrics.is_open()) {
      metrics << m.dump() << "\n";
      metrics.flush();
    }
    if (steps.is_open()) steps.flush();
    if (!out_dir.empty()) save_checkpoint(out_dir);
    if (text) {
      std::fprintf(stderr, "epoch %lld: train loss %.4f acc %.2f%%",
                   static_cast<long long>(epoch + 1), m["train_loss"].get<double>(),
                   m["train_acc"].get<double>());
      if (test_)
        std::fprintf(stderr, " | test loss %.4f top-1 %.2f%% top-5 %.2f%%",
                     m["test_loss"].get<double>(), m["test_top1"].get<double>(),
                     m["test_top5"].get<double>());
      if (m.contains("test_top1_ema"))
        std::fprintf(stderr, " | EMA top-1 %.2f%% top-5 %.2f%%", m["test_top1_ema"].get<double>(),
                     m["test_top5_ema"].get<double>());
      std::fprintf(stderr, " | %.0f img/s, %.1f s\n", m["img_per_s"].get<double>(), train_secs);
    } else {
      std::printf("%s\n", m.dump().c_str());
      std::fflush(stdout);
    }
    ++progress_.epoch;
    progress_.batch_in_epoch = 0;
  }
}

}  // namespace lvit::app
