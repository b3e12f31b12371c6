#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "core/atomic_file.h"

namespace lvit {

// Tensor bytes go between memory and the file with memcpy/pread, so the host byte order must be
// the file's (little-endian). Every platform lvit targets (x86-64, aarch64) is.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

namespace {

// ordered_json keeps the header's key order, which is what SafetensorsFile::names reports.
using json = nlohmann::ordered_json;

// The reference implementation (huggingface/safetensors) refuses headers above 100 MB; a larger
// length is a corrupt or hostile file, and we would otherwise try to allocate it.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

// Quotes a string taken from the file for an error message: control bytes are escaped and long
// strings cut, so that a hostile name cannot break the message's one line or flood the log.
std::string show(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 120; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out += c < 0x20 || c == 0x7f ? fmt::format("\\x{:02x}", c) : std::string(1, s[i]);
  }
  return out + (s.size() > 120 ? "...'" : "'");
}

struct Entry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

// Owns the read-only descriptor; pread() lets tensors be read straight into their storage, in
// any order, with no second copy of the file in memory.
class InputFile {
 public:
  explicit InputFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw UserError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      int err = errno;
      ::close(fd_);
      throw UserError(fmt::format("{}: cannot stat: {}", path, std::strerror(err)));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw UserError(fmt::format("{}: not a regular file", path));
    }
    size_ = static_cast<uint64_t>(st.st_size);
  }
  ~InputFile() { ::close(fd_); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  uint64_t size() const { return size_; }

  // Reads exactly n bytes at `offset`; a short read means the file shrank under us.
  void read(void* dst, uint64_t n, uint64_t offset, const std::string& what) const {
    char* p = static_cast<char*>(dst);
    while (n > 0) {
      ssize_t got = ::pread(fd_, p, std::min<uint64_t>(n, 1u << 30), static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0)
        throw UserError(fmt::format("{}: cannot read {}: {}", path_, what, std::strerror(errno)));
      if (got == 0) throw UserError(fmt::format("{}: file ends inside {}", path_, what));
      p += got;
      n -= static_cast<uint64_t>(got);
      offset += static_cast<uint64_t>(got);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Parses the header, rejecting duplicate keys at any depth: JSON parsers disagree on which
// duplicate wins, and the safetensors spec forbids them for that reason.
json parse_header(const std::string& path, const std::string& text) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto cb = [&](int /*depth*/, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (ev == json::parse_event_t::key) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, cb);
  } catch (const json::exception& e) {
    throw UserError(fmt::format("{}: header is not valid JSON: {}", path, e.what()));
  }
  LVIT_USER_CHECK(duplicate.empty(), "{}: header has the key {} twice", path, show(duplicate));
  LVIT_USER_CHECK(j.is_object(), "{}: header is not a JSON object", path);
  return j;
}

// A JSON integer >= 0 that fits in int64 (dims and offsets), or an error naming `what`.
// `who` is the quoted tensor name.
uint64_t get_count(const std::string& path, const std::string& who, const json& v,
                   const char* what) {
  LVIT_USER_CHECK(v.is_number_integer(), "{}: tensor {}: {} {} is not an integer", path, who, what,
                  v.dump());
  LVIT_USER_CHECK(v.is_number_unsigned() || v.get<int64_t>() >= 0,
                  "{}: tensor {}: {} {} is negative", path, who, what, v.dump());
  uint64_t u = v.get<uint64_t>();
  LVIT_USER_CHECK(u <= static_cast<uint64_t>(INT64_MAX), "{}: tensor {}: {} {} is too large", path,
                  who, what, u);
  return u;
}

Entry parse_entry(const std::string& path, const std::string& name, const json& v) {
  const std::string who = show(name);
  LVIT_USER_CHECK(v.is_object(), "{}: tensor {}: entry is not a JSON object", path, who);
  for (const char* field : {"dtype", "shape", "data_offsets"})
    LVIT_USER_CHECK(v.contains(field), "{}: tensor {}: missing \"{}\"", path, who, field);
  // Other fields are ignored, as the reference reader does, so a future field does not break us.
  Entry e;
  e.name = name;

  const json& dt = v["dtype"];
  LVIT_USER_CHECK(dt.is_string(), "{}: tensor {}: \"dtype\" is not a string", path, who);
  const auto& dts = dt.get_ref<const std::string&>();
  LVIT_USER_CHECK(dtype_from_safetensors_name(dts, &e.dtype),
                  "{}: tensor {}: unknown or unsupported dtype {} (lvit reads F32, F64, "
                  "BF16, I32, I64, U8)",
                  path, who, show(dts));

  const json& sh = v["shape"];
  LVIT_USER_CHECK(sh.is_array(), "{}: tensor {}: \"shape\" is not an array", path, who);
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : sh) {
    uint64_t n = get_count(path, who, d, "dimension");
    e.shape.push_back(static_cast<int64_t>(n));
    overflow |= __builtin_mul_overflow(numel, n, &numel);
  }

  const json& off = v["data_offsets"];
  LVIT_USER_CHECK(off.is_array() && off.size() == 2,
                  "{}: tensor {}: \"data_offsets\" is not a [begin, end] pair", path, who);
  e.begin = get_count(path, who, off[0], "data offset");
  e.end = get_count(path, who, off[1], "data offset");
  LVIT_USER_CHECK(e.begin <= e.end, "{}: tensor {}: data_offsets [{}, {}] end before they begin",
                  path, who, e.begin, e.end);

  uint64_t nbytes = 0;
  overflow |= __builtin_mul_overflow(numel, dtype_size(e.dtype), &nbytes);
  LVIT_USER_CHECK(!overflow && nbytes <= static_cast<uint64_t>(INT64_MAX),
                  "{}: tensor {}: shape {} is too large", path, who, shape_str(e.shape));
  LVIT_USER_CHECK(e.end - e.begin == nbytes,
                  "{}: tensor {}: data_offsets [{}, {}] span {} bytes but {} {} needs {}", path,
                  who, e.begin, e.end, e.end - e.begin, dts, shape_str(e.shape), nbytes);
  return e;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& m) {
  LVIT_USER_CHECK(m.is_object(), "{}: \"{}\" is not a JSON object", path, kMetadataKey);
  std::map<std::string, std::string> out;
  for (auto it = m.begin(); it != m.end(); ++it) {
    LVIT_USER_CHECK(it.value().is_string(), "{}: metadata {} is {}, not a string", path,
                    show(it.key()), it.value().dump());
    out.emplace(it.key(), it.value().get<std::string>());
  }
  return out;
}

