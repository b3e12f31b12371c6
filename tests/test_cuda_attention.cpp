// Fused softmax attention on CUDA (cuda/attention.cuh, ops/attention.cpp) against the CPU op:
// the forward output, the logsumexp the forward saves, and the gradient of qkv, for f32 and
// bf16, every head dim, partial tiles and large logits. Every test case skips itself (and
// passes) without a GPU.
//
// Tolerances (cuda_test_util.h: c u sqrt(K) max|want|):
//  - f32: u = 2^-24 and K = N d, the longest chain of rounded terms behind an element (a d-term
//    dot product inside an N-term softmax-weighted sum, both ways in the backward).
//  - bf16: the reference is the CPU f32 op on the bf16-rounded inputs (and upstream gradient),
//    so only the kernel's own bf16 roundings differ: the output (once per element) and the mma
//    operands P (forward) or P and dS (backward), each relative u = 2^-8 per term. A row's P
//    errors are weighted by P itself (sum_j P_ij = 1), so they stay a few u of the largest
//    term whatever N is: K = 1 in the forward; K = 4 in the backward, where P, dS, the bf16
//    output inside delta = rowsum(dO * O) and the stored gradient each add one rounding.
//  - large logits (|s| up to L): a logit carries an absolute error of about u L, which the
//    softmax turns into a relative error of the probabilities: K = N d (1 + L)^2.
// The bf16 tensor-core kernels come in two families with the same rounding points (small: one
// block per head for N <= 128 and d <= 64, what the op runs for the ViT shapes; tiled: any N),
// so both are held to the same bf16 tolerances; the launcher tests force each.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "ops/attention.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/attention.cuh"
#include "cuda/context.cuh"
#endif

using namespace lvit;
using cudatest::Arith;

#ifdef LVIT_WITH_CUDA

namespace {

struct Dims {
  int64_t B, N, H, d;
  int64_t D() const { return H * d; }
  Shape qkv() const { return {B, N, 3 * H * d}; }
  Shape out() const { return {B, N, H * d}; }
  std::string str() const {
    return "B=" + std::to_string(B) + " N=" + std::to_string(N) + " H=" + std::to_string(H) +
           " d=" + std::to_string(d);
  }
};

// Every N x every d of the brief, with B and H cycling through 1..3 and {1, 3, 6}.
std::vector<Dims> shape_grid() {
  std::vector<Dims> v;
  const int64_t heads[] = {1, 3, 6};
  int i = 0;
  for (int64_t N : {1, 5, 17, 65, 100, 257})
    for (int64_t d : {8, 16, 32, 64, 128}) {
      v.push_back({1 + i % 3, N, heads[(i + i / 3) % 3], d});
      ++i;
    }
  return v;
}

// A leaf of `dtype` on `dev` holding `host` (converted), requiring grad, never sharing storage
// with `host`.
Tensor leaf(const Tensor& host, DType dtype, Device dev) {
  Tensor t = host.to(dtype).to(dev);
  if (t.impl() == host.impl() || t.storage() == host.storage()) t = t.clone();
  t.set_requires_grad(true);
  return t;
}

struct Pass {
  Tensor out, gqkv;
};

// Forward and backward through the op (autograd) on `dev` in `dtype`.
Pass run_op(const Tensor& qkv_host, const Tensor& g_host, int64_t H, DType dtype, Device dev) {
  Tensor x = leaf(qkv_host, dtype, dev);
  Tensor out = ops::softmax_attention(x, H);
  out.backward(g_host.to(dtype).to(dev));
  return {out, x.grad()};
}

Tensor bf16_rounded(const Tensor& t) { return t.to(DType::bf16).to(DType::f32); }

// Largest |q_i . k_j| / sqrt(d) over all heads of the f32 host qkv, and the logsumexp of each
// row [B, H, N], in double.
struct Logits {
  double max_abs = 0;
  Tensor lse;
};
Logits host_logits(const Tensor& qkv, const Dims& s) {
  const std::vector<double> x = qkv.to_vector<double>();
  const int64_t D = s.D(), ld = 3 * D;
  std::vector<double> lse(s.B * s.H * s.N), row(s.N);
  Logits r;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.N; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < s.N; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < s.d; ++c)
            dot += x[(b * s.N + i) * ld + h * s.d + c] * x[(b * s.N + j) * ld + D + h * s.d + c];
          row[j] = dot / std::sqrt(static_cast<double>(s.d));
          mx = std::max(mx, row[j]);
          r.max_abs = std::max(r.max_abs, std::abs(row[j]));
        }
        double sum = 0;
        for (int64_t j = 0; j < s.N; ++j) sum += std::exp(row[j] - mx);
        lse[(b * s.H + h) * s.N + i] = mx + std::log(sum);
      }
  r.lse = Tensor::from_vector(lse, {s.B, s.H, s.N});
  return r;
}

