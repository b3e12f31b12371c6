// Every CUDA op of ops/ against the CPU op: the same random inputs on both devices, the same
// random upstream gradient, forward output and every input gradient compared with tolerances
// derived from the arithmetic (tests/cuda_test_util.h). Outputs are poisoned (NaN) before each
// op runs, so an element a kernel leaves unwritten fails. Skips cleanly without a GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "core/rng.h"
#include "models/optim/optimizer.h"
#include "ops/ops.h"
#include "tests/cuda_test_util.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/gemm.cuh"
#endif

using namespace lvit;
using cudatest::Arith;
using cudatest::compare_op;
using cudatest::expect_close;
using cudatest::randn;
using cudatest::to_gpu;

namespace {

#ifdef LVIT_WITH_CUDA
// fp32 GEMMs for the scope (the default is TF32), so that f32 tolerances apply.
struct Fp32Gemms {
  cuda::MathMode saved = cuda::math_mode();
  Fp32Gemms() { cuda::set_math_mode(cuda::MathMode::fp32); }
  ~Fp32Gemms() { cuda::set_math_mode(saved); }
};
#endif

Tensor positive(const Shape& s, uint64_t seed) {
  Tensor t = randn(s, seed);
  std::vector<float> v = t.to_vector<float>();
  for (float& x : v) x = std::abs(x) + 0.5f;
  return Tensor::from_vector(v, s);
}

}  // namespace

TEST_CASE("CUDA elementwise ops with broadcasting") {
  LVIT_SKIP_WITHOUT_GPU();
  const std::vector<std::pair<Shape, Shape>> shapes = {{{2, 3, 5}, {2, 3, 5}},
                                                       {{2, 3, 5}, {3, 1}},
                                                       {{4, 1, 6}, {1, 5, 6}},
                                                       {{7}, {}},
                                                       {{64, 65, 38}, {1, 65, 38}}};
  for (auto& [sa, sb] : shapes) {
    Tensor a = randn(sa, 1), b = positive(sb, 2);
    const std::string s = shape_str(sa) + " and " + shape_str(sb);
    // The broadcast gradient sums over up to numel(a) / numel(b) elements.
    const int64_t k = std::max<int64_t>(1, shape_numel(sa) / std::max<int64_t>(1, shape_numel(sb)));
    compare_op(
        "add " + s, [](auto& x) { return ops::add(x[0], x[1]); }, {a, b}, Arith::f32, 1, k);
    compare_op(
        "sub " + s, [](auto& x) { return ops::sub(x[0], x[1]); }, {a, b}, Arith::f32, 1, k);
    compare_op(
        "mul " + s, [](auto& x) { return ops::mul(x[0], x[1]); }, {a, b}, Arith::f32, 1, k);
    compare_op(
        "div " + s, [](auto& x) { return ops::div(x[0], x[1]); }, {a, b}, Arith::f32, 1, k);
  }
  // A strided (transposed) operand goes through the strided kernel.
  Tensor a = randn({6, 9}, 3), b = randn({9, 6}, 4);
  compare_op(
      "add transposed", [](auto& x) { return ops::add(x[0], ops::transpose(x[1], 0, 1)); }, {a, b},
      Arith::f32, 1, 1);
  // f64 runs the same kernels in double.
  compare_op(
      "mul f64", [](auto& x) { return ops::mul(x[0], x[1]); },
      {randn({3, 4}, 5, 1.0, DType::f64), randn({4}, 6, 1.0, DType::f64)}, Arith::f64, 1, 3);
}

TEST_CASE("CUDA unary and scalar ops") {
  LVIT_SKIP_WITHOUT_GPU();
  const Shape s{5, 77};
  Tensor x = randn(s, 7), p = positive(s, 8);
  compare_op(
      "neg", [](auto& v) { return ops::neg(v[0]); }, {x}, Arith::f32, 1, 1);
  compare_op(
      "exp", [](auto& v) { return ops::exp(v[0]); }, {x}, Arith::f32, 1, 1);
  compare_op(
      "log", [](auto& v) { return ops::log(v[0]); }, {p}, Arith::f32, 1, 1);
  compare_op(
      "sqrt", [](auto& v) { return ops::sqrt(v[0]); }, {p}, Arith::f32, 1, 1);
  compare_op(
      "square", [](auto& v) { return ops::square(v[0]); }, {x}, Arith::f32, 1, 1);
  compare_op(
      "add_scalar", [](auto& v) { return ops::add_scalar(v[0], 0.75); }, {x}, Arith::f32, 1, 1);
  compare_op(
      "mul_scalar", [](auto& v) { return ops::mul_scalar(v[0], -1.5); }, {x}, Arith::f32, 1, 1);
}

