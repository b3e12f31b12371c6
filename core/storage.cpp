#include "core/storage.h"

#include <cstdlib>
#include <new>

#include "core/block_cache.h"
#include "core/error.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/allocator.cuh"
#endif

namespace lvit {
namespace {

// Host allocator with a cache of large blocks. A training step allocates the same large
// activations every step; handing freed blocks back to the OS and faulting fresh pages in again
// cost ~8% of a CPU step. Blocks of 64 KiB and more are rounded up to 64 KiB and kept on a free
// list per size (up to kMaxCached bytes in all); smaller ones go straight to malloc.
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    const size_t rounded = round(nbytes);
    if (rounded >= kLarge)
      if (void* p = cache_.take(rounded)) return p;
    void* p = std::aligned_alloc(64, rounded);
    if (!p && rounded >= kLarge) {  // give the cache back and try again
      cache_.release([](void* b) { std::free(b); });
      p = std::aligned_alloc(64, rounded);
    }
    if (!p) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p, size_t nbytes) override {
    if (!p) return;
    const size_t rounded = round(nbytes);
    if (rounded >= kLarge && cache_.put(p, rounded)) return;
    std::free(p);
  }

 private:
  static constexpr size_t kLarge = size_t{64} << 10;
  static constexpr size_t kMaxCached = size_t{4} << 30;
  static size_t round(size_t n) {
    return n >= kLarge ? (n + kLarge - 1) / kLarge * kLarge : (n + 63) / 64 * 64;
  }
  BlockCache cache_{kMaxCached};
};

}  // namespace

Allocator* cpu_allocator() {
  static CpuAllocator a;
  return &a;
}

Allocator* allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
#ifdef LVIT_WITH_CUDA
  return cuda::caching_allocator(d.index);
#else
  throw Error("lvit was built without CUDA");
#endif
}

Storage::Storage(size_t nbytes, Device device) : Storage(nbytes, device, allocator_for(device)) {}

Storage::Storage(size_t nbytes, Device device, Allocator* allocator)
    : nbytes_(nbytes), device_(device), allocator_(allocator) {
  data_ = allocator_->allocate(nbytes);
}

Storage::~Storage() {
  if (data_) allocator_->deallocate(data_, nbytes_);
}

}  // namespace lvit
