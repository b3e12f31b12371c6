// Tensor basics (factories, strides, views, copies, dtype conversion, errors), the Philox RNG
// (known-answer test against Random123) and the thread pool.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "ops/ops.h"
#include "tests/test_util.h"

using namespace lvit;
using lvit::test::error_message;
using lvit::test::ThreadCountGuard;

namespace {

// 0, 1, 2, ... as f64 of the given shape: every element names its own flat index.
Tensor iota(const Shape& shape) {
  std::vector<double> v(shape_numel(shape));
  std::iota(v.begin(), v.end(), 0.0);
  return Tensor::from_vector(v, shape);
}

}  // namespace

TEST_CASE("factories: shape, strides, dtype and values") {
  Tensor e = Tensor::empty({2, 3, 4});
  CHECK(e.shape() == Shape{2, 3, 4});
  CHECK(e.strides() == Shape{12, 4, 1});
  CHECK(e.numel() == 24);
  CHECK(e.dim() == 3);
  CHECK(e.dtype() == DType::f32);
  CHECK(e.device() == Device::cpu());
  CHECK(e.nbytes() == 24 * 4);
  CHECK(e.offset() == 0);
  CHECK(e.size(-1) == 4);
  CHECK(e.size(0) == 2);
  CHECK_THROWS_AS(e.size(3), Error);

  Tensor z = Tensor::zeros({3, 2}, DType::f64);
  CHECK(z.dtype() == DType::f64);
  for (double v : z.to_vector<double>()) CHECK(v == 0.0);

  Tensor f = Tensor::full({5}, -2.5, DType::f64);
  for (double v : f.to_vector<double>()) CHECK(v == -2.5);
  Tensor fi = Tensor::full({4}, 7, DType::i64);
  for (int64_t v : fi.to_vector<int64_t>()) CHECK(v == 7);
  Tensor fu = Tensor::full({3}, 200, DType::u8);
  for (uint8_t v : fu.to_vector<uint8_t>()) CHECK(v == 200);

  Tensor o = Tensor::ones({2, 2}, DType::i32);
  for (int32_t v : o.to_vector<int32_t>()) CHECK(v == 1);

  Tensor s = Tensor::scalar(3.25, DType::f64);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.shape().empty());
  CHECK(s.item() == 3.25);

  Tensor v = Tensor::from_vector<int32_t>({1, -2, 3, -4, 5, -6}, {2, 3});
  CHECK(v.dtype() == DType::i32);
  CHECK(v.to_vector<int32_t>() == std::vector<int32_t>{1, -2, 3, -4, 5, -6});
  CHECK(v.data<int32_t>()[4] == 5);

  Tensor empty0 = Tensor::zeros({0, 3});
  CHECK(empty0.numel() == 0);
  CHECK(empty0.to_vector<float>().empty());

  CHECK_THROWS_AS(Tensor::empty({2, -1}), Error);
  CHECK_THROWS_AS(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), Error);
  CHECK_FALSE(Tensor().defined());
}

TEST_CASE("strides and contiguity") {
  CHECK(contiguous_strides({2, 3, 4}) == Shape{12, 4, 1});
  CHECK(contiguous_strides({}).empty());
  CHECK(contiguous_strides({5}) == Shape{1});
  CHECK(shape_numel({}) == 1);
  CHECK(shape_numel({2, 0, 3}) == 0);
  CHECK(shape_str({2, 3}) == "[2, 3]");

  Tensor x = iota({2, 3, 4});
  CHECK(x.is_contiguous());
  Tensor t = ops::transpose(x, 0, 2);
  CHECK(t.shape() == Shape{4, 3, 2});
  CHECK(t.strides() == Shape{1, 4, 12});
  CHECK_FALSE(t.is_contiguous());
  // Slicing the outermost dimension keeps the layout packed (only the offset moves); slicing
  // an inner one leaves gaps between rows.
  Tensor s0 = ops::slice(x, 0, 1, 2);
  CHECK(s0.is_contiguous());
  CHECK(s0.offset() == 12);
  Tensor s1 = ops::slice(x, 1, 1, 3);
  CHECK_FALSE(s1.is_contiguous());
  CHECK(s1.offset() == 4);
  // Size-1 dimensions do not constrain their stride.
  Tensor one = x.as_strided({2, 1, 4}, {4, 999, 1}, 0);
  CHECK(one.is_contiguous());
}

