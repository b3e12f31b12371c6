// safetensors I/O and atomic file replacement: round trips, the exact bytes we write (so that
// PyTorch's safetensors reads them), a file written by Python's safetensors, every kind of
// corrupt input, and crash-safety of the atomic writer.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;
using namespace lvit;

namespace {

// A fresh directory per test case, removed afterwards.
struct TempDir {
  fs::path dir;
  TempDir() {
    static int counter = 0;
    dir = fs::temp_directory_path() / fmt::format("lvit_test_st_{}_{}", ::getpid(), counter++);
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string file(const std::string& name) const { return (dir / name).string(); }
  // Names in the directory that look like our temp files.
  std::vector<std::string> temp_files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().find(".tmp.") != std::string::npos)
        out.push_back(e.path().filename().string());
    return out;
  }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string u64_le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file from a raw header (unpadded) and data buffer.
std::string make_file(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string tensor_bytes(const Tensor& t) {
  Tensor c = t.to(Device::cpu()).contiguous();
  return std::string(static_cast<const char*>(c.raw_data()), c.nbytes());
}

// Expects load_safetensors(path) to throw a one-line UserError naming the file and containing
// `problem`.
void check_load_error(const std::string& path, const std::string& problem) {
  try {
    load_safetensors(path);
    FAIL("no error for a file that should be rejected: " << problem);
  } catch (const UserError& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find(problem) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
}

void check_corrupt(const TempDir& tmp, const std::string& header, const std::string& data,
                   const std::string& problem) {
  const std::string path = tmp.file("corrupt.safetensors");
  write_bytes(path, make_file(header, data));
  check_load_error(path, problem);
}

Tensor bf16_from_bits(const std::vector<uint16_t>& bits, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::bf16);
  std::memcpy(t.raw_data(), bits.data(), bits.size() * 2);
  return t;
}

}  // namespace

TEST_CASE("safetensors: round trip of dtypes, shapes, views and metadata") {
  TempDir tmp;
  const std::string path = tmp.file("rt.safetensors");

  Tensor f32 = Tensor::from_vector<float>({1.5f, -2.f, 3.25f, 0.f, 1e-30f, -7.f}, {2, 3});
  Tensor f64 = Tensor::from_vector<double>({3.141592653589793, -1e300, 0.5}, {3});
  Tensor i64 = Tensor::from_vector<int64_t>({INT64_MIN, -1, 0, INT64_MAX}, {2, 2});
  Tensor i32 = Tensor::from_vector<int32_t>({-5, 6}, {1, 2});
  Tensor u8 = Tensor::from_vector<uint8_t>({0, 1, 127, 128, 255}, {5});
  // bf16 raw bits: 1.0, -2.0, +inf, a NaN payload, smallest subnormal.
  Tensor bf16 = bf16_from_bits({0x3f80, 0xc000, 0x7f80, 0x7fc1, 0x0001}, {5});
  Tensor scalar = Tensor::scalar(42.5);
  Tensor empty = Tensor::empty({0, 3});
  // Non-contiguous views: a transpose of a 3x4 matrix and a strided slice with an offset.
  std::vector<float> v12(12);
  for (int i = 0; i < 12; ++i) v12[i] = static_cast<float>(i);
  Tensor base = Tensor::from_vector(v12, {3, 4});
  Tensor transposed = base.as_strided({4, 3}, {1, 4}, 0);
  Tensor strided = base.as_strided({2, 2}, {4, 2}, 5);  // rows 1..2, cols 1 and 3
  REQUIRE_FALSE(transposed.is_contiguous());

  const std::vector<std::pair<std::string, Tensor>> in = {
      {"u8", u8},          {"f32", f32},     {"f64", f64},
      {"i64", i64},        {"i32", i32},     {"bf16", bf16},
      {"scalar", scalar},  {"empty", empty}, {"blocks.0.attn.qkv.weight", transposed},
      {"strided", strided}};
  const std::map<std::string, std::string> meta = {{"format", "pt"},
                                                   {"config", R"({"dim": 384, "depth": 12})"},
                                                   {"empty", ""},
                                                   {"unicode", "\xc2\xb5-ViT \xe2\x9c\x93"}};
  save_safetensors(path, in, meta);
  CHECK(tmp.temp_files().empty());

  SafetensorsFile f = load_safetensors(path);
  CHECK(f.path == path);
  CHECK(f.metadata == meta);
  REQUIRE(f.names.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const auto& [name, t] = in[i];
    CAPTURE(name);
    CHECK(f.names[i] == name);  // header order = the order we passed
    REQUIRE(f.contains(name));
    const Tensor& got = f.at(name);
    CHECK(got.dtype() == t.dtype());
    CHECK(got.shape() == t.shape());
    CHECK(got.device() == Device::cpu());
    CHECK(got.is_contiguous());
    CHECK(tensor_bytes(got) == tensor_bytes(t));
  }
  // Spot-check values rather than only bytes, for the views.
  CHECK(f.at("blocks.0.attn.qkv.weight").to_vector<float>() ==
        std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(f.at("strided").to_vector<float>() == std::vector<float>{5, 7, 9, 11});
  CHECK(f.at("scalar").dim() == 0);
  CHECK(f.at("scalar").item() == 42.5);
  CHECK(f.at("empty").numel() == 0);

  // Saving again replaces the file; a file with no tensors and no metadata is valid too.
  save_safetensors(path, {});
  SafetensorsFile none = load_safetensors(path);
  CHECK(none.names.empty());
  CHECK(none.metadata.empty());
  CHECK(read_bytes(path) == u64_le(8) + "{}      ");
}

TEST_CASE("safetensors: larger tensor round trip") {
  TempDir tmp;
  const std::string path = tmp.file("big.safetensors");
  std::vector<float> v(1 << 20);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.25f;
  save_safetensors(path, {{"w", Tensor::from_vector(v, {1024, 1024})}});
  CHECK(load_safetensors(path).at("w").to_vector<float>() == v);
}

TEST_CASE("safetensors: golden bytes (readable by PyTorch's safetensors)") {
  TempDir tmp;
  const std::string path = tmp.file("golden.safetensors");
  // u8 first: the data are laid out by decreasing element size, so the f32 tensor goes first in
  // the buffer and stays 4-aligned, while the header keeps our order.
  save_safetensors(path,
                   {{"b", Tensor::from_vector<uint8_t>({1, 2, 3}, {3})},
                    {"w", Tensor::from_vector<float>({1.f, -2.f}, {2})}},
                   {{"format", "pt"}});
  const std::string header = R"({"__metadata__":{"format":"pt"},)"
                             R"("b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]},)"
                             R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  REQUIRE(header.size() == 138);
  const std::string expected = std::string("\x90\0\0\0\0\0\0\0", 8)        // 144, little-endian u64
                               + header + "      "                         // 6 spaces: 144 = 18 * 8
                               + std::string("\0\0\x80\x3f\0\0\0\xc0", 8)  // 1.0f, -2.0f
                               + "\x01\x02\x03";
  const std::string got = read_bytes(path);
  CHECK(got.size() == 8 + 144 + 11);
  CHECK(got == expected);
  CHECK((8 + 144) % 8 == 0);
}

