// CIFAR-10 / CIFAR-100 readers for the original binary distributions, dataset-folder resolution
// and the per-dataset normalisation constants.
//
// Images stay uint8 in memory, planar [size, C, H, W] exactly as CIFAR stores them (R plane, then
// G, then B, each row-major): 50,000 CIFAR images are 153.6 MB as uint8 and four times that as
// f32, and the augmentation (data/augment.h) converts to normalised f32 per batch anyway.
//
// Every problem with the user's files throws lvit::UserError with a one-line message that names
// the file and says what is wrong with it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lvit::data {

struct ImageDataset {
  std::string name;  // canonical dataset name ("cifar100", "cifar10"); see normalization_for()
  int64_t size = 0;  // number of images
  int channels = 3, height = 0, width = 0;
  int num_classes = 0;
  std::vector<uint8_t> images;  // [size, C, H, W] planar uint8
  std::vector<int32_t> labels;  // [size], each in [0, num_classes)
  // num_classes entries: from the label-names file when present, else "0", "1", ...
  std::vector<std::string> class_names;

  int64_t image_numel() const { return int64_t{channels} * height * width; }
  const uint8_t* image(int64_t i) const { return images.data() + i * image_numel(); }
};

// CIFAR-100: `dataset_dir`/train.bin or test.bin (records of 1 coarse-label byte, 1 fine-label
// byte, 3072 pixel bytes) and, if present, fine_label_names.txt. Labels are the fine labels.
ImageDataset load_cifar100(const std::string& dataset_dir, bool train);

// CIFAR-10: `dataset_dir`/data_batch_1..5.bin (train) or test_batch.bin (records of 1 label byte
// + 3072 pixel bytes) and, if present, batches.meta.txt.
ImageDataset load_cifar10(const std::string& dataset_dir, bool train);

// "cifar100" | "cifar10" | "tiny-imagenet" (also accepted: "cifar-100", "cifar_100", "CIFAR100",
// "tiny_imagenet", "tinyimagenet", ...). Throws UserError naming the accepted values otherwise.
std::string canonical_dataset_name(const std::string& dataset);

// Finds the folder of `dataset` given `data_dir`, which may be either the folder holding the
// dataset folders (cifar-100-binary/, cifar-10-batches-bin/, tiny-imagenet-200/) or the dataset
// folder itself (recognised by train.bin / data_batch_1.bin / wnids.txt). For tiny-imagenet the
// 10-class subset folder tiny-imagenet-200-sub10/ is accepted too. Throws UserError naming the
// path, what was looked for, and scripts/get_data.sh.
std::string resolve_dataset_dir(const std::string& data_dir, const std::string& dataset);

// $LVIT_DATA if set (and non-empty), else ../shared/data if it is a folder, else ./data.
std::string default_data_dir();

// Loads `dataset` ("cifar100" or "cifar10"; see canonical_dataset_name) from `data_dir` (resolved
// with resolve_dataset_dir). Tiny ImageNet goes through data/tiny_imagenet.h (decoded once, then
// cached).
ImageDataset load_dataset(const std::string& data_dir, const std::string& dataset, bool train);

// Per-channel statistics of the training set, in [0, 1] pixel units: the normalised value is
// (x/255 - mean) / std.
struct Normalization {
  float mean[3];
  float std[3];
};
// "cifar100", "cifar10" or "tiny-imagenet" (any spelling canonical_dataset_name accepts).
Normalization normalization_for(const std::string& dataset);

}  // namespace lvit::data
