// Host-side planning of copies that touch a GPU: which side packs, stages or converts, and on
// which stream. The kernels are in cuda/copy.cu.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#include "cuda/copy.cuh"
#include "cuda/pinned.cuh"

namespace lvit::cuda {
namespace {

// Drops size-1 dimensions and merges each dimension into its inner neighbour when both tensors
// step over it contiguously, so that a contiguous copy becomes rank 1 and a transposed one
// rank 2 or 3, whatever the tensor's rank.
CopyLayout make_layout(const Shape& shape, const Shape& dst_strides, const Shape& src_strides) {
  struct Dim {
    int64_t size, ds, ss;
  };
  std::vector<Dim> dims;  // innermost first
  for (int64_t k = static_cast<int64_t>(shape.size()) - 1; k >= 0; --k) {
    if (shape[k] == 1) continue;
    const Dim next{shape[k], dst_strides[k], src_strides[k]};
    if (!dims.empty()) {
      Dim& in = dims.back();
      if (next.ds == in.ds * in.size && next.ss == in.ss * in.size) {
        in.size *= next.size;
        continue;
      }
    }
    dims.push_back(next);
  }
  LVIT_CHECK(dims.size() <= static_cast<size_t>(kMaxCopyRank),
             "CUDA copy: shape {} with strides {} and {} needs {} dimensions (at most {})",
             shape_str(shape), shape_str(dst_strides), shape_str(src_strides), dims.size(),
             kMaxCopyRank);
  CopyLayout l;
  l.rank = static_cast<int>(dims.size());
  for (int k = 0; k < l.rank; ++k) {
    const Dim& d = dims[dims.size() - 1 - k];
    l.shape[k] = d.size;
    l.dst_strides[k] = d.ds;
    l.src_strides[k] = d.ss;
  }
  return l;
}

// Device-side copy between two tensors of one device, on its stream (the caller holds a
// DeviceGuard for that device).
void device_copy(const Tensor& dst, const Tensor& src, cudaStream_t stream) {
  const CopyLayout l = make_layout(dst.shape(), dst.strides(), src.strides());
  if (dst.dtype() == src.dtype() && l.contiguous()) {
    LVIT_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(),
                                    cudaMemcpyDeviceToDevice, stream));
    return;
  }
  launch_copy(dst.raw_data(), dst.dtype(), src.raw_data(), src.dtype(), l, stream);
}

// ---- pinned staging for host -> device ----
//
// cudaMemcpyAsync from pageable memory does not promise that the source has been read when it
// returns, and the synchronous cudaMemcpy runs on the legacy stream, unordered with our
// non-blocking context stream. So host data goes through pinned chunks: copy into a chunk on
// the host, queue the DMA, record an event; a chunk is reused once its event has completed.
// The host never waits for the GPU unless every chunk is still in flight.
constexpr size_t kChunkBytes = size_t{4} << 20;
constexpr size_t kMaxChunks = 16;  // at most 64 MiB of pinned memory per device

