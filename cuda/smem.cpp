#include "cuda/smem.cuh"

#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <utility>

#include "core/error.h"
#include "cuda/check.cuh"
#include "cuda/context.cuh"

namespace lvit::cuda {

void allow_dynamic_smem(const void* kernel, size_t bytes, const char* what) {
  constexpr size_t kDefaultLimit = size_t{48} << 10;
  if (bytes <= kDefaultLimit) return;
  const int device = current_device();
  // The opt-in each (kernel, device) already has: set once, normally in the first (eager) step,
  // so that a later graph capture makes no attribute calls at all.
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, size_t> granted;
  std::lock_guard<std::mutex> lock(mutex);
  size_t& have = granted[{kernel, device}];
  if (bytes <= have) return;
  int limit = 0;
  LVIT_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (bytes > static_cast<size_t>(limit))
    throw Error(fmt::format("{}: needs {} bytes of shared memory per block, device {} allows {}",
                            what, bytes, device, limit));
  LVIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
  have = bytes;
}

}  // namespace lvit::cuda
