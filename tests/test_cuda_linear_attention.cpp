// CUDA Hydra and Ripple attention against the CPU ops: the forward output and, through autograd
// with the same random upstream gradient, d loss / d qkv and (Ripple) d loss / d logits, on random
// f32 inputs. Tolerances follow tests/cuda_test_util.h: f32 arithmetic and K = the longest
// reduction behind an element. Shapes cover batch 1 and 3, every code path of the kernels (Ripple:
// 1..7 stages, grids 1x1 to 32x32, head widths that are and are not multiples of the kernels'
// 16-channel padding, the extra passes for blocks larger than a tile; the bf16 tensor-core kernels,
// dense and linear, against the CPU on bf16-rounded inputs, without the logits' gradient and on an
// empty batch; Hydra: 1, 4 and D branches, branch widths below, at and above a warp, token counts
// that are not multiples of the 32-row chunks, the eps clamp, the fast kernels' lane layouts and
// the generic kernels (by width, and for the presets' shapes through misaligned views) in f32 and
// bf16, bit-identical reruns) and the errors for what the kernels do not support. Every case skips
// itself, and passes, without a GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
#include "cuda_test_util.h"
#include "ops/hydra.h"
#include "ops/ripple.h"
#include "tests/test_util.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/hydra.cuh"
#include "cuda/ripple.cuh"
#include "cuda/ripple_plan.cuh"
#endif

using namespace lvit;
using cudatest::Arith;
using cudatest::expect_close;
using lvit::test::error_message;

namespace {

struct Run {
  Tensor out, gqkv, glogits;
};

Tensor place(const Tensor& host, bool gpu) { return gpu ? cudatest::to_gpu(host) : host.clone(); }

// ---- Hydra ----

Run run_hydra(const Tensor& qkv_host, int64_t branches, const Tensor& gout_host, bool gpu) {
  Tensor qkv = place(qkv_host, gpu);
  qkv.set_requires_grad(true);
  Tensor y = ops::hydra_attention(qkv, branches);
  y.backward(place(gout_host, gpu));
  return {y, qkv.grad(), {}};
}

struct HydraCase {
  int64_t B, N, D, branches;
};

// out_t = phi(q_t) * sum_s phi(k_s) * v_s: a sum over N tokens after norms over C channels, and
// the gradients chain one more of each; K = N + C bounds both.
void check_hydra(const HydraCase& c, const Tensor& qkv, uint64_t seed) {
  CAPTURE(c.B);
  CAPTURE(c.N);
  CAPTURE(c.D);
  CAPTURE(c.branches);
  const Tensor gout = cudatest::randn({c.B, c.N, c.D}, seed + 1);
  const Run cpu = run_hydra(qkv, c.branches, gout, false);
  const Run gpu = run_hydra(qkv, c.branches, gout, true);
  const int64_t K = c.N + c.D / c.branches;
  expect_close(cpu.out, gpu.out, Arith::f32, K, "hydra out");
  expect_close(cpu.gqkv, gpu.gqkv, Arith::f32, K, "hydra gqkv");
}

// The fast and the generic CUDA kernels: the launchers take the fast ones for the widths
// cuda::hydra_fast_shape accepts when qkv, out, gout and gqkv are 16-byte aligned.
bool fast_shape(const HydraCase& c) {
#ifdef LVIT_WITH_CUDA
  return cuda::hydra_fast_shape(c.D, c.branches);
#else
  (void)c;
  return false;
#endif
}

// `host` on the GPU in `dtype`: a fresh tensor (16-byte aligned), or a view one element into a
// larger buffer (misaligned: the generic kernels run whatever the shape).
Tensor on_gpu(const Tensor& host, DType dtype, bool misaligned) {
  const Tensor h = host.to(dtype);
  if (!misaligned) return cudatest::to_gpu(h);
  const Tensor buf = Tensor::empty({h.numel() + 1}, dtype, Device::cuda(0));
  Tensor v = buf.as_strided(h.shape(), contiguous_strides(h.shape()), 1);
  v.copy_(h);
  return v;
}

bool is_aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0; }

// Forward and backward on GPU tensors as given (their dtype and alignment).
Run run_hydra_gpu(Tensor qkv, int64_t branches, const Tensor& gout) {
  qkv.set_requires_grad(true);
  Tensor y = ops::hydra_attention(qkv, branches);
  y.backward(gout);
  return {y, qkv.grad(), {}};
}