class StagingPool {
 public:
  // Copies `nbytes` of host memory to device memory `dst`, queued on `stream`.
  void upload(void* dst, const void* src, size_t nbytes, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t done = 0; done < nbytes; done += kChunkBytes) {
      const size_t n = std::min(kChunkBytes, nbytes - done);
      Chunk& c = acquire();
      std::memcpy(c.ptr, static_cast<const char*>(src) + done, n);
      LVIT_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + done, c.ptr, n,
                                      cudaMemcpyHostToDevice, stream));
      LVIT_CUDA_CHECK(cudaEventRecord(c.done, stream));
      c.used = ++clock_;
    }
  }

 private:
  struct Chunk {
    void* ptr = nullptr;
    cudaEvent_t done = nullptr;
    uint64_t used = 0;  // clock_ at the last upload; 0 = never used
  };

  // A chunk whose last transfer has finished: a free one, a new one while under the limit, or
  // else the least recently used one after waiting for it. Called with mutex_ held and the
  // device current.
  Chunk& acquire() {
    for (Chunk& c : chunks_) {
      if (c.used == 0) return c;
      const cudaError_t e = cudaEventQuery(c.done);
      if (e == cudaSuccess) return c;
      if (e != cudaErrorNotReady)
        throw_status_error("CUDA", static_cast<int>(e), cudaGetErrorName(e), cudaGetErrorString(e),
                           "cudaEventQuery(staging chunk)", __FILE__, __LINE__);
      (void)cudaGetLastError();  // cudaErrorNotReady is not a failure; do not leave it behind
    }
    if (chunks_.size() < kMaxChunks) {
      Chunk c;
      LVIT_CUDA_CHECK(cudaMallocHost(&c.ptr, kChunkBytes));
      LVIT_CUDA_CHECK(cudaEventCreateWithFlags(&c.done, cudaEventDisableTiming));
      chunks_.push_back(c);
      return chunks_.back();
    }
    Chunk& oldest =
        *std::min_element(chunks_.begin(), chunks_.end(),
                          [](const Chunk& a, const Chunk& b) { return a.used < b.used; });
    LVIT_CUDA_CHECK(cudaEventSynchronize(oldest.done));
    return oldest;
  }

  std::mutex mutex_;
  std::vector<Chunk> chunks_;  // reserve-free growth is fine: references do not outlive a call
  uint64_t clock_ = 0;
};

// Never destroyed, like the contexts (pinned memory is released at process exit).
std::array<std::atomic<StagingPool*>, 64> g_pools{};
std::mutex g_pools_mutex;

StagingPool& staging(int device) {
  StagingPool* p = g_pools[device].load(std::memory_order_acquire);
  if (p) return *p;
  std::lock_guard<std::mutex> lock(g_pools_mutex);
  p = g_pools[device].load(std::memory_order_relaxed);
  if (!p) {
    p = new StagingPool();
    g_pools[device].store(p, std::memory_order_release);
  }
  return *p;
}

void host_to_device(const Tensor& dst, const Tensor& src) {
  const int dev = dst.device().index;
  Context& ctx = context(dev);
  DeviceGuard guard(dev);
  if (is_pinned(*src.storage()) && src.is_contiguous() && dst.dtype() == src.dtype() &&
      dst.is_contiguous()) {  // DMA straight from the source
    LVIT_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(),
                                    cudaMemcpyHostToDevice, ctx.stream));
    keep_until_done(src.storage(), ctx.stream);
    return;
  }
  // The host packs a strided source; the device converts and scatters.
  const Tensor packed = src.contiguous();
  if (dst.dtype() == src.dtype() && dst.is_contiguous()) {
    staging(dev).upload(dst.raw_data(), packed.raw_data(), packed.nbytes(), ctx.stream);
    return;
  }
  // Freed right after the kernel is queued: safe, see cuda/allocator.cuh.
  const Tensor tmp = Tensor::empty(src.shape(), src.dtype(), dst.device());
  staging(dev).upload(tmp.raw_data(), packed.raw_data(), packed.nbytes(), ctx.stream);
  device_copy(dst, tmp, ctx.stream);
}

void device_to_host(const Tensor& dst, const Tensor& src) {
  const int dev = src.device().index;
  Context& ctx = context(dev);
  DeviceGuard guard(dev);
  // The device converts and packs; the host scatters into a strided destination.
  Tensor packed = src;
  if (src.dtype() != dst.dtype() || !src.is_contiguous()) {
    packed = Tensor::empty(src.shape(), dst.dtype(), src.device());
    device_copy(packed, src, ctx.stream);
  }
  Tensor host = dst.is_contiguous() ? dst : Tensor::empty(dst.shape(), dst.dtype());
  // Pageable destination: the copy is complete once the stream is synchronised.
  LVIT_CUDA_CHECK(cudaMemcpyAsync(host.raw_data(), packed.raw_data(), packed.nbytes(),
                                  cudaMemcpyDeviceToHost, ctx.stream));
  LVIT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  if (host.raw_data() != dst.raw_data()) {
    Tensor d = dst;
    d.copy_(host);  // host -> host strided copy
  }
}

