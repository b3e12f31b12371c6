// A small fixed-size thread pool and parallel_for. The caller's thread takes part in the work,
// so num_threads() == 1 runs everything inline. Nested parallel_for calls run inline.
#pragma once
#include <cstdint>
#include <functional>

namespace lvit {

// Number of threads used by parallel_for (default: hardware concurrency, or $LVIT_THREADS).
int num_threads();
void set_num_threads(int n);

// Calls fn(begin, end) on disjoint chunks covering [0, n). Chunks are at least `grain` long;
// at most num_threads() chunks are made, so the split for given (n, grain, threads) is fixed and
// results that depend on it (none should) stay reproducible.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Splits [0, n) into exactly `chunks` contiguous pieces (some may be empty) and calls
// fn(chunk, begin, end) for each, in parallel. For reductions with per-chunk partial results:
// with a fixed chunk count the result does not depend on the thread count.
void parallel_chunks(int64_t n, int64_t chunks,
                     const std::function<void(int64_t, int64_t, int64_t)>& fn);

// Runs fn(i) once for every i in [0, n), handing the indices out one at a time to whichever
// thread is free: balances pieces of work that take uneven time (on a shared VM one vCPU may be
// stolen for a while). Which thread runs an index varies, so fn(i) must not depend on it.
void parallel_tasks(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace lvit
