// CUDA foundation: error macros, device context, caching allocator, host <-> device copies,
// device dtype conversion and fill, each checked against the host implementation (bitwise:
// a copy or a conversion has exactly one right answer). Every test that needs a GPU skips
// itself, and passes, when none is present; the rest (error macros, the no-GPU behaviour) run
// everywhere. In a build without CUDA only the "built without CUDA" behaviour is tested.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "tests/test_util.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/allocator.cuh"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/copy.cuh"
#endif

using namespace lvit;
using lvit::test::error_message;

namespace {}  // namespace

#ifndef LVIT_WITH_CUDA

TEST_CASE("without CUDA: device tensors throw 'built without CUDA'") {
  const std::string msg =
      error_message([] { (void)Tensor::empty({4}, DType::f32, Device::cuda()); });
  CHECK(msg.find("built without CUDA") != std::string::npos);
}

#else  // LVIT_WITH_CUDA

#define SKIP_WITHOUT_GPU()                \
  do {                                    \
    if (!cuda::available()) {             \
      MESSAGE("no CUDA device: skipped"); \
      return;                             \
    }                                     \
  } while (0)

namespace {

constexpr DType kDTypes[] = {DType::f32, DType::f64, DType::bf16,
                             DType::i32, DType::i64, DType::u8};

// Uniform values in [lo, hi] as a host tensor of `dtype` (converted by the host rules), never
// all zero. i64 gets full-width values when `wide_i64` (to check that bits survive a copy).
Tensor random_tensor(const Shape& shape, DType dtype, uint32_t seed, double lo = -100,
                     double hi = 100, bool wide_i64 = false) {
  std::mt19937_64 rng(seed);
  const int64_t n = shape_numel(shape);
  if (dtype == DType::i64 && wide_i64) {
    std::vector<int64_t> v(n);
    for (auto& x : v) x = static_cast<int64_t>(rng());
    if (n > 0) v[0] = (int64_t{1} << 53) + 1;  // not a double: lost by any trip through one
    return Tensor::from_vector(v, shape);
  }
  if (dtype == DType::u8) {  // negative or > 255 would be undefined in the host conversion
    lo = std::max(lo, 0.0);
    hi = std::min(hi, 255.0);
  }
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng);
  if (n > 0) v[0] = hi;  // never all zero, even for u8 from a small range
  return Tensor::from_vector(v, shape).to(dtype);
}

// got == want element by element, as bits (NaN equals any NaN); both are brought to the host.
void check_same(const Tensor& got_in, const Tensor& want_in) {
  REQUIRE(got_in.shape() == want_in.shape());
  REQUIRE(got_in.dtype() == want_in.dtype());
  const Tensor got = got_in.to(Device::cpu()).contiguous();
  const Tensor want = want_in.to(Device::cpu()).contiguous();
  const size_t es = dtype_size(got.dtype());
  const auto* g = static_cast<const unsigned char*>(got.raw_data());
  const auto* w = static_cast<const unsigned char*>(want.raw_data());
  const std::vector<double> gv = got.to_vector<double>(), wv = want.to_vector<double>();
  int64_t mismatches = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    if (std::memcmp(g + i * es, w + i * es, es) == 0) continue;
    if (is_floating(got.dtype()) && std::isnan(gv[i]) && std::isnan(wv[i])) continue;
    if (mismatches++ < 5)
      FAIL_CHECK("element " << i << " of " << dtype_name(got.dtype()) << ": got " << gv[i]
                            << ", want " << wv[i]);
  }
  CHECK(mismatches == 0);
}

// A permuted view (dims reversed) and an interior slice of a tensor of shape s, for any device.
Tensor reversed_view(const Tensor& t) {
  Shape shape(t.shape().rbegin(), t.shape().rend());
  Shape strides(t.strides().rbegin(), t.strides().rend());
  return t.as_strided(shape, strides, t.offset());
}

}  // namespace

// ---- runs without a GPU too ----

