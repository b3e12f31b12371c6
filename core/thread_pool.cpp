#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace lvit {
namespace {

thread_local bool t_inside_parallel = false;

class ThreadPool {
 public:
  explicit ThreadPool(int n) { resize(n); }
  ~ThreadPool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    stopping_ = false;
    for (int i = 0; i < n - 1; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
  }

  // Runs task(k) for k in [0, chunks) on the pool; chunk 0 on the calling thread.
  void run(int chunks, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> job_lock(job_mutex_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lk(m_);
      task_ = &task;
      chunks_ = chunks;
      next_.store(1);
      pending_ = chunks - 1;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    run_chunk(task, 0);
    for (;;) {  // the caller helps with the remaining chunks
      int k = next_.fetch_add(1);
      if (k >= chunks) break;
      run_chunk(task, k);
      finish_one();
    }
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [&] { return pending_ == 0 && active_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_chunk(const std::function<void(int)>& task, int k) {
    t_inside_parallel = true;
    try {
      task(k);
    } catch (...) {
      std::lock_guard<std::mutex> lk(m_);
      if (!error_) error_ = std::current_exception();
    }
    t_inside_parallel = false;
  }
  void finish_one() {
    std::lock_guard<std::mutex> lk(m_);
    if (--pending_ == 0) done_cv_.notify_all();
  }
  void worker_loop(int) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* task;
      int chunks;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        task = task_;
        chunks = chunks_;
        if (!task) continue;
        ++active_;  // run() waits for this to drop so no worker outlives its job
      }
      for (;;) {
        int k = next_.fetch_add(1);
        if (k >= chunks) break;
        run_chunk(*task, k);
        finish_one();
      }
      {
        std::lock_guard<std::mutex> lk(m_);
        if (--active_ == 0) done_cv_.notify_all();
      }
    }
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex job_mutex_;
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* task_ = nullptr;
  int chunks_ = 0;
  std::atomic<int> next_{0};
  int pending_ = 0;
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

int default_threads() {
  if (const char* s = std::getenv("LVIT_THREADS")) {
    int n = std::atoi(s);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

int g_threads = default_threads();

ThreadPool& pool() {
  static ThreadPool p(g_threads);
  return p;
}

}  // namespace

int num_threads() { return g_threads; }

void set_num_threads(int n) {
  g_threads = std::max(1, n);
  if (pool().size() != g_threads) pool().resize(g_threads);
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(g_threads, (n + grain - 1) / grain);
  if (chunks <= 1 || t_inside_parallel) {
    fn(0, n);
    return;
  }
  int64_t per = (n + chunks - 1) / chunks;
  pool().run(static_cast<int>(chunks), [&](int k) {
    int64_t b = k * per, e = std::min(n, b + per);
    if (b < e) fn(b, e);
  });
}

void parallel_chunks(int64_t n, int64_t chunks,
                     const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  if (chunks <= 0) return;
  const int64_t per = (n + chunks - 1) / chunks;
  parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) fn(k, std::min(n, k * per), std::min(n, (k + 1) * per));
  });
}

void parallel_tasks(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || g_threads == 1 || t_inside_parallel) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  pool().run(static_cast<int>(n), [&](int k) { fn(k); });
}

}  // namespace lvit