TEST_CASE("CUDA reductions") {
  LVIT_SKIP_WITHOUT_GPU();
  Tensor x = randn({6, 35, 40}, 9);
  compare_op(
      "sum all", [](auto& v) { return ops::sum(v[0]); }, {x}, Arith::f32, x.numel(), 1);
  compare_op(
      "sum axis 0", [](auto& v) { return ops::sum(v[0], {0}); }, {x}, Arith::f32, 6, 1);
  compare_op(
      "sum axes 0,2 keepdim",
      [](auto& v) {
        return ops::sum(v[0], {0, 2}, true);
      },
      {x}, Arith::f32, 240, 1);
  compare_op(
      "mean last", [](auto& v) { return ops::mean(v[0], {-1}); }, {x}, Arith::f32, 40, 1);
  // Sums over leading dimensions to 32 or more outputs (a position embedding's or class token's
  // gradient over the batch) run as column sums.
  Tensor tall = randn({300, 5, 24}, 11);
  compare_op(
      "sum_to leading dims",
      [](auto& v) {
        return ops::sum_to(v[0], {5, 24});
      },
      {tall}, Arith::f32, 300, 1);
  compare_op(
      "sum_to leading dims, size-1 kept",
      [](auto& v) {
        return ops::sum_to(v[0], {1, 1, 40});
      },
      {randn({300, 1, 40}, 12)}, Arith::f32, 300, 1);
  // Large reductions to few outputs take the block-per-output kernel.
  Tensor big = randn({4000, 3}, 10);
  compare_op(
      "sum rows", [](auto& v) { return ops::sum(v[0], {0}); }, {big}, Arith::f32, 4000, 1);
}

TEST_CASE("CUDA shape ops: reshape, permute, slice, concat, split, patchify") {
  LVIT_SKIP_WITHOUT_GPU();
  Tensor x = randn({2, 3, 8, 8}, 11), y = randn({2, 5, 8, 8}, 12);
  compare_op(
      "permute+contiguous",
      [](auto& v) {
        return ops::contiguous(ops::permute(v[0], {0, 2, 3, 1}));
      },
      {x}, Arith::f32, 1, 1);
  compare_op(
      "slice", [](auto& v) { return ops::mul_scalar(ops::slice(v[0], 2, 1, 6), 2.0); }, {x},
      Arith::f32, 1, 1);
  compare_op(
      "concat",
      [](auto& v) {
        return ops::concat({v[0], v[1]}, 1);
      },
      {x, y}, Arith::f32, 1, 1);
  compare_op(
      "split",
      [](auto& v) {
        auto parts = ops::split(v[0], {1, 2}, 1);
        return ops::add(ops::mul_scalar(parts[0], 3.0), ops::slice(parts[1], 1, 1, 2));
      },
      {x}, Arith::f32, 1, 1);
  compare_op(
      "patchify", [](auto& v) { return ops::patchify(v[0], 4); }, {x}, Arith::f32, 1, 1);
}

