// The CPU GEMM entry point (cpu::gemm) and lvit's AVX-512 fp32 kernel behind it
// (cpu::sgemm_avx512, where the build has AVX-512) against a double-precision reference: every
// transpose case, padded leading dimensions, beta 0 / 1 / 0.5, 1 and 2 threads, shapes at and
// just past the kernel's tile and block sizes; and bitwise reproducibility.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "ops/cpu/linear.h"
#include "ops/cpu/sgemm_avx512.h"
#include "tests/test_util.h"

using namespace lvit;
using lvit::test::ThreadCountGuard;

namespace {

using GemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                        int64_t, float*, int64_t, float);

// A product C[M,N] = op(A) op(B) + beta C with operands stored as the transposes say, each row
// padded by `pad` elements (so lda, ldb, ldc exceed the logical widths when pad > 0).
struct Problem {
  int64_t M, N, K;
  bool ta, tb;
  int64_t pad;
  int64_t lda() const { return (ta ? M : K) + pad; }
  int64_t ldb() const { return (tb ? K : N) + pad; }
  int64_t ldc() const { return N + pad; }
  std::vector<float> A, B;

  Problem(int64_t m, int64_t n, int64_t k, bool ta_, bool tb_, int64_t pad_, uint32_t seed)
      : M(m), N(n), K(k), ta(ta_), tb(tb_), pad(pad_) {
    std::mt19937 gen(seed);
    // Non-zero entries of both signs: no product term can vanish and hide a missing one.
    std::uniform_real_distribution<float> mag(0.25f, 1.f);
    auto fill = [&](std::vector<float>& v, int64_t rows, int64_t ld) {
      v.assign(rows * ld, std::numeric_limits<float>::quiet_NaN());  // padding must stay unread
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < ld - pad; ++c) v[r * ld + c] = (gen() & 1 ? 1.f : -1.f) * mag(gen);
    };
    fill(A, ta ? K : M, lda());
    fill(B, tb ? N : K, ldb());
  }
  float a(int64_t i, int64_t k) const { return ta ? A[k * lda() + i] : A[i * lda() + k]; }
  float b(int64_t k, int64_t j) const { return tb ? B[j * ldb() + k] : B[k * ldb() + j]; }
  std::string name() const {
    return std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) +
           (ta ? " A^T" : "") + (tb ? " B^T" : "") + (pad ? " padded" : "");
  }
};

// Checks C (ldc-strided, with the padding columns) against the f64 product plus beta * C0.
// fp32 summation of K terms errs by at most about K * eps * sum_k |a_ik b_kj|, plus a rounding
// of the beta term; the bound below allows twice that.
void check_against_reference(const Problem& p, float beta, const std::vector<float>& C0,
                             const std::vector<float>& C, const std::string& what) {
  const double eps = std::numeric_limits<float>::epsilon();
  int64_t bad = 0;
  for (int64_t i = 0; i < p.M; ++i) {
    for (int64_t j = 0; j < p.N; ++j) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < p.K; ++k) {
        const double t = double(p.a(i, k)) * p.b(k, j);
        ref += t;
        mag += std::abs(t);
      }
      const double c0 = C0[i * p.ldc() + j];
      if (beta != 0.f) {
        ref += beta * c0;
        mag += std::abs(beta * c0);
      }
      const double got = C[i * p.ldc() + j];
      if (!(std::abs(got - ref) <= 2 * (p.K + 2) * eps * mag) && bad++ < 3)
        MESSAGE(what << ": C[" << i << "," << j << "] = " << got << ", reference " << ref);
    }
    // The padding of C is never written.
    for (int64_t j = p.N; j < p.ldc(); ++j)
      if (std::memcmp(&C[i * p.ldc() + j], &C0[i * p.ldc() + j], sizeof(float)) != 0 && bad++ < 3)
        MESSAGE(what << ": padding C[" << i << "," << j << "] was written");
  }
  CHECK_MESSAGE(bad == 0, what);
}

// Runs `gemm` on p for beta 0 (C pre-filled with NaN: it must not be read), 1 and 0.5.
void check_gemm(GemmFn gemm, const Problem& p, const std::string& what) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (float beta : {0.f, 1.f, 0.5f}) {
    std::vector<float> C0(p.M * p.ldc());
    for (float& c : C0) c = beta == 0.f ? std::numeric_limits<float>::quiet_NaN() : uniform(gen);
    std::vector<float> C = C0;
    gemm(p.ta, p.tb, p.M, p.N, p.K, p.A.data(), p.lda(), p.B.data(), p.ldb(), C.data(), p.ldc(),
         beta);
    check_against_reference(p, beta, C0, C,
                            what + " " + p.name() + " beta " + std::to_string(beta));
  }
}

