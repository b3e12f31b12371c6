// GEMM microbenchmark: lvit's CPU GEMM (Eigen kernels split over the thread pool) on the
// shapes of a ViT-S training step at batch 64 (M = 64 x 65 tokens). Prints GFLOP/s per shape for
// 1 and 2 threads. Build: the `lvit-gemm-bench` target.
#include <chrono>
#include <cstdio>
#include <vector>

#include "core/thread_pool.h"
#include "ops/cpu/linear.h"

int main() {
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
  for (int threads : {1, 2}) {
    lvit::set_num_threads(threads);
    for (const Shape& s : shapes) {
      std::vector<float> A(size_t(s.M) * s.K, 0.5f), B(size_t(s.K) * s.N, 0.25f),
          C(size_t(s.M) * s.N);
      auto run = [&] {
        lvit::cpu::gemm<float>(s.ta, s.tb, s.M, s.N, s.K, A.data(), s.ta ? s.M : s.K, B.data(),
                               s.tb ? s.K : s.N, C.data(), s.N);
      };
      run();
      const int reps = 5;
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) run();
      const double sec =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
      std::printf("threads %d  %-16s M %5d N %5d K %5d  %6.1f GFLOP/s\n", threads, s.what, s.M, s.N,
                  s.K, 2.0 * s.M * s.N * s.K / sec / 1e9);
    }
  }
  return 0;
}