TEST_CASE("LVIT_CUDA_CHECK / LVIT_CUBLAS_CHECK throw expression, status, file and line") {
  // cudaSetDevice(-1) fails with or without a driver (invalid device / no driver).
  const std::string cuda_msg = error_message([] { LVIT_CUDA_CHECK(cudaSetDevice(-1)); });
  (void)cudaGetLastError();
  CHECK(cuda_msg.find("CUDA error cuda") != std::string::npos);  // the status name
  CHECK(cuda_msg.find("cudaSetDevice(-1)") != std::string::npos);
  CHECK(cuda_msg.find("test_cuda_core.cpp:") != std::string::npos);

  const std::string blas_msg =
      error_message([] { LVIT_CUBLAS_CHECK(CUBLAS_STATUS_NOT_INITIALIZED); });
  CHECK(blas_msg.find("cuBLAS error CUBLAS_STATUS_NOT_INITIALIZED") != std::string::npos);
  CHECK(blas_msg.find("test_cuda_core.cpp:") != std::string::npos);

  CHECK_NOTHROW(LVIT_CUDA_CHECK(cudaSuccess));
  { cuda::NvtxRange range("test_range"); }  // a no-op without a profiler
}

TEST_CASE("without a GPU: available() is false and CUDA tensors throw lvit::Error") {
  if (cuda::available()) {
    CHECK(cuda::device_count() > 0);
    return;
  }
  CHECK(cuda::device_count() == 0);
  const std::string msg =
      error_message([] { (void)Tensor::empty({4}, DType::f32, Device::cuda()); });
  CHECK(msg.find("no CUDA device") != std::string::npos);
  MESSAGE("no CUDA device: GPU tests skipped");
}

// ---- need a GPU ----

TEST_CASE("context: devices, names, one lazily created context per device") {
  SKIP_WITHOUT_GPU();
  CHECK(cuda::device_count() >= 1);
  CHECK(!cuda::device_name(0).empty());
  MESSAGE("cuda:0 is " << cuda::device_name(0));
  cuda::Context& c = cuda::context(0);
  CHECK(&c == &cuda::context(0));
  CHECK(c.stream != nullptr);
  CHECK(c.cublas != nullptr);
  CHECK(c.cublaslt != nullptr);
  CHECK(c.workspace != nullptr);
  CHECK(c.workspace_bytes == cuda::kWorkspaceBytes);
  cudaStream_t s = nullptr;
  LVIT_CUBLAS_CHECK(cublasGetStream(c.cublas, &s));
  CHECK(s == c.stream);
  CHECK_NOTHROW(cuda::synchronize(0));
  const int n = cuda::device_count();
  CHECK(error_message([n] { cuda::context(n); }).find("does not exist") != std::string::npos);
  CHECK_THROWS_AS((void)Tensor::empty({4}, DType::f32, Device::cuda(n)), Error);
}

TEST_CASE("round trip host -> device -> host keeps every bit, for every dtype and size") {
  SKIP_WITHOUT_GPU();
  // Empty, scalar, odd sizes, and 13 MB (more than one 4 MiB staging chunk).
  const std::vector<Shape> shapes = {{0}, {}, {1}, {3, 5, 7}, {1023}, {3, 1024, 1100}};
  uint32_t seed = 1;
  for (DType dt : kDTypes) {
    for (const Shape& shape : shapes) {
      CAPTURE(dtype_name(dt));
      CAPTURE(shape_str(shape));
      const Tensor h = random_tensor(shape, dt, seed++, -1e4, 1e4, /*wide_i64=*/true);
      const Tensor d = h.to(Device::cuda());
      CHECK(d.device() == Device::cuda(0));
      CHECK(d.dtype() == dt);
      const Tensor back = d.to(Device::cpu());
      CHECK(back.device() == Device::cpu());
      check_same(back, h);
      check_same(d.clone().to(Device::cpu()), h);  // device -> device
    }
  }
}