TEST_CASE("CUDA matmul and linear (fp32 and TF32 GEMMs)") {
  LVIT_SKIP_WITHOUT_GPU();
#ifdef LVIT_WITH_CUDA
  for (bool tf32 : {false, true}) {
    Fp32Gemms fp32;
    if (tf32) cuda::set_math_mode(cuda::MathMode::tf32);
    const Arith ar = tf32 ? Arith::tf32 : Arith::f32;
    const std::string mode = tf32 ? " (tf32)" : " (fp32)";
    for (auto [M, K, N] : {std::tuple{37, 50, 23}, std::tuple{1, 7, 1}, std::tuple{130, 384, 96}}) {
      const std::string s = fmt::format(" {}x{}x{}", M, K, N);
      Tensor x = randn({M, K}, 13), w = randn({N, K}, 14), b = randn({N}, 15);
      compare_op(
          "linear" + s + mode, [](auto& v) { return ops::linear(v[0], v[1], v[2]); }, {x, w, b}, ar,
          K, std::max(M, N));
      compare_op(
          "linear no bias" + s + mode, [](auto& v) { return ops::linear(v[0], v[1], Tensor()); },
          {x, w}, ar, K, std::max(M, N));
      // 3-D input: rows folded over the leading dimensions.
      Tensor x3 = randn({3, M, K}, 16);
      compare_op(
          "linear 3-D" + s + mode, [](auto& v) { return ops::linear(v[0], v[1], v[2]); },
          {x3, w, b}, ar, K, 3 * std::max(M, N));
    }
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t B = 3, M = 19, K = 33, N = 12;
        Tensor a = randn(ta ? Shape{B, K, M} : Shape{B, M, K}, 17);
        Tensor b = randn(tb ? Shape{B, N, K} : Shape{B, K, N}, 18);
        compare_op(
            fmt::format("batched matmul ta={} tb={}{}", ta, tb, mode),
            [ta, tb](auto& v) { return ops::matmul(v[0], v[1], ta, tb); }, {a, b}, ar, K,
            std::max(M, N));
      }
  }
  // f64 GEMMs (gradcheck-style runs on the GPU).
  compare_op(
      "matmul f64", [](auto& v) { return ops::matmul(v[0], v[1]); },
      {randn({2, 9, 11}, 19, 1.0, DType::f64), randn({2, 11, 5}, 20, 1.0, DType::f64)}, Arith::f64,
      11, 9);
#endif
}

TEST_CASE("CUDA layer_norm, gelu, softmax") {
  LVIT_SKIP_WITHOUT_GPU();
  for (int64_t D : {7, 50, 384}) {
    const int64_t M = 37;
    Tensor x = randn({M, D}, 21, 2.0), w = randn({D}, 22), b = randn({D}, 23);
    compare_op(
        fmt::format("layer_norm D={}", D),
        [](auto& v) { return ops::layer_norm(v[0], v[1], v[2], 1e-6); }, {x, w, b}, Arith::f32, D,
        std::max(M, D));
  }
  // Rows beyond one pass of the fused backward's grid (512 blocks of 8 warps): each warp
  // strides over several rows and the weight/bias partials cover 512 row groups.
  {
    const int64_t M = 9000, D = 128;
    compare_op(
        "layer_norm M=9000 (grid-strided fused backward)",
        [](auto& v) { return ops::layer_norm(v[0], v[1], v[2], 1e-6); },
        {randn({M, D}, 41, 2.0), randn({D}, 42), randn({D}, 43)}, Arith::f32, D, M);
  }
  Tensor x3 = randn({4, 65, 128}, 24);
  compare_op(
      "layer_norm 3-D", [](auto& v) { return ops::layer_norm(v[0], v[1], v[2], 1e-6); },
      {x3, randn({128}, 25), randn({128}, 26)}, Arith::f32, 128, 260);
  // In a residual connection, with x's other gradient (2g) summed first: the engine lends it
  // and the GPU backward adds x's gradient into it in place (the generic and the vector kernel).
  for (int64_t D : {50, 128}) {
    compare_op(
        fmt::format("layer_norm + 2x D={}", D),
        [](auto& v) {
          return ops::add(ops::layer_norm(v[0], v[1], v[2], 1e-6), ops::mul_scalar(v[0], 2.0));
        },
        {randn({4, 65, D}, 30, 2.0), randn({D}, 31), randn({D}, 32)}, Arith::f32, D, 260);
  }
  Tensor g = randn({9, 300}, 27, 3.0);
  compare_op(
      "gelu", [](auto& v) { return ops::gelu(v[0]); }, {g}, Arith::f32, 1, 1);
  for (int64_t N : {1, 7, 100, 257}) {
    Tensor s = randn({13, N}, 28, 4.0);
    compare_op(
        fmt::format("softmax N={}", N), [](auto& v) { return ops::softmax(v[0]); }, {s}, Arith::f32,
        N, N);
  }
}

