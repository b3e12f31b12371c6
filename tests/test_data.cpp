// data/: CIFAR readers (real data in ../shared/data and broken copies), dataset-folder
// resolution, augmentation and the batching loader.
#include <doctest/doctest.h>

#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/augment.h"
#include "data/cifar.h"
#include "data/loader.h"
#include "data/randaugment.h"

namespace fs = std::filesystem;
using namespace lvit;
using namespace lvit::data;
using lvit::test::shared_data_dir;

namespace {

std::string cifar100_dir() { return shared_data_dir() + "/cifar-100-binary"; }

bool have_cifar100() { return lvit::test::have_shared(cifar100_dir(), "train.bin", "CIFAR-100"); }

// Scratch folders of this suite.
struct TempDir : lvit::test::TempDir {
  TempDir() : lvit::test::TempDir("lvit_test_data_") {}
};

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// n CIFAR records: label bytes then 3072 pixel bytes (pixel value = (record + position) % 256).
std::vector<uint8_t> make_records(int n, const std::vector<uint8_t>& label_bytes_per_record,
                                  int label_bytes) {
  std::vector<uint8_t> out;
  for (int r = 0; r < n; ++r) {
    for (int k = 0; k < label_bytes; ++k)
      out.push_back(label_bytes_per_record[static_cast<size_t>(r * label_bytes + k)]);
    for (int p = 0; p < 3072; ++p) out.push_back(static_cast<uint8_t>((r + p) % 256));
  }
  return out;
}

// The message of the UserError that `fn` throws ("" if it throws none: the CHECK then fails).
template <typename F>
std::string user_error_message(F&& fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  }
  FAIL_CHECK("expected lvit::UserError");
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A small synthetic dataset: image i is filled with bytes derived from i, label i % classes.
ImageDataset synthetic(int64_t n, int classes, int side = 8) {
  ImageDataset ds;
  ds.name = "synthetic";
  ds.size = n;
  ds.channels = 3;
  ds.height = ds.width = side;
  ds.num_classes = classes;
  ds.images.resize(static_cast<size_t>(n * ds.image_numel()));
  for (size_t j = 0; j < ds.images.size(); ++j)
    ds.images[j] = static_cast<uint8_t>((j * 2654435761u) >> 24);
  for (int64_t i = 0; i < n; ++i) ds.labels.push_back(static_cast<int32_t>(i % classes));
  for (int c = 0; c < classes; ++c) ds.class_names.push_back(std::to_string(c));
  return ds;
}

struct EpochRecord {
  std::vector<int64_t> labels;
  std::vector<float> pixels;
  std::vector<int64_t> batch_sizes;
};

EpochRecord run_epoch(Loader& loader, int64_t epoch, int64_t skip_to = 0) {
  EpochRecord rec;
  loader.start_epoch(epoch);
  if (skip_to) loader.skip_to(skip_to);
  Batch b;
  int64_t expect = skip_to;
  while (loader.next(b)) {
    CHECK(b.index == expect++);
    auto l = b.labels.to_vector<int64_t>();
    auto p = b.images.to_vector<float>();
    rec.labels.insert(rec.labels.end(), l.begin(), l.end());
    rec.pixels.insert(rec.pixels.end(), p.begin(), p.end());
    rec.batch_sizes.push_back(b.labels.numel());
  }
  return rec;
}

}  // namespace

// ---- real CIFAR-100 --------------------------------------------------------------------------