TEST_CASE("non-contiguous sources and destinations, both directions and on the device") {
  SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::bf16, DType::i64, DType::u8}) {
    CAPTURE(dtype_name(dt));
    const Tensor h = random_tensor({4, 5, 6, 3}, dt, 7, 0, 200, true);
    const Tensor d = h.to(Device::cuda());

    // Permuted host source -> device; permuted device source -> host.
    const Tensor hp = reversed_view(h);
    REQUIRE(!hp.is_contiguous());
    check_same(hp.to(Device::cuda()), hp.contiguous());
    const Tensor dp = reversed_view(d);
    check_same(dp.to(Device::cpu()), hp.contiguous());
    check_same(dp.contiguous(), hp.contiguous());  // device gather
    CHECK(dp.contiguous().device() == Device::cuda(0));

    // Slices with an offset and a step: h[1:3, :, 2:6:2, :].
    const Shape ss = {2, 5, 2, 3};
    const Shape st = {90, 18, 6, 1};
    const int64_t off = 1 * 90 + 2 * 3;
    const Tensor hs = h.as_strided(ss, st, off), ds = d.as_strided(ss, st, off);
    check_same(ds.to(Device::cpu()), hs.contiguous());
    check_same(hs.to(Device::cuda()), hs.contiguous());

    // Strided destinations: into a slice of a device tensor, and into a host slice from the
    // device; the elements outside the slice stay as they were.
    const Tensor src = random_tensor(ss, dt, 11, 0, 200, true);
    Tensor dd = d.clone();
    Tensor dd_slice = dd.as_strided(ss, st, off);
    dd_slice.copy_(src.to(Device::cuda()));
    Tensor want = h.clone();
    Tensor want_slice = want.as_strided(ss, st, off);
    want_slice.copy_(src);
    check_same(dd, want);
    Tensor hh = h.clone();
    Tensor hh_slice = hh.as_strided(ss, st, off);
    hh_slice.copy_(src.to(Device::cuda()));
    check_same(hh, want);

    // Broadcast (stride 0) device source.
    const Tensor row = random_tensor({6}, dt, 13, 0, 200, true);
    const Tensor bcast_h = row.as_strided({4, 6}, {0, 1}, 0);
    const Tensor bcast_d = row.to(Device::cuda()).as_strided({4, 6}, {0, 1}, 0);
    check_same(bcast_d.contiguous(), bcast_h.contiguous());
  }
  // Rank 7 with every dimension permuted: nothing merges, the kernel walks all 7.
  const Tensor h7 = random_tensor({2, 3, 2, 3, 2, 3, 2}, DType::f32, 17);
  const Tensor h7p = reversed_view(h7);
  check_same(h7.to(Device::cuda()).as_strided(h7p.shape(), h7p.strides(), 0).contiguous(),
             h7p.contiguous());
}

TEST_CASE("device dtype conversions give the host's bits for every pair of dtypes") {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (DType from : kDTypes) {
    for (DType to : kDTypes) {
      if (from == to) continue;
      CAPTURE(dtype_name(from));
      CAPTURE(dtype_name(to));
      // Values every conversion defines (float -> integer truncates; u8 needs 0..255).
      const bool unsigned_side = from == DType::u8 || to == DType::u8;
      const Tensor h = random_tensor({37, 29}, from, seed++, unsigned_side ? 0 : -1000,
                                     unsigned_side ? 250 : 1000);
      const Tensor want = h.to(to);                                     // host conversion
      check_same(h.to(Device::cuda()).to(to), want);                    // device kernel
      Tensor on_device = Tensor::empty(h.shape(), to, Device::cuda());  // H2D + convert
      on_device.copy_(h);
      check_same(on_device, want);
      Tensor on_host = Tensor::empty(h.shape(), to);  // convert + D2H
      on_host.copy_(h.to(Device::cuda()));
      check_same(on_host, want);
      // Strided and converting at once.
      const Tensor hp = reversed_view(h);
      check_same(reversed_view(h.to(Device::cuda())).to(to), hp.to(to));
    }
  }
  // Rounding corners: bf16 ties to even, NaN, infinities, subnormals, f32 overflow, and i64
  // beyond 2^53 into floats.
  const std::vector<double> corners = {1.00390625,
                                       1.01171875,
                                       -1.00390625,
                                       3.0e38,
                                       3.4e38,
                                       1e300,
                                       -1e300,
                                       1e-40,
                                       1e-320,
                                       std::numeric_limits<double>::infinity(),
                                       -std::numeric_limits<double>::infinity(),
                                       std::numeric_limits<double>::quiet_NaN(),
                                       0.1,
                                       -0.0};
  const Tensor c64 = Tensor::from_vector(corners, {static_cast<int64_t>(corners.size())});
  for (DType from : {DType::f64, DType::f32}) {
    for (DType to : {DType::f32, DType::bf16, DType::f64}) {
      if (from == to) continue;
      CAPTURE(dtype_name(from));
      CAPTURE(dtype_name(to));
      const Tensor h = c64.to(from);
      check_same(h.to(Device::cuda()).to(to), h.to(to));
    }
  }
  const std::vector<int64_t> big = {(int64_t{1} << 53) + 1, (int64_t{1} << 62) + 12345,
                                    -(int64_t{1} << 60) - 7, 16777217, 257};
  const Tensor hb = Tensor::from_vector(big, {5});
  for (DType to : {DType::f64, DType::f32, DType::bf16}) {
    CAPTURE(dtype_name(to));
    check_same(hb.to(Device::cuda()).to(to), hb.to(to));
  }
}

