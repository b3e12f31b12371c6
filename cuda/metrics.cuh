// Training metrics kept on the device, so that a training step never waits for the host.
// Host-only header.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace lvit::cuda {

// *count += the number of rows of logits [B, C] (f32 or bf16) whose label (i32 or i64,
// `label_dtype`) is the top-1 class, with ties going to the lower index (as ops::topk_correct).
// `count` is one device int64; integer atomics keep the result exact and order-independent.
void add_top1_correct(DType dtype, const void* logits, const void* labels, DType label_dtype,
                      int64_t B, int64_t C, int64_t* count, cudaStream_t stream);

}  // namespace lvit::cuda
