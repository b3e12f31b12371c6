#include "cuda/check.cuh"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace lvit::cuda {

void throw_status_error(const char* library, int code, const char* name, const char* text,
                        const char* expr, const char* file, int line) {
  throw Error(fmt::format("{} error {} ({}): {}: {} ({}:{})", library, name ? name : "?", code,
                          text ? text : "?", expr, file, line));
}

void fail(const std::string& message) { throw Error(message); }

void unsupported_dtype(const char* what, DType dtype) {
  throw Error(fmt::format("{}: no CUDA kernel for dtype {}", what, dtype_name(dtype)));
}

bool sync_debug() {
  static const bool on = [] {
    const char* v = std::getenv("LVIT_CUDA_SYNC_DEBUG");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

namespace {

[[noreturn]] void throw_launch_error(cudaError_t e, const char* what, const char* stage) {
  throw Error(fmt::format("CUDA error {} ({}): {}: {} {}", cudaGetErrorName(e), static_cast<int>(e),
                          cudaGetErrorString(e), stage, what));
}

}  // namespace

void after_launch(const char* what, cudaStream_t stream) {
  // cudaGetLastError also clears a non-sticky error, so a failed launch is reported once.
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) [[unlikely]]
    throw_launch_error(e, what, "launching");
  if (!sync_debug()) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (stream) LVIT_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  e = stream ? cudaStreamSynchronize(stream) : cudaDeviceSynchronize();
  if (e != cudaSuccess) [[unlikely]]
    throw_launch_error(e, what, "running (LVIT_CUDA_SYNC_DEBUG)");
}

}  // namespace lvit::cuda