TEST_CASE("fill_ on the device matches the host, contiguous and strided") {
  SKIP_WITHOUT_GPU();
  for (DType dt : kDTypes) {
    for (double v : {0.0, 3.0, 1.0 / 3.0, -2.75, 1e6}) {
      if (dt == DType::u8 && (v < 0 || v > 255)) continue;
      CAPTURE(dtype_name(dt));
      CAPTURE(v);
      check_same(Tensor::full({5, 77}, v, dt, Device::cuda()), Tensor::full({5, 77}, v, dt));
    }
    // Strided: columns 1..4 of a [6, 7] tensor; the rest keeps its random values.
    CAPTURE(dtype_name(dt));
    const Tensor h = random_tensor({6, 7}, dt, 21, 0, 100, true);
    Tensor d = h.to(Device::cuda());
    Tensor dv = d.as_strided({6, 3}, {7, 1}, 1);
    dv.fill_(42.0);
    Tensor want = h.clone();
    const Tensor fortytwo = Tensor::full({6, 3}, 42.0, dt);
    Tensor wv = want.as_strided({6, 3}, {7, 1}, 1);
    wv.copy_(fortytwo);
    check_same(d, want);
  }
}

TEST_CASE("Tensor API on a CUDA tensor: to(), item(), to_vector(), str()") {
  SKIP_WITHOUT_GPU();
  const Tensor h = random_tensor({2, 3}, DType::f32, 31);
  const Tensor d = h.to(Device::cuda());
  CHECK(d.to(Device::cuda()).storage() == d.storage());  // same device: no copy
  CHECK(d.to(Device::cpu()).device() == Device::cpu());
  CHECK(d.to_vector<float>() == h.to_vector<float>());
  CHECK(d.to_vector<double>() == h.to_vector<double>());
  const Tensor one = Tensor::full({1}, 2.5, DType::bf16, Device::cuda());
  CHECK(one.item() == 2.5);
  CHECK(d.str().find("cuda:0") != std::string::npos);
  CHECK(Tensor::zeros({3}, DType::i64, Device::cuda()).to_vector<int64_t>() ==
        std::vector<int64_t>{0, 0, 0});
}

