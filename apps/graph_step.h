// A training step run as a CUDA graph: captured once, then replayed with one launch per step,
// so the host's per-op work (autograd bookkeeping, ~1,000 kernel launches) leaves the step's
// critical path. See cuda/graph.cuh for what a replay may and may not change.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace lvit::app {

class GraphStep {
 public:
  using Body = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

  // `dropout_gen`: the generator whose offsets the step's dropout masks reserve; replays move it
  // on by as many offsets as the captured step reserved.
  GraphStep(Device device, Generator& dropout_gen);
  ~GraphStep();
  GraphStep(const GraphStep&) = delete;
  GraphStep& operator=(const GraphStep&) = delete;

  // One step. `inputs` (host or device tensors of fixed shapes and dtypes) are copied into the
  // step's own device tensors; `prepare` runs on the host before the step (it may only write
  // device memory the body reads, e.g. the optimizer's scalars); `body` queues the step on the
  // device and returns its outputs. The first call captures body and replays it; later calls
  // only replay, and return the same output tensors, rewritten. Inputs of another shape throw.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs, const std::function<void()>& prepare,
                          const Body& body);

 private:
  Device device_;
  Generator& gen_;
  std::shared_ptr<void> graph_;  // cuda::Graph (opaque here: no CUDA headers in the apps)
  std::vector<Tensor> inputs_, outputs_;
  uint64_t capture_offset_ = 0;  // the generator's offset when the step was captured
  uint64_t offsets_per_step_ = 0;
};

}  // namespace lvit::app
