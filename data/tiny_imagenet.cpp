#include "data/tiny_imagenet.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"

// stb_image's implementation lives in this file only. STB_IMAGE_STATIC keeps its symbols local,
// so another translation unit (or libstb.so) defining them too cannot clash at link time.
// JPEG is what Tiny ImageNet ships; PNG is kept because re-encoded copies of ImageNet images
// sometimes hold PNG data under a .JPEG name. We read the files ourselves (STBI_NO_STDIO) so that
// an I/O error is told apart from an undecodable image.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wpedantic"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#include <stb_image.h>
#pragma GCC diagnostic pop

namespace lvit::data {
namespace fs = std::filesystem;

namespace {

constexpr int kSide = 64;
constexpr int kChannels = 3;
constexpr int64_t kPlane = int64_t{kSide} * kSide;
constexpr int64_t kPixels = kChannels * kPlane;  // 12,288 bytes per image

// Bump whenever the decoded bytes or the cache layout could change (decoder options, header
// fields, sample order): old cache files then simply stop matching.
constexpr uint32_t kCacheVersion = 1;
constexpr char kCacheMagic[8] = {'L', 'V', 'I', 'T', 'U', '8', 'C', '\n'};

// 64-bit FNV-1a: tiny, dependency-free, and plenty to tell one source listing from another (this
// is change detection, not security).
struct Fnv1a64 {
  uint64_t h = 0xcbf29ce484222325ull;
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 0x100000001b3ull;
    }
  }
  void u64(uint64_t v) { bytes(&v, sizeof v); }
  // Length-prefixed, so that ("ab", "c") and ("a", "bc") hash differently.
  void str(std::string_view s) {
    u64(s.size());
    bytes(s.data(), s.size());
  }
};

// One image of the split: where it is, its label, and what the cache key sees of it.
struct Source {
  std::string rel;  // relative to the dataset folder, e.g. "train/n01443537/images/x.JPEG"
  int32_t label = 0;
  int64_t size = 0;
  int64_t mtime_ns = 0;
};

struct Listing {
  std::vector<Source> images;  // in dataset order
  std::vector<Source> extra;   // other files whose change must invalidate the cache
};

struct Classes {
  std::vector<std::string> wnids;
  std::unordered_map<std::string, int32_t> index;
};

// One stat(2) for both size and mtime; std::filesystem would need two.
bool stat_regular(const fs::path& p, int64_t& size, int64_t& mtime_ns) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  size = static_cast<int64_t>(st.st_size);
  mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  LVIT_USER_CHECK(in.good(), "{}: cannot open: {}", p.string(), std::strerror(errno));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  LVIT_USER_CHECK(!in.bad(), "{}: read failed", p.string());
  return lines;
}

// Image files of the original layout end in .JPEG; .jpeg/.jpg are accepted too. Dot files are
// ignored: macOS leaves "._name.JPEG" resource forks (and .DS_Store) in copied folders.
bool is_image_name(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == "jpeg" || ext == "jpg";
}