TEST_CASE("safetensors: reads a file written by Python's safetensors") {
  // safetensors.numpy.save({"w": float32 [1, -2], "b": uint8 [1, 2, 3], "s": int64 7 (shape
  // [])}, metadata={"format": "np"}) with safetensors 0.8.0.
  const std::string bytes = from_hex(
      "c0000000000000007b225f5f6d657461646174615f5f223a7b22666f726d6174223a226e70227d2c2273223a"
      "7b226474797065223a22493634222c227368617065223a5b5d2c22646174615f6f666673657473223a5b302c"
      "385d7d2c2277223a7b226474797065223a22463332222c227368617065223a5b325d2c22646174615f6f6666"
      "73657473223a5b382c31365d7d2c2262223a7b226474797065223a225538222c227368617065223a5b335d2c"
      "22646174615f6f666673657473223a5b31362c31395d7d7d07000000000000000000803f000000c0010203");
  TempDir tmp;
  const std::string path = tmp.file("python.safetensors");
  write_bytes(path, bytes);
  SafetensorsFile f = load_safetensors(path);
  CHECK(f.names == std::vector<std::string>{"s", "w", "b"});
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "np"}});
  CHECK(f.at("w").to_vector<float>() == std::vector<float>{1.f, -2.f});
  CHECK(f.at("b").to_vector<uint8_t>() == std::vector<uint8_t>{1, 2, 3});
  CHECK(f.at("s").dim() == 0);
  CHECK(f.at("s").to_vector<int64_t>() == std::vector<int64_t>{7});
}

