// GEMM microbenchmark on the shapes of a ViT-S training step at batch 64 (M = 64 x 65 tokens):
// lvit's CPU GEMM (gemm(): the AVX-512 kernel where the build has it) beside the Eigen path alone
// (gemm_eigen()), GFLOP/s per shape for 1 and 2 threads. bench/torch_gemm.py times torch.mm on
// the same shapes. Each figure is the best of REPS timed calls (default 10) after one warm-up:
// the shared VM's vCPUs are stolen in bursts, and the best call is the kernel's own speed.
// Build: the `lvit-gemm-bench` target.
//   lvit-gemm-bench [REPS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "ops/cpu/linear.h"

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 10;
  struct Shape {
    int M, N, K;
    bool ta, tb;
    const char* what;
  };
  const Shape shapes[] = {{4160, 1152, 384, false, true, "qkv forward"},
                          {4160, 1536, 384, false, true, "fc1 forward"},
                          {4160, 384, 1536, false, true, "fc2 forward"},
                          {4160, 384, 1152, false, false, "qkv input grad"},
                          {1152, 384, 4160, true, false, "qkv weight grad"},
                          {1536, 384, 4160, true, false, "fc1 weight grad"}};
  double load[1] = {0};
  if (getloadavg(load, 1) == 1) std::printf("load average (1 min) before: %.2f\n", load[0]);
  std::printf("%-7s %-16s %5s %5s %5s  %13s %13s\n", "threads", "shape", "M", "N", "K",
              "Eigen GFLOP/s", "lvit GFLOP/s");
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (int threads : {1, 2}) {
    lvit::set_num_threads(threads);
    for (const Shape& s : shapes) {
      std::vector<float> A(size_t(s.M) * s.K), B(size_t(s.K) * s.N), C(size_t(s.M) * s.N);
      for (float& x : A) x = uniform(gen);
      for (float& x : B) x = uniform(gen);
      auto gflops = [&](auto gemm) {
        auto run = [&] {
          gemm(s.ta, s.tb, s.M, s.N, s.K, A.data(), s.ta ? s.M : s.K, B.data(), s.tb ? s.K : s.N,
               C.data(), s.N, 0.f);
        };
        run();
        double best = 1e30;
        for (int i = 0; i < reps; ++i) {
          const auto t0 = std::chrono::steady_clock::now();
          run();
          best = std::min(
              best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        return 2.0 * s.M * s.N * s.K / best / 1e9;
      };
      const double eigen = gflops(lvit::cpu::gemm_eigen<float>);
      const double lvit = gflops(lvit::cpu::gemm<float>);
      std::printf("%-7d %-16s %5d %5d %5d  %13.1f %13.1f\n", threads, s.what, s.M, s.N, s.K, eigen,
                  lvit);
    }
  }
  return 0;
}