// CUDA with `dtype` storage against the CPU op in f32 on the same dtype-representable qkv and
// upstream gradient: f32 noise over K = N + C (as check_hydra), or for bf16 the final rounding.
void check_hydra_storage(const HydraCase& c, DType dtype, bool misaligned, uint64_t seed) {
  CAPTURE(c.B);
  CAPTURE(c.N);
  CAPTURE(c.D);
  CAPTURE(c.branches);
  CAPTURE(dtype_name(dtype));
  CAPTURE(misaligned);
  const auto rounded = [&](const Tensor& t) { return t.to(dtype).to(DType::f32); };
  const Tensor qkv = rounded(cudatest::randn({c.B, c.N, 3 * c.D}, seed));
  const Tensor gout = rounded(cudatest::randn({c.B, c.N, c.D}, seed + 1));
  const Run cpu = run_hydra(qkv, c.branches, gout, false);
  const Tensor x = on_gpu(qkv, dtype, misaligned), g = on_gpu(gout, dtype, misaligned);
  CHECK(is_aligned16(x) == !misaligned);
  const Run gpu = run_hydra_gpu(x, c.branches, g);
  REQUIRE(gpu.out.dtype() == dtype);
  REQUIRE(gpu.gqkv.dtype() == dtype);
  const bool bf16 = dtype == DType::bf16;
  const Arith arith = bf16 ? Arith::bf16 : Arith::f32;
  const int64_t K = bf16 ? 1 : c.N + c.D / c.branches;
  expect_close(cpu.out, gpu.out.to(DType::f32), arith, K, "hydra out");
  expect_close(cpu.gqkv, gpu.gqkv.to(DType::f32), arith, K, "hydra gqkv");
}

// ---- Ripple ----

// Random logits around the initialisation, so that the stage weights differ and the telescoped
// coefficients alpha_s - alpha_{s+1} take both signs (undefined for one stage).
Tensor rand_logits(int64_t H, int64_t S, uint64_t seed) {
  if (S == 1) return Tensor();
  std::vector<double> v = ops::ripple_init_logits(H, S, DType::f64).to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i) v[i] += 0.75 * philox_normal(seed, 7, i);
  return Tensor::from_vector(v, {H, S - 1}).to(DType::f32);
}

// The op and its backward with qkv and the upstream gradient in `dtype` (logits stay f32), on
// the GPU or the CPU, with kernel choice `impl`.
Run run_ripple(const Tensor& qkv_host, const Tensor& logits_host, int64_t H, int64_t S, int64_t g,
               const Tensor& gout_host, bool gpu, bool logits_grad, DType dtype = DType::f32,
               ops::RippleImpl impl = ops::RippleImpl::automatic) {
  Tensor qkv = place(qkv_host.to(dtype), gpu);
  qkv.set_requires_grad(true);
  Tensor logits;
  if (logits_host.defined()) {
    logits = place(logits_host, gpu);
    logits.set_requires_grad(logits_grad);
  }
  Tensor y = ops::ripple_attention(qkv, logits, H, S, g, g, impl);
  y.backward(place(gout_host.to(dtype), gpu));
  Run r{y, qkv.grad(), {}};
  if (logits.defined() && logits_grad) r.glogits = logits.grad();
  return r;
}

struct RippleCase {
  int64_t B, H, d, S, g;
};

void check_ripple(const RippleCase& c, uint64_t seed, bool logits_grad = true) {
  CAPTURE(c.B);
  CAPTURE(c.H);
  CAPTURE(c.d);
  CAPTURE(c.S);
  CAPTURE(c.g);
  const int64_t N = 1 + c.g * c.g, D = c.H * c.d;
  const Tensor qkv = cudatest::randn({c.B, N, 3 * D}, seed);
  const Tensor logits = rand_logits(c.H, c.S, seed + 1);
  const Tensor gout = cudatest::randn({c.B, N, D}, seed + 2);
  const Run cpu = run_ripple(qkv, logits, c.H, c.S, c.g, gout, false, logits_grad);
  const Run gpu = run_ripple(qkv, logits, c.H, c.S, c.g, gout, true, logits_grad);
  // An output element sums over N keys of d-channel products; so do the qkv gradients (over
  // queries); the logits' gradient sums A_ij G_ij over the batch's B N^2 pairs of d-sums.
  expect_close(cpu.out, gpu.out, Arith::f32, N * c.d, "ripple out");
  expect_close(cpu.gqkv, gpu.gqkv, Arith::f32, N * c.d, "ripple gqkv");
  if (c.S > 1 && logits_grad) {
    expect_close(cpu.glogits, gpu.glogits, Arith::f32, c.B * N * N * c.d, "ripple glogits");
  } else {
    CHECK_FALSE(gpu.glogits.defined());
  }
}

Tensor bf16_rounded(const Tensor& t) { return t.to(DType::bf16).to(DType::f32); }
Tensor as_f32(const Tensor& t) { return t.to(DType::f32); }