TEST_CASE("CUDA dropout and drop_path draw the CPU's masks") {
  LVIT_SKIP_WITHOUT_GPU();
  Tensor x = randn({5, 17, 33}, 29);
  for (bool path : {false, true}) {
    Generator gc(1234), gg(1234);
    gc.next_offset();
    gg.next_offset();
    auto run = [&](Tensor in, Generator& gen) {
      return path ? ops::drop_path(in, 0.3, true, gen) : ops::dropout(in, 0.3, true, gen);
    };
    const std::string name = path ? "drop_path" : "dropout";
    compare_op(
        name, [&](auto& v) { return run(v[0], v[0].device().is_cuda() ? gg : gc); }, {x},
        Arith::f32, 1, 1);
    // The masks agree exactly: the same elements are zero on both devices.
    // 64 samples: drop-path draws one number per sample, and 0.7^64 all-kept is never seen.
    Tensor xm = randn({64, 9, 5}, 32);
    Generator a(99), b(99);
    auto yc = run(xm, a).to_vector<float>();
    auto yg = run(to_gpu(xm), b).to_vector<float>();
    int64_t zeros = 0;
    for (size_t i = 0; i < yc.size(); ++i) {
      CHECK((yc[i] == 0.0f) == (yg[i] == 0.0f));
      zeros += yc[i] == 0.0f;
    }
    CHECK(zeros > 0);
    CHECK(zeros < static_cast<int64_t>(yc.size()));
  }
}

TEST_CASE("CUDA fused gelu_dropout equals dropout(gelu(x)) on the CPU") {
  LVIT_SKIP_WITHOUT_GPU();
  for (const Shape& s : {Shape{5, 17, 33}, Shape{64, 1536}}) {
    Tensor x = randn(s, 33, 2.0);
    Generator gc(4321), gg(4321);
    compare_op(
        "gelu_dropout " + shape_str(s),
        [&](auto& v) {
          Generator& gen = v[0].device().is_cuda() ? gg : gc;
          return ops::gelu_dropout(v[0], 0.2, true, gen);
        },
        {x}, Arith::f32, 1, 1);
    CHECK(gc.offset() == gg.offset());
  }
}

TEST_CASE("CUDA linear_gelu_dropout: against the CPU, and bit for bit the two ops on the GPU") {
  LVIT_SKIP_WITHOUT_GPU();
#ifdef LVIT_WITH_CUDA
  Fp32Gemms fp32;
  // 96 outputs take the vector column sums, 50 the scalar ones.
  for (int64_t N : {96, 50}) {
    const Shape xs{3, 40, 24};
    Generator gc(4321), gg(4321);
    compare_op(
        fmt::format("linear_gelu_dropout N={}", N),
        [&](auto& v) {
          Generator& gen = v[0].device().is_cuda() ? gg : gc;
          return ops::linear_gelu_dropout(v[0], v[1], v[2], 0.2, true, gen);
        },
        {randn(xs, 50), randn({N, 24}, 51, 0.3), randn({N}, 52)}, Arith::f32, 24, 120);
    CHECK(gc.offset() == gg.offset());
    // The one-node GPU path against gelu_dropout(linear(...)) on the GPU: the same output and
    // gradients bit for bit, all-f32 and with bf16 activations (mixed precision).
    for (DType dt : {DType::f32, DType::bf16}) {
      const Tensor x0 = to_gpu(randn(xs, 53)).to(dt), w0 = to_gpu(randn({N, 24}, 54, 0.3)),
                   b0 = to_gpu(randn({N}, 55)), gout = to_gpu(randn({3, 40, N}, 56)).to(dt);
      auto run = [&](bool fused) {
        Tensor x = x0.detach(), w = w0.detach(), b = b0.detach();
        x.set_requires_grad(true);
        w.set_requires_grad(true);
        b.set_requires_grad(true);
        Generator gen(77);
        Tensor y = fused ? ops::linear_gelu_dropout(x, w, b, 0.25, true, gen)
                         : ops::gelu_dropout(ops::linear(x, w, b), 0.25, true, gen);
        y.backward(gout);
        std::vector<std::vector<float>> r;
        for (const Tensor& t : {y, x.grad(), w.grad(), b.grad()})
          r.push_back(t.to(DType::f32).to_vector<float>());
        return r;
      };
      const auto fused = run(true), two = run(false);
      const char* names[] = {"output", "x gradient", "weight gradient", "bias gradient"};
      for (size_t k = 0; k < fused.size(); ++k) {
        INFO(names[k], " N=", N, " ", dtype_name(dt));
        CHECK(fused[k] == two[k]);
      }
    }
  }
#endif
}