TEST_CASE("safetensors: corrupt and invalid files give one-line UserErrors naming the file") {
  TempDir tmp;
  const std::string f8 = std::string(8, '\x01');  // 8 data bytes (two f32)

  SUBCASE("missing file") { check_load_error(tmp.file("nope.safetensors"), "cannot open"); }
  SUBCASE("a directory") { check_load_error(tmp.dir.string(), "not a regular file"); }
  SUBCASE("empty file") {
    write_bytes(tmp.file("e.safetensors"), "");
    check_load_error(tmp.file("e.safetensors"), "too short");
  }
  SUBCASE("shorter than 8 bytes") {
    write_bytes(tmp.file("s.safetensors"), "\x05\0\0");
    check_load_error(tmp.file("s.safetensors"), "too short");
  }
  SUBCASE("header length beyond the file") {
    write_bytes(tmp.file("h.safetensors"), u64_le(1000) + "{}");
    check_load_error(tmp.file("h.safetensors"), "exceeds");
  }
  SUBCASE("absurd header length") {
    write_bytes(tmp.file("a.safetensors"), u64_le(uint64_t{1} << 40) + "{}");
    check_load_error(tmp.file("a.safetensors"), "absurd");
  }
  SUBCASE("header not JSON") { check_corrupt(tmp, "{\"a\": [1, 2", "", "not valid JSON"); }
  SUBCASE("header not an object") { check_corrupt(tmp, "[1, 2]", "", "does not start with '{'"); }
  SUBCASE("header with leading garbage") { check_corrupt(tmp, " {}", "", "does not start"); }
  SUBCASE("header not valid UTF-8") { check_corrupt(tmp, "{\"a\xff\": 1}", "", "not valid JSON"); }
  SUBCASE("duplicate keys") {
    check_corrupt(tmp,
                  R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                  f8, "'a' twice");
  }
  SUBCASE("entry not an object") { check_corrupt(tmp, R"({"a": 5})", "", "not a JSON object"); }
  SUBCASE("missing dtype") {
    check_corrupt(tmp, R"({"a":{"shape":[2],"data_offsets":[0,8]}})", f8, "missing \"dtype\"");
  }
  SUBCASE("missing shape") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", f8, "missing \"shape\"");
  }
  SUBCASE("missing data_offsets") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":[2]}})", f8, "missing \"data_offsets\"");
  }
  SUBCASE("dtype not a string") {
    check_corrupt(tmp, R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", f8, "not a string");
  }
  SUBCASE("unknown dtype") {
    check_corrupt(tmp, R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", f8,
                  "unknown or unsupported dtype 'Q7'");
  }
  SUBCASE("control characters from the file are escaped (the message stays one line)") {
    check_corrupt(tmp, R"({"a\nb":{"dtype":"F32\n","shape":[2],"data_offsets":[0,8]}})", f8,
                  "tensor 'a\\x0ab': unknown or unsupported dtype 'F32\\x0a'");
  }
  SUBCASE("dtype of safetensors that lvit lacks") {
    check_corrupt(tmp, R"({"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", f8,
                  "unsupported dtype 'F16'");
  }
  SUBCASE("negative dimension") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f8,
                  "negative");
  }
  SUBCASE("fractional dimension") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", f8,
                  "not an integer");
  }
  SUBCASE("shape not an array") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", f8,
                  "\"shape\" is not an array");
  }
  SUBCASE("shape whose element count overflows") {
    check_corrupt(tmp,
                  R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})",
                  f8, "too large");
  }
  SUBCASE("data_offsets not a pair") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", f8,
                  "not a [begin, end] pair");
  }
  SUBCASE("data_offsets reversed") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", f8,
                  "end before they begin");
  }
  SUBCASE("data_offsets disagree with dtype x shape") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", f8,
                  "span 4 bytes but F32 [2] needs 8");
  }
  SUBCASE("offsets outside the buffer") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", f8,
                  "run past the end");
  }
  SUBCASE("truncated data") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234",
                  "run past the end");
  }
  SUBCASE("overlapping tensors") {
    check_corrupt(tmp,
                  R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                  std::string(12, 'x'), "'a' and 'b' overlap");
  }
  SUBCASE("aliased tensors") {
    check_corrupt(tmp,
                  R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                  f8, "overlap");
  }
  SUBCASE("hole in the buffer") {
    check_corrupt(tmp,
                  R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                  std::string(12, 'x'), "belong to no tensor");
  }
  SUBCASE("trailing bytes") {
    check_corrupt(tmp, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f8,
                  "last 4 bytes");
  }
  SUBCASE("metadata not an object") {
    check_corrupt(tmp, R"({"__metadata__":["x"]})", "", "\"__metadata__\" is not a JSON object");
  }
  SUBCASE("metadata value not a string") {
    check_corrupt(tmp, R"({"__metadata__":{"epoch":3}})", "", "metadata 'epoch' is 3");
  }
}