// The dense tensor-core kernels (bf16; cuda/ripple_small.cu) against the CPU dense reference in
// f32 on the same bf16-rounded qkv and upstream gradient, and against the f32 linear CUDA
// kernels on the same inputs. Tolerances (cuda_test_util.h, u =
// 2^-8): the kernels round phi(q), phi(k), P (or P / den and dS) to bf16 as mma operands and
// the results once. As for softmax attention (tests/test_cuda_attention.cpp), P and the
// denominator weight every key's error by its share of the row, so the output stays a few u
// of its largest element whatever N is: K = 4 forward, K = 16 for the qkv gradient (a rounded
// dS inside dq and dk, a rounded P / den inside dv, the stored gradient). The logits' gradient
// sums s_ij dP_ij over B N^2 pairs of both signs that cancel to a small remainder; the
// rounded phi leaves an error of u per pair that does not cancel: K = N. (A numpy emulation of
// the kernels' rounding points on these shapes put the worst error at 0.6, 0.3 and 1.0 of
// these tolerances.)
void check_ripple_dense(const RippleCase& c, uint64_t seed) {
  CAPTURE(c.B);
  CAPTURE(c.H);
  CAPTURE(c.d);
  CAPTURE(c.S);
  CAPTURE(c.g);
  const int64_t N = 1 + c.g * c.g, D = c.H * c.d;
  const Tensor qkv = bf16_rounded(cudatest::randn({c.B, N, 3 * D}, seed));
  const Tensor logits = rand_logits(c.H, c.S, seed + 1);
  const Tensor gout = bf16_rounded(cudatest::randn({c.B, N, D}, seed + 2));
  const Run cpu =
      run_ripple(qkv, logits, c.H, c.S, c.g, gout, false, true, DType::f32, ops::RippleImpl::dense);
  const Run gpu =
      run_ripple(qkv, logits, c.H, c.S, c.g, gout, true, true, DType::bf16, ops::RippleImpl::dense);
  const Run lin =
      run_ripple(qkv, logits, c.H, c.S, c.g, gout, true, true, DType::f32, ops::RippleImpl::linear);
  REQUIRE(gpu.out.dtype() == DType::bf16);
  REQUIRE(gpu.gqkv.dtype() == DType::bf16);
  for (const Run* want : {&cpu, &lin}) {
    const std::string tag = want == &cpu ? " vs CPU dense" : " vs CUDA linear";
    expect_close(as_f32(want->out), as_f32(gpu.out), Arith::bf16, 4, "dense ripple out" + tag);
    expect_close(as_f32(want->gqkv), as_f32(gpu.gqkv), Arith::bf16, 16, "dense ripple gqkv" + tag);
    if (c.S > 1)
      expect_close(want->glogits, gpu.glogits, Arith::bf16, N, "dense ripple glogits" + tag);
  }
  if (c.S == 1) CHECK_FALSE(gpu.glogits.defined());
}

// The linear-form tensor-core kernels (bf16; cuda/ripple_linear_mma.cu) against the CPU linear
// form in f32 on the same bf16-rounded inputs. The rounding points are those of the dense
// kernels (phi, U = g / den', the local W s and dS as mma operands, the results) plus the d x d
// sums KV, z and GQ, rounded to bf16 once each; a rounded sum's error is relative to the sum
// and reaches an output element weighted like one more term, so the dense kernels' tolerances
// hold: K = 4 forward, 16 for the qkv gradient, N for the logits' gradient.
void check_ripple_linear_mma(const RippleCase& c, uint64_t seed) {
  CAPTURE(c.B);
  CAPTURE(c.H);
  CAPTURE(c.S);
  CAPTURE(c.g);
  const int64_t N = 1 + c.g * c.g, D = c.H * c.d;
#ifdef LVIT_WITH_CUDA
  REQUIRE(cuda::ripple_linear_mma_supported(N, c.d, c.S));
#endif
  const Tensor qkv = bf16_rounded(cudatest::randn({c.B, N, 3 * D}, seed));
  const Tensor logits = rand_logits(c.H, c.S, seed + 1);
  const Tensor gout = bf16_rounded(cudatest::randn({c.B, N, D}, seed + 2));
  const Run cpu = run_ripple(qkv, logits, c.H, c.S, c.g, gout, false, true, DType::f32,
                             ops::RippleImpl::linear);
  const Run gpu = run_ripple(qkv, logits, c.H, c.S, c.g, gout, true, true, DType::bf16,
                             ops::RippleImpl::linear);
  REQUIRE(gpu.out.dtype() == DType::bf16);
  REQUIRE(gpu.gqkv.dtype() == DType::bf16);
  expect_close(as_f32(cpu.out), as_f32(gpu.out), Arith::bf16, 4, "linear mma ripple out");
  expect_close(as_f32(cpu.gqkv), as_f32(gpu.gqkv), Arith::bf16, 16, "linear mma ripple gqkv");
  if (c.S > 1)
    expect_close(cpu.glogits, gpu.glogits, Arith::bf16, N, "linear mma ripple glogits");
  else
    CHECK_FALSE(gpu.glogits.defined());
}

}  // namespace