// Between two GPUs: pack on the source device, copy peer to peer (cudaMemcpyPeerAsync stages
// through the host where the devices have no peer access), convert on the destination. Events
// order the two streams both ways: the peer copy waits for the producer of src, and the source
// stream waits for the peer copy before it may reuse the source blocks.
void device_to_device_peer(const Tensor& dst, const Tensor& src) {
  const int sdev = src.device().index, ddev = dst.device().index;
  Context& sctx = context(sdev);
  Context& dctx = context(ddev);
  Tensor packed = src;
  cudaEvent_t src_ready = nullptr, copied = nullptr;
  {
    DeviceGuard guard(sdev);
    if (!src.is_contiguous()) {
      packed = Tensor::empty(src.shape(), src.dtype(), src.device());
      device_copy(packed, src, sctx.stream);
    }
    LVIT_CUDA_CHECK(cudaEventCreateWithFlags(&src_ready, cudaEventDisableTiming));
    LVIT_CUDA_CHECK(cudaEventRecord(src_ready, sctx.stream));
  }
  {
    DeviceGuard guard(ddev);
    const bool direct = dst.dtype() == src.dtype() && dst.is_contiguous();
    const Tensor landing = direct ? dst : Tensor::empty(src.shape(), src.dtype(), dst.device());
    LVIT_CUDA_CHECK(cudaStreamWaitEvent(dctx.stream, src_ready, 0));
    LVIT_CUDA_CHECK(cudaMemcpyPeerAsync(landing.raw_data(), ddev, packed.raw_data(), sdev,
                                        packed.nbytes(), dctx.stream));
    LVIT_CUDA_CHECK(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
    LVIT_CUDA_CHECK(cudaEventRecord(copied, dctx.stream));
    if (!direct) device_copy(dst, landing, dctx.stream);
  }
  {
    DeviceGuard guard(sdev);
    LVIT_CUDA_CHECK(cudaStreamWaitEvent(sctx.stream, copied, 0));
  }
  // Destroying a recorded event is fine: its resources go once the work it marks completes.
  LVIT_CUDA_CHECK(cudaEventDestroy(src_ready));
  LVIT_CUDA_CHECK(cudaEventDestroy(copied));
}

}  // namespace

void copy_tensor(Tensor& dst, const Tensor& src) {
  LVIT_CHECK(dst.shape() == src.shape(), "copy_: shape {} from {}", shape_str(dst.shape()),
             shape_str(src.shape()));
  if (dst.numel() == 0) return;
  const Device dd = dst.device(), sd = src.device();
  if (dd.is_cpu() && sd.is_cpu()) {
    dst.copy_(src);
  } else if (dd.is_cuda() && sd.is_cpu()) {
    host_to_device(dst, src);
  } else if (dd.is_cpu()) {
    device_to_host(dst, src);
  } else if (dd.index == sd.index) {
    Context& ctx = context(dd.index);
    DeviceGuard guard(dd.index);
    device_copy(dst, src, ctx.stream);
  } else {
    device_to_device_peer(dst, src);
  }
}

void fill_tensor(Tensor& t, double value) {
  LVIT_CHECK(t.device().is_cuda(), "fill_tensor on a {} tensor", t.device().str());
  if (t.numel() == 0) return;
  // The element's bits as the host would store them (same conversion rules as host fill_).
  const Tensor one = Tensor::full({}, value, t.dtype());
  const size_t es = dtype_size(t.dtype());
  uint64_t bits = 0;
  std::memcpy(&bits, one.raw_data(), es);  // little endian: the low bytes
  const int dev = t.device().index;
  Context& ctx = context(dev);
  DeviceGuard guard(dev);
  const CopyLayout l = make_layout(t.shape(), t.strides(), t.strides());
  bool bytes_equal = true;  // a pattern of one repeated byte (0, any u8) is a cudaMemset
  for (size_t b = 1; b < es; ++b) bytes_equal &= ((bits >> (8 * b)) & 0xff) == (bits & 0xff);
  if (l.contiguous() && bytes_equal) {
    LVIT_CUDA_CHECK(
        cudaMemsetAsync(t.raw_data(), static_cast<int>(bits & 0xff), t.nbytes(), ctx.stream));
    return;
  }
  launch_fill(t.raw_data(), es, bits, l, ctx.stream);
}

}  // namespace lvit::cuda