// The image file names directly inside `dir`, sorted (directory order is filesystem-dependent
// and the sample order must not be).
std::vector<std::string> list_images(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  LVIT_USER_CHECK(!ec, "{}: cannot list: {}", dir.string(), ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    LVIT_USER_CHECK(!ec, "{}: cannot list: {}", dir.string(), ec.message());
    std::string name = it->path().filename().string();
    std::error_code ec2;
    if (is_image_name(name) && it->is_regular_file(ec2)) names.push_back(std::move(name));
  }
  LVIT_USER_CHECK(!ec, "{}: cannot list: {}", dir.string(), ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

Classes read_wnids(const fs::path& dir) {
  const fs::path p = dir / "wnids.txt";
  std::error_code ec;
  LVIT_USER_CHECK(fs::is_regular_file(p, ec),
                  "{}: file not found (a Tiny ImageNet folder lists its class ids in wnids.txt)",
                  p.string());
  Classes c;
  std::unordered_map<std::string, int> first_line;
  const std::vector<std::string> lines = read_lines(p);
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::string_view w = trim(lines[n]);
    if (w.empty()) continue;
    const int lineno = static_cast<int>(n) + 1;
    LVIT_USER_CHECK(split_ws(w).size() == 1, "{}:{}: '{}' is not a wnid (expected one per line)",
                    p.string(), lineno, w);
    auto [it, fresh] = first_line.emplace(std::string(w), lineno);
    LVIT_USER_CHECK(fresh, "{}:{}: duplicate wnid {} (first on line {})", p.string(), lineno, w,
                    it->second);
    c.index.emplace(std::string(w), static_cast<int32_t>(c.wnids.size()));
    c.wnids.emplace_back(w);
  }
  LVIT_USER_CHECK(!c.wnids.empty(), "{}: no wnids (expected one class id per line)", p.string());
  return c;
}

// words.txt maps every ImageNet wnid to "name, synonym, ..."; the first name is the class name.
// The file is optional (the wnid is the fallback name) and covers far more than our classes.
std::vector<std::string> read_class_names(const fs::path& dir, const Classes& c) {
  std::vector<std::string> names = c.wnids;
  const fs::path p = dir / "words.txt";
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return names;
  for (const std::string& line : read_lines(p)) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) continue;
    auto it = c.index.find(std::string(trim(std::string_view(line).substr(0, tab))));
    if (it == c.index.end()) continue;
    std::string_view name = std::string_view(line).substr(tab + 1);
    name = trim(name.substr(0, name.find(',')));
    if (!name.empty()) names[static_cast<size_t>(it->second)] = std::string(name);
  }
  return names;
}

Listing list_train(const fs::path& dir, const Classes& c) {
  Listing l;
  for (size_t k = 0; k < c.wnids.size(); ++k) {
    const fs::path rel_dir = fs::path("train") / c.wnids[k] / "images";
    const fs::path abs = dir / rel_dir;
    std::error_code ec;
    LVIT_USER_CHECK(fs::is_directory(abs, ec),
                    "{}: class folder not found (wnids.txt lists {}; expected "
                    "train/<wnid>/images/*.JPEG)",
                    abs.string(), c.wnids[k]);
    const std::vector<std::string> names = list_images(abs);
    LVIT_USER_CHECK(!names.empty(), "{}: no .JPEG images", abs.string());
    for (const std::string& name : names) {
      Source s;
      s.rel = (rel_dir / name).string();
      s.label = static_cast<int32_t>(k);
      LVIT_USER_CHECK(stat_regular(dir / s.rel, s.size, s.mtime_ns), "{}: cannot stat: {}",
                      (dir / s.rel).string(), std::strerror(errno));
      l.images.push_back(std::move(s));
    }
  }
  return l;
}

// val/: the labels come from val_annotations.txt, in its line order. Every annotated file must
// exist and every image must be annotated: a silently missing or unlabelled image would change
// the evaluation set without anyone noticing.
Listing list_val(const fs::path& dir, const Classes& c) {
  Listing l;
  const fs::path ann = dir / "val" / "val_annotations.txt";
  const fs::path images = dir / "val" / "images";
  const std::string ann_s = ann.string();
  Source a;
  a.rel = "val/val_annotations.txt";
  LVIT_USER_CHECK(stat_regular(ann, a.size, a.mtime_ns),
                  "{}: file not found (the val images are labelled by it)", ann_s);
  l.extra.push_back(a);
  std::error_code ec;
  LVIT_USER_CHECK(fs::is_directory(images, ec), "{}: folder not found (expected val/images/*.JPEG)",
                  images.string());

  std::unordered_map<std::string, int> line_of;  // file name -> annotation line
  const std::vector<std::string> lines = read_lines(ann);
  for (size_t n = 0; n < lines.size(); ++n) {
    const int lineno = static_cast<int>(n) + 1;
    const std::vector<std::string_view> f = split_ws(lines[n]);
    if (f.empty()) continue;
    LVIT_USER_CHECK(f.size() >= 2 && f[0].find('/') == std::string_view::npos,
                    "{}:{}: expected '<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>', got '{}'",
                    ann_s, lineno, trim(lines[n]));
    const std::string file(f[0]), wnid(f[1]);
    auto cls = c.index.find(wnid);
    LVIT_USER_CHECK(cls != c.index.end(), "{}:{}: {} is labelled {}, which is not in {}", ann_s,
                    lineno, file, wnid, (dir / "wnids.txt").string());
    auto [prev, fresh] = line_of.emplace(file, lineno);
    LVIT_USER_CHECK(fresh, "{}:{}: {} is annotated twice (first on line {})", ann_s, lineno, file,
                    prev->second);
    Source s;
    s.rel = "val/images/" + file;
    s.label = cls->second;
    LVIT_USER_CHECK(stat_regular(dir / s.rel, s.size, s.mtime_ns), "{}:{}: {}: file not found",
                    ann_s, lineno, (dir / s.rel).string());
    l.images.push_back(std::move(s));
  }
  for (const std::string& name : list_images(images))
    LVIT_USER_CHECK(line_of.count(name) != 0, "{}: not listed in {}", (images / name).string(),
                    ann_s);
  LVIT_USER_CHECK(!l.images.empty(), "{}: no annotated images", ann_s);
  return l;
}

