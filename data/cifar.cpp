#include "data/cifar.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <system_error>

#include "core/error.h"
#include "data/tiny_imagenet.h"

namespace lvit::data {
namespace fs = std::filesystem;

namespace {

constexpr int kCifarSide = 32;
constexpr int64_t kCifarPixels = 3 * kCifarSide * kCifarSide;  // 3072 bytes per image

// The layout of one binary record: `label_bytes` leading label bytes, then the pixels.
struct RecordFormat {
  const char* dataset;  // "CIFAR-100" / "CIFAR-10", for messages
  int label_bytes;      // 2 (coarse, fine) or 1
  int label_index;      // which label byte is the label we keep
  int label_limits[2];  // number of valid values of each label byte
  int64_t record_bytes() const { return label_bytes + kCifarPixels; }
};

constexpr RecordFormat kCifar100{"CIFAR-100", 2, 1, {20, 100}};
constexpr RecordFormat kCifar10{"CIFAR-10", 1, 0, {10, 0}};

const char* label_byte_name(const RecordFormat& f, int k) {
  if (f.label_bytes == 1) return "label";
  return k == 0 ? "coarse label" : "fine label";
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Appends the records of one binary file to `ds` (images and labels), checking its size and every
// label byte. Reads in chunks so that peak memory stays near the final dataset size.
void read_records(const fs::path& path, const RecordFormat& fmt, ImageDataset& ds) {
  const std::string p = path.string();
  std::error_code ec;
  if (!fs::exists(path, ec)) throw UserError(fmt::format("{}: file not found", p));
  LVIT_USER_CHECK(fs::is_regular_file(path, ec), "{}: not a regular file", p);
  const uintmax_t bytes = fs::file_size(path, ec);
  LVIT_USER_CHECK(!ec, "{}: cannot read its size: {}", p, ec.message());
  const int64_t rec = fmt.record_bytes();
  LVIT_USER_CHECK(bytes > 0, "{}: file is empty (expected {}-byte {} records)", p, rec,
                  fmt.dataset);
  LVIT_USER_CHECK(bytes % static_cast<uintmax_t>(rec) == 0,
                  "{}: {} bytes is not a whole number of {}-byte {} records (truncated?)", p, bytes,
                  rec, fmt.dataset);
  const int64_t n = static_cast<int64_t>(bytes) / rec;

  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(p.c_str(), "rb"));
  LVIT_USER_CHECK(f != nullptr, "{}: cannot open: {}", p, std::strerror(errno));

  const int64_t first = ds.size;
  ds.images.resize(static_cast<size_t>((first + n) * kCifarPixels));
  ds.labels.resize(static_cast<size_t>(first + n));

  constexpr int64_t kChunk = 2048;  // records per read (~6 MB)
  std::vector<uint8_t> buf(static_cast<size_t>(std::min(n, kChunk) * rec));
  for (int64_t r0 = 0; r0 < n; r0 += kChunk) {
    const int64_t m = std::min(kChunk, n - r0);
    const size_t want = static_cast<size_t>(m * rec);
    const size_t got = std::fread(buf.data(), 1, want, f.get());
    LVIT_USER_CHECK(got == want, "{}: read failed at record {} ({} of {} bytes read)", p, r0, got,
                    want);
    for (int64_t r = 0; r < m; ++r) {
      const uint8_t* src = buf.data() + r * rec;
      for (int k = 0; k < fmt.label_bytes; ++k) {
        const int lim = fmt.label_limits[k];
        LVIT_USER_CHECK(src[k] < lim, "{}: record {} has {} {}, expected 0..{}", p, r0 + r,
                        label_byte_name(fmt, k), src[k], lim - 1);
      }
      const int64_t i = first + r0 + r;
      ds.labels[static_cast<size_t>(i)] = src[fmt.label_index];
      std::memcpy(ds.images.data() + i * kCifarPixels, src + fmt.label_bytes, kCifarPixels);
    }
  }
  ds.size = first + n;
}

// Reads one class name per non-empty line (trailing whitespace and '\r' stripped). A missing file
// yields the names "0", "1", ...; a file with the wrong number of names is an error.
std::vector<std::string> read_class_names(const fs::path& path, int num_classes) {
  std::vector<std::string> names;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    for (int i = 0; i < num_classes; ++i) names.push_back(std::to_string(i));
    return names;
  }
  std::ifstream in(path);
  LVIT_USER_CHECK(in.good(), "{}: cannot open", path.string());
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    size_t start = 0;
    while (start < line.size() && std::isspace(static_cast<unsigned char>(line[start]))) ++start;
    if (start < line.size()) names.push_back(line.substr(start));
  }
  LVIT_USER_CHECK(static_cast<int>(names.size()) == num_classes,
                  "{}: {} class names, expected {} (one per line)", path.string(), names.size(),
                  num_classes);
  return names;
}