TEST_CASE("cifar100: the real train and test sets") {
  if (!have_cifar100()) return;
  const ImageDataset train = load_cifar100(cifar100_dir(), true);
  CHECK(train.name == "cifar100");
  REQUIRE(train.size == 50000);
  CHECK(train.images.size() == size_t{50000} * 3072);
  CHECK(train.num_classes == 100);
  CHECK(train.channels == 3);
  CHECK(train.height == 32);
  CHECK(train.width == 32);
  REQUIRE(train.class_names.size() == 100);
  CHECK(train.class_names[19] == "cattle");
  CHECK(train.class_names[0] == "apple");
  CHECK(train.class_names[99] == "worm");
  const std::vector<int32_t> first_train = {19, 29, 0,  11, 1,  86, 90, 28, 23, 31,
                                            39, 96, 82, 17, 71, 39, 8,  97, 80, 71};
  CHECK(std::vector<int32_t>(train.labels.begin(), train.labels.begin() + 20) == first_train);
  // Red value of pixel (0, 0) of train images 0..9 (published), and the planes' order.
  const int red00[10] = {255, 255, 250, 124, 43, 190, 50, 178, 122, 255};
  for (int i = 0; i < 10; ++i) CHECK(train.image(i)[0] == red00[i]);
  CHECK(train.image(0)[3071] == 79);  // last byte of record 0: B plane, pixel (31, 31)

  // Every class 500 times, and the training-set statistics behind normalization_for().
  std::vector<int> count(100, 0);
  for (int32_t l : train.labels) ++count[static_cast<size_t>(l)];
  CHECK(std::all_of(count.begin(), count.end(), [](int c) { return c == 500; }));
  const Normalization nrm = normalization_for("cifar100");
  for (int c = 0; c < 3; ++c) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < train.size; ++i) {
      const uint8_t* p = train.image(i) + c * 1024;
      uint64_t a = 0, a2 = 0;
      for (int j = 0; j < 1024; ++j) a += p[j], a2 += uint64_t{p[j]} * p[j];
      s += static_cast<double>(a);
      s2 += static_cast<double>(a2);
    }
    const double n = 50000.0 * 1024, mean = s / n / 255, var = s2 / n / (255.0 * 255) - mean * mean;
    CHECK(mean == doctest::Approx(nrm.mean[c]).epsilon(1e-3));
    CHECK(std::sqrt(var) == doctest::Approx(nrm.std[c]).epsilon(1e-3));
  }

  const ImageDataset test = load_cifar100(cifar100_dir(), false);
  REQUIRE(test.size == 10000);
  CHECK(test.labels[0] == 49);
  CHECK(test.class_names[49] == "mountain");
  const int test_red00[10] = {199, 113, 61, 93, 80, 168, 37, 175, 233, 182};
  for (int i = 0; i < 10; ++i) CHECK(test.image(i)[0] == test_red00[i]);
}

TEST_CASE("resolve_dataset_dir: parent folder, dataset folder, errors") {
  if (!have_cifar100()) return;
  const std::string parent = shared_data_dir();
  CHECK(fs::equivalent(resolve_dataset_dir(parent, "cifar100"), cifar100_dir()));
  CHECK(fs::equivalent(resolve_dataset_dir(cifar100_dir(), "cifar100"), cifar100_dir()));
  CHECK(fs::equivalent(resolve_dataset_dir(parent, "CIFAR-100"), cifar100_dir()));
  if (fs::exists(parent + "/tiny-imagenet-200-sub10/wnids.txt"))
    CHECK(fs::equivalent(resolve_dataset_dir(parent, "tiny-imagenet"),
                         parent + "/tiny-imagenet-200-sub10"));

  TempDir tmp;
  std::string msg = user_error_message([&] { resolve_dataset_dir(tmp.str(), "cifar100"); });
  CHECK(contains(msg, tmp.str()));
  CHECK(contains(msg, "train.bin"));
  CHECK(contains(msg, "cifar-100-binary"));
  CHECK(contains(msg, "scripts/get_data.sh"));
  msg = user_error_message([&] { resolve_dataset_dir(tmp.str("nope"), "cifar10"); });
  CHECK(contains(msg, tmp.str("nope")));
  CHECK(contains(msg, "scripts/get_data.sh"));
  msg = user_error_message([&] { resolve_dataset_dir(parent, "mnist"); });
  CHECK(contains(msg, "mnist"));
  CHECK(contains(msg, "cifar100"));
}

TEST_CASE("default_data_dir and normalization_for") {
  const char* old = std::getenv("LVIT_DATA");
  const std::string saved = old ? old : "";
  setenv("LVIT_DATA", "/some/where", 1);
  CHECK(default_data_dir() == "/some/where");
  unsetenv("LVIT_DATA");
  CHECK(!default_data_dir().empty());
  if (old) setenv("LVIT_DATA", saved.c_str(), 1);

  const Normalization c10 = normalization_for("cifar10");
  CHECK(c10.mean[0] == doctest::Approx(0.4914f));
  CHECK(c10.std[2] == doctest::Approx(0.2616f));
  CHECK(normalization_for("cifar_100").std[1] == doctest::Approx(0.2564f));
  CHECK_THROWS_AS(normalization_for("svhn"), UserError);
}

// ---- broken copies ---------------------------------------------------------------------------