// K for the forward and the backward of `dtype` (see the file comment).
int64_t k_fwd(const Dims& s, DType t) { return t == DType::f32 ? s.N * s.d : 1; }
int64_t k_bwd(const Dims& s, DType t) { return t == DType::f32 ? s.N * s.d : 4; }
Arith arith(DType t) { return t == DType::f32 ? Arith::f32 : Arith::bf16; }

// The op on the GPU in `dtype` against the CPU f32 op on the same (rounded) values.
void check_op(const Dims& s, DType dtype, uint64_t seed, double qk_scale = 1.0) {
  Tensor qkv = cudatest::randn(s.qkv(), seed);
  if (qk_scale != 1.0) {
    // Scale q and k (not v): logits grow by qk_scale^2.
    std::vector<double> x = qkv.to_vector<double>();
    for (int64_t r = 0; r < s.B * s.N; ++r)
      for (int64_t c = 0; c < 2 * s.D(); ++c) x[r * 3 * s.D() + c] *= qk_scale;
    qkv = Tensor::from_vector(x, s.qkv()).to(DType::f32);
  }
  Tensor g = cudatest::randn(s.out(), seed + 1);
  if (dtype == DType::bf16) {
    qkv = bf16_rounded(qkv);
    g = bf16_rounded(g);
  }
  const Pass want = run_op(qkv, g, s.H, DType::f32, Device::cpu());
  const Pass got = run_op(qkv, g, s.H, dtype, Device::cuda(0));
  CHECK(got.out.device().is_cuda());
  CHECK(got.out.dtype() == dtype);
  CHECK(got.gqkv.dtype() == dtype);
  int64_t kf = k_fwd(s, dtype), kb = k_bwd(s, dtype);
  if (qk_scale != 1.0) {
    const double L = host_logits(qkv, s).max_abs;
    MESSAGE("largest |logit| " << L << " for " << s.str());
    const auto grow = static_cast<int64_t>(std::ceil((1 + L) * (1 + L)));
    if (dtype == DType::f32) {
      kf *= grow;
      kb *= grow;
    }
  }
  const std::string tag = std::string(dtype_name(dtype)) + " " + s.str();
  cudatest::expect_close(want.out, got.out, arith(dtype), kf, "forward " + tag);
  cudatest::expect_close(want.gqkv, got.gqkv, arith(dtype), kb, "qkv gradient " + tag);
}

struct Raw {
  Tensor out, lse, gqkv;
};

// The launchers called directly with a forced kernel family: out, lse and gqkv on the GPU.
Raw run_launchers(const Tensor& qkv_host, const Tensor& g_host, const Dims& s, DType dtype,
                  cuda::AttentionKernel kernel) {
  const Device dev = Device::cuda(0);
  Tensor qkv = qkv_host.to(dtype).to(dev), g = g_host.to(dtype).to(dev);
  Raw r{Tensor::empty(s.out(), dtype, dev), Tensor::empty({s.B, s.H, s.N}, DType::f32, dev),
        Tensor::empty(s.qkv(), dtype, dev)};
  Tensor delta = Tensor::empty({s.B, s.H, s.N}, DType::f32, dev);
  const cuda::AttentionDims dims{s.B, s.N, s.H, s.d};
  const cudaStream_t st = cuda::stream(0);
  cuda::attention_fwd(dtype, qkv.raw_data(), r.out.raw_data(), r.lse.data<float>(), dims, st,
                      kernel);
  cuda::attention_bwd(dtype, g.raw_data(), qkv.raw_data(), r.out.raw_data(), r.lse.data<float>(),
                      delta.data<float>(), r.gqkv.raw_data(), dims, st, kernel);
  return r;
}

}  // namespace

