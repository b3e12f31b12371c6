#include "cuda/graph.cuh"

#include "core/error.h"
#include "cuda/allocator.cuh"
#include "cuda/check.cuh"
#include "cuda/context.cuh"

namespace lvit::cuda {

Graph::Graph(int device) : device_(device) { check_device(device); }

Graph::~Graph() {
  if (capturing_) abort_capture();
  if (exec_) cudaGraphExecDestroy(exec_);
  if (graph_) cudaGraphDestroy(graph_);
  if (graph_ || exec_) {
    // The replays are done with the pool's blocks once the queued ones have run.
    cudaStreamSynchronize(stream(device_));
    release_graph_pool(device_);
  }
}

void Graph::begin_capture() {
  LVIT_CHECK(!capturing_ && !exec_, "CUDA graph: captured twice");
  DeviceGuard guard(device_);
  set_graph_pool_active(device_, true);
  capturing_ = true;
  LVIT_CUDA_CHECK(cudaStreamBeginCapture(stream(device_), cudaStreamCaptureModeRelaxed));
}

void Graph::end_capture() {
  LVIT_CHECK(capturing_, "CUDA graph: end_capture without begin_capture");
  DeviceGuard guard(device_);
  capturing_ = false;
  set_graph_pool_active(device_, false);
  LVIT_CUDA_CHECK(cudaStreamEndCapture(stream(device_), &graph_));
  LVIT_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
}

void Graph::abort_capture() {
  if (!capturing_) return;
  capturing_ = false;
  set_graph_pool_active(device_, false);
  cudaGraph_t g = nullptr;
  if (cudaStreamEndCapture(stream(device_), &g) == cudaSuccess && g) cudaGraphDestroy(g);
  (void)cudaGetLastError();
}

void Graph::replay() {
  LVIT_CHECK(exec_, "CUDA graph: replay before capture");
  LVIT_CUDA_CHECK(cudaGraphLaunch(exec_, stream(device_)));
}

void set_philox_shift(int device, uint64_t shift) {
  Context& c = context(device);
  // From pageable memory: the call returns once the value has been staged, so the local may go.
  LVIT_CUDA_CHECK(
      cudaMemcpyAsync(c.philox_shift, &shift, sizeof(shift), cudaMemcpyHostToDevice, c.stream));
}

}  // namespace lvit::cuda