TEST_CASE("cifar100: broken files throw UserError naming the file") {
  TempDir tmp;
  const std::string train = tmp.str("train.bin"), test = tmp.str("test.bin");
  const auto good = make_records(20, std::vector<uint8_t>(40, 3), 2);

  SUBCASE("missing file") {
    const std::string msg = user_error_message([&] { load_cifar100(tmp.str(), true); });
    CHECK(contains(msg, train));
    CHECK(contains(msg, "not found"));
  }
  SUBCASE("truncated file") {
    write_file(train, std::vector<uint8_t>(good.begin(), good.begin() + 3 * 3074 + 1000));
    const std::string msg = user_error_message([&] { load_cifar100(tmp.str(), true); });
    CHECK(contains(msg, train));
    CHECK(contains(msg, "10222 bytes is not a whole number of 3074-byte CIFAR-100 records"));
  }
  SUBCASE("wrong record size (a CIFAR-10 file given as CIFAR-100)") {
    write_file(test, make_records(7, std::vector<uint8_t>(7, 1), 1));  // 7 * 3073 bytes
    const std::string msg = user_error_message([&] { load_cifar100(tmp.str(), false); });
    CHECK(contains(msg, test));
    CHECK(contains(msg, "3074-byte"));
  }
  SUBCASE("empty file") {
    write_file(test, {});
    const std::string msg = user_error_message([&] { load_cifar100(tmp.str(), false); });
    CHECK(contains(msg, test));
    CHECK(contains(msg, "empty"));
  }
  SUBCASE("bad fine label") {
    std::vector<uint8_t> labels(40, 3);
    labels[17 * 2 + 1] = 143;
    write_file(test, make_records(20, labels, 2));
    const std::string msg = user_error_message([&] { load_cifar100(tmp.str(), false); });
    CHECK(msg == test + ": record 17 has fine label 143, expected 0..99");
  }
  SUBCASE("bad coarse label") {
    std::vector<uint8_t> labels(40, 3);
    labels[5 * 2] = 20;
    write_file(test, make_records(20, labels, 2));
    const std::string msg = user_error_message([&] { load_cifar100(tmp.str(), false); });
    CHECK(msg == test + ": record 5 has coarse label 20, expected 0..19");
  }
  SUBCASE("wrong number of class names") {
    write_file(train, good);
    std::ofstream(tmp.str("fine_label_names.txt")) << "apple\nbaby\n";
    const std::string msg = user_error_message([&] { load_cifar100(tmp.str(), true); });
    CHECK(contains(msg, tmp.str("fine_label_names.txt")));
    CHECK(contains(msg, "2 class names, expected 100"));
  }
  SUBCASE("a subset with no names file loads") {
    write_file(train, good);
    const ImageDataset ds = load_cifar100(tmp.str(), true);
    CHECK(ds.size == 20);
    CHECK(ds.labels[7] == 3);
    CHECK(ds.image(7)[0] == 7);
    CHECK(ds.image(7)[3071] == (7 + 3071) % 256);
    REQUIRE(ds.class_names.size() == 100);
    CHECK(ds.class_names[42] == "42");
  }
}

TEST_CASE("cifar10: batches, names, missing batch") {
  TempDir tmp;
  for (int b = 1; b <= 5; ++b) {
    std::vector<uint8_t> labels(3, static_cast<uint8_t>(b));
    write_file(tmp.str("data_batch_" + std::to_string(b) + ".bin"), make_records(3, labels, 1));
  }
  write_file(tmp.str("test_batch.bin"), make_records(4, {0, 9, 2, 3}, 1));
  std::ofstream(tmp.str("batches.meta.txt"))
      << "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
  CHECK(fs::equivalent(resolve_dataset_dir(tmp.str(), "cifar10"), tmp.str()));

  const ImageDataset train = load_cifar10(tmp.str(), true);
  CHECK(train.name == "cifar10");
  CHECK(train.size == 15);
  CHECK(train.labels[0] == 1);
  CHECK(train.labels[14] == 5);
  CHECK(train.class_names.size() == 10);
  CHECK(train.class_names[9] == "truck");
  const ImageDataset test = load_cifar10(tmp.str(), false);
  CHECK(test.size == 4);
  CHECK(test.labels[1] == 9);

  fs::remove(tmp.path / "data_batch_3.bin");
  const std::string msg = user_error_message([&] { load_cifar10(tmp.str(), true); });
  CHECK(contains(msg, tmp.str("data_batch_3.bin")));
  write_file(tmp.str("test_batch.bin"), make_records(2, {0, 10}, 1));
  CHECK(user_error_message([&] { load_cifar10(tmp.str(), false); }) ==
        tmp.str("test_batch.bin") + ": record 1 has label 10, expected 0..9");
}