TEST_CASE("safetensors: accepts what the format allows") {
  TempDir tmp;
  const std::string path = tmp.file("ok.safetensors");
  // Unknown extra fields, empty tensors anywhere in the buffer, entries out of offset order.
  write_bytes(path, make_file(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                              R"("e":{"dtype":"I64","shape":[0,5],"data_offsets":[8,8]},)"
                              R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})",
                              std::string("\0\0\x80\x3f\0\0\0\x40", 8)));
  SafetensorsFile f = load_safetensors(path);
  CHECK(f.names == std::vector<std::string>{"b", "e", "a"});
  CHECK(f.at("a").item() == 1.0);
  CHECK(f.at("b").item() == 2.0);
  CHECK(f.at("e").shape() == Shape{0, 5});
}

TEST_CASE("safetensors: lookup and save errors") {
  TempDir tmp;
  const std::string path = tmp.file("x.safetensors");
  save_safetensors(path, {{"w", Tensor::zeros({2})}});
  SafetensorsFile f = load_safetensors(path);
  try {
    f.at("bias");
    FAIL("no error for a missing tensor");
  } catch (const UserError& e) {
    CHECK(std::string(e.what()).find(path) != std::string::npos);
    CHECK(std::string(e.what()).find("'bias'") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(
      save_safetensors(path, {{"w", Tensor::zeros({2})}, {"w", Tensor::zeros({3})}}),
      doctest::Contains("'w' given twice"), UserError);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"__metadata__", Tensor::zeros({2})}}),
                       doctest::Contains("reserved"), UserError);
  CHECK_THROWS_AS(save_safetensors(path, {{"bad\xff", Tensor::zeros({2})}}), UserError);
  // A failed save leaves the previous file as it was.
  CHECK(load_safetensors(path).at("w").shape() == Shape{2});
  CHECK(tmp.temp_files().empty());

  const std::string nowhere = tmp.file("no/such/dir/x.safetensors");
  CHECK_THROWS_WITH_AS(save_safetensors(nowhere, {{"w", Tensor::zeros({2})}}),
                       doctest::Contains(nowhere.c_str()), UserError);
}

TEST_CASE("write_file_atomic: replaces whole files and never leaves a torn one") {
  TempDir tmp;
  const std::string path = tmp.file("state.json");

  write_file_atomic(path, std::string_view("original"));
  CHECK(read_bytes(path) == "original");
  CHECK(tmp.temp_files().empty());

  SUBCASE("writer throwing midway keeps the old file and removes the temp file") {
    CHECK_THROWS_WITH_AS(write_file_atomic(path,
                                           [&](std::FILE* f) {
                                             write_all(f, "partial new conte", 17, path);
                                             // the temp file exists while the writer runs
                                             CHECK(tmp.temp_files().size() == 1);
                                             throw std::runtime_error("crash midway");
                                           }),
                         "crash midway", std::runtime_error);
    CHECK(read_bytes(path) == "original");
    CHECK(tmp.temp_files().empty());
  }
  SUBCASE("a new file appears only complete") {
    const std::string fresh = tmp.file("fresh.bin");
    write_file_atomic(fresh, [&](std::FILE* f) {
      write_all(f, "abc", 3, fresh);
      CHECK_FALSE(fs::exists(fresh));  // not visible under its name until renamed
    });
    CHECK(read_bytes(fresh) == "abc");
  }
  SUBCASE("overwriting keeps the file's permission bits") {
    REQUIRE(::chmod(path.c_str(), 0600) == 0);
    write_file_atomic(path, std::string_view("replaced"));
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(read_bytes(path) == "replaced");
  }
  SUBCASE("an unwritable destination throws a UserError naming it") {
    const std::string bad = tmp.file("missing_dir/state.json");
    CHECK_THROWS_WITH_AS(write_file_atomic(bad, std::string_view("x")),
                         doctest::Contains(bad.c_str()), UserError);
  }
  SUBCASE("a failed write reports errno") {
    if (fs::exists("/dev/full")) {
      std::FILE* full = std::fopen("/dev/full", "wb");
      REQUIRE(full != nullptr);
      std::setvbuf(full, nullptr, _IONBF, 0);  // unbuffered: the write itself fails
      CHECK_THROWS_WITH_AS(write_all(full, "x", 1, "/dev/full"),
                           doctest::Contains("/dev/full: write failed"), UserError);
      std::fclose(full);
    }
  }
  CHECK(tmp.temp_files().empty());
}