TEST_CASE("CUDA linear_add_dropout: against the CPU, and bit for bit the two ops on the GPU") {
  LVIT_SKIP_WITHOUT_GPU();
#ifdef LVIT_WITH_CUDA
  Fp32Gemms fp32;
  // Against the CPU all-f32 (on the GPU the node's backward then takes the mask pass and the
  // column sums); the one-pass kernel runs under mixed precision below, for N = 96, 192 and 384
  // (32, 8 and 16 column lanes a block; 600 rows: several row chunks); N = 50 falls back to the
  // mask pass and the column sums there too.
  for (const auto& [rows, N] :
       {std::pair<int64_t, int64_t>{40, 96}, {40, 192}, {200, 384}, {40, 50}}) {
    const Shape xs{3, rows, 24}, ys{3, rows, N};
    Generator gc(4321), gg(4321);
    compare_op(
        fmt::format("linear_add_dropout rows={} N={}", rows, N),
        [&](auto& v) {
          Generator& gen = v[0].device().is_cuda() ? gg : gc;
          return ops::linear_add_dropout(v[0], v[1], v[2], v[3], 0.2, true, gen);
        },
        {randn(ys, 57), randn(xs, 50), randn({N, 24}, 51, 0.3), randn({N}, 52)}, Arith::f32, 24,
        std::max<int64_t>(3 * rows, N));
    CHECK(gc.offset() == gg.offset());
    // The one-node GPU path against add_dropout(residual, linear(...)) on the GPU: the same
    // output and gradients bit for bit, all-f32 and with bf16 activations (an f32 residual),
    // with and without a bias gradient (without: the mask pass, then the GEMMs).
    for (DType dt : {DType::f32, DType::bf16})
      for (bool bias_grad : {true, false}) {
        const Tensor r0 = to_gpu(randn(ys, 58)), x0 = to_gpu(randn(xs, 53)).to(dt),
                     w0 = to_gpu(randn({N, 24}, 54, 0.3)), b0 = to_gpu(randn({N}, 55)),
                     gout = to_gpu(randn(ys, 56));
        auto run = [&](bool fused) {
          Tensor r = r0.detach(), x = x0.detach(), w = w0.detach(), b = b0.detach();
          for (Tensor* t : {&r, &x, &w}) t->set_requires_grad(true);
          b.set_requires_grad(bias_grad);
          Generator gen(77);
          Tensor y = fused ? ops::linear_add_dropout(r, x, w, b, 0.25, true, gen)
                           : ops::add_dropout(r, ops::linear(x, w, b), 0.25, true, gen);
          REQUIRE(y.grad_fn());
          CHECK(std::string(y.grad_fn()->name()) ==
                (fused ? "LinearAddDropoutBackward" : "AddDropoutBackward"));
          y.backward(gout);
          std::vector<std::vector<float>> out;
          for (const Tensor& t : {y, r.grad(), x.grad(), w.grad()})
            out.push_back(t.to(DType::f32).to_vector<float>());
          CHECK(b.grad().defined() == bias_grad);
          if (bias_grad) out.push_back(b.grad().to(DType::f32).to_vector<float>());
          return out;
        };
        const auto fused = run(true), two = run(false);
        REQUIRE(fused.size() == two.size());
        const char* names[] = {"output", "residual gradient", "x gradient", "weight gradient",
                               "bias gradient"};
        for (size_t k = 0; k < fused.size(); ++k) {
          INFO(names[k], " rows=", rows, " N=", N, " ", dtype_name(dt), " bias grad ", bias_grad);
          CHECK(fused[k] == two[k]);
        }
      }
  }
  // A residual on another device is an error, not a launch on host memory.
  {
    Generator gen(1);
    const Tensor x = to_gpu(randn({4, 8}, 60)), w = to_gpu(randn({8, 8}, 61)),
                 b = to_gpu(randn({8}, 62));
    CHECK_THROWS_WITH_AS(ops::linear_add_dropout(randn({4, 8}, 63), x, w, b, 0.1, true, gen),
                         doctest::Contains("residual on cpu"), Error);
  }
#endif
}