// The data buffer must be exactly tiled by the tensors: no byte shared by two tensors (writes
// through one would show in the other, and a crafted file could alias weights) and, as the spec
// requires, no byte owned by none (so a file cannot smuggle a second payload). Empty tensors own
// no bytes and only need to lie inside the buffer, which their end <= buffer size ensures.
void check_tiling(const std::string& path, const std::vector<Entry>& entries, uint64_t buffer) {
  std::vector<const Entry*> order;
  for (const Entry& e : entries) {
    LVIT_USER_CHECK(e.end <= buffer,
                    "{}: tensor {}: data_offsets [{}, {}] run past the end of the {}-byte data "
                    "buffer",
                    path, show(e.name), e.begin, e.end, buffer);
    if (e.end > e.begin) order.push_back(&e);
  }
  std::sort(order.begin(), order.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  uint64_t cursor = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    LVIT_USER_CHECK(e->begin >= cursor, "{}: tensors {} and {} overlap in the data buffer", path,
                    show(prev ? prev->name : std::string()), show(e->name));
    LVIT_USER_CHECK(e->begin == cursor,
                    "{}: data bytes [{}, {}) belong to no tensor (holes are not allowed)", path,
                    cursor, e->begin);
    cursor = e->end;
    prev = e;
  }
  LVIT_USER_CHECK(cursor == buffer, "{}: the last {} bytes of the data buffer belong to no tensor",
                  path, buffer - cursor);
}

}  // namespace

