// Caching device allocator: the storage allocator for CUDA tensors. Host-only header.
//
// cudaMalloc/cudaFree are slow and cudaFree synchronises the whole device, so freed blocks are
// kept in per-size free lists and handed out again (as PyTorch's caching allocator, in its
// simplest form: tinygrad's LRUAllocator). Requests are rounded to buckets, 512 B up to 1 MiB
// and 2 MiB above, so that a block freed by one step fits the same request in the next.
//
// Stream safety: a block returned to the cache may still be read or written by kernels queued
// earlier. All lvit work on a device runs on its single context stream (cuda/context.cuh), so
// any later user of the reused block is queued behind those kernels and cannot overtake them:
// handing the block out again without a synchronisation is safe. Code that uses another
// stream must synchronise it (or record an event) before it drops its last tensor handle.
//
// On cudaErrorMemoryAllocation every cached block is released (cudaFree) and the request is
// tried once more; if that fails too, lvit::Error names the request and the current and peak
// usage.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/storage.h"

namespace lvit::cuda {

struct AllocatorStats {
  size_t current_bytes = 0;  // in live blocks (bucket-rounded sizes)
  size_t peak_bytes = 0;     // high-water mark of current_bytes since start or reset_peak
  size_t cached_bytes = 0;   // in free blocks held for reuse
  int64_t allocs = 0;        // successful non-empty allocate() calls
  int64_t cache_hits = 0;    // of those, served from the cache without cudaMalloc
};

// The allocator of `device_index`, created on first use; throws lvit::Error when that device
// does not exist (or there is no GPU at all).
Allocator* caching_allocator(int device_index);

AllocatorStats allocator_stats(int device);
// Sets peak_bytes to current_bytes.
void reset_peak(int device);
// cudaFree of every cached block of the device (e.g. before handing memory to another library).
void empty_cache(int device);

// The CUDA graph pool. While active (during a capture, see cuda/graph.cuh), every block handed
// out joins the graph's pool: a graph replays its kernels on the very addresses it captured, so
// those blocks must never serve a tensor outside the graph. Freed pool blocks are kept for later
// captures only; release_graph_pool (when the graph is destroyed) returns them to the cache.
void set_graph_pool_active(int device, bool on);
void release_graph_pool(int device);

// Poisoning: while on, every block handed out (new or from the cache) is first filled with
// 0xFF bytes (NaN for floating dtypes), so that an op which leaves part of its output unwritten
// fails its test. Off by default; LVIT_CUDA_POISON=1 turns it on at start-up.
void set_poison(bool on);

// The bucket a request of `nbytes` is served from (exposed for tests).
size_t round_allocation(size_t nbytes);

}  // namespace lvit::cuda