TEST_CASE("CUDA fused add_dropout equals add(x, dropout(y)) on the CPU") {
  LVIT_SKIP_WITHOUT_GPU();
  // [5, 17, 33]: n % 8 != 0 (the element-wise path); [64, 384]: the 16-byte path.
  for (const Shape& s : {Shape{5, 17, 33}, Shape{64, 384}}) {
    const Tensor x = randn(s, 34), y = randn(s, 35, 2.0);
    Generator gc(555), gg(555);
    compare_op(
        "add_dropout " + shape_str(s),
        [&](auto& v) {
          Generator& gen = v[0].device().is_cuda() ? gg : gc;
          return ops::add_dropout(v[0], v[1], 0.25, true, gen);
        },
        {x, y}, Arith::f32, 2, 1);
    CHECK(gc.offset() == gg.offset());
    // Mixed precision: an f32 residual with a bf16 branch gives the values of the separate ops
    // (the dropped branch rounded to bf16, then added in f32) and a bf16 branch gradient.
    Generator g1(77), g2(77);
    const Tensor xg = to_gpu(x), yg = to_gpu(y.to(DType::bf16));
    Tensor yv = yg.detach();
    yv.set_requires_grad(true);
    const Tensor fused = ops::add_dropout(xg, yv, 0.25, true, g1);
    const Tensor separate = ops::add(xg, ops::dropout(yg, 0.25, true, g2));
    CHECK(fused.dtype() == DType::f32);
    const auto a = fused.to_vector<float>(), b = separate.to_vector<float>();
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    const Tensor g = randn(s, 36);
    fused.backward(to_gpu(g));
    REQUIRE(yv.grad().dtype() == DType::bf16);
    Generator g3(77);
    const Tensor want = ops::dropout(g, 0.25, true, g3);  // CPU f32, the same mask
    expect_close(want, yv.grad().to(DType::f32), Arith::bf16, 1, "add_dropout bf16 branch grad");
  }
}

TEST_CASE("CUDA cross-entropy: hard labels with smoothing, soft targets") {
  LVIT_SKIP_WITHOUT_GPU();
  const int64_t B = 37, C = 100;
  Tensor logits = randn({B, C}, 30, 3.0);
  std::vector<int64_t> y(B);
  for (int64_t i = 0; i < B; ++i) y[i] = (i * 37 + 11) % C;
  Tensor labels64 = Tensor::from_vector(y, {B});
  Tensor labels32 = labels64.to(DType::i32);
  for (double s : {0.0, 0.1}) {
    compare_op(
        fmt::format("cross_entropy i64 smoothing {}", s),
        [s](auto& v) { return ops::cross_entropy(v[0], v[1], s); }, {logits, labels64}, Arith::f32,
        B * C, C);
    compare_op(
        fmt::format("cross_entropy i32 smoothing {}", s),
        [s](auto& v) { return ops::cross_entropy(v[0], v[1], s); }, {logits, labels32}, Arith::f32,
        B * C, C);
  }
  Tensor t = ops::softmax(randn({B, C}, 31));
  compare_op("cross_entropy soft", [](auto& v) { return ops::cross_entropy_soft(v[0], v[1]); },
             {logits, t}, Arith::f32, B * C, C, {1});
}

TEST_CASE("CUDA top-1 count accumulates on the device as topk_correct counts on the host") {
  LVIT_SKIP_WITHOUT_GPU();
  for (const auto& [B, C] :
       std::vector<std::pair<int64_t, int64_t>>{{37, 100}, {1, 3}, {600, 33}}) {
    CAPTURE(B);
    CAPTURE(C);
    // Coarse values make ties common, so the lower-index rule is exercised.
    std::vector<double> z = randn({B, C}, 40 + B).to_vector<double>();
    for (double& v : z) v = std::round(v * 2);
    const Tensor logits = Tensor::from_vector(z, {B, C}).to(DType::f32);
    // Every other label is a row's first maximum, so some rows count and some do not.
    const std::vector<int64_t> top = ops::argmax_rows(logits);
    std::vector<int64_t> y(B);
    for (int64_t i = 0; i < B; ++i) y[i] = i % 2 == 0 ? top[i] : (i * 7 + 3) % C;
    const Tensor labels = Tensor::from_vector(y, {B});
    const int64_t want = ops::topk_correct(logits, labels, 1);
    REQUIRE(want >= (B + 1) / 2);
    for (DType dt : {DType::f32, DType::bf16}) {
      for (DType lt : {DType::i64, DType::i32}) {
        Tensor count = Tensor::full({}, 5, DType::i64, Device::cuda(0));
        const Tensor zl = to_gpu(logits.to(dt)), yl = to_gpu(labels.to(lt));
        ops::add_top1_correct_(zl, yl, count);
        ops::add_top1_correct_(zl, yl, count);
        CHECK(static_cast<int64_t>(count.item()) == 5 + 2 * want);
      }
    }
  }
}