// ---- augmentation ----------------------------------------------------------------------------

TEST_CASE("augment: normalisation, determinism, crop and flip") {
  const ImageDataset ds = synthetic(4, 4, 32);
  const uint8_t* img = ds.image(1);
  const Normalization nrm = normalization_for("cifar100");
  const int C = 3, H = 32, W = 32, N = C * H * W;
  std::vector<float> a(N), b(N), c(N);

  // padding 0, no flip: exactly (x/255 - mean)/std.
  augment_image(img, C, H, W, 7, 0, 1, /*padding=*/0, /*hflip=*/false, nrm, a.data());
  normalize_image(img, C, H, W, nrm, b.data());
  CHECK(a == b);
  for (int ch = 0; ch < 3; ++ch)
    for (int y : {0, 13, 31})
      for (int x : {0, 5, 31}) {
        const int k = (ch * H + y) * W + x;
        const float want = (static_cast<float>(img[k]) / 255.0f - nrm.mean[ch]) / nrm.std[ch];
        CHECK(a[static_cast<size_t>(k)] == doctest::Approx(want).epsilon(1e-6));
      }
  // A hand-checked pixel: value 200 in the G plane is (200/255 - 0.4865) / 0.2564.
  std::vector<uint8_t> one(N, 0);
  one[1024 + 5 * 32 + 6] = 200;
  normalize_image(one.data(), C, H, W, nrm, a.data());
  CHECK(a[1024 + 5 * 32 + 6] == doctest::Approx(1.161520).epsilon(1e-5));
  CHECK(a[0] == doctest::Approx(-0.5071 / 0.2673).epsilon(1e-5));

  // Same (seed, epoch, index) -> same output; another epoch, index or seed -> different.
  augment_image(img, C, H, W, 7, 3, 1, 4, true, nrm, a.data());
  augment_image(img, C, H, W, 7, 3, 1, 4, true, nrm, b.data());
  CHECK(a == b);
  int differ = 0;
  for (int64_t e = 4; e < 12; ++e) {
    augment_image(img, C, H, W, 7, e, 1, 4, true, nrm, c.data());
    differ += c != a;
  }
  CHECK(differ >= 6);  // 8 epochs: 81 offsets x 2 flips, so at most a rare collision

  // The draws cover [-p, p] and flip about half the time.
  int flips = 0, lo = 0, hi = 0;
  for (int64_t i = 0; i < 2000; ++i) {
    const CropFlip cf = draw_crop_flip(1, 0, i, 4, true);
    CHECK(std::abs(cf.dy) <= 4);
    CHECK(std::abs(cf.dx) <= 4);
    flips += cf.flip;
    lo += cf.dx == -4;
    hi += cf.dy == 4;
  }
  CHECK(flips > 850);
  CHECK(flips < 1150);
  CHECK(lo > 150);
  CHECK(hi > 150);
  CHECK(!draw_crop_flip(1, 0, 5, 0, false).flip);
  CHECK(draw_crop_flip(1, 0, 5, 0, true).dx == 0);

  // A flipped image equals the mirrored unflipped one, with and without a crop shift.
  for (CropFlip cf : {CropFlip{0, 0, false}, CropFlip{2, -3, false}, CropFlip{-4, 4, false}}) {
    crop_flip_normalize(img, C, H, W, cf, nrm, a.data());
    cf.flip = true;
    crop_flip_normalize(img, C, H, W, cf, nrm, b.data());
    bool mirrored = true;
    for (int ch = 0; ch < C; ++ch)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x)
          mirrored &= b[static_cast<size_t>((ch * H + y) * W + x)] ==
                      a[static_cast<size_t>((ch * H + y) * W + (W - 1 - x))];
    CHECK(mirrored);
  }

  // A shifted crop moves the pixels and pads with zero bytes.
  crop_flip_normalize(img, C, H, W, CropFlip{2, -3, false}, nrm, a.data());
  normalize_image(img, C, H, W, nrm, b.data());
  const float pad_g = -nrm.mean[1] / nrm.std[1];
  CHECK(a[1024 + 0 * 32 + 10] == b[1024 + 2 * 32 + 7]);     // (0,10) <- (2,7)
  CHECK(a[1024 + 5 * 32 + 10] == b[1024 + 7 * 32 + 7]);     // (5,10) <- (7,7)
  CHECK(a[1024 + 5 * 32 + 1] == doctest::Approx(pad_g));    // x + dx = -2: padding
  CHECK(a[1024 + 31 * 32 + 10] == doctest::Approx(pad_g));  // y + dy = 33: padding
  CHECK(a[1024 + 29 * 32 + 31] == b[1024 + 31 * 32 + 28]);  // last valid row
}