TEST_CASE("views share storage") {
  Tensor x = iota({2, 3, 4});
  Tensor r = ops::reshape(x, {6, 4});
  Tensor p = ops::permute(x, {2, 0, 1});
  Tensor s = ops::slice(x, 2, 1, 3);
  Tensor v = x.view({4, -1});
  for (const Tensor& t : {r, p, s, v}) CHECK(t.storage() == x.storage());
  CHECK(v.shape() == Shape{4, 6});

  // A write through the storage is visible through every view.
  x.data<double>()[1 * 12 + 2 * 4 + 2] = -100.0;                           // x[1, 2, 2]
  CHECK(r.contiguous().to_vector<double>()[5 * 4 + 2] == -100.0);          // r[5, 2]
  CHECK(p.contiguous().to_vector<double>()[2 * 6 + 1 * 3 + 2] == -100.0);  // p[2, 1, 2]
  CHECK(s.contiguous().to_vector<double>()[1 * 6 + 2 * 2 + 1] == -100.0);  // s[1, 2, 1]

  // detach shares storage too; clone does not.
  CHECK(x.detach().storage() == x.storage());
  Tensor c = x.clone();
  CHECK(c.storage() != x.storage());
  CHECK(c.to_vector<double>() == x.to_vector<double>());
}

TEST_CASE("contiguous() packs permuted and sliced views") {
  const Shape shape{3, 4, 5};
  Tensor x = iota(shape);
  SUBCASE("permuted") {
    Tensor p = ops::permute(x, {1, 2, 0});  // p[i, j, k] = x[k, i, j]
    Tensor c = p.contiguous();
    CHECK(c.is_contiguous());
    CHECK(c.storage() != x.storage());
    CHECK(c.shape() == Shape{4, 5, 3});
    auto v = c.to_vector<double>();
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 5; ++j)
        for (int64_t k = 0; k < 3; ++k)
          CHECK(v[(i * 5 + j) * 3 + k] == static_cast<double>(k * 20 + i * 5 + j));
  }
  SUBCASE("sliced") {
    Tensor s = ops::slice(ops::slice(x, 1, 1, 3), 2, 2, 5);  // x[:, 1:3, 2:5]
    Tensor c = s.contiguous();
    CHECK(c.shape() == Shape{3, 2, 3});
    auto v = c.to_vector<double>();
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t k = 0; k < 3; ++k)
          CHECK(v[(i * 2 + j) * 3 + k] == static_cast<double>(i * 20 + (j + 1) * 5 + (k + 2)));
  }
  SUBCASE("slice of a transpose, f32 and i32 (the 4-byte strided path)") {
    for (DType dt : {DType::f32, DType::i32}) {
      Tensor xt = ops::slice(ops::transpose(x.to(dt), 0, 2), 0, 1, 4);  // [3, 4, 3]
      auto v = xt.contiguous().to_vector<double>();
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 4; ++j)
          for (int64_t k = 0; k < 3; ++k)
            CHECK(v[(i * 4 + j) * 3 + k] == static_cast<double>(k * 20 + j * 5 + (i + 1)));
    }
  }
  SUBCASE("already contiguous: returns the same tensor") {
    Tensor c = x.contiguous();
    CHECK(c.impl() == x.impl());
  }
}