TEST_CASE("cuda ripple linear (bf16 tensor cores): forward and every gradient match the CPU") {
  LVIT_SKIP_WITHOUT_GPU();
  // Every grid the kernels take (4x4: one unit, a partial tile; 8x8: one full tile; 16x16: the
  // ripple-tiny presets, 4 tiles; 32x32: 16 tiles), 1 to 4 stages (S = 1: no local term, no
  // logits; S = 4: levels 0-2 all local), both head widths (64: the presets; 32: the micro
  // models at 64x64, where two of the four warps own the d x d sums), batch 1 to 3, 1 to 6 heads.
  const RippleCase cases[] = {
      {2, 3, 64, 3, 4},  {1, 2, 64, 1, 4},  {3, 1, 64, 4, 8},  {2, 2, 64, 2, 8},  {2, 6, 64, 3, 16},
      {1, 2, 64, 1, 16}, {3, 1, 64, 4, 16}, {1, 2, 64, 2, 16}, {1, 1, 64, 3, 32}, {2, 4, 32, 3, 16},
      {3, 2, 32, 1, 4},  {1, 3, 32, 4, 8},  {2, 1, 32, 2, 32}};
  uint64_t seed = 5000;
  for (const RippleCase& c : cases) {
    check_ripple_linear_mma(c, seed);
    seed += 10;
  }
}

TEST_CASE("cuda hydra: forward and backward match the CPU op") {
  LVIT_SKIP_WITHOUT_GPU();
  const std::vector<HydraCase> cases = {
      {1, 5, 8, 1},       // tiny, one branch
      {3, 17, 8, 4},      // C = 2: lane per branch
      {2, 65, 384, 4},    // hydra-cifar: C = 96, warp per branch
      {2, 257, 384, 1},   // hydra-tiny with one branch: C = 384; 9 chunks, the last short
      {1, 33, 384, 384},  // branches = D: C = 1 (phi = sign)
      {3, 65, 128, 4},    // C = 32: the padded rows' bank spread
      {2, 40, 96, 2},     // C = 48: warp per branch, not a multiple of 32
      {1, 70, 60, 5},     // C = 12, N not a multiple of 32 or of the 8 warps
      {2, 1, 16, 4},      // a single token
      {1, 100, 1200, 1},  // D = 1200: more than 48 KiB of shared memory (opt-in)
  };
  uint64_t seed = 100;
  for (const HydraCase& c : cases) {
    Tensor qkv = cudatest::randn({c.B, c.N, 3 * c.D}, seed);
    if (c.D == c.branches) {
      // One channel per branch: phi(x) = x / |x| = +-1 up to rounding, and the exact gradient
      // through it is 0; what either side computes is rounding noise times g / |x|. Keeping
      // |x| >= 0.5 bounds that noise by the tolerance's own scale.
      std::vector<double> v = qkv.to_vector<double>();
      for (double& x : v) x = std::copysign(0.5 + std::abs(x), x);
      qkv = Tensor::from_vector(v, qkv.shape()).to(DType::f32);
    }
    check_hydra(c, qkv, seed);
    seed += 10;
  }
}

TEST_CASE("cuda hydra: the eps clamp of all-zero q and k branches") {
  LVIT_SKIP_WITHOUT_GPU();
  // C = 4: the generic kernels; C = 16: the fast ones
  for (const HydraCase& c : std::vector<HydraCase>{{2, 9, 16, 4}, {2, 9, 64, 4}}) {
    CHECK(fast_shape(c) == (c.D == 64));
    const int64_t C = c.D / c.branches;
    std::vector<double> v = cudatest::randn({c.B, c.N, 3 * c.D}, 7).to_vector<double>();
    // image 0, token 3: q and k of branch 1 all zero; image 1, token 0: all of q
    for (int64_t ch = C; ch < 2 * C; ++ch) {
      v[(0 * c.N + 3) * 3 * c.D + ch] = 0;
      v[(0 * c.N + 3) * 3 * c.D + c.D + ch] = 0;
    }
    for (int64_t ch = 0; ch < c.D; ++ch) v[(1 * c.N + 0) * 3 * c.D + ch] = 0;
    check_hydra(c, Tensor::from_vector(v, {c.B, c.N, 3 * c.D}).to(DType::f32), 7);
  }
}

// bf16 activations go straight into the kernels (f32 arithmetic, one rounding per stored value):
// against the CPU op in f32 on the same bf16-representable qkv and upstream gradient, the error
// is the final rounding to bf16 plus f32 noise.
TEST_CASE("cuda hydra: bf16 storage, forward and backward") {
  LVIT_SKIP_WITHOUT_GPU();
  for (const HydraCase& c :
       std::vector<HydraCase>{{2, 65, 384, 4}, {1, 70, 60, 5}, {3, 17, 8, 1}}) {
    CAPTURE(c.N);
    CAPTURE(c.D);
    const auto rounded = [](const Tensor& t) { return t.to(DType::bf16).to(DType::f32); };
    const Tensor qkv = rounded(cudatest::randn({c.B, c.N, 3 * c.D}, 31));
    const Tensor gout = rounded(cudatest::randn({c.B, c.N, c.D}, 32));
    const Run cpu = run_hydra(qkv, c.branches, gout, false);
    Tensor xb = cudatest::to_gpu(qkv.to(DType::bf16));
    xb.set_requires_grad(true);
    Tensor yb = ops::hydra_attention(xb, c.branches);
    CHECK(yb.dtype() == DType::bf16);
    yb.backward(cudatest::to_gpu(gout.to(DType::bf16)));
    REQUIRE(xb.grad().dtype() == DType::bf16);
    expect_close(cpu.out, yb.to(DType::f32), Arith::bf16, 1, "hydra bf16 out");
    expect_close(cpu.gqkv, xb.grad().to(DType::f32), Arith::bf16, 1, "hydra bf16 gqkv");
  }
}