TEST_CASE("CUDA AdamW, SGD and grad-norm clipping match the CPU") {
  LVIT_SKIP_WITHOUT_GPU();
  // Sizes cross the multi-tensor chunk (4096), table (64 tensors) and launch (1536 blocks)
  // boundaries.
  std::vector<Shape> shapes;
  for (int i = 0; i < 70; ++i)
    shapes.push_back({i % 23 == 0 ? 3200001 : (i % 3 == 0 ? 70001 : 1 + 97 * i)});
  auto make = [&](Device d, uint64_t seed) {
    std::vector<optim::ParamRef> refs;
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor p = randn(shapes[i], seed + i).to(d);
      p.set_requires_grad(true);
      refs.push_back({fmt::format("p{}", i), p, i % 2 == 0});
    }
    return refs;
  };
  for (bool adamw : {true, false}) {
    auto cpu_p = make(Device::cpu(), 100), gpu_p = make(Device::cuda(0), 100);
    std::unique_ptr<optim::Optimizer> oc, og;
    if (adamw) {
      oc = std::make_unique<optim::AdamW>(cpu_p, optim::AdamWOptions{});
      og = std::make_unique<optim::AdamW>(gpu_p, optim::AdamWOptions{});
    } else {
      optim::SGDOptions so;
      so.weight_decay = 0.01;
      so.nesterov = true;
      oc = std::make_unique<optim::SGD>(cpu_p, so);
      og = std::make_unique<optim::SGD>(gpu_p, so);
    }
    for (int step = 0; step < 3; ++step) {
      std::vector<Tensor> pc, pg;
      for (size_t i = 0; i < shapes.size(); ++i) {
        Tensor g = randn(shapes[i], 500 + 31 * step + i, 2.0);
        cpu_p[i].param.set_grad(g.clone());
        gpu_p[i].param.set_grad(to_gpu(g));
        pc.push_back(cpu_p[i].param);
        pg.push_back(gpu_p[i].param);
      }
      const double nc = optim::clip_grad_norm(pc, 10.0);
      const double ng = optim::clip_grad_norm_tensor(pg, 10.0).item();
      CHECK(ng == doctest::Approx(nc).epsilon(1e-9));
      for (size_t i = 0; i < shapes.size(); ++i)
        expect_close(cpu_p[i].param.grad(), gpu_p[i].param.grad(), Arith::f32, 1,
                     fmt::format("clipped gradient {}", i));
      oc->step(1e-2);
      og->step(1e-2);
      for (size_t i = 0; i < shapes.size(); ++i)
        expect_close(cpu_p[i].param, gpu_p[i].param, Arith::f32, step + 1,
                     fmt::format("{} parameter {}", adamw ? "AdamW" : "SGD", i), 64.0);
    }
  }
}

