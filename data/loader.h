// Batching loader: shuffles, augments and normalises an ImageDataset into f32 batches on worker
// threads, with a bounded prefetch queue, delivering batches in order.
//
// Determinism: the sample order of an epoch is a pure function of (seed, epoch), each sample's
// augmentation a pure function of (seed, epoch, sample index) (data/augment.h,
// data/randaugment.h) and a batch's mixup/CutMix a pure function of (seed, epoch, batch index)
// (data/mix.h), each on its own Philox stream, so the batches are bit-identical for any number of
// workers and after skip_to() (mid-epoch resume).
//
// uint8 batches (LoaderConfig::uint8_batches): a batch carries the images before their last
// steps, as uint8, plus each sample's crop and flip, and the consumer finishes them (crop, flip,
// normalise: finish_images below on the CPU, cuda/augment.cuh on the GPU, bit for bit the f32
// batch). Without RandAugment the images are the dataset's own and the crop/flip the drawn one;
// with it, the CPU has already cropped, flipped and RandAugmented them and the crop/flip is the
// identity. Random erasing and mixup/CutMix work on f32 and are not available there. The random
// choices are the f32 path's (same streams), so the determinism contract above holds as well.
//
// Threads: workers are plain std::threads that never call parallel_for (the shared pool runs one
// parallel region at a time, so a worker inside it would stall the training step). With
// workers = 0 batches are built on the caller's thread inside next(), using parallel_for.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "data/augment.h"
#include "data/cifar.h"
#include "data/mix.h"
#include "data/randaugment.h"

namespace lvit::data {

struct LoaderConfig {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = true;  // drop the final partial batch (else it is delivered, smaller)
  bool augment = true;    // random crop + flip (+ the ones below); false: normalise only
  int crop_padding = 4;
  bool hflip = true;
  // The strong-recipe augmentations, each off by default. Per sample: crop + flip, then
  // RandAugment/TrivialAugment on uint8, normalise, random erasing on f32; per batch: mixup or
  // CutMix, which also makes Batch::targets. Off, the crop+flip path is unchanged (bitwise).
  RandAugmentConfig randaugment;
  double reprob = 0.0;  // random-erasing probability
  EraseMode erase_mode = EraseMode::pixel;
  MixConfig mix;  // mix.num_classes must be set when mix.enabled()
  Normalization norm{{0.f, 0.f, 0.f}, {1.f, 1.f, 1.f}};
  // Deliver Batch::images_u8 + Batch::crop_flip instead of Batch::images (see above); needs
  // reprob = 0 and mixing off.
  bool uint8_batches = false;
  // Where images_u8 lives (e.g. pinned host memory, cuda/pinned.cuh, so that the upload is one
  // asynchronous DMA); null: the CPU allocator. The allocator must outlive the batches.
  Allocator* host_allocator = nullptr;
  uint64_t seed = 0;
  int workers = 2;   // 0: build batches inline in next()
  int prefetch = 4;  // batches built ahead of the consumer (>= 1)
};

struct Batch {
  lvit::Tensor images;     // f32 [B, C, H, W], normalised, CPU (undefined with uint8 batches)
  lvit::Tensor images_u8;  // uint8 batches: u8 [B, C, H, W], the images still to finish
  lvit::Tensor crop_flip;  // uint8 batches: i32 [B, 3], (dy, dx, flip 0/1) for each image
  lvit::Tensor labels;     // i64 [B]
  lvit::Tensor targets;    // f32 [B, classes] mixed soft targets when mixing is on, else undefined
  int64_t index = 0;       // batch index within the epoch
};

// The sample order of `epoch`: a permutation of [0, n), Fisher-Yates driven by Philox words on a
// stream of its own (it shares no numbers with the augmentation).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

// The f32 images of a uint8 batch (images_u8 + crop_flip, CPU tensors): finish_images of
// data/augment.h. The CPU reference of the GPU finishing step.
lvit::Tensor finish_images(const lvit::Tensor& images_u8, const lvit::Tensor& crop_flip,
                           const Normalization& norm);

class Loader {
 public:
  // `ds` is referenced, not copied: it must outlive the Loader and stay unchanged.
  Loader(const ImageDataset& ds, LoaderConfig cfg);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Begins `epoch` (>= 0) at batch 0, discarding whatever the previous epoch had in flight.
  void start_epoch(int64_t epoch);
  // The next batch of the current epoch, in order; false at the end of the epoch. Rethrows an
  // exception raised while building this batch on a worker.
  bool next(Batch& out);
  int64_t batches_per_epoch() const;
  // Continues the current epoch from `batch_index` (0 <= batch_index <= batches_per_epoch()), as
  // if the batches before it had been consumed: for mid-epoch resume.
  void skip_to(int64_t batch_index);

  const LoaderConfig& config() const { return cfg_; }
  int64_t epoch() const { return epoch_; }

 private:
  struct Plan;  // one epoch's sample order (shared with in-flight workers)

  Batch build_batch(const Plan& plan, int64_t b, bool parallel) const;
  void worker_loop();
  void reset_locked(int64_t batch_index);  // caller holds mu_

  const ImageDataset& ds_;
  LoaderConfig cfg_;
  int64_t epoch_ = -1;

  std::mutex mu_;
  std::condition_variable work_cv_;   // workers: a batch may be claimed / stop
  std::condition_variable ready_cv_;  // consumer: a slot was filled / an error arrived
  std::shared_ptr<const Plan> plan_;  // null before the first start_epoch
  uint64_t generation_ = 0;           // bumped by start_epoch/skip_to; stale results are dropped
  int64_t next_claim_ = 0;            // next batch a worker will build
  int64_t next_deliver_ = 0;          // next batch next() returns
  std::vector<std::optional<Batch>> slots_;  // batch b lives in slots_[b % prefetch]
  std::exception_ptr error_;                 // first failure (lowest batch index) ...
  int64_t error_batch_ = -1;                 // ... and its batch
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace lvit::data
