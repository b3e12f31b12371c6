// Error checks for the CUDA backend. Every CUDA runtime / cuBLAS call goes through a check that
// throws lvit::Error with the failed expression, the status name and text, file and line; every
// kernel launch is followed by after_launch(). Host-only: plain C++ files may include this.
#pragma once
#include <cublasLt.h>
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <string>

#include "core/dtype.h"

namespace lvit::cuda {

// Throws lvit::Error("<library> error <name> (<code>): <text>: <expr> (<file>:<line>)"). Out of
// line so that this header needs no fmt and the macros stay small at every call site.
[[noreturn]] void throw_status_error(const char* library, int code, const char* name,
                                     const char* text, const char* expr, const char* file,
                                     int line);

// Checks the launch of a kernel just enqueued (cudaGetLastError). With the environment variable
// LVIT_CUDA_SYNC_DEBUG=1 it also synchronises `stream` (the device when null) and checks again,
// so that an asynchronous fault is reported at the kernel that caused it rather than at some
// later call. The synchronisation is skipped while `stream` is being captured into a CUDA graph
// (synchronising would invalidate the capture). `what` names the kernel in the message.
void after_launch(const char* what, cudaStream_t stream = nullptr);

// Throws lvit::Error(message): for kernel files, which cannot use LVIT_CHECK (fmt's compile-time
// format strings do not build under nvcc).
[[noreturn]] void fail(const std::string& message);

// Throws lvit::Error("<what>: no CUDA kernel for dtype <name>").
[[noreturn]] void unsupported_dtype(const char* what, DType dtype);

// Kernel-time profile (LVIT_CUDA_PROFILE=1): profile_mark records an event on `stream` after
// the work just queued (after_launch calls it; GEMMs call it themselves) and profile_report
// returns the time between consecutive marks summed by name, largest first, and clears them.
// Off, or while the stream is being captured into a graph, profile_mark does nothing.
bool profiling();
void profile_mark(const char* what, cudaStream_t stream);
std::string profile_report();

// Whether LVIT_CUDA_SYNC_DEBUG=1 was set (read once, at the first call).
bool sync_debug();

}  // namespace lvit::cuda

// One generator for every library's status codes (as ggml's CUDA_CHECK_GEN): `expr` is
// evaluated once; anything but `success` throws with the library's own name and text for it.
#define LVIT_CUDA_CHECK_GEN(library, expr, success, name_fn, text_fn)                       \
  do {                                                                                      \
    const auto lvit_status_ = (expr);                                                       \
    if (lvit_status_ != (success)) [[unlikely]]                                             \
      ::lvit::cuda::throw_status_error(library, static_cast<int>(lvit_status_),             \
                                       name_fn(lvit_status_), text_fn(lvit_status_), #expr, \
                                       __FILE__, __LINE__);                                 \
  } while (0)

#define LVIT_CUDA_CHECK(expr) \
  LVIT_CUDA_CHECK_GEN("CUDA", expr, cudaSuccess, cudaGetErrorName, cudaGetErrorString)
// cuBLASLt returns cublasStatus_t as well, so this macro covers both cuBLAS and cuBLASLt.
#define LVIT_CUBLAS_CHECK(expr)                                                   \
  LVIT_CUDA_CHECK_GEN("cuBLAS", expr, CUBLAS_STATUS_SUCCESS, cublasGetStatusName, \
                      cublasGetStatusString)