TEST_CASE("cuda hydra fast: f32 and bf16 storage match the CPU op") {
  LVIT_SKIP_WITHOUT_GPU();
  const std::vector<HydraCase> cases = {
      {3, 65, 384, 4},   // hydra-cifar: C = 96, 4 lanes x 3 vectors per branch, 3 chunks
      {2, 257, 384, 4},  // hydra-tiny: 9 chunks
      {2, 257, 384, 1},  // hydra-tiny, one branch: C = 384, 16 lanes x 3 vectors
      {3, 17, 64, 8},    // C = 8: a lane per branch, one vector
      {2, 70, 96, 2},    // C = 48: 2 lanes x 3 vectors, 64 rows per pass
      {1, 40, 256, 1},   // C = 256: 8 lanes x 4 vectors
      {1, 300, 32, 1},   // a lane per row: 256 rows per pass, 2 chunks
      {2, 33, 768, 12},  // C = 64: 24 lanes a row, 10 rows per pass (16 lanes idle)
      {1, 9, 3072, 4},   // C = 768: 32 lanes x 3 vectors, 2 rows per pass
      {1, 20, 1024, 1},  // C = 1024: 32 lanes x 4 vectors
      {2, 1, 16, 2},     // a single token
  };
  uint64_t seed = 500;
  for (const HydraCase& c : cases) {
    CHECK(fast_shape(c));
    for (DType dt : {DType::f32, DType::bf16}) check_hydra_storage(c, dt, false, seed);
    seed += 10;
  }
}

TEST_CASE("cuda hydra generic: f32 and bf16 storage match the CPU op") {
  LVIT_SKIP_WITHOUT_GPU();
  // Widths the fast kernels do not take, then the presets' shapes through misaligned views.
  const std::vector<HydraCase> generic = {
      {1, 70, 60, 5},    // C = 12: not a multiple of 8
      {2, 17, 8, 4},     // C = 2
      {2, 40, 40, 1},    // C = 40: five vectors
      {1, 20, 1200, 1},  // C = 1200: 150 vectors
  };
  uint64_t seed = 700;
  for (const HydraCase& c : generic) {
    CHECK_FALSE(fast_shape(c));
    for (DType dt : {DType::f32, DType::bf16}) check_hydra_storage(c, dt, false, seed);
    seed += 10;
  }
  for (const HydraCase& c :
       std::vector<HydraCase>{{3, 65, 384, 4}, {2, 257, 384, 4}, {2, 257, 384, 1}}) {
    for (DType dt : {DType::f32, DType::bf16}) check_hydra_storage(c, dt, true, seed);
    seed += 10;
  }
}

TEST_CASE("cuda hydra: fast and generic kernels are deterministic") {
  LVIT_SKIP_WITHOUT_GPU();
  const HydraCase c{8, 65, 384, 4};
  const Tensor qkv = cudatest::randn({c.B, c.N, 3 * c.D}, 41);
  const Tensor gout = cudatest::randn({c.B, c.N, c.D}, 42);
  const auto bits = [](const Tensor& t) { return cudatest::to_cpu(t).to_vector<double>(); };
  for (DType dt : {DType::f32, DType::bf16})
    for (bool misaligned : {false, true}) {
      CAPTURE(dtype_name(dt));
      CAPTURE(misaligned);
      const Run a =
          run_hydra_gpu(on_gpu(qkv, dt, misaligned), c.branches, on_gpu(gout, dt, misaligned));
      const Run b =
          run_hydra_gpu(on_gpu(qkv, dt, misaligned), c.branches, on_gpu(gout, dt, misaligned));
      CHECK(bits(a.out) == bits(b.out));
      CHECK(bits(a.gqkv) == bits(b.gqkv));
    }
}