// ---- loader ----------------------------------------------------------------------------------

TEST_CASE("augment: the crop/flip words are a stream of their own, apart from Generator(seed)") {
  static_assert(kCropFlipStream >> 32 != 0 && kCropFlipStream != kRandAugmentStream &&
                kCropFlipStream != kErasingStream && kCropFlipStream != kMixStream);
  // (dy, dx, flip) from the four words of one Philox block, as draw_crop_flip maps them.
  auto from_words = [](const uint32_t(&w)[4]) {
    auto bounded = [](uint32_t x) { return static_cast<int>((uint64_t{x} * 9) >> 32) - 4; };
    return CropFlip{bounded(w[0]), bounded(w[1]), (w[2] >> 31) != 0};
  };
  auto block = [](uint64_t seed, uint64_t offset, uint64_t idx) {
    uint32_t w[4] = {static_cast<uint32_t>(idx), static_cast<uint32_t>(idx >> 32),
                     static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)};
    Philox::block(w, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    return std::vector<uint32_t>(w, w + 4);
  };
  int same_as_init_stream = 0, n = 0;
  for (int64_t e = 0; e < 3; ++e)
    for (int64_t s = 0; s < 64; ++s, ++n) {
      const CropFlip cf = draw_crop_flip(7, e, s, 4, true);
      const auto own = block(7, kCropFlipStream | static_cast<uint64_t>(e), s);
      const CropFlip want = from_words({own[0], own[1], own[2], own[3]});
      CHECK((cf.dy == want.dy && cf.dx == want.dx && cf.flip == want.flip));
      // The words a Generator(7) hands its e-th draw (the model's initialisation): the crops
      // once came from these (all 192 equal); independent words agree 1 time in 162.
      const auto init = block(7, static_cast<uint64_t>(e), s);
      const CropFlip old = from_words({init[0], init[1], init[2], init[3]});
      same_as_init_stream += cf.dy == old.dy && cf.dx == old.dx && cf.flip == old.flip;
    }
  CHECK(n == 192);
  CHECK(same_as_init_stream < 8);
}

TEST_CASE("loader: permutation, order across workers, epochs, drop_last, skip_to") {
  const ImageDataset ds = synthetic(103, 103);  // label == sample index
  LoaderConfig cfg;
  cfg.batch_size = 10;
  cfg.norm = normalization_for("cifar10");
  cfg.seed = 42;
  cfg.drop_last = false;
  cfg.prefetch = 3;

  cfg.workers = 0;
  Loader inline_loader(ds, cfg);
  CHECK(inline_loader.batches_per_epoch() == 11);
  const EpochRecord e0 = run_epoch(inline_loader, 0);

  // Every sample exactly once, in a shuffled order; last batch partial.
  std::vector<int64_t> sorted = e0.labels;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(103);
  for (int64_t i = 0; i < 103; ++i) iota[static_cast<size_t>(i)] = i;
  CHECK(sorted == iota);
  CHECK(e0.labels != iota);
  CHECK(e0.batch_sizes.size() == 11);
  CHECK(e0.batch_sizes.back() == 3);
  CHECK(e0.labels == std::vector<int64_t>(epoch_permutation(103, 42, 0)));

  // Identical batches (labels and augmented pixels) for 0, 1 and 3 workers.
  for (int workers : {1, 3}) {
    cfg.workers = workers;
    Loader loader(ds, cfg);
    const EpochRecord r = run_epoch(loader, 0);
    CHECK(r.labels == e0.labels);
    CHECK(r.pixels == e0.pixels);
  }

  // Deterministic for a seed, different across epochs and seeds.
  cfg.workers = 2;
  Loader loader(ds, cfg);
  const EpochRecord again = run_epoch(loader, 0);
  CHECK(again.labels == e0.labels);
  CHECK(again.pixels == e0.pixels);
  const EpochRecord e1 = run_epoch(loader, 1);
  CHECK(e1.labels != e0.labels);
  sorted = e1.labels;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == iota);
  LoaderConfig other = cfg;
  other.seed = 43;
  Loader loader43(ds, other);
  CHECK(run_epoch(loader43, 0).labels != e0.labels);

  // skip_to reproduces the tail of an uninterrupted epoch; start_epoch mid-epoch starts over.
  const EpochRecord tail = run_epoch(loader, 1, 4);
  CHECK(tail.labels == std::vector<int64_t>(e1.labels.begin() + 40, e1.labels.end()));
  CHECK(tail.pixels ==
        std::vector<float>(e1.pixels.begin() + 40 * 192, e1.pixels.end()));  // 3*8*8 per image
  loader.start_epoch(0);
  Batch b;
  REQUIRE(loader.next(b));
  REQUIRE(loader.next(b));
  CHECK(b.index == 1);
  CHECK(run_epoch(loader, 0).labels == e0.labels);

  // drop_last: 10 full batches, 100 distinct samples; no shuffle: identity order.
  cfg.drop_last = true;
  cfg.shuffle = false;
  cfg.augment = false;
  Loader plain(ds, cfg);
  CHECK(plain.batches_per_epoch() == 10);
  const EpochRecord p = run_epoch(plain, 5);
  CHECK(p.batch_sizes == std::vector<int64_t>(10, 10));
  CHECK(p.labels == std::vector<int64_t>(iota.begin(), iota.begin() + 100));
  std::vector<float> want(192);
  normalize_image(ds.image(37), 3, 8, 8, cfg.norm, want.data());
  CHECK(std::vector<float>(p.pixels.begin() + 37 * 192, p.pixels.begin() + 38 * 192) == want);

  cfg.batch_size = 200;
  Loader none(ds, cfg);
  CHECK(none.batches_per_epoch() == 0);
  none.start_epoch(0);
  CHECK(!none.next(b));
}

