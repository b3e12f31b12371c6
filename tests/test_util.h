// Helpers shared by the test suites: where the shared data lives, scratch folders, the message
// of an expected error, a guard for the thread count, a small synthetic image dataset, and a
// model's parameters compared bit for bit.
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "data/cifar.h"
#include "models/vit.h"

namespace lvit::test {

// $LVIT_SHARED_DATA, else ../shared/data beside the repository.
inline std::string shared_data_dir() {
  if (const char* env = std::getenv("LVIT_SHARED_DATA"); env && *env) return env;
  return std::string(LVIT_SOURCE_DIR) + "/../shared/data";
}

// Whether dir/marker exists; otherwise reports that the data-dependent case is skipped.
inline bool have_shared(const std::string& dir, const std::string& marker, const char* what) {
  if (std::filesystem::exists(dir + "/" + marker)) return true;
  MESSAGE("skipping: no " << what << " at " << dir << " (set $LVIT_SHARED_DATA)");
  return false;
}

// A fresh folder under the system temp dir, removed when the test ends.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix) {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / (prefix + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str(const std::string& name = "") const { return (path / name).string(); }
};

// The message of the lvit::Error thrown by fn (fails the test if none is thrown).
template <typename Fn>
std::string error_message(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected lvit::Error");
  return {};
}

// Restores the thread count a test changes.
struct ThreadCountGuard {
  int saved = num_threads();
  ~ThreadCountGuard() { set_num_threads(saved); }
};

// `size` random 16x16 RGB images (Philox stream `seed`) in 10 classes (image i has label
// i % 10), posing as CIFAR-100 for its normalisation.
inline data::ImageDataset synthetic_dataset(int64_t size, uint64_t seed) {
  data::ImageDataset ds;
  ds.name = "cifar100";
  ds.size = size;
  ds.height = ds.width = 16;
  ds.num_classes = 10;
  ds.images.resize(ds.size * ds.image_numel());
  for (size_t i = 0; i < ds.images.size(); ++i)
    ds.images[i] = static_cast<uint8_t>(Philox::word(seed, 0, i));
  for (int64_t i = 0; i < ds.size; ++i) ds.labels.push_back(static_cast<int32_t>(i % 10));
  for (int k = 0; k < 10; ++k) ds.class_names.push_back(std::to_string(k));
  return ds;
}

// Every parameter's values, in order.
inline std::vector<std::vector<float>> parameter_values(const ViT& model) {
  std::vector<std::vector<float>> values;
  for (auto& [name, p] : model.named_parameters()) values.push_back(p.to_vector<float>());
  return values;
}

// Two models' (or runs') parameters equal bit for bit.
inline void check_same_bits(const std::vector<std::vector<float>>& a,
                            const std::vector<std::vector<float>>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].size() == b[i].size());
    CHECK(std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) == 0);
  }
}

}  // namespace lvit::test
