// Storage: one allocation of bytes on one device, shared by every tensor view of it.
#pragma once
#include <cstddef>
#include <memory>

#include "core/dtype.h"

namespace lvit {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
};

// 64-byte aligned host memory (one AVX-512 line), so Eigen maps are aligned.
Allocator* cpu_allocator();
// The allocator for a device; CUDA devices throw in a build without CUDA.
Allocator* allocator_for(Device d);

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  // Memory from `allocator` (e.g. pinned host memory for a CPU storage, cuda/pinned.cuh).
  Storage(size_t nbytes, Device device, Allocator* allocator);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  Allocator* allocator() const { return allocator_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

}  // namespace lvit
