#include "cuda/allocator.cuh"

#include <array>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "cuda/check.cuh"
#include "cuda/context.cuh"

namespace lvit::cuda {
namespace {

constexpr size_t kSmallLimit = size_t{1} << 20;  // requests up to 1 MiB round to 512 B
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t{2} << 20;  // larger ones to 2 MiB
constexpr int kMaxDevices = 64;

std::string bytes_str(size_t b) {
  if (b >= (size_t{1} << 30)) return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1 << 30));
  if (b >= (size_t{1} << 20)) return fmt::format("{:.2f} MiB", static_cast<double>(b) / (1 << 20));
  return fmt::format("{} B", b);
}

std::atomic<int> g_poison{-1};  // -1: not decided yet (read LVIT_CUDA_POISON at first use)

bool poison_enabled() {
  int v = g_poison.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("LVIT_CUDA_POISON");
    v = e && e[0] == '1' ? 1 : 0;
    int expected = -1;
    g_poison.compare_exchange_strong(expected, v);
    v = g_poison.load(std::memory_order_relaxed);
  }
  return v == 1;
}

class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}

  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    const size_t size = round_allocation(nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    void* p = nullptr;
    auto pit = pool_active_ ? pool_free_.find(size) : pool_free_.end();
    auto it = free_.find(size);
    if (pit != pool_free_.end() && !pit->second.empty()) {
      p = pit->second.back();
      pit->second.pop_back();
      ++stats_.cache_hits;
    } else if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.cached_bytes -= size;
      ++stats_.cache_hits;
    } else {
      p = device_malloc(nbytes, size);
    }
    if (poison_enabled()) {
      // 0xFF bytes: NaN in f32/f64/bf16, so a kernel that leaves an output element unwritten
      // shows up as NaN in the tests instead of passing on stale memory.
      DeviceGuard guard(device_);
      LVIT_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, size, stream(device_)));
    }
    if (pool_active_) pool_blocks_.insert(p);
    live_.emplace(p, size);
    ++stats_.allocs;
    stats_.current_bytes += size;
    if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
    return p;
  }

  void deallocate(void* p, size_t) override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(p);
    // A pointer we never handed out is a bug in the caller; do not corrupt the cache for it.
    if (it == live_.end()) return;
    const size_t size = it->second;
    live_.erase(it);
    stats_.current_bytes -= size;
    // No synchronisation: see the stream-safety note in allocator.cuh.
    if (pool_blocks_.count(p)) {
      pool_free_[size].push_back(p);  // reserved for the graph that captured it
      return;
    }
    stats_.cached_bytes += size;
    free_[size].push_back(p);
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes = stats_.current_bytes;
  }

  void set_pool_active(bool on) {
    std::lock_guard<std::mutex> lock(mutex_);
    pool_active_ = on;
  }

  void release_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, blocks] : pool_free_)
      for (void* p : blocks) {
        free_[size].push_back(p);
        stats_.cached_bytes += size;
      }
    pool_free_.clear();
    pool_blocks_.clear();
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached();
  }

 private:
  // Called with mutex_ held.
  void* device_malloc(size_t requested, size_t size) {
    DeviceGuard guard(device_);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not sticky, but would otherwise surface at the next check
      release_cached();
      e = cudaMalloc(&p, size);
    }
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
      throw Error(fmt::format(
          "CUDA out of memory on cuda:{}: tried to allocate {} ({} bytes, bucket {}); lvit "
          "tensors hold {} (peak {}); the device has {} free of {}",
          device_, bytes_str(requested), requested, bytes_str(size),
          bytes_str(stats_.current_bytes), bytes_str(stats_.peak_bytes), bytes_str(free_b),
          bytes_str(total_b)));
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      const std::string what = fmt::format("cudaMalloc({} bytes) on cuda:{}", size, device_);
      throw_status_error("CUDA", static_cast<int>(e), cudaGetErrorName(e), cudaGetErrorString(e),
                         what.c_str(), __FILE__, __LINE__);
    }
    return p;
  }

  // Called with mutex_ held. cudaFree waits for the device, so queued kernels that still use a
  // cached block finish before it is released.
  void release_cached() {
    if (stats_.cached_bytes == 0) return;
    DeviceGuard guard(device_);
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) LVIT_CUDA_CHECK(cudaFree(p));
      blocks.clear();
    }
    free_.clear();
    stats_.cached_bytes = 0;
  }

  const int device_;
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // bucket size -> free blocks
  std::unordered_map<void*, size_t> live_;               // block -> bucket size
  AllocatorStats stats_;
  // The graph pool: blocks first handed out during a CUDA graph capture belong to the graph
  // for good (its replays write them), so when freed they go to pool_free_, which only later
  // captures draw on, never to free_.
  bool pool_active_ = false;
  std::unordered_set<void*> pool_blocks_;
  std::unordered_map<size_t, std::vector<void*>> pool_free_;
};

// Never destroyed: storages freed during static destruction must still find their allocator
// (their blocks are simply cached; the process exit releases device memory).
std::array<std::atomic<CachingAllocator*>, kMaxDevices> g_allocators{};
std::mutex g_create_mutex;

CachingAllocator& get(int device) {
  check_device(device);
  LVIT_CHECK(device < kMaxDevices, "cuda:{}: at most {} devices", device, kMaxDevices);
  CachingAllocator* a = g_allocators[device].load(std::memory_order_acquire);
  if (a) return *a;
  std::lock_guard<std::mutex> lock(g_create_mutex);
  a = g_allocators[device].load(std::memory_order_relaxed);
  if (!a) {
    a = new CachingAllocator(device);
    g_allocators[device].store(a, std::memory_order_release);
  }
  return *a;
}

}  // namespace

size_t round_allocation(size_t nbytes) {
  const size_t r = nbytes <= kSmallLimit ? kSmallRound : kLargeRound;
  // Requests this close to SIZE_MAX cannot be satisfied; keep them as they are so that
  // cudaMalloc reports the out-of-memory instead of the rounding wrapping to a small size.
  if (nbytes > std::numeric_limits<size_t>::max() - r) return nbytes;
  return (nbytes + r - 1) / r * r;
}

Allocator* caching_allocator(int device_index) { return &get(device_index); }

AllocatorStats allocator_stats(int device) { return get(device).stats(); }

void reset_peak(int device) { get(device).reset_peak(); }

void set_graph_pool_active(int device, bool on) { get(device).set_pool_active(on); }

void release_graph_pool(int device) { get(device).release_pool(); }

void set_poison(bool on) { g_poison.store(on ? 1 : 0, std::memory_order_relaxed); }

void empty_cache(int device) { get(device).empty_cache(); }

}  // namespace lvit::cuda
