#include "cuda/pinned.cuh"

#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <deque>
#include <mutex>
#include <utility>

#include "core/block_cache.h"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/copy.cuh"

namespace lvit::cuda {
namespace {

// Blocks are cached per exact size up to kMaxCached bytes; beyond that, freed blocks go back to
// the driver.
constexpr size_t kMaxCached = size_t{1} << 30;

class PinnedAllocator final : public Allocator {
 public:
  explicit PinnedAllocator(int device) : device_(device) {}

  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    if (void* p = cache_.take(nbytes)) return p;
    void* p = nullptr;
    // With the device current, so that a loader thread does not create device 0's context;
    // portable: pinned for every device's context all the same.
    DeviceGuard guard(device_);
    LVIT_CUDA_CHECK(cudaHostAlloc(&p, nbytes, cudaHostAllocPortable));
    return p;
  }
  void deallocate(void* p, size_t nbytes) override {
    if (!p || cache_.put(p, nbytes)) return;
    (void)cudaFreeHost(p);  // a destructor's path: nothing to report to
  }

 private:
  int device_;
  BlockCache cache_{kMaxCached};
};

// Storages read by uploads still in flight, oldest first, each with the event recorded after
// its copy. Entries are dropped once their event has completed.
class InFlight {
 public:
  void add(std::shared_ptr<Storage> storage, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    reap_locked();
    cudaEvent_t done = nullptr;
    LVIT_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    pending_.emplace_back(done, std::move(storage));
    LVIT_CUDA_CHECK(cudaEventRecord(done, stream));
  }

 private:
  void reap_locked() {
    while (!pending_.empty()) {
      const cudaError_t e = cudaEventQuery(pending_.front().first);
      if (e == cudaErrorNotReady) {
        (void)cudaGetLastError();  // not a failure; do not leave it behind
        return;
      }
      LVIT_CUDA_CHECK(e);
      LVIT_CUDA_CHECK(cudaEventDestroy(pending_.front().first));
      pending_.pop_front();  // may free the storage: back to the pinned cache
    }
  }

  std::mutex mutex_;
  std::deque<std::pair<cudaEvent_t, std::shared_ptr<Storage>>> pending_;
};

// Never destroyed, like the contexts: pinned blocks may be freed during exit.
std::array<std::atomic<PinnedAllocator*>, 64> g_pinned{};
std::mutex g_pinned_mutex;
InFlight* g_in_flight = new InFlight();

}  // namespace

Allocator* pinned_allocator(int device) {
  check_device(device);
  PinnedAllocator* p = g_pinned[device].load(std::memory_order_acquire);
  if (p) return p;
  std::lock_guard<std::mutex> lock(g_pinned_mutex);
  p = g_pinned[device].load(std::memory_order_relaxed);
  if (!p) {
    p = new PinnedAllocator(device);
    g_pinned[device].store(p, std::memory_order_release);
  }
  return p;
}

bool is_pinned(const Storage& storage) {
  return dynamic_cast<const PinnedAllocator*>(storage.allocator()) != nullptr;
}

void keep_until_done(std::shared_ptr<Storage> storage, cudaStream_t stream) {
  g_in_flight->add(std::move(storage), stream);
}

}  // namespace lvit::cuda
