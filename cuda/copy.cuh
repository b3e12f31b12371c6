// Copies between host and device tensors, dtype conversion and fill on the device.
// Host-only header: core/tensor.cpp calls copy_tensor/fill_tensor for every copy_/fill_ that
// touches a CUDA tensor.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/dtype.h"
#include "core/storage.h"

namespace lvit {
class Tensor;
}

namespace lvit::cuda {

// dst = src elementwise, for equal shapes, any strides, any of the dtypes (converted as the
// host does: through double, bf16 rounded to nearest even), and any pair of devices of which
// at least one is a GPU. Device-side conversions and strided gathers/scatters run as kernels
// on the context stream. Ordering with the host:
//  - host -> device returns as soon as the source has been copied into pinned staging memory,
//    so the caller may change or free the source at once; the transfer itself stays queued.
//    A contiguous source in pinned memory (cuda/pinned.cuh) of the destination's dtype skips
//    the staging: one cudaMemcpyAsync straight from it, which keeps its storage alive until the
//    copy is done; the caller must not write the source until the stream has passed the copy;
//  - device -> host returns when the data has arrived in `dst` (it synchronises the stream);
//  - device -> device is queued and returns at once.
// Overlapping src and dst (a copy between two views of one storage) is not supported.
void copy_tensor(Tensor& dst, const Tensor& src);

// Keeps `storage` (pinned host memory that an upload queued on `stream` reads) alive until the
// work queued on `stream` so far has completed, so that its block is not reused under the DMA.
// (cuda/pinned.cpp)
void keep_until_done(std::shared_ptr<Storage> storage, cudaStream_t stream);

// Every element of the CUDA tensor `t` (any strides, any dtype) set to `value`, converted as
// the host converts it. Queued on the context stream.
void fill_tensor(Tensor& t, double value);

// ---- launchers (cuda/copy.cu) -------------------------------------------------------------

inline constexpr int kMaxCopyRank = 8;

// The iteration space of a copy: a shape (outermost first) and the strides, in elements, of
// the destination and the source over it. copy.cpp merges dimensions that are contiguous in
// both tensors before launching, so a rank above kMaxCopyRank only remains for layouts that
// cannot be merged. rank 0 means one element; rank 1 with unit strides means contiguous.
struct CopyLayout {
  int rank = 0;
  int64_t shape[kMaxCopyRank] = {};
  int64_t dst_strides[kMaxCopyRank] = {};
  int64_t src_strides[kMaxCopyRank] = {};

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  bool contiguous() const {
    return rank == 0 || (rank == 1 && dst_strides[0] == 1 && src_strides[0] == 1);
  }
};

// dst[layout] = convert(src[layout]). `dst` and `src` point at the first element of each view
// (device memory of the current device). Same-dtype copies move the bits unchanged.
void launch_copy(void* dst, DType dst_dtype, const void* src, DType src_dtype,
                 const CopyLayout& layout, cudaStream_t stream);

// dst[layout] = the element whose `elem_size` (1, 2, 4 or 8) bytes are the low bytes of
// `bits`. Only the layout's dst_strides are used.
void launch_fill(void* dst, size_t elem_size, uint64_t bits, const CopyLayout& layout,
                 cudaStream_t stream);

}  // namespace lvit::cuda