TEST_CASE("loader: a worker's exception is rethrown from next(); shutdown mid-epoch") {
  ImageDataset ds = synthetic(50, 5);
  LoaderConfig cfg;
  cfg.batch_size = 8;
  cfg.workers = 2;
  cfg.prefetch = 2;
  {
    Loader loader(ds, cfg);
    loader.start_epoch(0);
    Batch b;
    CHECK(loader.next(b));
  }  // destroyed with batches in flight: must join cleanly
  Loader loader(ds, cfg);
  ds.labels.pop_back();  // the dataset changes under the loader: building a batch throws
  loader.start_epoch(0);
  Batch b;
  CHECK_THROWS_AS(loader.next(b), lvit::Error);
  CHECK_THROWS_AS(loader.next(b), lvit::Error);
}

TEST_CASE("loader: one augmented epoch over the real CIFAR-100 test set") {
  if (!have_cifar100()) return;
  const ImageDataset test = load_cifar100(cifar100_dir(), false);
  LoaderConfig cfg;
  cfg.batch_size = 256;
  cfg.norm = normalization_for("cifar100");
  cfg.drop_last = false;
  cfg.workers = 2;
  Loader loader(test, cfg);
  loader.start_epoch(0);
  Batch b;
  int64_t n = 0, batches = 0;
  double sum = 0;
  std::vector<int> seen(100, 0);
  while (loader.next(b)) {
    CHECK(b.images.shape() == Shape{b.labels.numel(), 3, 32, 32});
    const float* p = b.images.data<float>();
    for (int64_t i = 0; i < b.images.numel(); ++i) sum += p[i];
    const int64_t* l = b.labels.data<int64_t>();
    for (int64_t i = 0; i < b.labels.numel(); ++i) ++seen[static_cast<size_t>(l[i])];
    n += b.labels.numel();
    ++batches;
  }
  CHECK(n == 10000);
  CHECK(batches == 40);
  CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 100; }));
  // The same pixels as augmenting every sample directly (the order differs, so compare sums).
  // Zero padding (about 13% of the pixels, each near -1.8 once normalised) pulls the mean
  // to about -0.25; without augmentation it is about 0.005.
  double want = 0;
  std::vector<float> img(3072);
  for (int64_t s = 0; s < test.size; ++s) {
    augment_image(test.image(s), 3, 32, 32, cfg.seed, 0, s, 4, true, cfg.norm, img.data());
    for (float v : img) want += v;
  }
  CHECK(sum == doctest::Approx(want).epsilon(1e-9));
  CHECK(sum / (10000.0 * 3072) == doctest::Approx(-0.25).epsilon(0.2));
}