// ---- decoding ---------------------------------------------------------------------------------

enum class Outcome : uint8_t { kOk, kBadImage, kIoError };

// Decodes one file into `out` (kPixels bytes, planar RGB). `buf` is the caller's reusable read
// buffer. On failure `err` gets the one-line message.
Outcome decode_one(const fs::path& path, std::vector<unsigned char>& buf, uint8_t* out,
                   std::string& err) {
  const std::string p = path.string();
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(p.c_str(), "rb"), &std::fclose);
  if (!f) {
    err = fmt::format("{}: cannot open: {}", p, std::strerror(errno));
    return Outcome::kIoError;
  }
  // Read to EOF rather than trusting the size seen while listing: the file may have changed.
  buf.clear();
  size_t used = 0;
  for (;;) {
    if (buf.size() - used < 16384) buf.resize(std::max<size_t>(buf.size() * 2, 32768));
    const size_t got = std::fread(buf.data() + used, 1, buf.size() - used, f.get());
    used += got;
    if (got == 0) break;
  }
  if (std::ferror(f.get())) {
    err = fmt::format("{}: read failed: {}", p, std::strerror(errno));
    return Outcome::kIoError;
  }
  if (used > static_cast<size_t>(INT_MAX)) {
    err = fmt::format("{}: {} bytes, too large for an image", p, used);
    return Outcome::kBadImage;
  }
  int w = 0, h = 0, comp = 0;
  // req_comp = 3: stb_image converts grayscale (and gray+alpha, RGBA, CMYK) to RGB, replicating
  // the gray value into all three channels.
  std::unique_ptr<stbi_uc, void (*)(void*)> px(
      stbi_load_from_memory(buf.data(), static_cast<int>(used), &w, &h, &comp, kChannels),
      &stbi_image_free);
  if (!px) {
    err = fmt::format("{}: not a decodable image (stb_image: {})", p, stbi_failure_reason());
    return Outcome::kBadImage;
  }
  if (w != kSide || h != kSide) {
    err = fmt::format("{}: {}x{}, expected {}x{}", p, w, h, kSide, kSide);
    return Outcome::kBadImage;
  }
  // HWC (interleaved) -> CHW (planar).
  const stbi_uc* src = px.get();
  for (int64_t i = 0; i < kPlane; ++i)
    for (int ch = 0; ch < kChannels; ++ch) out[ch * kPlane + i] = src[i * kChannels + ch];
  return Outcome::kOk;
}

