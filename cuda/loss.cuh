// Softmax cross-entropy with label smoothing or soft targets on the device (the CUDA half of
// ops/loss.cpp). Host-only header; f32 or f64 logits.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace lvit::cuda {

// logits [B, C]. Targets: hard labels [B] (i32 or i64, `label_dtype`) with smoothing s, i.e.
// q = (1 - s) onehot + s / C, or soft rows `targets` [B, C] (labels null). Writes the softmax
// probs [B, C] (saved for the backward) and the mean loss over rows into the device scalar
// `loss`, summed in a fixed order. A label outside [0, C) makes its row's loss NaN (the host
// never sees the labels, so it cannot throw).
void cross_entropy_fwd(DType dtype, const void* logits, const void* labels, DType label_dtype,
                       const void* targets, double smoothing, int64_t B, int64_t C, void* probs,
                       void* loss, cudaStream_t stream);

// glogits = (probs - q) * gloss / B, with gloss the device scalar upstream gradient.
void cross_entropy_bwd(DType dtype, const void* probs, const void* labels, DType label_dtype,
                       const void* targets, double smoothing, const void* gloss, int64_t B,
                       int64_t C, void* glogits, cudaStream_t stream);

}  // namespace lvit::cuda