TEST_CASE("cuda ripple: forward and backward match the CPU op") {
  LVIT_SKIP_WITHOUT_GPU();
  const std::vector<RippleCase> cases = {
      {1, 1, 8, 1, 4},    // S = 1: plain linear attention, no logits
      {3, 2, 8, 2, 4},    // S = 2: the diagonal (level 0) only
      {2, 3, 32, 3, 8},   // micro-like: d = 32, 8x8
      {2, 6, 64, 3, 8},   // ripple-cifar: d = 64, S = 3, 65 tokens
      {1, 2, 64, 3, 16},  // ripple-tiny: 257 tokens, 4 tiles
      {3, 1, 32, 4, 16},  // S = 4: 16-cell blocks
      {2, 2, 8, 4, 8},    // d = 8 (padded to 16)
      {2, 2, 24, 3, 8},   // d = 24 (padded to 32)
      {1, 2, 64, 5, 8},   // S = 5: the local term spans the whole 64-cell tile
      {1, 2, 40, 2, 16},  // d = 40 (padded to 64)
      {1, 1, 16, 6, 16},  // S = 6 on 16x16: an extra pass over the whole grid (level 4)
      {1, 1, 8, 7, 32},   // S = 7 on 32x32: extra passes over 256-cell blocks and the grid
      {2, 1, 8, 6, 4},    // S beyond log2(grid) + 2: the grid-sized levels merge
      {1, 1, 128, 3, 8},  // d = 128: 16-row tiles
      {1, 2, 100, 5, 8},  // d = 100 (padded to 128), S = 5: an extra pass over 64-cell blocks
      {2, 1, 8, 3, 2},    // 2x2 grid: 5 tokens
      {1, 1, 8, 2, 1},    // 1x1 grid: 2 tokens
  };
  uint64_t seed = 1000;
  for (const RippleCase& c : cases) {
    check_ripple(c, seed);
    seed += 10;
  }
}

TEST_CASE("cuda ripple dense (bf16 tensor cores): forward and every gradient match the CPU") {
  LVIT_SKIP_WITHOUT_GPU();
  // Every grid the kernels take (N = 1 + g^2 <= 128: 2, 5, 17, 65 tokens, i.e. 1, 1, 2 and 5
  // blocks of 16, all but N = 16 k padded), every head width, 1 to 4 stages (S = 4 on grids
  // below 8x8: stages beyond the grid's levels; S = 1: no logits), batch 1 to 3, 1 to 3 heads.
  const int64_t heads[] = {1, 3, 2};
  uint64_t seed = 3000;
  int i = 0;
  for (int64_t g : {1, 2, 4, 8})
    for (int64_t d : {16, 32, 64})
      for (int64_t S : {1, 2, 3, 4}) {
        check_ripple_dense({1 + i % 3, heads[(i + i / 3) % 3], d, S, g}, seed);
        seed += 10;
        ++i;
      }
}

TEST_CASE("cuda ripple dense: the ripple-cifar shape, and the automatic kernel choice") {
  LVIT_SKIP_WITHOUT_GPU();
  check_ripple_dense({4, 6, 64, 3, 8}, 4000);
  // More stages than the 8x8 grid has levels below the last stage: S = 5 makes every level its
  // own stage (only the class-token pairs take stage 4), S = 6 leaves stage 4 without pairs.
  check_ripple_dense({2, 2, 32, 5, 8}, 4100);
  check_ripple_dense({1, 3, 64, 6, 8}, 4200);
  // automatic = dense for bf16 within the kernels' sizes, linear otherwise (f32; bf16 with
  // d = 8, the f32 kernels on widened values; bf16 at 257 tokens, the linear tensor-core
  // kernels): the kernels are deterministic, so the results are bit for bit those of the forced
  // choice.
  struct Pick {
    RippleCase c;
    DType dtype;
    ops::RippleImpl same_as;
  };
  const Pick picks[] = {{{2, 2, 32, 3, 8}, DType::bf16, ops::RippleImpl::dense},
                        {{2, 2, 32, 3, 8}, DType::f32, ops::RippleImpl::linear},
                        {{2, 2, 8, 3, 8}, DType::bf16, ops::RippleImpl::linear},
                        {{1, 2, 64, 3, 16}, DType::bf16, ops::RippleImpl::linear}};
  uint64_t seed = 4100;
  for (const Pick& p : picks) {
    const RippleCase& c = p.c;
    CAPTURE(c.d);
    CAPTURE(c.g);
    CAPTURE(dtype_name(p.dtype));
    const int64_t N = 1 + c.g * c.g, D = c.H * c.d;
    const Tensor qkv = cudatest::randn({c.B, N, 3 * D}, seed);
    const Tensor logits = rand_logits(c.H, c.S, seed + 1);
    const Tensor gout = cudatest::randn({c.B, N, D}, seed + 2);
    seed += 10;
    const Run a = run_ripple(qkv, logits, c.H, c.S, c.g, gout, true, true, p.dtype);
    const Run f = run_ripple(qkv, logits, c.H, c.S, c.g, gout, true, true, p.dtype, p.same_as);
    CHECK(a.out.dtype() == p.dtype);
    auto same = [](const Tensor& x, const Tensor& y) {
      return cudatest::to_cpu(x).to_vector<double>() == cudatest::to_cpu(y).to_vector<double>();
    };
    CHECK(same(a.out, f.out));
    CHECK(same(a.gqkv, f.gqkv));
    CHECK(same(a.glogits, f.glogits));
  }
}

TEST_CASE("cuda ripple: logits that need no gradient") {
  LVIT_SKIP_WITHOUT_GPU();
  check_ripple({2, 2, 16, 3, 8}, 77, /*logits_grad=*/false);
}