// Decodes every source into ds.images / ds.labels on plain std::threads (never the shared
// parallel_for pool: the loader's workers may already be using it). Bad images are skipped and
// counted when `skip`, else the error of the lowest-index failure is thrown, so that the message
// does not depend on thread timing.
void decode_all(const fs::path& dir, const std::vector<Source>& src, bool skip, ImageDataset& ds,
                int64_t& skipped) {
  const int64_t n = static_cast<int64_t>(src.size());
  ds.images.assign(static_cast<size_t>(n * kPixels), 0);
  std::vector<Outcome> outcome(static_cast<size_t>(n), Outcome::kOk);
  std::vector<std::string> errors(static_cast<size_t>(n));
  // Workers stop claiming indices above `stop_after`: the lowest fatal failure seen so far (or -1
  // after an unexpected exception). Chunks are claimed in increasing order, so every index below
  // the final value is still decoded and the reported failure is the true first one.
  std::atomic<int64_t> next{0}, stop_after{n};
  std::exception_ptr unexpected;
  std::mutex unexpected_mu;
  constexpr int64_t kChunk = 32;

  auto work = [&] {
    try {
      std::vector<unsigned char> buf;
      for (;;) {
        const int64_t c0 = next.fetch_add(kChunk);
        if (c0 >= n || c0 > stop_after.load()) return;
        for (int64_t i = c0; i < std::min(n, c0 + kChunk); ++i) {
          if (i > stop_after.load()) return;
          const size_t u = static_cast<size_t>(i);
          const Outcome o =
              decode_one(dir / src[u].rel, buf, ds.images.data() + i * kPixels, errors[u]);
          outcome[u] = o;
          if (o == Outcome::kIoError || (o == Outcome::kBadImage && !skip)) {
            int64_t cur = stop_after.load();
            while (i < cur && !stop_after.compare_exchange_weak(cur, i)) {
            }
          }
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(unexpected_mu);
      if (!unexpected) unexpected = std::current_exception();
      stop_after.store(-1);
    }
  };
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const int64_t nthreads = std::min<int64_t>({int64_t{hw}, 32, (n + kChunk - 1) / kChunk});
  std::vector<std::thread> threads;
  for (int64_t t = 1; t < nthreads; ++t) threads.emplace_back(work);
  work();  // the calling thread is one of the workers
  for (std::thread& t : threads) t.join();
  if (unexpected) std::rethrow_exception(unexpected);
  if (const int64_t first = stop_after.load(); first < n)
    throw UserError(errors[static_cast<size_t>(first)]);

  // Compact away the skipped images (only bad images can remain here, and only when `skip`).
  ds.labels.resize(static_cast<size_t>(n));
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const size_t u = static_cast<size_t>(i);
    if (outcome[u] != Outcome::kOk) continue;
    if (kept != i)
      std::memmove(ds.images.data() + kept * kPixels, ds.images.data() + i * kPixels, kPixels);
    ds.labels[static_cast<size_t>(kept)] = src[u].label;
    ++kept;
  }
  ds.images.resize(static_cast<size_t>(kept * kPixels));
  ds.labels.resize(static_cast<size_t>(kept));
  ds.size = kept;
  skipped = n - kept;
}

// ---- the cache file ---------------------------------------------------------------------------

// Host byte order: the cache is a local artefact, never shipped between machines.
struct CacheHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;  // sizeof(CacheHeader): the labels start here
  uint64_t key;           // the full key, also encoded in the file name
  uint64_t source_id;     // hash of (dataset folder, split): finds stale caches of this source
  int64_t count;
  int32_t channels, height, width, num_classes;
  int64_t skipped;  // bad images left out when it was built (skip_bad_images)
};
static_assert(sizeof(CacheHeader) == 64, "the cache header layout is part of the file format");

CacheHeader make_header(uint64_t key, uint64_t source_id, const ImageDataset& ds, int64_t skipped) {
  CacheHeader h{};
  std::memcpy(h.magic, kCacheMagic, sizeof h.magic);
  h.version = kCacheVersion;
  h.header_bytes = sizeof(CacheHeader);
  h.key = key;
  h.source_id = source_id;
  h.count = ds.size;
  h.channels = kChannels;
  h.height = h.width = kSide;
  h.num_classes = ds.num_classes;
  h.skipped = skipped;
  return h;
}