TEST_CASE("CUDA attention f32: forward and qkv gradient match the CPU op") {
  LVIT_SKIP_WITHOUT_GPU();
  uint64_t seed = 9100;
  for (const Dims& s : shape_grid()) {
    check_op(s, DType::f32, seed);
    seed += 2;
  }
}

TEST_CASE("CUDA attention bf16: forward and qkv gradient match the CPU op on rounded inputs") {
  LVIT_SKIP_WITHOUT_GPU();
  uint64_t seed = 9300;
  for (const Dims& s : shape_grid()) {
    check_op(s, DType::bf16, seed);
    seed += 2;
  }
}

TEST_CASE("CUDA attention: the ViT shapes (d = 64, N = 65 and 257; micro d = 32)") {
  LVIT_SKIP_WITHOUT_GPU();
  const Dims shapes[] = {{4, 65, 6, 64}, {2, 257, 6, 64}, {4, 65, 4, 32}};
  uint64_t seed = 9500;
  for (const Dims& s : shapes)
    for (DType t : {DType::f32, DType::bf16}) {
      check_op(s, t, seed);
      seed += 2;
    }
}

TEST_CASE("CUDA attention: large logits (online softmax rescaling across key tiles)") {
  LVIT_SKIP_WITHOUT_GPU();
  // q and k scaled by 6: logits of standard deviation 36, far beyond exp's f32 range unless
  // the running max is subtracted, and maxima that jump between key tiles.
  const Dims shapes[] = {{2, 100, 2, 64}, {1, 257, 3, 32}, {2, 65, 1, 128}, {1, 17, 2, 8}};
  uint64_t seed = 9700;
  for (const Dims& s : shapes)
    for (DType t : {DType::f32, DType::bf16}) {
      check_op(s, t, seed, 6.0);
      seed += 2;
    }
}

TEST_CASE("CUDA attention launchers: each kernel family, with the saved logsumexp") {
  LVIT_SKIP_WITHOUT_GPU();
  using cuda::AttentionKernel;
  const Dims shapes[] = {{2, 5, 3, 8},    {1, 17, 1, 16},  {3, 65, 2, 32},
                         {2, 100, 6, 64}, {1, 257, 3, 64}, {2, 33, 2, 128}};
  uint64_t seed = 9900;
  for (const Dims& s : shapes) {
    const Tensor qkv = bf16_rounded(cudatest::randn(s.qkv(), seed));
    const Tensor g = bf16_rounded(cudatest::randn(s.out(), seed + 1));
    seed += 2;
    const Pass want = run_op(qkv, g, s.H, DType::f32, Device::cpu());
    const Tensor lse_want = host_logits(qkv, s).lse;
    struct Run {
      DType dtype;
      AttentionKernel kernel;
      const char* name;
    };
    std::vector<Run> runs{{DType::f32, AttentionKernel::simt, "f32 simt"},
                          {DType::bf16, AttentionKernel::simt, "bf16 simt"}};
    if (s.d >= 16) {
      runs.push_back({DType::bf16, AttentionKernel::mma, "bf16 mma"});
      runs.push_back({DType::bf16, AttentionKernel::mma_tiled, "bf16 mma_tiled"});
    }
    if (s.d >= 16 && s.d <= 64 && s.N <= 128)
      runs.push_back({DType::bf16, AttentionKernel::mma_small, "bf16 mma_small"});
    for (const Run& run : runs) {
      const std::string tag = std::string(run.name) + " " + s.str();
      const Raw got = run_launchers(qkv, g, s, run.dtype, run.kernel);
      cudatest::expect_close(want.out, got.out, arith(run.dtype), k_fwd(s, run.dtype),
                             "forward " + tag);
      // The logits are exact products of the (rounded) inputs summed in fp32 for every
      // family, so lse has f32 accuracy even for bf16 tensors.
      cudatest::expect_close(lse_want, got.lse, Arith::f32, s.N * s.d, "lse " + tag);
      cudatest::expect_close(want.gqkv, got.gqkv, arith(run.dtype), k_bwd(s, run.dtype),
                             "qkv gradient " + tag);
    }
  }
}

