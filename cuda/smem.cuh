// Dynamic shared memory above the default 48 KiB for kernels that need it. Host-only header.
#pragma once
#include <cstddef>

namespace lvit::cuda {

// Lets `kernel` (a __global__ function's address) launch with `bytes` of dynamic shared memory
// on the current device: opts in when bytes exceed 48 KiB (cudaFuncSetAttribute, once per kernel,
// device and larger size; thread-safe), and throws lvit::Error naming `what` when the device's
// per-block limit is lower. Call it before each launch of such a kernel.
void allow_dynamic_smem(const void* kernel, size_t bytes, const char* what);

}  // namespace lvit::cuda
