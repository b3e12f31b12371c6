#include "cuda/context.cuh"

#include <array>
#include <atomic>
#include <mutex>

#include "core/error.h"
#include "cuda/check.cuh"

#if __has_include(<nvtx3/nvToolsExt.h>)
#include <nvtx3/nvToolsExt.h>
#define LVIT_HAVE_NVTX 1
#endif

namespace lvit::cuda {
namespace {

constexpr int kMaxDevices = 64;

int query_device_count() {
  int n = 0;
  // Without a driver this returns cudaErrorNoDevice or cudaErrorInsufficientDriver: that means
  // "no GPU", not a failure. Clear the error so that a later after_launch() does not report it.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n < kMaxDevices ? n : kMaxDevices;
}

// Contexts are created once and deliberately never destroyed: tensors held by static objects
// may free memory during exit, after the CUDA runtime has begun to shut down, and destroying
// streams and handles then fails.
std::array<std::atomic<Context*>, kMaxDevices> g_contexts{};
std::mutex g_create_mutex;

Context* create_context(int device) {
  DeviceGuard guard(device);
  auto* c = new Context;
  c->device = device;
  LVIT_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  LVIT_CUBLAS_CHECK(cublasCreate(&c->cublas));
  LVIT_CUBLAS_CHECK(cublasSetStream(c->cublas, c->stream));
  LVIT_CUBLAS_CHECK(cublasLtCreate(&c->cublaslt));
  // The workspace bypasses the caching allocator: it lives as long as the context and should
  // not show up in the tensors' memory statistics.
  c->workspace_bytes = kWorkspaceBytes;
  LVIT_CUDA_CHECK(cudaMalloc(&c->workspace, c->workspace_bytes));
  LVIT_CUBLAS_CHECK(cublasSetWorkspace(c->cublas, c->workspace, c->workspace_bytes));
  LVIT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&c->philox_shift), sizeof(uint64_t)));
  LVIT_CUDA_CHECK(cudaMemset(c->philox_shift, 0, sizeof(uint64_t)));
  return c;
}

}  // namespace

int device_count() {
  static const int n = query_device_count();
  return n;
}

bool available() { return device_count() > 0; }

void check_device(int device) {
  const int n = device_count();
  if (n == 0) throw Error(fmt::format("cuda:{}: no CUDA device (or no driver) present", device));
  LVIT_CHECK(device >= 0 && device < n, "cuda:{} does not exist ({} CUDA device{})", device, n,
             n == 1 ? "" : "s");
}

std::string device_name(int device) {
  check_device(device);
  cudaDeviceProp prop{};
  LVIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

int current_device() {
  int device = 0;
  LVIT_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

Context& context(int device) {
  check_device(device);
  // Double-checked creation: the fast path is one acquire load.
  Context* c = g_contexts[device].load(std::memory_order_acquire);
  if (c) return *c;
  std::lock_guard<std::mutex> lock(g_create_mutex);
  c = g_contexts[device].load(std::memory_order_relaxed);
  if (!c) {
    c = create_context(device);
    g_contexts[device].store(c, std::memory_order_release);
  }
  return *c;
}

void synchronize(int device) {
  check_device(device);
  // Without a context nothing of ours was ever queued on this device.
  Context* c = g_contexts[device].load(std::memory_order_acquire);
  if (!c) return;
  LVIT_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

DeviceGuard::DeviceGuard(int device) {
  LVIT_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) LVIT_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  // Destructors must not throw; restoring a device that was current before cannot fail in
  // practice, and if it did the next checked call would report it.
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) (void)cudaSetDevice(previous_);
}

#ifdef LVIT_HAVE_NVTX
NvtxRange::NvtxRange(const char* name) { nvtxRangePushA(name); }
NvtxRange::~NvtxRange() { nvtxRangePop(); }
#else
NvtxRange::NvtxRange(const char*) {}
NvtxRange::~NvtxRange() {}
#endif

}  // namespace lvit::cuda