struct Dims {
  int64_t M, N, K;
};

// 1x1x1, odd sizes, and sizes one past the kernel's micro-tile (14 x 32), its K slice (384) and
// its row block (168), plus a row count that splits unevenly over two threads.
const Dims kShapes[] = {{1, 1, 1},    {17, 33, 65},  {14, 32, 16}, {15, 33, 385},
                        {169, 31, 9}, {3, 200, 300}, {200, 3, 40}, {43, 70, 513},
                        {2, 2, 600},  {31, 1, 7},    {1, 47, 33},  {29, 97, 256}};

// The six ViT-S training GEMMs (M = 64 x 65 tokens, D = 384) scaled down by 8 in each dimension.
const Dims kVitShapesScaled[] = {{520, 144, 48}, {520, 192, 48}, {520, 48, 192},
                                 {520, 48, 144}, {144, 48, 520}, {192, 48, 520}};

}  // namespace

#if LVIT_HAVE_SGEMM_AVX512
TEST_CASE("sgemm_avx512 matches a double-precision reference") {
  ThreadCountGuard guard;
  uint32_t seed = 1;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Dims& d : kShapes)
      for (int t = 0; t < 4; ++t) {
        const Problem p(d.M, d.N, d.K, t & 1, t & 2, (seed % 2) * 3, seed);
        ++seed;
        check_gemm(
            [](bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
               const float* B, int64_t ldb, float* C, int64_t ldc,
               float beta) { cpu::sgemm_avx512(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, beta); },
            p, std::to_string(threads) + " threads");
      }
  }
}

TEST_CASE("sgemm_avx512 adds a bias row as it stores the first K slice (linear layers)") {
  // C = op(A) op(B) + bias with beta 0: C starts as NaN (it must not be read), and the result
  // is checked against the reference for beta 1 over C0 = the bias rows; one and several K
  // slices, partial micro-tiles in both dimensions, both threads counts.
  ThreadCountGuard guard;
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  uint32_t seed = 100;
  for (int threads : {1, 2})
    for (const Dims& d :
         {Dims{17, 33, 65}, Dims{43, 70, 513}, Dims{169, 31, 9}, Dims{200, 3, 40}}) {
      set_num_threads(threads);
      const Problem p(d.M, d.N, d.K, false, true, 3, seed++);
      std::vector<float> bias(p.N);
      for (float& b : bias) b = uniform(gen);
      std::vector<float> C0(p.M * p.ldc()), C(p.M * p.ldc());
      for (int64_t i = 0; i < p.M; ++i)
        for (int64_t j = 0; j < p.ldc(); ++j) {
          const bool pad = j >= p.N;
          C0[i * p.ldc() + j] = pad ? 7.f : bias[j];
          C[i * p.ldc() + j] = pad ? 7.f : std::numeric_limits<float>::quiet_NaN();
        }
      cpu::sgemm_avx512(p.ta, p.tb, p.M, p.N, p.K, p.A.data(), p.lda(), p.B.data(), p.ldb(),
                        C.data(), p.ldc(), 0.f, bias.data());
      check_against_reference(p, 1.f, C0, C,
                              "bias " + p.name() + " " + std::to_string(threads) + " threads");
    }
}

TEST_CASE("sgemm_avx512 is bitwise reproducible and the same for 1 and 2 threads") {
  ThreadCountGuard guard;
  for (int t = 0; t < 4; ++t) {
    const Problem p(300, 77, 600, t & 1, t & 2, 1, 40 + t);
    std::vector<float> runs[3];
    const int threads[3] = {2, 2, 1};
    for (int r = 0; r < 3; ++r) {
      set_num_threads(threads[r]);
      runs[r].assign(p.M * p.ldc(), 0.5f);
      cpu::sgemm_avx512(p.ta, p.tb, p.M, p.N, p.K, p.A.data(), p.lda(), p.B.data(), p.ldb(),
                        runs[r].data(), p.ldc(), 1.f);
    }
    CHECK(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)) == 0);
    CHECK(std::memcmp(runs[0].data(), runs[2].data(), runs[0].size() * sizeof(float)) == 0);
  }
}
#endif

TEST_CASE("cpu::gemm<float> matches the reference on the ViT-S shapes (scaled down)") {
  // Whichever path gemm() takes for each shape (the AVX-512 kernel or Eigen).
  ThreadCountGuard guard;
  set_num_threads(2);
  const GemmFn gemm = [](bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A,
                         int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                         float beta) {
    cpu::gemm<float>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, beta);
  };
  uint32_t seed = 100;
  for (const Dims& d : kVitShapesScaled)
    for (int t = 0; t < 4; ++t)
      check_gemm(gemm, Problem(d.M, d.N, d.K, t & 1, t & 2, 0, seed++), "gemm");
}
