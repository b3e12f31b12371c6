// Pinned (page-locked) host memory for uploads: an Allocator for host tensors whose memory the
// GPU can read by DMA, so that a host -> device copy from it is one cudaMemcpyAsync with no
// staging (cuda/copy.cuh). Host-only header; it needs no CUDA headers, so the apps and the
// loader's users may name the allocator without including the runtime API.
//
// cudaHostAlloc is slow (it maps and locks pages) and cudaFreeHost synchronises the device, so
// freed blocks are kept per size and handed out again (the loader asks for the same batch size
// every time). A block a pending upload still reads is not freed: the copy keeps its storage
// alive until the upload has completed (keep_until_done).
#pragma once
#include <memory>

#include "core/storage.h"

namespace lvit::cuda {

// The pinned host allocator for uploads to `device` (one per device, never destroyed; it
// allocates with that device current). Throws lvit::Error for a device that does not exist.
Allocator* pinned_allocator(int device);

// Whether `storage` came from a pinned_allocator().
bool is_pinned(const Storage& storage);

}  // namespace lvit::cuda