// clip_grad_norm_tensor with the optimizer: AdamW multiplies the gradients by the clip's
// coefficient as it reads them and the gradients stay unscaled; the parameters and moments
// are those of clip-then-step bit for bit, clipping (max norm 10) or not (1e9). SGD does not
// fold: its gradients are scaled in place, as without it.
TEST_CASE("CUDA AdamW with the gradient clip folded in equals clip then AdamW bit for bit") {
  LVIT_SKIP_WITHOUT_GPU();
  const std::vector<Shape> shapes = {{3, 70001}, {97}, {64, 65}, {5}};
  auto make = [&] {
    std::vector<optim::ParamRef> refs;
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor p = to_gpu(randn(shapes[i], 700 + i));
      p.set_requires_grad(true);
      refs.push_back({fmt::format("p{}", i), p, i % 2 == 0});
    }
    return refs;
  };
  auto params_of = [](const std::vector<optim::ParamRef>& refs) {
    std::vector<Tensor> v;
    for (const auto& r : refs) v.push_back(r.param);
    return v;
  };
  auto plain = make(), folded = make();
  optim::AdamW oa(plain, optim::AdamWOptions{}), ob(folded, optim::AdamWOptions{});
  REQUIRE(ob.folds_grad_scale());
  for (int step = 0; step < 4; ++step) {
    const double max_norm = step == 2 ? 1e9 : 10.0;
    std::vector<Tensor> grads;
    for (size_t i = 0; i < shapes.size(); ++i) {
      grads.push_back(to_gpu(randn(shapes[i], 800 + 17 * step + i, 2.0)));
      plain[i].param.set_grad(grads[i].clone());
      folded[i].param.set_grad(grads[i].clone());
    }
    const double na = optim::clip_grad_norm_tensor(params_of(plain), max_norm).item();
    const double nb = optim::clip_grad_norm_tensor(params_of(folded), max_norm, &ob).item();
    CHECK(na == nb);
    oa.step(1e-2);
    ob.step(1e-2);
    for (size_t i = 0; i < shapes.size(); ++i) {
      INFO("step ", step, " parameter ", i);
      CHECK(folded[i].param.grad().to_vector<float>() == grads[i].to_vector<float>());
      CHECK(folded[i].param.to_vector<float>() == plain[i].param.to_vector<float>());
    }
    const auto sa = oa.state(), sb = ob.state();
    for (size_t k = 0; k < sa.size(); ++k) {
      INFO("step ", step, " ", sa[k].first);
      CHECK(sb[k].second.to_vector<float>() == sa[k].second.to_vector<float>());
    }
  }
  // SGD scales in place whether or not it is passed.
  auto sp = make();
  optim::SGD sgd(sp, optim::SGDOptions{});
  CHECK_FALSE(sgd.folds_grad_scale());
  const Tensor g0 = to_gpu(randn(shapes[0], 900, 50.0));
  sp[0].param.set_grad(g0.clone());
  optim::clip_grad_norm_tensor({sp[0].param}, 1.0, &sgd);
  const std::vector<float> g1 = sp[0].param.grad().to_vector<float>();
  CHECK(g1 != g0.to_vector<float>());
}

// AdamW reads and writes 16-byte aligned tensors 4 elements at a time, and others one at a time
// (cuda/optim.cu): both forms give the same parameters and moments bit for bit. The misaligned
// parameters are views one element into a buffer; sizes leave 0-3 trailing elements and cross
// the 4096-element chunks.
TEST_CASE("CUDA AdamW: the 16-byte and the scalar form agree bit for bit") {
  LVIT_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> sizes = {4096, 4097, 8195, 70001, 3, 12};
  auto make = [&](bool misaligned) {
    std::vector<optim::ParamRef> refs;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const Tensor init = to_gpu(randn({sizes[i]}, 900 + i));
      Tensor p = init.clone();
      if (misaligned) {
        Tensor buffer = Tensor::zeros({sizes[i] + 1}, DType::f32, init.device());
        p = ops::slice(buffer, 0, 1, sizes[i] + 1).detach();
        p.copy_(init);
        REQUIRE(reinterpret_cast<uintptr_t>(p.raw_data()) % 16 != 0);
      }
      p.set_requires_grad(true);
      refs.push_back({fmt::format("p{}", i), p, i % 2 == 0});
    }
    return refs;
  };
  auto vec = make(false), scalar = make(true);
  optim::AdamW ov(vec, optim::AdamWOptions{}), os(scalar, optim::AdamWOptions{});
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      const Tensor g = to_gpu(randn({sizes[i]}, 950 + 13 * step + i, 2.0));
      vec[i].param.set_grad(g.clone());
      scalar[i].param.set_grad(g.clone());
    }
    ov.step(1e-2);
    os.step(1e-2);
    for (size_t i = 0; i < sizes.size(); ++i) {
      INFO("step ", step, " parameter ", i);
      CHECK(vec[i].param.to_vector<float>() == scalar[i].param.to_vector<float>());
    }
    const auto sv = ov.state(), ss = os.state();
    REQUIRE(sv.size() == ss.size());
    for (size_t k = 0; k < sv.size(); ++k) {
      INFO("step ", step, " ", sv[k].first);
      CHECK(sv[k].second.to_vector<float>() == ss[k].second.to_vector<float>());
    }
  }
}