ImageDataset empty_cifar(const char* name, int num_classes) {
  ImageDataset ds;
  ds.name = name;
  ds.channels = 3;
  ds.height = ds.width = kCifarSide;
  ds.num_classes = num_classes;
  return ds;
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

}  // namespace

ImageDataset load_cifar100(const std::string& dataset_dir, bool train) {
  ImageDataset ds = empty_cifar("cifar100", 100);
  const fs::path dir(dataset_dir);
  read_records(dir / (train ? "train.bin" : "test.bin"), kCifar100, ds);
  ds.class_names = read_class_names(dir / "fine_label_names.txt", ds.num_classes);
  return ds;
}

ImageDataset load_cifar10(const std::string& dataset_dir, bool train) {
  ImageDataset ds = empty_cifar("cifar10", 10);
  const fs::path dir(dataset_dir);
  if (train) {
    for (int b = 1; b <= 5; ++b)
      read_records(dir / fmt::format("data_batch_{}.bin", b), kCifar10, ds);
  } else {
    read_records(dir / "test_batch.bin", kCifar10, ds);
  }
  ds.class_names = read_class_names(dir / "batches.meta.txt", ds.num_classes);
  return ds;
}

std::string canonical_dataset_name(const std::string& dataset) {
  std::string s;
  for (char c : dataset)
    if (c != '-' && c != '_') s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "cifar100") return "cifar100";
  if (s == "cifar10") return "cifar10";
  if (s == "tinyimagenet" || s == "tinyimagenet200") return "tiny-imagenet";
  throw UserError(
      fmt::format("unknown dataset '{}' (expected cifar100, cifar10 or tiny-imagenet)", dataset));
}

std::string resolve_dataset_dir(const std::string& data_dir, const std::string& dataset) {
  const std::string name = canonical_dataset_name(dataset);
  // (marker file that identifies the dataset folder, candidate sub-folder names, pretty name)
  const char* marker;
  std::vector<const char*> subdirs;
  const char* pretty;
  if (name == "cifar100") {
    marker = "train.bin";
    subdirs = {"cifar-100-binary"};
    pretty = "CIFAR-100";
  } else if (name == "cifar10") {
    marker = "data_batch_1.bin";
    subdirs = {"cifar-10-batches-bin"};
    pretty = "CIFAR-10";
  } else {
    marker = "wnids.txt";
    subdirs = {"tiny-imagenet-200", "tiny-imagenet-200-sub10"};
    pretty = "Tiny ImageNet";
  }

  const fs::path dir(data_dir);
  std::error_code ec;
  LVIT_USER_CHECK(fs::is_directory(dir, ec),
                  "data dir '{}' does not exist or is not a folder; run scripts/get_data.sh {} "
                  "to download {}, or pass --data-dir (or set $LVIT_DATA)",
                  data_dir, data_dir, pretty);
  if (is_file(dir / marker)) return dir.string();
  std::string looked = (dir / marker).string();
  for (const char* sub : subdirs) {
    if (is_file(dir / sub / marker)) return (dir / sub).string();
    looked += ", " + (dir / sub / marker).string();
  }
  throw UserError(fmt::format(
      "{}: no {} data found (looked for {}); run scripts/get_data.sh {} {} to download it",
      data_dir, pretty, looked, data_dir, name));
}

std::string default_data_dir() {
  if (const char* env = std::getenv("LVIT_DATA"); env && *env) return env;
  std::error_code ec;
  if (fs::is_directory("../shared/data", ec)) return "../shared/data";
  return "./data";
}

ImageDataset load_dataset(const std::string& data_dir, const std::string& dataset, bool train) {
  const std::string name = canonical_dataset_name(dataset);
  const std::string dir = resolve_dataset_dir(data_dir, name);
  if (name == "cifar100") return load_cifar100(dir, train);
  if (name == "cifar10") return load_cifar10(dir, train);
  return load_tiny_imagenet(dir, train);  // default options: cache on, bad images are errors
}

Normalization normalization_for(const std::string& dataset) {
  const std::string name = canonical_dataset_name(dataset);
  // Training-set statistics; CIFAR-100's are re-measured by the data tests.
  if (name == "cifar100") return {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  if (name == "cifar10") return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  // Tiny ImageNet-200. The often-quoted std (0.2302, 0.2265, 0.2262) is the mean of per-image
  // stds; these are pixel stds over the whole training set, as for CIFAR (the 10-class subset in
  // ../shared/data measures (0.275, 0.268, 0.280)).
  return {{0.4802f, 0.4481f, 0.3975f}, {0.2770f, 0.2691f, 0.2821f}};
}

}  // namespace lvit::data