TEST_CASE("dtype conversions") {
  SUBCASE("f32 <-> f64 round trip") {
    std::vector<float> vals{0.0f, -1.5f, 3.14159274f, 1e-30f, -6.5e20f, 0.1f};
    Tensor f = Tensor::from_vector(vals, {6});
    Tensor d = f.to(DType::f64);
    CHECK(d.dtype() == DType::f64);
    auto dv = d.to_vector<double>();
    for (size_t i = 0; i < vals.size(); ++i) CHECK(dv[i] == static_cast<double>(vals[i]));
    CHECK(d.to(DType::f32).to_vector<float>() == vals);
    // f64 -> f32 rounds to nearest: 0.1 is not representable in either.
    Tensor tenth = Tensor::scalar(0.1, DType::f64).to(DType::f32);
    CHECK(tenth.to_vector<float>()[0] == 0.1f);
  }
  SUBCASE("integers") {
    Tensor i = Tensor::from_vector<int64_t>({-3, 0, 7, 1'000'000'007}, {4});
    CHECK(i.to(DType::f64).to_vector<double>() == std::vector<double>{-3, 0, 7, 1'000'000'007});
    CHECK(i.to(DType::f64).to(DType::i64).to_vector<int64_t>() == i.to_vector<int64_t>());
    CHECK(i.to(DType::i32).to_vector<int32_t>() == std::vector<int32_t>{-3, 0, 7, 1'000'000'007});
    // f -> int truncates toward zero.
    Tensor f = Tensor::from_vector<double>({2.75, -2.75}, {2});
    CHECK(f.to(DType::i64).to_vector<int64_t>() == std::vector<int64_t>{2, -2});
    Tensor u = Tensor::from_vector<uint8_t>({0, 1, 128, 255}, {4});
    CHECK(u.to(DType::f32).to_vector<float>() == std::vector<float>{0, 1, 128, 255});
    CHECK(u.to(DType::f32).to(DType::u8).to_vector<uint8_t>() == u.to_vector<uint8_t>());
  }
  SUBCASE("i64 beyond 2^53 survives a strided same-dtype copy") {
    const int64_t big = (int64_t{1} << 60) + 1;  // not representable in f64
    Tensor i = Tensor::from_vector<int64_t>({big, 1, 2, big + 2, 3, 4}, {2, 3});
    Tensor t = ops::transpose(i, 0, 1).contiguous();
    CHECK(t.to_vector<int64_t>() == std::vector<int64_t>{big, big + 2, 1, 3, 2, 4});
  }
  SUBCASE("bf16 rounds to nearest even") {
    // 1 + 2^-8 lies halfway between bf16 1.0 (0x3F80) and 1 + 2^-7 (0x3F81): ties go to the even
    // mantissa 0x3F80. 1 + 3 * 2^-8 lies halfway between 0x3F81 and 0x3F82: goes up to 0x3F82.
    // Just above a tie rounds up; the largest float overflows to +inf.
    const float max_f = std::numeric_limits<float>::max();
    std::vector<float> in{1.0f,
                          1.0f + 0x1p-8f,
                          1.0f + 3 * 0x1p-8f,
                          1.0f + 0x1p-8f + 0x1p-20f,
                          -2.0f,
                          max_f,
                          std::numeric_limits<float>::quiet_NaN()};
    std::vector<uint16_t> want{0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC000, 0x7F80};
    Tensor b = Tensor::from_vector(in, {7}).to(DType::bf16);
    CHECK(b.dtype() == DType::bf16);
    CHECK(b.nbytes() == 14);
    const auto* raw = static_cast<const uint16_t*>(b.raw_data());
    for (size_t i = 0; i < want.size(); ++i) {
      INFO("element " << i);
      CHECK(raw[i] == want[i]);
    }
    CHECK(std::isnan(bf16_to_float(raw[6])));
    auto back = b.to(DType::f32).to_vector<float>();
    CHECK(back[0] == 1.0f);
    CHECK(back[2] == 1.0f + 2 * 0x1p-7f);
    CHECK(back[4] == -2.0f);
    CHECK(std::isinf(back[5]));
    CHECK(std::isnan(back[6]));
    // full() goes through the same rounding.
    CHECK(Tensor::full({1}, 1.0 + 3 * 0x1p-8, DType::bf16).item() == 1.0 + 2 * 0x1p-7);
  }
}

TEST_CASE("item() and to_vector") {
  CHECK(Tensor::full({1, 1}, 4.5, DType::f64).item() == 4.5);
  CHECK(Tensor::full({}, -7, DType::i64).item() == -7.0);
  CHECK(Tensor::full({1}, 0.5, DType::bf16).item() == 0.5);
  CHECK_THROWS_AS(Tensor::zeros({2}).item(), Error);
  // to_vector reads through the view (offset, strides) and converts.
  Tensor x = iota({2, 3});
  Tensor col = ops::slice(x, 1, 2, 3);  // x[:, 2]
  CHECK(col.to_vector<float>() == std::vector<float>{2, 5});
  CHECK(col.to_vector<int64_t>() == std::vector<int64_t>{2, 5});
  CHECK(ops::slice(ops::slice(x, 0, 1, 2), 1, 1, 2).item() == 4.0);  // x[1, 1]
  CHECK_THROWS_AS(ops::slice(x, 1, 1, 2).item(), Error);             // two elements
}

TEST_CASE("bad views and accesses throw lvit::Error naming the expression and file") {
  Tensor x = iota({2, 3, 4});
  Tensor t = ops::transpose(x, 0, 1);
  std::string msg = error_message([&] { (void)t.view({24}); });
  CHECK(msg.find("is_contiguous()") != std::string::npos);
  CHECK(msg.find("tensor.cpp") != std::string::npos);
  CHECK(msg.find("check failed") != std::string::npos);

  msg = error_message([&] { (void)x.view({5, 5}); });
  CHECK(msg.find("shape_numel(shape) == numel()") != std::string::npos);
  CHECK(msg.find("tensor.cpp") != std::string::npos);

  CHECK_THROWS_AS(x.view({-1, -1}), Error);
  CHECK_THROWS_AS(x.view({-1, 5}), Error);

  msg = error_message([&] { (void)ops::slice(x, 1, 2, 5); });
  CHECK(msg.find("end <= n") != std::string::npos);
  CHECK(msg.find("shape.cpp") != std::string::npos);
  CHECK_THROWS_AS(ops::slice(x, 3, 0, 1), Error);
  CHECK_THROWS_AS(ops::slice(x, 0, 2, 1), Error);
  CHECK_THROWS_AS(ops::permute(x, {0, 0, 1}), Error);
  CHECK_THROWS_AS(ops::permute(x, {0, 1}), Error);
  CHECK_THROWS_AS(ops::reshape(x, {7, -1}), Error);
  CHECK_THROWS_AS(ops::split(x, {1, 1}, 1), Error);

  msg = error_message([&] { (void)x.data<float>(); });
  CHECK(msg.find("data<f32>() on a f64 tensor") != std::string::npos);

  // A strided view that would reach past the end (or before the start) of its storage.
  msg = error_message([&] { (void)x.as_strided({2, 13}, {12, 1}, 0); });
  CHECK(msg.find("tensor.cpp") != std::string::npos);
  CHECK_THROWS_AS(x.as_strided({24}, {1}, 1), Error);
  CHECK_THROWS_AS(x.as_strided({2}, {-1}, 0), Error);
  CHECK_THROWS_AS(x.as_strided({2, 3}, {3}, 0), Error);
  // In-bounds views, including stride 0 (broadcast) and empty ones, are fine.
  CHECK(x.as_strided({5, 24}, {0, 1}, 0).numel() == 120);
  CHECK(x.as_strided({0, 100}, {100, 1}, 50).numel() == 0);
  CHECK(x.as_strided({2}, {-1}, 23).contiguous().to_vector<double>() ==
        std::vector<double>{23, 22});
}

// ---- Philox ----

TEST_CASE("Philox4x32-10 known answers (Random123 kat_vectors)") {
  struct Kat {
    uint32_t ctr[4];
    uint32_t key[2];
    uint32_t out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    uint32_t c[4] = {k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]};
    Philox::block(c, k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) CHECK(c[i] == k.out[i]);
  }
  // The structure-of-arrays form (used by vectorised kernels) gives the same answers per lane.
  uint32_t lane0[3], lane1[3], lane2[3], lane3[3];
  for (int l = 0; l < 3; ++l) {
    lane0[l] = kats[l].ctr[0];
    lane1[l] = kats[l].ctr[1];
    lane2[l] = kats[l].ctr[2];
    lane3[l] = kats[l].ctr[3];
  }
  for (const Kat& k : kats) {
    uint32_t a = k.ctr[0], b = k.ctr[1], c = k.ctr[2], d = k.ctr[3];
    Philox::blocks<1>(&a, &b, &c, &d, k.key[0], k.key[1]);
    CHECK(a == k.out[0]);
    CHECK(b == k.out[1]);
    CHECK(c == k.out[2]);
    CHECK(d == k.out[3]);
  }
  // One key for all lanes: check lane 0 with kat 0's key and every lane against block().
  Philox::blocks<3>(lane0, lane1, lane2, lane3, 0, 0);
  CHECK(lane0[0] == kats[0].out[0]);
  CHECK(lane1[0] == kats[0].out[1]);
  CHECK(lane2[0] == kats[0].out[2]);
  CHECK(lane3[0] == kats[0].out[3]);
  for (int l = 0; l < 3; ++l) {
    uint32_t c[4] = {kats[l].ctr[0], kats[l].ctr[1], kats[l].ctr[2], kats[l].ctr[3]};
    Philox::block(c, 0, 0);
    CHECK(lane0[l] == c[0]);
    CHECK(lane1[l] == c[1]);
    CHECK(lane2[l] == c[2]);
    CHECK(lane3[l] == c[3]);
  }
  // word() lays out (element block, offset) as the counter and the seed as the key.
  uint32_t c[4] = {0, 0, 0, 0};
  Philox::block(c, 0, 0);
  for (uint64_t i = 0; i < 4; ++i) CHECK(Philox::word(0, 0, i) == c[i]);
  uint32_t c2[4] = {1, 0, 7, 0};
  Philox::block(c2, 42, 0);
  CHECK(Philox::word(42, 7, 5) == c2[1]);
}

TEST_CASE("Philox keep_threshold: the integer test of uniform >= p, for every 24-bit value") {
  // The GPU mask kernels compare words against keep_threshold(p) where the CPU compares
  // uniform(word) >= p: both must keep the same elements for every word and every p in [0, 1).
  std::vector<float> ps = {
      0.0f, 1e-9f, 0.1f, 0.2f, 0.25f, 1.0f / 3.0f, 0.5f, 0.9f, std::nextafter(1.0f, 0.0f)};
  for (uint64_t i = 0; i < 4; ++i) ps.push_back(Philox::uniform(77, 0, i));
  for (float p : ps) {
    INFO("p = " << p);
    const uint32_t threshold = Philox::keep_threshold(p);
    int64_t mismatches = 0;
    for (uint32_t u = 0; u < (1u << 24); ++u)
      for (uint32_t low : {0u, 0x7fu, 0xffu}) {
        const uint32_t w = (u << 8) | low;
        mismatches += (Philox::uniform_of(w) >= p) != (w >= threshold);
      }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("Philox uniform range and determinism") {
  double sum = 0;
  float lo = 1, hi = 0;
  const int n = 1 << 16;
  for (int i = 0; i < n; ++i) {
    float u = Philox::uniform(123, 4, i);
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
    CHECK_UNARY(u >= 0.0f);
    CHECK_UNARY(u < 1.0f);
  }
  // Mean of n uniforms: 0.5 +- 5 standard errors (sd 1/sqrt(12 n)).
  CHECK(std::abs(sum / n - 0.5) < 5.0 / std::sqrt(12.0 * n));
  CHECK(lo < 1e-3f);
  CHECK(hi > 1 - 1e-3f);
  // Same (seed, offset, i): same number, in any order; other offsets/seeds give other streams.
  for (uint64_t i : {0ull, 3ull, 1000ull, 123456789ull}) {
    CHECK(Philox::word(9, 2, i) == Philox::word(9, 2, i));
    CHECK(Philox::uniform(9, 2, i) == Philox::uniform(9, 2, i));
    CHECK(Philox::word(9, 2, i) != Philox::word(9, 3, i));
    CHECK(Philox::word(9, 2, i) != Philox::word(10, 2, i));
    CHECK(philox_normal(9, 2, i) == philox_normal(9, 2, i));
  }
  // The largest word maps below 1.
  CHECK(static_cast<float>(0xffffffffu >> 8) * (1.0f / 16777216.0f) < 1.0f);

  Generator g(77), h(77);
  CHECK(g.offset() == 0);
  const float a = g.uniform();
  CHECK(g.offset() == 1);
  CHECK(h.uniform() == a);
  CHECK(g.uniform() != a);  // a fresh offset
  g.set_state(77, 0);
  CHECK(g.uniform() == a);
  for (int i = 0; i < 100; ++i) {
    int64_t r = g.randint(7);
    CHECK_UNARY(r >= 0);
    CHECK_UNARY(r < 7);
  }
}

TEST_CASE("philox_normal moments") {
  const int n = 1 << 16;
  double s = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    double z = philox_normal(5, 0, i);
    CHECK_UNARY(std::isfinite(z));
    s += z;
    s2 += z * z;
  }
  const double mean = s / n, var = s2 / n - mean * mean;
  // 5 standard errors: sd(mean) = 1/sqrt(n), sd(var) = sqrt(2/n).
  CHECK(std::abs(mean) < 5.0 / std::sqrt(n));
  CHECK(std::abs(var - 1.0) < 5.0 * std::sqrt(2.0 / n));
}

// ---- thread pool ----

TEST_CASE("parallel_for covers [0, n) exactly once") {
  ThreadCountGuard guard;
  for (int threads : {1, 2, 3, 4}) {
    set_num_threads(threads);
    CHECK(num_threads() == threads);
    for (int64_t n : {0, 1, 7, 100, 10007}) {
      for (int64_t grain : {1, 3, 64, 100000}) {
        std::vector<std::atomic<int>> hits(n);
        std::atomic<int> calls{0};
        parallel_for(n, grain, [&](int64_t b, int64_t e) {
          ++calls;
          CHECK_UNARY(0 <= b);
          CHECK_UNARY(b < e);
          CHECK_UNARY(e <= n);
          for (int64_t i = b; i < e; ++i) ++hits[i];
        });
        INFO("threads " << threads << " n " << n << " grain " << grain);
        for (int64_t i = 0; i < n; ++i) REQUIRE(hits[i].load() == 1);
        CHECK(calls.load() <= threads);
        if (n == 0) CHECK(calls.load() == 0);
      }
    }
  }
}

TEST_CASE("parallel_tasks runs every index once, also nested") {
  ThreadCountGuard guard;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (int64_t n : {0, 1, 2, 5, 100}) {
      std::vector<std::atomic<int>> hits(n);
      parallel_tasks(n, [&](int64_t i) {
        REQUIRE(i >= 0);
        REQUIRE(i < n);
        ++hits[i];
        // A parallel region inside a task completes (inline when the task runs on the pool).
        std::atomic<int> inner{0};
        parallel_tasks(3, [&](int64_t) { ++inner; });
        CHECK(inner.load() == 3);
      });
      INFO("threads " << threads << " n " << n);
      for (auto& h : hits) REQUIRE(h.load() == 1);
    }
  }
}

TEST_CASE("parallel_for propagates exceptions and stays usable") {
  ThreadCountGuard guard;
  for (int threads : {1, 3}) {
    set_num_threads(threads);
    CHECK_THROWS_WITH_AS(parallel_for(1000, 1,
                                      [&](int64_t b, int64_t e) {
                                        if (b <= 999 && 999 < e) throw std::runtime_error("boom");
                                      }),
                         "boom", std::runtime_error);
    CHECK_THROWS_AS(
        parallel_for(1000, 1, [&](int64_t, int64_t) { LVIT_CHECK(false, "every chunk fails"); }),
        Error);
    // The pool still works after a failed region.
    std::atomic<int64_t> total{0};
    parallel_for(1000, 1, [&](int64_t b, int64_t e) { total += e - b; });
    CHECK(total.load() == 1000);
  }
}

TEST_CASE("nested parallel_for runs inline") {
  ThreadCountGuard guard;
  set_num_threads(3);
  std::atomic<int> inner_calls{0};
  std::vector<std::atomic<int>> hits(30 * 50);
  parallel_for(30, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      int local_calls = 0;
      parallel_for(50, 1, [&](int64_t ib, int64_t ie) {
        ++local_calls;  // not atomic: an inline call runs on this thread only
        for (int64_t j = ib; j < ie; ++j) ++hits[i * 50 + j];
      });
      CHECK(local_calls == 1);
      inner_calls += local_calls;
    }
  });
  CHECK(inner_calls.load() == 30);
  for (auto& h : hits) REQUIRE(h.load() == 1);
}

TEST_CASE("parallel_chunks reductions do not depend on the thread count") {
  ThreadCountGuard guard;
  const int64_t n = 100003, chunks = 7;
  std::vector<double> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = philox_normal(3, 0, i) * 1e3;
  auto reduce = [&] {
    std::vector<double> part(chunks, 0.0);
    std::vector<std::atomic<int>> seen(chunks);
    parallel_chunks(n, chunks, [&](int64_t k, int64_t b, int64_t e) {
      ++seen[k];
      for (int64_t i = b; i < e; ++i) part[k] += x[i];
    });
    for (auto& s : seen) CHECK(s.load() == 1);
    double s = 0;
    for (double p : part) s += p;
    return s;
  };
  set_num_threads(1);
  const double r1 = reduce();
  set_num_threads(2);
  const double r2 = reduce();
  set_num_threads(3);
  const double r3 = reduce();
  // Bitwise identical: same chunks, same order of additions.
  CHECK(std::memcmp(&r1, &r2, sizeof r1) == 0);
  CHECK(std::memcmp(&r1, &r3, sizeof r1) == 0);
  double ref = 0;
  for (double v : x) ref += v;
  CHECK(r1 == doctest::Approx(ref).epsilon(1e-12));

  // Chunks tile [0, n) in order, including more chunks than elements.
  for (int64_t nn : {0, 5, 10}) {
    std::vector<std::pair<int64_t, int64_t>> ranges(8);
    parallel_chunks(nn, 8, [&](int64_t k, int64_t b, int64_t e) { ranges[k] = {b, e}; });
    int64_t at = 0;
    for (auto [b, e] : ranges) {
      CHECK(b == at);
      CHECK(e >= b);
      at = e;
    }
    CHECK(at == nn);
  }
}
