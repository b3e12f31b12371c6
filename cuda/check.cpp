#include "cuda/check.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

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

namespace {

// LVIT_CUDA_PROFILE=1: an event after every launch; the time between consecutive events of a
// stream is charged to the kernel(s) launched between them, by name.
struct Profile {
  std::mutex mu;
  std::vector<std::pair<std::string, cudaEvent_t>> marks;
};
Profile& profile() {
  static Profile p;
  return p;
}

}  // namespace

bool profiling() {
  static const bool on = [] {
    const char* v = std::getenv("LVIT_CUDA_PROFILE");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

void profile_mark(const char* what, cudaStream_t stream) {
  if (!profiling()) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (stream) LVIT_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  cudaEvent_t ev = nullptr;
  LVIT_CUDA_CHECK(cudaEventCreate(&ev));
  LVIT_CUDA_CHECK(cudaEventRecord(ev, stream));
  std::lock_guard<std::mutex> lock(profile().mu);
  profile().marks.emplace_back(what, ev);
}

std::string profile_report() {
  Profile& p = profile();
  std::lock_guard<std::mutex> lock(p.mu);
  if (p.marks.empty()) return "";
  LVIT_CUDA_CHECK(cudaEventSynchronize(p.marks.back().second));
  std::map<std::string, std::pair<double, int64_t>> by_name;  // ms, count
  double total = 0;
  for (size_t i = 1; i < p.marks.size(); ++i) {
    float ms = 0;
    LVIT_CUDA_CHECK(cudaEventElapsedTime(&ms, p.marks[i - 1].second, p.marks[i].second));
    auto& [t, n] = by_name[p.marks[i].first];
    t += ms;
    ++n;
    total += ms;
  }
  std::vector<std::pair<double, std::string>> rows;
  for (auto& [name, tn] : by_name) rows.emplace_back(tn.first, name);
  std::sort(rows.rbegin(), rows.rend());
  std::string out = fmt::format("{:<32} {:>10} {:>7} {:>8}\n", "kernel", "ms", "%", "calls");
  for (auto& [t, name] : rows)
    out += fmt::format("{:<32} {:>10.3f} {:>6.1f}% {:>8}\n", name, t, 100.0 * t / total,
                       by_name[name].second);
  for (auto& [n, ev] : p.marks) cudaEventDestroy(ev);
  p.marks.clear();
  return out;
}

void after_launch(const char* what, cudaStream_t stream) {
  // cudaGetLastError also clears a non-sticky error, so a failed launch is reported once.
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) [[unlikely]]
    throw_launch_error(e, what, "launching");
  profile_mark(what, stream);
  if (!sync_debug()) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (stream) LVIT_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  e = stream ? cudaStreamSynchronize(stream) : cudaDeviceSynchronize();
  if (e != cudaSuccess) [[unlikely]]
    throw_launch_error(e, what, "running (LVIT_CUDA_SYNC_DEBUG)");
}

}  // namespace lvit::cuda