TEST_CASE("CUDA attention small kernels (one block per head): every block count, partial blocks") {
  LVIT_SKIP_WITHOUT_GPU();
  // The one-block-per-head kernels are compiled per count of 16-token blocks (1..8) and mask
  // the padded rows of the last block: N on both sides of every multiple of 16 up to 128, for
  // each head dim they take, against the CPU op; the tiled kernels on the same inputs as well,
  // and N = 129 through the op (past the small kernels' range, dispatched to the tiled ones).
  using cuda::AttentionKernel;
  uint64_t seed = 10500;
  int i = 0;
  for (int64_t N :
       {1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 80, 81, 96, 97, 112, 113, 127, 128})
    for (int64_t d : {16, 32, 64}) {
      const Dims s{1 + i % 2, N, 1 + i % 3, d};
      ++i;
      const Tensor qkv = bf16_rounded(cudatest::randn(s.qkv(), seed));
      const Tensor g = bf16_rounded(cudatest::randn(s.out(), seed + 1));
      seed += 2;
      const Pass want = run_op(qkv, g, s.H, DType::f32, Device::cpu());
      const Tensor lse_want = host_logits(qkv, s).lse;
      for (AttentionKernel k : {AttentionKernel::mma_small, AttentionKernel::mma_tiled}) {
        const std::string tag =
            std::string(k == AttentionKernel::mma_small ? "mma_small " : "mma_tiled ") + s.str();
        const Raw got = run_launchers(qkv, g, s, DType::bf16, k);
        cudatest::expect_close(want.out, got.out, Arith::bf16, k_fwd(s, DType::bf16),
                               "forward " + tag);
        cudatest::expect_close(lse_want, got.lse, Arith::f32, s.N * s.d, "lse " + tag);
        cudatest::expect_close(want.gqkv, got.gqkv, Arith::bf16, k_bwd(s, DType::bf16),
                               "qkv gradient " + tag);
      }
    }
  check_op({2, 129, 2, 64}, DType::bf16, seed);
}

TEST_CASE("CUDA attention: uniform attention (q = 0) is exact up to the output rounding") {
  LVIT_SKIP_WITHOUT_GPU();
  // With q = 0 every probability is exp(0) = 1 before normalisation, so with small-integer v
  // the kernels sum exactly and o = mean_j v_j is rounded once: any key counted wrongly at a
  // tile edge (an error of o/N) shows against a tolerance of 2 u max|o| in bf16 for N up to
  // 100. The v gradient sum_i P_ij dO_i (P = 1/N) is checked as well.
  const Dims shapes[] = {{2, 17, 2, 32}, {2, 65, 3, 64}, {1, 100, 2, 16}, {1, 100, 1, 128}};
  uint64_t seed = 10100;
  for (const Dims& s : shapes) {
    std::vector<double> x = cudatest::randn(s.qkv(), seed).to_vector<double>();
    std::vector<double> gv = cudatest::randn(s.out(), seed + 1).to_vector<double>();
    seed += 2;
    const int64_t D = s.D();
    for (int64_t r = 0; r < s.B * s.N; ++r)
      for (int64_t c = 0; c < 3 * D; ++c) {
        double& e = x[r * 3 * D + c];
        e = c < D ? 0.0 : std::round(2 * e);  // q = 0; k, v small integers
      }
    for (double& e : gv) e = std::round(2 * e);
    const Tensor qkv = Tensor::from_vector(x, s.qkv()).to(DType::f32);
    const Tensor g = Tensor::from_vector(gv, s.out()).to(DType::f32);
    const Pass want = run_op(qkv, g, s.H, DType::f32, Device::cpu());
    const Pass got = run_op(qkv, g, s.H, DType::bf16, Device::cuda(0));
    const std::string tag = "bf16 " + s.str();
    cudatest::expect_close(want.out, got.out, Arith::bf16, 1, "forward " + tag, 2.0);
    // The v third of the gradient; P = 1/N rounded to bf16 adds one more rounding.
    auto v_part = [&](const Tensor& t) {
      return cudatest::to_cpu(t).as_strided(s.out(), {s.N * 3 * D, 3 * D, 1}, 2 * D);
    };
    cudatest::expect_close(v_part(want.gqkv), v_part(got.gqkv), Arith::bf16, 1, "dv " + tag, 4.0);
  }
}

