#include "data/loader.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "data/augment.h"

namespace lvit::data {

// Shuffle numbers use offset (kShuffleStream | epoch); the augmentations use their own tags
// (data/randaugment.h), and epochs stay far below 2^32, so the streams never meet.
static constexpr uint64_t kShuffleStream = 0x5348554600000000ull;  // "SHUF"

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  LVIT_CHECK(n >= 0 && n < (int64_t{1} << 32), "permutation of {} elements", n);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  const uint64_t offset = kShuffleStream | static_cast<uint64_t>(epoch);
  // Fisher-Yates from the back: swap i with j uniform in [0, i], j from word i of the stream.
  // Words come four to a Philox block, so compute each block once.
  uint32_t w[4] = {0, 0, 0, 0};
  uint64_t cached_block = ~uint64_t{0};
  for (int64_t i = n - 1; i > 0; --i) {
    const auto ui = static_cast<uint64_t>(i);
    if ((ui >> 2) != cached_block) {
      cached_block = ui >> 2;
      Philox::words(seed, offset, cached_block, w);
    }
    const auto j = static_cast<int64_t>((static_cast<uint64_t>(w[ui & 3]) * (ui + 1)) >> 32);
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

struct Loader::Plan {
  int64_t epoch;
  std::vector<int64_t> order;  // sample index at each position of the epoch
};

Loader::Loader(const ImageDataset& ds, LoaderConfig cfg) : ds_(ds), cfg_(cfg) {
  LVIT_USER_CHECK(cfg_.batch_size >= 1, "batch size {} must be >= 1", cfg_.batch_size);
  LVIT_USER_CHECK(cfg_.workers >= 0, "loader workers {} must be >= 0", cfg_.workers);
  LVIT_USER_CHECK(cfg_.crop_padding >= 0 && cfg_.crop_padding < std::min(ds.height, ds.width),
                  "crop padding {} must be in [0, {})", cfg_.crop_padding,
                  std::min(ds.height, ds.width));
  LVIT_CHECK(ds.channels == 1 || ds.channels == 3, "{}: {} channels", ds.name, ds.channels);
  LVIT_CHECK(ds.size >= 0 && ds.images.size() == static_cast<size_t>(ds.size * ds.image_numel()) &&
                 ds.labels.size() == static_cast<size_t>(ds.size),
             "{}: inconsistent dataset ({} images, {} pixel bytes, {} labels)", ds.name, ds.size,
             ds.images.size(), ds.labels.size());
  LVIT_USER_CHECK(!cfg_.mix.enabled() || cfg_.mix.num_classes >= 1,
                  "mixup/cutmix need the number of classes");
  LVIT_USER_CHECK(cfg_.randaugment.num_ops >= 0 && cfg_.randaugment.num_ops <= 16 &&
                      cfg_.randaugment.magnitude >= 0 &&
                      cfg_.randaugment.magnitude < cfg_.randaugment.num_bins,
                  "RandAugment n {} / m {} outside [0, 16] / [0, {})", cfg_.randaugment.num_ops,
                  cfg_.randaugment.magnitude, cfg_.randaugment.num_bins);
  LVIT_USER_CHECK(!cfg_.uint8_batches || (cfg_.reprob <= 0 && !cfg_.mix.enabled()),
                  "uint8 batches cannot carry random erasing or mixup/CutMix (f32 steps)");
  cfg_.prefetch = std::max(cfg_.prefetch, 1);
  slots_.resize(static_cast<size_t>(cfg_.prefetch));
  for (int i = 0; i < cfg_.workers; ++i) threads_.emplace_back([this] { worker_loop(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

int64_t Loader::batches_per_epoch() const {
  const int64_t bs = cfg_.batch_size;
  return cfg_.drop_last ? ds_.size / bs : (ds_.size + bs - 1) / bs;
}

void Loader::reset_locked(int64_t batch_index) {
  ++generation_;  // in-flight batches of the old position are dropped when they finish
  next_claim_ = next_deliver_ = batch_index;
  for (auto& s : slots_) s.reset();
  error_ = nullptr;
  error_batch_ = -1;
}

void Loader::start_epoch(int64_t epoch) {
  LVIT_CHECK(epoch >= 0, "epoch {} < 0", epoch);
  auto plan = std::make_shared<Plan>();
  plan->epoch = epoch;
  if (cfg_.shuffle) {
    plan->order = epoch_permutation(ds_.size, cfg_.seed, epoch);
  } else {
    plan->order.resize(static_cast<size_t>(ds_.size));
    std::iota(plan->order.begin(), plan->order.end(), int64_t{0});
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    plan_ = std::move(plan);
    epoch_ = epoch;
    reset_locked(0);
  }
  work_cv_.notify_all();
}

void Loader::skip_to(int64_t batch_index) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    LVIT_CHECK(plan_ != nullptr, "Loader::skip_to before start_epoch");
    LVIT_CHECK(batch_index >= 0 && batch_index <= batches_per_epoch(),
               "skip_to({}) outside [0, {}]", batch_index, batches_per_epoch());
    reset_locked(batch_index);
  }
  work_cv_.notify_all();
}

Tensor finish_images(const Tensor& images_u8, const Tensor& crop_flip, const Normalization& norm) {
  LVIT_CHECK(images_u8.dim() == 4 && images_u8.dtype() == DType::u8 && images_u8.device().is_cpu(),
             "finish_images: images must be u8 [B, C, H, W] on the CPU, got {} {}",
             dtype_name(images_u8.dtype()), shape_str(images_u8.shape()));
  const int64_t B = images_u8.shape()[0];
  LVIT_CHECK(crop_flip.dtype() == DType::i32 && crop_flip.shape() == Shape({B, 3}) &&
                 crop_flip.device().is_cpu(),
             "finish_images: crop_flip must be i32 [{}, 3] on the CPU, got {} {}", B,
             dtype_name(crop_flip.dtype()), shape_str(crop_flip.shape()));
  const Tensor src = images_u8.contiguous(), params = crop_flip.contiguous();
  Tensor out = Tensor::empty(src.shape(), DType::f32);
  finish_images(src.data<uint8_t>(), params.data<int32_t>(), B, static_cast<int>(src.shape()[1]),
                static_cast<int>(src.shape()[2]), static_cast<int>(src.shape()[3]), norm,
                out.data<float>());
  return out;
}

Batch Loader::build_batch(const Plan& plan, int64_t b, bool parallel) const {
  // Cheap guard against the dataset changing under us (it is referenced, not owned).
  LVIT_CHECK(ds_.images.size() == static_cast<size_t>(ds_.size * ds_.image_numel()) &&
                 ds_.labels.size() == static_cast<size_t>(ds_.size) &&
                 static_cast<int64_t>(plan.order.size()) == ds_.size,
             "{}: dataset changed while a Loader was using it", ds_.name);
  const int64_t begin = b * cfg_.batch_size;
  const int64_t B = std::min(cfg_.batch_size, ds_.size - begin);
  const int C = ds_.channels, H = ds_.height, W = ds_.width;
  const int64_t per = ds_.image_numel();

  Batch out;
  out.index = b;
  out.labels = Tensor::empty({B}, DType::i64);
  int64_t* lab = out.labels.data<int64_t>();
  const bool uint8_ops = cfg_.augment && cfg_.randaugment.enabled();
  if (cfg_.uint8_batches) {
    out.images_u8 = Tensor::empty_host({B, C, H, W}, DType::u8, cfg_.host_allocator);
    out.crop_flip = Tensor::empty({B, 3}, DType::i32);
    uint8_t* img = out.images_u8.data<uint8_t>();
    int32_t* params = out.crop_flip.data<int32_t>();
    auto fill = [&](int64_t i0, int64_t i1) {
      std::vector<uint8_t> scratch(uint8_ops ? static_cast<size_t>(per) : 0);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t s = plan.order[static_cast<size_t>(begin + i)];
        uint8_t* dst = img + i * per;
        lab[i] = ds_.labels[static_cast<size_t>(s)];
        // The crop/flip left for the consumer: none for evaluation, and none once RandAugment
        // (which needs the cropped image) has run here.
        CropFlip cf;
        if (cfg_.augment)
          cf = draw_crop_flip(cfg_.seed, plan.epoch, s, cfg_.crop_padding, cfg_.hflip);
        if (uint8_ops) {
          crop_flip_u8(ds_.image(s), C, H, W, cf, dst);
          randaugment_image(cfg_.randaugment, cfg_.seed, plan.epoch, s, dst, C, H, W,
                            scratch.data());
          cf = CropFlip{};
        } else {
          std::copy(ds_.image(s), ds_.image(s) + per, dst);
        }
        params[3 * i] = cf.dy;
        params[3 * i + 1] = cf.dx;
        params[3 * i + 2] = cf.flip ? 1 : 0;
      }
    };
    if (parallel)
      parallel_for(B, 16, fill);
    else
      fill(0, B);
    return out;
  }
  out.images = Tensor::empty({B, C, H, W}, DType::f32);
  float* img = out.images.data<float>();
  auto fill = [&](int64_t i0, int64_t i1) {
    std::vector<uint8_t> buf(uint8_ops ? static_cast<size_t>(2 * per) : 0);  // image + scratch
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t s = plan.order[static_cast<size_t>(begin + i)];
      float* dst = img + i * per;
      lab[i] = ds_.labels[static_cast<size_t>(s)];
      if (!cfg_.augment) {
        normalize_image(ds_.image(s), C, H, W, cfg_.norm, dst);
        continue;
      }
      if (uint8_ops) {
        const CropFlip cf = draw_crop_flip(cfg_.seed, plan.epoch, s, cfg_.crop_padding, cfg_.hflip);
        crop_flip_u8(ds_.image(s), C, H, W, cf, buf.data());
        randaugment_image(cfg_.randaugment, cfg_.seed, plan.epoch, s, buf.data(), C, H, W,
                          buf.data() + per);
        normalize_image(buf.data(), C, H, W, cfg_.norm, dst);
      } else {
        augment_image(ds_.image(s), C, H, W, cfg_.seed, plan.epoch, s, cfg_.crop_padding,
                      cfg_.hflip, cfg_.norm, dst);
      }
      if (cfg_.reprob > 0)
        random_erase(dst, C, H, W, cfg_.reprob, cfg_.erase_mode, cfg_.seed, plan.epoch, s);
    }
  };
  if (parallel)
    parallel_for(B, 16, fill);
  else
    fill(0, B);
  if (cfg_.augment && cfg_.mix.enabled()) {
    // Batch level, after every sample is done: pairs (i, B-1-i) span the whole batch.
    const MixParams mp = draw_mix(cfg_.mix, cfg_.seed, plan.epoch, b, H, W);
    mix_images(mp, img, B, C, H, W);
    out.targets = Tensor::empty({B, cfg_.mix.num_classes}, DType::f32);
    mix_targets(lab, B, cfg_.mix.num_classes, mp.lam, cfg_.mix.label_smoothing,
                out.targets.data<float>());
  }
  return out;
}

void Loader::worker_loop() {
  for (;;) {
    std::shared_ptr<const Plan> plan;
    uint64_t gen;
    int64_t b;
    {
      std::unique_lock<std::mutex> lk(mu_);
      // Claim the next batch once its slot is free: batch b may be built only while
      // b < next_deliver_ + prefetch, which bounds the batches held to `prefetch`.
      work_cv_.wait(lk, [&] {
        return stop_ || (plan_ && next_claim_ < batches_per_epoch() &&
                         next_claim_ < next_deliver_ + cfg_.prefetch);
      });
      if (stop_) return;
      plan = plan_;
      gen = generation_;
      b = next_claim_++;
    }
    std::optional<Batch> batch;
    std::exception_ptr err;
    try {
      batch = build_batch(*plan, b, /*parallel=*/false);
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (gen != generation_) continue;  // start_epoch/skip_to happened meanwhile: drop it
      if (err) {
        if (!error_ || b < error_batch_) {
          error_ = err;
          error_batch_ = b;
        }
      } else {
        slots_[static_cast<size_t>(b % cfg_.prefetch)] = std::move(batch);
      }
    }
    ready_cv_.notify_all();
  }
}

bool Loader::next(Batch& out) {
  std::unique_lock<std::mutex> lk(mu_);
  LVIT_CHECK(plan_ != nullptr, "Loader::next before start_epoch");
  const int64_t b = next_deliver_;
  if (b >= batches_per_epoch()) return false;

  if (threads_.empty()) {  // inline: build it here, on the caller's thread and the pool
    std::shared_ptr<const Plan> plan = plan_;
    lk.unlock();
    out = build_batch(*plan, b, /*parallel=*/true);
    lk.lock();
    ++next_deliver_;
    next_claim_ = next_deliver_;
    return true;
  }

  auto& slot = slots_[static_cast<size_t>(b % cfg_.prefetch)];
  ready_cv_.wait(lk, [&] { return (slot && slot->index == b) || error_batch_ == b; });
  if (error_batch_ == b) std::rethrow_exception(error_);  // stays: a retry rethrows it again
  out = std::move(*slot);
  slot.reset();
  ++next_deliver_;
  lk.unlock();
  work_cv_.notify_all();  // a slot is free: one more batch may be claimed
  return true;
}

}  // namespace lvit::data