TEST_CASE("cuda ripple tensor-core kernels: logits without gradient, and an empty batch") {
  LVIT_SKIP_WITHOUT_GPU();
  const int64_t H = 2, d = 64, S = 3, D = H * d;
  for (int64_t g : {8, 16}) {  // the dense kernels at 8x8, the linear ones at 16x16
    CAPTURE(g);
    const int64_t N = 1 + g * g;
    const Tensor qkv = cudatest::randn({2, N, 3 * D}, 900 + g);
    const Tensor logits = rand_logits(H, S, 901);
    const Tensor gout = cudatest::randn({2, N, D}, 902);
    // Without the logits' gradient: the same qkv gradient, bit for bit, and none for the logits.
    const Run with = run_ripple(qkv, logits, H, S, g, gout, true, true, DType::bf16);
    const Run without = run_ripple(qkv, logits, H, S, g, gout, true, false, DType::bf16);
    CHECK_FALSE(without.glogits.defined());
    CHECK(cudatest::to_cpu(with.gqkv).to_vector<double>() ==
          cudatest::to_cpu(without.gqkv).to_vector<double>());
    // An empty batch: an empty output, and a zero gradient for the logits.
    const Run empty = run_ripple(Tensor::zeros({0, N, 3 * D}, DType::f32), logits, H, S, g,
                                 Tensor::zeros({0, N, D}, DType::f32), true, true, DType::bf16);
    CHECK(empty.out.shape() == (Shape{0, N, D}));
    REQUIRE(empty.glogits.defined());
    for (double v : cudatest::to_cpu(empty.glogits).to_vector<double>()) CHECK(v == 0.0);
  }
}

#ifdef LVIT_WITH_CUDA
// ripple_logits_grad on its own: the f64 sums over the rows of d loss / d alpha, one level up to
// 1,024 rows and two above (the dense backward writes a row per warp: 2,560 at batch 512), column
// blocks where heads x stages exceeds a CTA, then the stick-breaking Jacobian, against the same
// computation on the host.
TEST_CASE("cuda ripple: the logits gradient over many rows, one and two levels") {
  LVIT_SKIP_WITHOUT_GPU();
  struct Case {
    int64_t rows, H, S;
  };
  for (const Case c :
       {Case{7, 2, 3}, {1024, 6, 3}, {1025, 6, 3}, {2560, 6, 3}, {3000, 100, 4}, {1000, 100, 4}}) {
    CAPTURE(c.rows);
    CAPTURE(c.H);
    CAPTURE(c.S);
    const int64_t C = c.H * c.S;
    std::vector<double> ga(static_cast<size_t>(c.rows * C));
    for (size_t i = 0; i < ga.size(); ++i) ga[i] = philox_normal(31, 3, i);
    const Tensor logits = rand_logits(c.H, c.S, 32);
    // The workspace as the backwards size it: the rows, then room for the partial sums.
    std::vector<double> ws = ga;
    ws.resize(static_cast<size_t>((c.rows + 64) * C), std::nan(""));
    const Tensor ws_gpu = cudatest::to_gpu(Tensor::from_vector(ws, {(c.rows + 64) * C}));
    const Tensor lg_gpu = cudatest::to_gpu(logits);
    Tensor got = Tensor::empty({c.H, c.S - 1}, DType::f32, Device::cuda(0));
    cuda::ripple_logits_grad(ws_gpu.data<double>(), lg_gpu.data<float>(), c.rows, c.H, c.S,
                             got.data<float>(), cuda::stream(0));
    const std::vector<double> lg = logits.to(DType::f64).to_vector<double>();
    const std::vector<double> g = cudatest::to_cpu(got).to_vector<double>();
    for (int64_t h = 0; h < c.H; ++h) {
      std::vector<double> sum(c.S, 0.0), sig(c.S), alpha(c.S), rem(c.S);
      for (int64_t r = 0; r < c.rows; ++r)
        for (int64_t s = 0; s < c.S; ++s) sum[s] += ga[(r * c.H + h) * c.S + s];
      rem[0] = 1;
      for (int64_t s = 0; s + 1 < c.S; ++s) {
        sig[s] = 1 / (1 + std::exp(-lg[h * (c.S - 1) + s]));
        alpha[s] = sig[s] * rem[s];
        rem[s + 1] = rem[s] * (1 - sig[s]);
      }
      alpha[c.S - 1] = rem[c.S - 1];
      double tail = sum[c.S - 1] * alpha[c.S - 1];
      for (int64_t t = c.S - 2; t >= 0; --t) {
        const double want = sum[t] * rem[t] * sig[t] * (1 - sig[t]) - sig[t] * tail;
        tail += sum[t] * alpha[t];
        // f32 output; the f64 sums differ from these only in their order (~1e-15 relative).
        CHECK(std::abs(g[h * (c.S - 1) + t] - want) <= 1e-6 * (std::abs(want) + 1e-3));
      }
    }
  }
}

