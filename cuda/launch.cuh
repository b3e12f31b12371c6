// Helpers for kernel launchers. Host-only header, free of fmt, so .cu files (whose host code
// nvcc compiles, and which cannot include fmt) can report errors through it.
#pragma once
#include <cstddef>
#include <string>

namespace lvit::cuda {

// Throws lvit::Error(what): for launchers that reject their arguments.
[[noreturn]] void throw_launch_error(const std::string& what);

// Lets `kernel` (a __global__ function's address) launch with `bytes` of dynamic shared memory
// on the current device: opts in when bytes exceed 48 KiB (cudaFuncSetAttribute, once per kernel,
// device and larger size; thread-safe), and throws lvit::Error naming `what` when the device's
// per-block limit is lower. Call it before each launch of such a kernel.
void allow_dynamic_smem(const void* kernel, size_t bytes, const char* what);

}  // namespace lvit::cuda