// Reads the cache into `ds` if it exists and is intact. Anything unexpected (wrong magic, version,
// key, shape, size, a label out of range) makes it return false with `note` saying why, and the
// caller rebuilds: a cache file is never trusted just because it exists.
bool read_cache(const std::string& path, uint64_t key, ImageDataset& ds, int64_t& skipped,
                std::string& note) {
  int64_t size = 0, mtime = 0;
  if (!stat_regular(path, size, mtime)) return false;  // no cache yet
  auto corrupt = [&](const std::string& why) {
    note = fmt::format("{}: corrupt or truncated cache file ({}); rebuilt it", path, why);
    return false;
  };
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return corrupt(fmt::format("cannot open: {}", std::strerror(errno)));
  CacheHeader h{};
  if (size < static_cast<int64_t>(sizeof h)) return corrupt(fmt::format("{} bytes", size));
  if (std::fread(&h, sizeof h, 1, f.get()) != 1) return corrupt("cannot read the header");
  if (std::memcmp(h.magic, kCacheMagic, sizeof h.magic) != 0) return corrupt("bad magic");
  if (h.version != kCacheVersion || h.header_bytes != sizeof h || h.key != key)
    return corrupt("header does not match its name");
  if (h.channels != kChannels || h.height != kSide || h.width != kSide ||
      h.num_classes != ds.num_classes || h.count < 0 || h.skipped < 0)
    return corrupt("unexpected shape or class count");
  const int64_t per_image = kPixels + static_cast<int64_t>(sizeof(int32_t));
  const int64_t body = size - static_cast<int64_t>(sizeof h);
  if (h.count > body / per_image || body != h.count * per_image)
    return corrupt(fmt::format("{} bytes, expected {}", size, sizeof h + h.count * per_image));
  ds.labels.resize(static_cast<size_t>(h.count));
  ds.images.resize(static_cast<size_t>(h.count * kPixels));
  if (std::fread(ds.labels.data(), sizeof(int32_t), ds.labels.size(), f.get()) !=
          ds.labels.size() ||
      std::fread(ds.images.data(), 1, ds.images.size(), f.get()) != ds.images.size())
    return corrupt("short read");
  for (int32_t y : ds.labels)
    if (y < 0 || y >= ds.num_classes) return corrupt(fmt::format("label {} out of range", y));
  ds.size = h.count;
  skipped = h.skipped;
  return true;
}

// Removes this source's caches under other keys: after a change to the data, the old file (up to
// 1.2 GB for the full train split) would otherwise stay forever. Caches of other dataset folders
// (another source_id) are left alone. Best effort: errors are ignored.
void remove_stale_caches(const fs::path& cache_dir, const std::string& prefix, uint64_t source_id,
                         const fs::path& keep) {
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(cache_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (it->path() == keep || !name.starts_with(prefix) || !name.ends_with(".u8cache")) continue;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(it->path().c_str(), "rb"),
                                                      &std::fclose);
    CacheHeader h{};
    if (f && std::fread(&h, sizeof h, 1, f.get()) == 1 &&
        std::memcmp(h.magic, kCacheMagic, sizeof h.magic) == 0 && h.source_id == source_id)
      stale.push_back(it->path());
  }
  for (const fs::path& p : stale) fs::remove(p, ec);
}

}  // namespace