TEST_CASE("caching allocator: bucket rounding, reuse, statistics") {
  SKIP_WITHOUT_GPU();
  CHECK(cuda::round_allocation(1) == 512);
  CHECK(cuda::round_allocation(512) == 512);
  CHECK(cuda::round_allocation(513) == 1024);
  CHECK(cuda::round_allocation(size_t{1} << 20) == size_t{1} << 20);
  CHECK(cuda::round_allocation((size_t{1} << 20) + 1) == size_t{2} << 20);
  CHECK(cuda::round_allocation((size_t{5} << 20) + 3) == size_t{6} << 20);

  cuda::synchronize(0);
  const size_t bytes = 3 * 1000 * 1000 + 4;  // rounds to 4 MiB
  const size_t bucket = cuda::round_allocation(bytes);
  const auto before = cuda::allocator_stats(0);
  {
    Tensor t = Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, Device::cuda());
    const auto during = cuda::allocator_stats(0);
    CHECK(during.current_bytes == before.current_bytes + bucket);
    CHECK(during.allocs == before.allocs + 1);
    CHECK(during.peak_bytes >= during.current_bytes);
  }
  const auto freed = cuda::allocator_stats(0);
  CHECK(freed.current_bytes == before.current_bytes);
  CHECK(freed.cached_bytes >= bucket);
  {
    // The same size again comes from the cache.
    Tensor t = Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, Device::cuda());
    const auto again = cuda::allocator_stats(0);
    CHECK(again.cache_hits == freed.cache_hits + 1);
    CHECK(again.cached_bytes == freed.cached_bytes - bucket);
  }

  // Peak: set by a big tensor, kept after it is freed, lowered by reset_peak.
  cuda::reset_peak(0);
  const auto base = cuda::allocator_stats(0);
  CHECK(base.peak_bytes == base.current_bytes);
  {
    Tensor big = Tensor::empty({64 << 20}, DType::f32, Device::cuda());  // 256 MiB
    Tensor more = Tensor::empty({1000}, DType::f32, Device::cuda());
  }
  const auto after = cuda::allocator_stats(0);
  CHECK(after.current_bytes == base.current_bytes);
  CHECK(after.peak_bytes ==
        base.current_bytes + (size_t{256} << 20) + cuda::round_allocation(4000));
  cuda::reset_peak(0);
  CHECK(cuda::allocator_stats(0).peak_bytes == after.current_bytes);

  cuda::empty_cache(0);
  CHECK(cuda::allocator_stats(0).cached_bytes == 0);
}

TEST_CASE("caching allocator: out of memory throws lvit::Error and leaves CUDA usable") {
  SKIP_WITHOUT_GPU();
  { Tensor keep_cached = Tensor::empty({1 << 20}, DType::f32, Device::cuda()); }
  CHECK(cuda::allocator_stats(0).cached_bytes > 0);
  const std::string msg = error_message(
      [] { (void)Tensor::empty({int64_t{1} << 50}, DType::u8, Device::cuda()); });  // 1 PiB
  MESSAGE(msg);
  CHECK(msg.find("out of memory") != std::string::npos);
  CHECK(msg.find("cuda:0") != std::string::npos);
  CHECK(msg.find("1125899906842624 bytes") != std::string::npos);
  CHECK(msg.find("peak") != std::string::npos);
  CHECK(cuda::allocator_stats(0).cached_bytes == 0);  // flushed before the retry
  // No error left behind: allocations, kernels and copies still work.
  CHECK(cudaGetLastError() == cudaSuccess);
  const Tensor h = random_tensor({100}, DType::f32, 41);
  check_same(h.to(Device::cuda()).to(DType::bf16), h.to(DType::bf16));
}

TEST_CASE("caching allocator: concurrent allocate/free from several threads") {
  SKIP_WITHOUT_GPU();
  cuda::synchronize(0);
  const size_t start = cuda::allocator_stats(0).current_bytes;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      std::mt19937 rng(t);
      std::vector<Tensor> held;
      for (int i = 0; i < 200; ++i) {
        const int64_t n = 1 + static_cast<int64_t>(rng() % (3 << 20));
        held.push_back(Tensor::empty({n}, DType::u8, Device::cuda()));
        if (held.size() > 8) held.erase(held.begin() + static_cast<int64_t>(rng() % held.size()));
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(cuda::allocator_stats(0).current_bytes == start);
}

TEST_CASE("copies between two GPUs") {
  SKIP_WITHOUT_GPU();
  if (cuda::device_count() < 2) {
    MESSAGE("one CUDA device: skipped");
    return;
  }
  const Tensor h = random_tensor({8, 9, 10}, DType::f32, 51);
  const Tensor d0 = h.to(Device::cuda(0));
  const Tensor d1 = d0.to(Device::cuda(1));
  CHECK(d1.device() == Device::cuda(1));
  check_same(d1, h);
  // Strided source, converting destination.
  Tensor dst = Tensor::empty({10, 9, 8}, DType::bf16, Device::cuda(1));
  dst.copy_(reversed_view(d0));
  check_same(dst, reversed_view(h).to(DType::bf16));
  check_same(d1.to(Device::cuda(0)), h);
}

#endif  // LVIT_WITH_CUDA
