// Freed memory blocks kept per exact size for reuse, up to a byte budget; thread-safe. The host
// allocators (the CPU one in core/storage.cpp, the pinned one in cuda/pinned.cpp) put freed
// blocks here instead of handing them back, so that a training step's same-sized buffers come
// back without a system call or fresh page faults.
#pragma once
#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace lvit {

class BlockCache {
 public:
  explicit BlockCache(size_t max_bytes) : max_bytes_(max_bytes) {}

  // A cached block of exactly `bytes`, or nullptr.
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    return p;
  }

  // Keeps p (a block of `bytes`) if the budget allows; false means the caller frees it.
  bool put(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_ + bytes > max_bytes_) return false;
    free_[bytes].push_back(p);
    cached_ += bytes;
    return true;
  }

  // free_block(p) for every cached block, and the cache is empty.
  template <typename Free>
  void release(Free&& free_block) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, blocks] : free_)
      for (void* b : blocks) free_block(b);
    free_.clear();
    cached_ = 0;
  }

 private:
  const size_t max_bytes_;
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
};

}  // namespace lvit