// The passes the Ripple launchers plan (host code: runs without a GPU too).
TEST_CASE("cuda ripple: the pass plan") {
  using namespace cuda::ripple_detail;
  auto plan = [](int64_t S, int64_t g, int tile) {
    return make_plan(make_geom(2, 1 + g * g, 64, 2, S, g), tile);
  };
  auto same = [](const Pass& p, Pass want) {
    return p.seg_cells == want.seg_cells && p.mk == want.mk && p.s_plus == want.s_plus &&
           p.s_minus == want.s_minus && p.accumulate == want.accumulate &&
           p.finalize == want.finalize;
  };
  // {seg_cells, mk, s_plus, s_minus, accumulate, finalize}
  Plan p = plan(1, 8, 64);  // linear attention: the global term only
  CHECK(same(p.main, {0, 0, 0, -1, false, true}));
  CHECK(p.extra.empty());
  p = plan(3, 8, 64);  // ripple-cifar: 4-cell blocks, w = alpha_l - alpha_2 locally
  CHECK(same(p.main, {0, 4, 2, 2, false, true}));
  CHECK(p.extra.empty());
  p = plan(5, 8, 64);  // 64-cell blocks: the whole tile
  CHECK(same(p.main, {0, 64, 4, 4, false, true}));
  CHECK(p.extra.empty());
  p = plan(6, 4, 64);  // levels 2..4 all cover the 4x4 grid: local, alpha_l - alpha_5
  CHECK(same(p.main, {0, 16, 5, 5, false, true}));
  CHECK(p.extra.empty());
  p = plan(6, 16, 64);  // level 4 (the 16x16 grid) beyond the 64-cell tile
  CHECK(same(p.main, {0, 64, 5, 4, false, false}));
  REQUIRE(p.extra.size() == 1);
  CHECK(same(p.extra[0], {256, 0, 4, 5, true, true}));
  p = plan(10, 32, 64);  // level 4: 256-cell blocks; levels 5..8: the grid, merged
  CHECK(same(p.main, {0, 64, 9, 4, false, false}));
  REQUIRE(p.extra.size() == 2);
  CHECK(same(p.extra[0], {256, 0, 4, 5, true, false}));
  CHECK(same(p.extra[1], {1024, 0, 5, 9, true, true}));
  p = plan(5, 8, 16);  // 16-row tiles (head width 128): level 3 beyond the tile
  CHECK(same(p.main, {0, 16, 4, 3, false, false}));
  REQUIRE(p.extra.size() == 1);
  CHECK(same(p.extra[0], {64, 0, 3, 4, true, true}));
}
#endif

TEST_CASE("cuda hydra and ripple: bf16 widening, f64 and unsupported dense calls throw") {
  LVIT_SKIP_WITHOUT_GPU();
  const int64_t g = 4, N = 1 + g * g, H = 2, d = 8, D = H * d, S = 3;
  const Tensor qkv = cudatest::randn({1, N, 3 * D}, 5);
  {
    // Mixed precision: bf16 activations. Hydra reads bf16 itself; Ripple at d = 8 (no dense
    // tensor-core kernel) runs its f32 kernels on the widened values.
    const Tensor xb = cudatest::to_gpu(qkv.to(DType::bf16));
    const Tensor xw = xb.to(DType::f32);
    const Tensor logits = cudatest::to_gpu(ops::ripple_init_logits(H, S));
    Tensor hb = ops::hydra_attention(xb, 2), rb = ops::ripple_attention(xb, logits, H, S, g, g);
    CHECK(hb.dtype() == DType::bf16);
    CHECK(rb.dtype() == DType::bf16);
    cudatest::expect_close(ops::hydra_attention(xw, 2).to(DType::bf16).to(DType::f32),
                           hb.to(DType::f32), cudatest::Arith::bf16, 1, "hydra bf16");
    cudatest::expect_close(
        ops::ripple_attention(xw, logits, H, S, g, g).to(DType::bf16).to(DType::f32),
        rb.to(DType::f32), cudatest::Arith::bf16, 1, "ripple bf16");
  }
  for (DType dt : {DType::f64}) {
    CAPTURE(dtype_name(dt));
    const Tensor x = cudatest::to_gpu(qkv.to(dt));
    const std::string hm = error_message([&] { (void)ops::hydra_attention(x, 2); });
    CHECK(hm.find("hydra attention on CUDA supports f32 and bf16") != std::string::npos);
    const Tensor logits = cudatest::to_gpu(ops::ripple_init_logits(H, S, dt));
    const std::string rm =
        error_message([&] { (void)ops::ripple_attention(x, logits, H, S, g, g); });
    CHECK(rm.find("ripple attention on CUDA supports f32 only") != std::string::npos);
  }
  // The dense form on CUDA is the bf16 tensor-core kernels: f32, and d = 8, are refused.
  const Tensor logits = cudatest::to_gpu(ops::ripple_init_logits(H, S));
  for (DType dt : {DType::f32, DType::bf16}) {
    const Tensor x = cudatest::to_gpu(qkv.to(dt));
    const std::string msg = error_message(
        [&] { (void)ops::ripple_attention(x, logits, H, S, g, g, ops::RippleImpl::dense); });
    CHECK(msg.find("dense ripple attention on CUDA runs bf16 tensor-core kernels") !=
          std::string::npos);
  }
}