const Tensor& SafetensorsFile::at(const std::string& name) const {
  auto it = tensors.find(name);
  LVIT_USER_CHECK(it != tensors.end(), "{}: no tensor '{}'",
                  path.empty() ? std::string("safetensors file") : path, name);
  return it->second;
}

SafetensorsFile load_safetensors(const std::string& path) {
  InputFile file(path);
  const uint64_t size = file.size();
  LVIT_USER_CHECK(size >= 8, "{}: file is {} bytes, too short for a safetensors header", path,
                  size);

  unsigned char len_bytes[8];
  file.read(len_bytes, 8, 0, "the header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  LVIT_USER_CHECK(header_len <= kMaxHeaderBytes,
                  "{}: header length {} is absurd (over {} bytes); not a safetensors file?", path,
                  header_len, kMaxHeaderBytes);
  LVIT_USER_CHECK(header_len <= size - 8,
                  "{}: header length {} exceeds the {} bytes that follow it; file truncated?", path,
                  header_len, size - 8);

  std::string text(header_len, '\0');
  file.read(text.data(), header_len, 8, "the header");
  // The spec requires the JSON to start right away ('{'); only trailing padding is allowed.
  LVIT_USER_CHECK(!text.empty() && text[0] == '{', "{}: header does not start with '{{'", path);
  const json header = parse_header(path, text);

  SafetensorsFile out;
  out.path = path;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      out.metadata = parse_metadata(path, it.value());
    } else {
      entries.push_back(parse_entry(path, it.key(), it.value()));
    }
  }
  const uint64_t data_start = 8 + header_len;
  check_tiling(path, entries, size - data_start);

  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (e.end > e.begin)
      file.read(t.raw_data(), e.end - e.begin, data_start + e.begin, "tensor " + show(e.name));
    out.names.push_back(e.name);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    LVIT_USER_CHECK(name != kMetadataKey, "{}: '{}' is reserved and cannot name a tensor", path,
                    name);
    LVIT_USER_CHECK(seen.insert(name).second, "{}: tensor name '{}' given twice", path, name);
    LVIT_CHECK(t.defined(), "{}: tensor {} is undefined", path, name);
    // Packed host bytes are what the file holds; this is a no-op for CPU contiguous tensors.
    host.push_back(t.to(Device::cpu()).contiguous());
  }

  // Lay the data out by decreasing element size (stable, so ties keep the caller's order). The
  // buffer starts 8-aligned (the header is padded), so every tensor then starts at a multiple
  // of its own element size, as with the reference writer, so a reader that maps the file can use
  // the bytes in place without a copy. The header itself keeps the caller's order, which is what
  // a reader sees as `names`.
  std::vector<size_t> layout(tensors.size());
  std::iota(layout.begin(), layout.end(), size_t{0});
  std::stable_sort(layout.begin(), layout.end(), [&](size_t a, size_t b) {
    return dtype_size(host[a].dtype()) > dtype_size(host[b].dtype());
  });
  std::vector<uint64_t> begin(tensors.size());
  uint64_t cursor = 0;
  for (size_t i : layout) {
    begin[i] = cursor;
    cursor += host[i].nbytes();
  }

  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header[kMetadataKey] = std::move(m);
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    json entry = json::object();
    entry["dtype"] = std::string(dtype_safetensors_name(host[i].dtype()));
    entry["shape"] = json(host[i].shape());  // [] for a scalar
    entry["data_offsets"] = json::array({begin[i], begin[i] + host[i].nbytes()});
    header[tensors[i].first] = std::move(entry);
  }
  std::string text;
  try {
    text = header.dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception&) {
    throw UserError(fmt::format("{}: tensor names and metadata must be valid UTF-8", path));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data buffer starts 8-aligned

  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(text.size() >> (8 * i));

  write_file_atomic(path, [&](std::FILE* f) {
    write_all(f, len_bytes, 8, path);
    write_all(f, text.data(), text.size(), path);
    for (size_t i : layout) write_all(f, host[i].raw_data(), host[i].nbytes(), path);
  });
}

}  // namespace lvit
