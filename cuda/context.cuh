// Per-device CUDA context: one stream, the cuBLAS and cuBLASLt handles and a GEMM workspace,
// created lazily on first use and kept for the life of the process. Host-only header.
//
// Every kernel, copy and GEMM of lvit runs on its device's context stream. That single stream
// is what makes the caching allocator's frees safe (see cuda/allocator.cuh) and what a CUDA
// graph capture of the training step records.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

namespace lvit::cuda {

struct Context {
  int device = 0;
  // Non-blocking: it never synchronises implicitly with the legacy default stream, so host
  // code must not use the synchronous cudaMemcpy/cudaMemset on data this stream works on.
  cudaStream_t stream = nullptr;
  // Bound to `stream` and to `workspace` (cublasSetStream/cublasSetWorkspace), so cuBLAS never
  // allocates during a call: required for CUDA graph capture.
  cublasHandle_t cublas = nullptr;
  // cuBLASLt handles carry no stream: pass `stream` and `workspace` to every cublasLtMatmul.
  cublasLtHandle_t cublaslt = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // Added to the Philox offset of every dropout mask drawn on this device (0 unless a CUDA
  // graph is replayed): a captured step bakes its offsets into the graph, and each replay moves
  // them on by setting this one device word (see cuda/graph.cuh).
  uint64_t* philox_shift = nullptr;
};

inline constexpr size_t kWorkspaceBytes = size_t{32}
                                          << 20;  // 32 MiB, as cuBLAS recommends for Hopper

// Whether the CUDA runtime sees at least one device. Never throws: false without a driver or a
// GPU. The answer is computed once.
bool available();
// Number of visible devices; 0 without a driver or a GPU.
int device_count();
// The device's name, e.g. "NVIDIA H100 80GB HBM3". Throws lvit::Error for a bad index.
std::string device_name(int device);
// Throws lvit::Error unless 0 <= device < device_count() (says "no CUDA device" when there is
// none).
void check_device(int device);

// The calling thread's current CUDA device (cudaGetDevice, checked): the device launchers work
// on, set by the caller's DeviceGuard.
int current_device();

// The context of `device`, created on first use (thread-safe). Does not change the current
// device; launchers use DeviceGuard for that.
Context& context(int device);
inline cudaStream_t stream(int device) { return context(device).stream; }

// Waits until all work queued on the device's context stream has finished.
void synchronize(int device);

// Makes `device` current for the scope and restores the previous current device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// An NVTX range for the scope, shown in Nsight Systems timelines: NvtxRange r("attention_fwd");
// Costs one call when no profiler is attached; a no-op where the toolkit has no NVTX v3.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name);
  ~NvtxRange();
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace lvit::cuda