std::string default_cache_dir() {
  if (const char* d = std::getenv("LVIT_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d)
    return (fs::path(d) / "lvit").string();
  if (const char* d = std::getenv("HOME"); d && *d)
    return (fs::path(d) / ".cache" / "lvit").string();
  return "";
}

ImageDataset load_tiny_imagenet(const std::string& dataset_dir, bool train,
                                const TinyImageNetOptions& opt, TinyImageNetLoadInfo* info_out) {
  const fs::path dir(dataset_dir);
  std::error_code ec;
  LVIT_USER_CHECK(fs::is_directory(dir, ec), "{}: Tiny ImageNet folder not found", dataset_dir);
  const Classes classes = read_wnids(dir);

  ImageDataset ds;
  ds.name = "tiny-imagenet";
  ds.channels = kChannels;
  ds.height = ds.width = kSide;
  ds.num_classes = static_cast<int>(classes.wnids.size());
  ds.class_names = read_class_names(dir, classes);

  const Listing listing = train ? list_train(dir, classes) : list_val(dir, classes);
  const std::string split = train ? "train" : "val";
  TinyImageNetLoadInfo info;

  // Where the cache lives, if anywhere. A cache that cannot be used is a note, not an error:
  // the data itself is fine, only slower to load.
  fs::path cache_path;
  uint64_t key = 0, source_id = 0;
  if (opt.use_cache) {
    const std::string cache_dir = opt.cache_dir.empty() ? default_cache_dir() : opt.cache_dir;
    if (cache_dir.empty()) {
      info.cache_note =
          "no cache folder ($LVIT_CACHE_DIR, $XDG_CACHE_HOME and $HOME are unset); decoding the "
          "images without caching them";
    } else if (fs::create_directories(cache_dir, ec); ec) {
      info.cache_note = fmt::format(
          "{}: cannot create the cache folder: {}; decoding the images "
          "without caching them",
          cache_dir, ec.message());
    } else {
      // The absolute folder is part of the source: two copies of the data never share a cache,
      // so a copy edited without changing sizes or mtimes cannot pick up the other's pixels.
      fs::path abs = fs::weakly_canonical(fs::absolute(dir), ec);
      if (ec) abs = fs::absolute(dir);
      Fnv1a64 id;
      id.str("lvit tiny-imagenet source");
      id.str(abs.string());
      id.str(split);
      source_id = id.h;

      Fnv1a64 k;
      k.str("lvit tiny-imagenet u8cache");
      k.u64(kCacheVersion);
      k.u64(source_id);
      for (const std::string& w : classes.wnids) k.str(w);
      // Dataset order: within a class the names are sorted (list_images), val follows the
      // annotation order, and the label goes in too, so any relabelling changes the key.
      for (const auto* group : {&listing.images, &listing.extra}) {
        k.u64(group->size());
        for (const Source& s : *group) {
          k.str(s.rel);
          k.u64(static_cast<uint64_t>(s.label));
          k.u64(static_cast<uint64_t>(s.size));
          k.u64(static_cast<uint64_t>(s.mtime_ns));
        }
      }
      key = k.h;
      cache_path =
          fs::path(cache_dir) / fmt::format("tiny-imagenet-{}-{:016x}.u8cache", split, key);
      info.cache_path = cache_path.string();

      int64_t skipped = 0;
      // A cache built with skip_bad_images that did skip images is not used without it: that
      // load must decode, and fail on the bad image, exactly as if there were no cache.
      if (read_cache(info.cache_path, key, ds, skipped, info.cache_note) &&
          (skipped == 0 || opt.skip_bad_images)) {
        info.from_cache = true;
        info.skipped = skipped;
      } else {
        ds.images.clear();
        ds.labels.clear();
        ds.size = 0;
      }
    }
  }

  if (!info.from_cache) {
    decode_all(dir, listing.images, opt.skip_bad_images, ds, info.skipped);
    if (!cache_path.empty()) {
      try {
        const CacheHeader h = make_header(key, source_id, ds, info.skipped);
        const std::string p = cache_path.string();
        write_file_atomic(p, [&](std::FILE* f) {
          write_all(f, &h, sizeof h, p);
          write_all(f, ds.labels.data(), ds.labels.size() * sizeof(int32_t), p);
          write_all(f, ds.images.data(), ds.images.size(), p);
        });
        remove_stale_caches(cache_path.parent_path(), "tiny-imagenet-" + split + "-", source_id,
                            cache_path);
      } catch (const UserError& e) {
        info.cache_note =
            fmt::format("cannot write the cache ({}); the next run decodes again", e.what());
      }
    }
  }

  if (info_out)
    *info_out = info;
  else if (!info.cache_note.empty())
    fmt::print(stderr, "warning: {}\n", info.cache_note);
  return ds;
}

}  // namespace lvit::data