TEST_CASE("CUDA attention: strided, offset and misaligned inputs") {
  LVIT_SKIP_WITHOUT_GPU();
  const Dims s{2, 65, 3, 32};
  const Tensor qkv = bf16_rounded(cudatest::randn(s.qkv(), 10300));
  const Tensor want =
      run_op(qkv, cudatest::randn(s.out(), 10301), s.H, DType::f32, Device::cpu()).out;
  for (DType t : {DType::f32, DType::bf16}) {
    // A contiguous view starting one element into its storage: 4 or 2 bytes off the 16-byte
    // alignment the bf16 kernels need (the op then copies it).
    const std::vector<double> flat = qkv.to_vector<double>();
    std::vector<double> shifted(flat.size() + 1, 7.0);
    std::copy(flat.begin(), flat.end(), shifted.begin() + 1);
    const Tensor big = cudatest::to_gpu(
        Tensor::from_vector(shifted, {static_cast<int64_t>(shifted.size())}).to(t));
    const Tensor view = big.as_strided(s.qkv(), contiguous_strides(s.qkv()), 1);
    REQUIRE(view.is_contiguous());
    cudatest::expect_close(want, ops::softmax_attention(view, s.H), arith(t), k_fwd(s, t),
                           std::string("offset view ") + std::string(dtype_name(t)));
    // Rows padded by 8 channels, sliced back to 3D: a non-contiguous view.
    const int64_t C = 3 * s.D(), P = C + 8;
    std::vector<double> padded(s.B * s.N * P, 7.0);
    for (int64_t r = 0; r < s.B * s.N; ++r)
      std::copy(flat.begin() + r * C, flat.begin() + (r + 1) * C, padded.begin() + r * P);
    const Tensor wide = cudatest::to_gpu(Tensor::from_vector(padded, {s.B, s.N, P}).to(t));
    const Tensor sliced = wide.as_strided(s.qkv(), {s.N * P, P, 1}, 0);
    REQUIRE(!sliced.is_contiguous());
    cudatest::expect_close(want, ops::softmax_attention(sliced, s.H), arith(t), k_fwd(s, t),
                           std::string("strided view ") + std::string(dtype_name(t)));
  }
}

TEST_CASE("CUDA attention: unsupported dtypes and head dims throw lvit::Error") {
  LVIT_SKIP_WITHOUT_GPU();
  const Device dev = Device::cuda(0);
  // d = 24 (D = 48, 2 heads) has no kernel.
  CHECK_THROWS_AS(ops::softmax_attention(Tensor::zeros({1, 4, 144}, DType::f32, dev), 2), Error);
  try {
    (void)ops::softmax_attention(Tensor::zeros({1, 4, 144}, DType::f32, dev), 2);
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("head dim 24") != std::string::npos);
  }
  CHECK_THROWS_AS(ops::softmax_attention(Tensor::zeros({1, 4, 48}, DType::f64, dev), 2), Error);
  // The tensor-core family needs d >= 16 and bf16.
  CHECK_THROWS_AS(cuda::attention_fwd(DType::bf16, nullptr, nullptr, nullptr, {1, 4, 2, 8},
                                      cuda::stream(0), cuda::AttentionKernel::mma),
                  Error);
  CHECK_THROWS_AS(cuda::attention_fwd(DType::f32, nullptr, nullptr, nullptr, {1, 4, 2, 64},
                                      cuda::stream(0), cuda::AttentionKernel::mma),
                  Error);
  // The one-block-per-head family needs N <= 128 and d <= 64 (and the tiled family d >= 16).
  CHECK_THROWS_AS(cuda::attention_fwd(DType::bf16, nullptr, nullptr, nullptr, {1, 129, 2, 64},
                                      cuda::stream(0), cuda::AttentionKernel::mma_small),
                  Error);
  CHECK_THROWS_AS(
      cuda::attention_bwd(DType::bf16, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                          {1, 65, 2, 128}, cuda::stream(0), cuda::AttentionKernel::mma_small),
      Error);
  CHECK_THROWS_AS(cuda::attention_fwd(DType::bf16, nullptr, nullptr, nullptr, {1, 65, 2, 8},
                                      cuda::stream(0), cuda::AttentionKernel::mma_tiled),
                  Error);
}

#else  // LVIT_WITH_CUDA

TEST_CASE("CUDA attention: built without CUDA") { LVIT_SKIP_WITHOUT_GPU(); }

#endif
