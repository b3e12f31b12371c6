// data/tiny_imagenet: the reader on the real 10-class subset in ../shared/data (counts, labels,
// grayscale, the decoded-pixel cache) and on small broken copies in a temp folder.
#include <doctest/doctest.h>

#include "test_util.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/cifar.h"
#include "data/tiny_imagenet.h"

// The test's own stb copies (static: the library keeps its stb_image private too): stb_image to
// decode reference pixels and read channel counts, stb_image_write to make a 32x32 JPEG.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wpedantic"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#include <stb_image.h>
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace fs = std::filesystem;
using namespace lvit;
using namespace lvit::data;
using lvit::test::shared_data_dir;

namespace {

constexpr int64_t kPixels = 3 * 64 * 64;

std::string sub10_dir() { return shared_data_dir() + "/tiny-imagenet-200-sub10"; }

bool have_sub10() {
  return lvit::test::have_shared(sub10_dir(), "wnids.txt", "Tiny ImageNet subset");
}

// Scratch folders of this suite.
struct TempDir : lvit::test::TempDir {
  TempDir() : lvit::test::TempDir("lvit_test_tin_") {}
};

// Sets (or unsets, with nullopt) an environment variable for the scope.
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  EnvGuard(std::string n, const std::optional<std::string>& value) : name(std::move(n)) {
    if (const char* v = std::getenv(name.c_str())) old = v;
    if (value)
      ::setenv(name.c_str(), value->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
  ~EnvGuard() {
    if (old)
      ::setenv(name.c_str(), old->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
};

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

std::vector<std::string> sorted_images(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// (file, wnid) of each line of a val_annotations.txt.
std::vector<std::pair<std::string, std::string>> read_annotations(const fs::path& p) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& line : read_lines(p)) {
    std::istringstream s(line);
    std::string file, wnid;
    s >> file >> wnid;
    out.emplace_back(file, wnid);
  }
  return out;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
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

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The planes of image i are equal (a grayscale source).
bool planes_equal(const ImageDataset& ds, int64_t i) {
  const uint8_t* p = ds.image(i);
  return std::equal(p, p + 4096, p + 4096) && std::equal(p, p + 4096, p + 8192);
}

// Image i matches an independent stb_image decode of `file`, transposed to CHW.
bool matches_reference(const ImageDataset& ds, int64_t i, const fs::path& file) {
  int w = 0, h = 0, c = 0;
  stbi_uc* px = stbi_load(file.c_str(), &w, &h, &c, 3);
  if (!px || w != 64 || h != 64) {
    stbi_image_free(px);
    return false;
  }
  bool same = true;
  for (int64_t p = 0; p < 4096 && same; ++p)
    for (int ch = 0; ch < 3; ++ch) same = same && ds.image(i)[ch * 4096 + p] == px[p * 3 + ch];
  stbi_image_free(px);
  return same;
}

// A small tree in the original layout, copied from the subset: its first two classes, three train
// images each and the first two val images of each (with their annotation lines, in the original
// order), and a words.txt of its own.
struct SmallTree {
  TempDir tmp;
  fs::path root, cache;
  std::vector<std::string> wnids;
  TinyImageNetOptions opt;

  SmallTree() {
    const fs::path src(sub10_dir());
    root = tmp.path / "tin";
    cache = tmp.path / "cache";
    opt.cache_dir = cache.string();
    const std::vector<std::string> all = read_lines(src / "wnids.txt");
    wnids = {all[0], all[1]};
    fs::create_directories(root / "val" / "images");
    std::ofstream(root / "wnids.txt") << wnids[0] << "\n" << wnids[1] << "\n";
    std::ofstream(root / "words.txt") << "n00001740\tentity\n"
                                      << wnids[0] << "\tEgyptian cat\n"
                                      << wnids[1] << "\treel\n";
    for (const std::string& w : wnids) {
      const fs::path from = src / "train" / w / "images", to = root / "train" / w / "images";
      fs::create_directories(to);
      const std::vector<std::string> names = sorted_images(from);
      for (int k = 0; k < 3; ++k) fs::copy_file(from / names[k], to / names[k]);
    }
    std::ofstream ann(root / "val" / "val_annotations.txt");
    std::map<std::string, int> taken;
    for (const std::string& line : read_lines(src / "val" / "val_annotations.txt")) {
      std::istringstream s(line);
      std::string file, wnid;
      s >> file >> wnid;
      if ((wnid != wnids[0] && wnid != wnids[1]) || taken[wnid] == 2) continue;
      ++taken[wnid];
      fs::copy_file(src / "val" / "images" / file, root / "val" / "images" / file);
      ann << line << "\n";
    }
  }
  fs::path train_image(int cls, int k) const {
    const fs::path d = root / "train" / wnids[static_cast<size_t>(cls)] / "images";
    return d / sorted_images(d)[static_cast<size_t>(k)];
  }
  ImageDataset load(bool train, TinyImageNetLoadInfo* info = nullptr) const {
    return load_tiny_imagenet(root.string(), train, opt, info);
  }
};

void write_truncated_copy(const fs::path& from, const fs::path& to) {
  std::ifstream in(from, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(to, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
}

void write_jpeg(const fs::path& to, int side, int comp) {
  std::vector<uint8_t> px(static_cast<size_t>(side * side * comp));
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 7);
  REQUIRE(stbi_write_jpg(to.c_str(), side, side, comp, px.data(), 95) != 0);
}

}  // namespace

// ---- the real 10-class subset -----------------------------------------------------------------

// Decodes the train split once and the val split twice (the second time after the cache file was
// truncated): the only full decodes of the suite.
TEST_CASE("tiny-imagenet sub10: counts, labels, grayscale, cache hit and rebuild") {
  if (!have_sub10()) return;
  TempDir cache;
  TinyImageNetOptions opt;
  opt.cache_dir = cache.str();
  const fs::path src(sub10_dir());
  const std::vector<std::string> wnids = read_lines(src / "wnids.txt");
  REQUIRE(wnids.size() == 10);

  TinyImageNetLoadInfo info;
  auto t0 = std::chrono::steady_clock::now();
  const ImageDataset train = load_tiny_imagenet(src.string(), true, opt, &info);
  const double decode_s = seconds_since(t0);
  CHECK_FALSE(info.from_cache);
  CHECK(info.skipped == 0);
  CHECK(info.cache_note.empty());
  CHECK(fs::exists(info.cache_path));
  CHECK(contains(info.cache_path, "tiny-imagenet-train-"));

  CHECK(train.name == "tiny-imagenet");
  REQUIRE(train.size == 5000);
  CHECK(train.num_classes == 10);
  CHECK(train.channels == 3);
  CHECK(train.height == 64);
  CHECK(train.width == 64);
  CHECK(train.images.size() == size_t{5000} * kPixels);
  REQUIRE(train.class_names.size() == 10);
  CHECK(train.class_names[0] == "Egyptian cat");
  CHECK(train.class_names[1] == "reel");
  CHECK(train.class_names[3] == "rocking chair");
  std::vector<int> per_class(10, 0);
  for (int32_t y : train.labels) {
    REQUIRE(y >= 0);
    REQUIRE(y < 10);
    ++per_class[static_cast<size_t>(y)];
  }
  for (int c = 0; c < 10; ++c) CHECK(per_class[static_cast<size_t>(c)] == 500);

  // Second load: from the cache, identical, and much faster than decoding.
  TinyImageNetLoadInfo info2;
  t0 = std::chrono::steady_clock::now();
  const ImageDataset train2 = load_tiny_imagenet(src.string(), true, opt, &info2);
  const double hit_s = seconds_since(t0);
  CHECK(info2.from_cache);
  CHECK(info2.cache_path == info.cache_path);
  CHECK(train2.size == train.size);
  CHECK(train2.labels == train.labels);
  CHECK(train2.images == train.images);
  CHECK(train2.class_names == train.class_names);
  MESSAGE("sub10 train: decode " << decode_s << " s, cache hit " << hit_s << " s");
  CHECK(hit_s * 2 < decode_s);  // typically 5x or more; the margin absorbs a loaded machine

  // Validation split: labels in val_annotations.txt order.
  const auto ann = read_annotations(src / "val" / "val_annotations.txt");
  REQUIRE(ann.size() == 500);
  TinyImageNetLoadInfo vinfo;
  const ImageDataset val = load_tiny_imagenet(src.string(), false, opt, &vinfo);
  CHECK_FALSE(vinfo.from_cache);
  CHECK(contains(vinfo.cache_path, "tiny-imagenet-val-"));
  REQUIRE(val.size == 500);
  CHECK(val.num_classes == 10);
  std::vector<int> val_per_class(10, 0);
  for (int32_t y : val.labels) ++val_per_class[static_cast<size_t>(y)];
  for (int c = 0; c < 10; ++c) CHECK(val_per_class[static_cast<size_t>(c)] == 50);
  for (size_t i = 0; i < ann.size(); ++i) {
    const auto wi = std::find(wnids.begin(), wnids.end(), ann[i].second) - wnids.begin();
    REQUIRE(val.labels[i] == wi);
  }
  CHECK(ann[0].first == "val_1.JPEG");
  CHECK(val.labels[0] == 1);  // n04067472, "reel"
  CHECK(ann[1].first == "val_26.JPEG");
  CHECK(val.labels[1] == 2);  // n04540053, "volleyball"

  // Grayscale: the JPEGs with one component (found by reading their headers) come out as three
  // equal planes, the same pixels as an independent decode; 77 in all, as SOURCE.md says.
  int gray_files = 0;
  for (size_t i = 0; i < ann.size(); ++i) {
    const fs::path f = src / "val" / "images" / ann[i].first;
    int w = 0, h = 0, comp = 0;
    REQUIRE(stbi_info(f.c_str(), &w, &h, &comp) != 0);
    if (comp == 1) {
      ++gray_files;
      CHECK(planes_equal(val, static_cast<int64_t>(i)));
    }
    if (i < 3 || comp == 1) CHECK(matches_reference(val, static_cast<int64_t>(i), f));
  }
  int64_t train_index = 0;
  for (const std::string& w : wnids) {
    const fs::path d = src / "train" / w / "images";
    const std::vector<std::string> names = sorted_images(d);
    for (size_t k = 0; k < names.size(); ++k, ++train_index) {
      int iw = 0, ih = 0, comp = 0;
      REQUIRE(stbi_info((d / names[k]).c_str(), &iw, &ih, &comp) != 0);
      if (comp == 1) {
        ++gray_files;
        CHECK(planes_equal(train, train_index));
      }
      if (k == 0) CHECK(matches_reference(train, train_index, d / names[k]));
    }
  }
  CHECK(train_index == 5000);
  CHECK(gray_files == 77);
  CHECK_FALSE(planes_equal(val, 0));

  // A truncated cache file is detected and rebuilt, never trusted.
  fs::resize_file(vinfo.cache_path, fs::file_size(vinfo.cache_path) - 1000);
  TinyImageNetLoadInfo vinfo2;
  const ImageDataset val2 = load_tiny_imagenet(src.string(), false, opt, &vinfo2);
  CHECK_FALSE(vinfo2.from_cache);
  CHECK(contains(vinfo2.cache_note, "corrupt or truncated cache file"));
  CHECK(val2.labels == val.labels);
  CHECK(val2.images == val.images);
  TinyImageNetLoadInfo vinfo3;
  load_tiny_imagenet(src.string(), false, opt, &vinfo3);
  CHECK(vinfo3.from_cache);
  CHECK(vinfo3.cache_note.empty());
}

// ---- small copies in a temp folder ------------------------------------------------------------

TEST_CASE("tiny-imagenet cache: keyed on the source files, rebuilt when they change") {
  if (!have_sub10()) return;
  SmallTree t;
  TinyImageNetLoadInfo info;
  const ImageDataset a = t.load(true, &info);
  REQUIRE(a.size == 6);
  CHECK(a.labels == std::vector<int32_t>{0, 0, 0, 1, 1, 1});
  CHECK(a.class_names == std::vector<std::string>{"Egyptian cat", "reel"});
  CHECK_FALSE(info.from_cache);
  const std::string first_cache = info.cache_path;
  CHECK(t.load(true, &info).images == a.images);
  CHECK(info.from_cache);

  // Touching a file changes the key; the stale cache of this folder is removed.
  const fs::path img = t.train_image(1, 0);
  fs::last_write_time(img, fs::last_write_time(img) + std::chrono::seconds(5));
  CHECK(t.load(true, &info).images == a.images);
  CHECK_FALSE(info.from_cache);
  CHECK(info.cache_path != first_cache);
  CHECK_FALSE(fs::exists(first_cache));
  t.load(true, &info);
  CHECK(info.from_cache);

  // Adding and removing a file.
  const fs::path added = img.parent_path() / "zz_added.JPEG";
  fs::copy_file(t.train_image(0, 0), added);
  ImageDataset b = t.load(true, &info);
  CHECK_FALSE(info.from_cache);
  REQUIRE(b.size == 7);
  CHECK(b.labels.back() == 1);
  CHECK(std::equal(a.image(0), a.image(0) + kPixels, b.image(6)));
  fs::remove(added);
  CHECK(t.load(true, &info).size == 6);
  CHECK_FALSE(info.from_cache);

  // A corrupt header (right size, wrong bytes) is rebuilt too.
  {
    std::fstream f(info.cache_path, std::ios::in | std::ios::out | std::ios::binary);
    f.write("garbage!", 8);
  }
  CHECK(t.load(true, &info).images == a.images);
  CHECK_FALSE(info.from_cache);
  CHECK(contains(info.cache_note, "corrupt"));

  // use_cache = false neither reads nor writes a cache.
  TinyImageNetOptions nocache = t.opt;
  nocache.use_cache = false;
  nocache.cache_dir = t.tmp.str("unused");
  CHECK(load_tiny_imagenet(t.root.string(), true, nocache, &info).images == a.images);
  CHECK_FALSE(info.from_cache);
  CHECK(info.cache_path.empty());
  CHECK_FALSE(fs::exists(t.tmp.str("unused")));

  // Val: relabelling an image in the annotations changes the key (and the label).
  const fs::path ann_path = t.root / "val" / "val_annotations.txt";
  const ImageDataset v = t.load(false, &info);
  REQUIRE(v.size == 4);
  CHECK_FALSE(info.from_cache);
  t.load(false, &info);
  CHECK(info.from_cache);
  auto ann = read_annotations(ann_path);
  {
    std::ofstream out(ann_path);
    for (size_t i = 0; i < ann.size(); ++i)
      out << ann[i].first << "\t" << (i == 0 ? t.wnids[0] : ann[i].second) << "\t0\t0\t1\t1\n";
  }
  const ImageDataset v2 = t.load(false, &info);
  CHECK_FALSE(info.from_cache);
  CHECK(v2.labels[0] == 0);
  CHECK(v2.images == v.images);
}

TEST_CASE("tiny-imagenet: load_dataset, resolve_dataset_dir and the default cache folder") {
  if (!have_sub10()) return;
  SmallTree t;
  {
    EnvGuard env("LVIT_CACHE_DIR", t.cache.string());
    CHECK(fs::equivalent(resolve_dataset_dir(t.root.string(), "tiny-imagenet"), t.root));
    const ImageDataset v = load_dataset(t.root.string(), "tiny_imagenet", false);
    CHECK(v.name == "tiny-imagenet");
    CHECK(v.size == 4);
    CHECK(v.num_classes == 2);
    bool cached = false;
    for (const auto& e : fs::directory_iterator(t.cache))
      cached = cached || contains(e.path().filename().string(), "tiny-imagenet-val-");
    CHECK(cached);
    CHECK(default_cache_dir() == t.cache.string());
  }
  EnvGuard no_lvit("LVIT_CACHE_DIR", std::nullopt);
  {
    EnvGuard xdg("XDG_CACHE_HOME", "/x/cache");
    CHECK(default_cache_dir() == "/x/cache/lvit");
  }
  EnvGuard no_xdg("XDG_CACHE_HOME", std::nullopt);
  {
    EnvGuard home("HOME", "/home/u");
    CHECK(default_cache_dir() == "/home/u/.cache/lvit");
  }
  EnvGuard no_home("HOME", std::nullopt);
  CHECK(default_cache_dir().empty());
  // No cache folder at all: the load still works and says why nothing was cached.
  TinyImageNetLoadInfo info;
  CHECK(load_tiny_imagenet(t.root.string(), false, {}, &info).size == 4);
  CHECK(contains(info.cache_note, "no cache folder"));
}

TEST_CASE("tiny-imagenet: bad images are errors naming the file, or skipped and counted") {
  if (!have_sub10()) return;
  SmallTree t;
  const fs::path cls0 = t.root / "train" / t.wnids[0] / "images";
  TinyImageNetOptions skip = t.opt;
  skip.skip_bad_images = true;
  TinyImageNetLoadInfo info;

  SUBCASE("truncated JPEG") {
    const fs::path bad = cls0 / "bad_truncated.JPEG";
    write_truncated_copy(t.train_image(0, 0), bad);
    const std::string msg = user_error_message([&] { t.load(true); });
    CHECK(contains(msg, bad.string() + ": not a decodable image (stb_image: "));
    CHECK(msg.find('\n') == std::string::npos);
    const ImageDataset ds = load_tiny_imagenet(t.root.string(), true, skip, &info);
    CHECK(ds.size == 6);
    CHECK(info.skipped == 1);
    CHECK(ds.labels == std::vector<int32_t>{0, 0, 0, 1, 1, 1});
    // The skipping build is cached with its count; a strict load does not use it and fails.
    load_tiny_imagenet(t.root.string(), true, skip, &info);
    CHECK(info.from_cache);
    CHECK(info.skipped == 1);
    CHECK(contains(user_error_message([&] { t.load(true); }), bad.string()));
  }
  SUBCASE("32x32 image") {
    const fs::path bad = cls0 / "small.JPEG";
    write_jpeg(bad, 32, 3);
    CHECK(user_error_message([&] { t.load(true); }) == bad.string() + ": 32x32, expected 64x64");
    CHECK(load_tiny_imagenet(t.root.string(), true, skip, &info).size == 6);
    CHECK(info.skipped == 1);
  }
  SUBCASE("empty file in val") {
    const fs::path bad = t.root / "val" / "images" / "val_empty.JPEG";
    std::ofstream(bad).close();
    std::ofstream(t.root / "val" / "val_annotations.txt", std::ios::app)
        << "val_empty.JPEG\t" << t.wnids[1] << "\t0\t0\t1\t1\n";
    CHECK(contains(user_error_message([&] { t.load(false); }), bad.string() + ": not a decodable"));
    const ImageDataset ds = load_tiny_imagenet(t.root.string(), false, skip, &info);
    CHECK(ds.size == 4);
    CHECK(info.skipped == 1);
  }
  SUBCASE("several bad images: the first is reported, all are skipped") {
    write_truncated_copy(t.train_image(1, 0), t.root / "train" / t.wnids[1] / "images" / "b.JPEG");
    write_jpeg(cls0 / "a.JPEG", 32, 3);
    CHECK(contains(user_error_message([&] { t.load(true); }), (cls0 / "a.JPEG").string()));
    const ImageDataset ds = load_tiny_imagenet(t.root.string(), true, skip, &info);
    CHECK(ds.size == 6);
    CHECK(info.skipped == 2);
  }
  SUBCASE("many images: bad ones in several decode chunks and threads") {
    // 100 extra images (more than one 32-image chunk per thread), bad ones at 10, 40 and 95.
    for (int k = 0; k < 100; ++k) {
      const fs::path p = cls0 / fmt::format("c{:03}.JPEG", k);
      if (k == 10 || k == 95)
        write_truncated_copy(t.train_image(1, 0), p);
      else if (k == 40)
        write_jpeg(p, 48, 3);
      else
        fs::copy_file(t.train_image(1, 1), p);
    }
    for (int run = 0; run < 3; ++run)  // the reported image must not depend on thread timing
      CHECK(contains(user_error_message([&] { t.load(true); }), (cls0 / "c010.JPEG").string()));
    const ImageDataset ds = load_tiny_imagenet(t.root.string(), true, skip, &info);
    REQUIRE(ds.size == 103);
    CHECK(info.skipped == 3);
    CHECK(std::count(ds.labels.begin(), ds.labels.end(), 0) == 100);
    // c000 is a copy of class 1's second image, which lands at 100 (class 0) + 1.
    CHECK(std::equal(ds.image(0), ds.image(0) + kPixels, ds.image(101)));
    CHECK_FALSE(std::equal(ds.image(0), ds.image(0) + kPixels, ds.image(100)));
  }
  SUBCASE("a synthetic 64x64 grayscale JPEG becomes three equal planes") {
    write_jpeg(cls0 / "zz_gray.JPEG", 64, 1);
    const ImageDataset ds = t.load(true, &info);
    REQUIRE(ds.size == 7);
    CHECK(planes_equal(ds, 3));
    CHECK(matches_reference(ds, 3, cls0 / "zz_gray.JPEG"));
  }
  SUBCASE("val image without an annotation line") {
    const fs::path extra = t.root / "val" / "images" / "val_extra.JPEG";
    fs::copy_file(t.train_image(0, 0), extra);
    const std::string msg = user_error_message([&] { t.load(false); });
    CHECK(contains(msg, extra.string() + ": not listed in "));
    CHECK(contains(msg, "val_annotations.txt"));
    // Skipping is for undecodable images only: a labelling problem is always an error.
    CHECK(!user_error_message([&] { load_tiny_imagenet(t.root.string(), false, skip); }).empty());
    // The train split does not read val/.
    CHECK(t.load(true).size == 6);
  }
  SUBCASE("annotation with an unknown wnid") {
    std::ofstream(t.root / "val" / "val_annotations.txt", std::ios::app)
        << "val_1.JPEG\tn99999999\t0\t0\t1\t1\n";
    const std::string msg = user_error_message([&] { t.load(false); });
    CHECK(contains(msg, "val_annotations.txt:5: val_1.JPEG is labelled n99999999"));
    CHECK(contains(msg, "wnids.txt"));
  }
  SUBCASE("annotation naming a missing file") {
    std::ofstream(t.root / "val" / "val_annotations.txt", std::ios::app)
        << "val_missing.JPEG\t" << t.wnids[0] << "\t0\t0\t1\t1\n";
    const std::string msg = user_error_message([&] { t.load(false); });
    CHECK(contains(msg, "val_annotations.txt:5: "));
    CHECK(contains(msg, "val_missing.JPEG: file not found"));
  }
  SUBCASE("image annotated twice") {
    const auto ann = read_annotations(t.root / "val" / "val_annotations.txt");
    std::ofstream(t.root / "val" / "val_annotations.txt", std::ios::app)
        << ann[0].first << "\t" << ann[0].second << "\t0\t0\t1\t1\n";
    CHECK(contains(user_error_message([&] { t.load(false); }),
                   "val_annotations.txt:5: " + ann[0].first + " is annotated twice"));
  }
}

TEST_CASE("tiny-imagenet: folder structure errors name the file") {
  if (!have_sub10()) return;
  SmallTree t;
  SUBCASE("missing wnids.txt") {
    fs::remove(t.root / "wnids.txt");
    CHECK(contains(user_error_message([&] { t.load(true); }),
                   (t.root / "wnids.txt").string() + ": file not found"));
  }
  SUBCASE("duplicate wnid") {
    std::ofstream(t.root / "wnids.txt", std::ios::app) << t.wnids[0] << "\n";
    CHECK(contains(user_error_message([&] { t.load(true); }), "wnids.txt:3: duplicate wnid"));
  }
  SUBCASE("wnid without a class folder") {
    std::ofstream(t.root / "wnids.txt", std::ios::app) << "n01443537\n";
    CHECK(contains(user_error_message([&] { t.load(true); }),
                   (t.root / "train" / "n01443537" / "images").string() + ": class folder"));
  }
  SUBCASE("class folder without images") {
    for (const auto& e : fs::directory_iterator(t.root / "train" / t.wnids[1] / "images"))
      fs::remove(e.path());
    CHECK(contains(user_error_message([&] { t.load(true); }), ": no .JPEG images"));
  }
  SUBCASE("missing val_annotations.txt") {
    fs::remove(t.root / "val" / "val_annotations.txt");
    CHECK(contains(user_error_message([&] { t.load(false); }),
                   (t.root / "val" / "val_annotations.txt").string() + ": file not found"));
  }
  SUBCASE("no words.txt: the wnids name the classes") {
    fs::remove(t.root / "words.txt");
    CHECK(t.load(false).class_names == t.wnids);
  }
}
