#include "apps/graph_step.h"

#include "core/error.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/graph.cuh"
#endif

namespace lvit::app {

GraphStep::GraphStep(Device device, Generator& dropout_gen) : device_(device), gen_(dropout_gen) {
  LVIT_CHECK(device.is_cuda(), "CUDA graphs need a CUDA device, not {}", device.str());
}

GraphStep::~GraphStep() {
#ifdef LVIT_WITH_CUDA
  // Eager dropout after the graph is gone must draw unshifted offsets again.
  if (graph_) {
    try {
      cuda::set_philox_shift(device_.index, 0);
    } catch (...) {  // a destructor must not throw; a broken device reports itself elsewhere
    }
  }
#endif
}

std::vector<Tensor> GraphStep::run(const std::vector<Tensor>& inputs,
                                   const std::function<void()>& prepare, const Body& body) {
#ifdef LVIT_WITH_CUDA
  if (!graph_) {
    // The step's own tensors: one copy each, whichever device the caller's input is on.
    for (const Tensor& t : inputs) {
      inputs_.push_back(Tensor::empty(t.shape(), t.dtype(), device_));
      inputs_.back().copy_(t);
    }
    prepare();
    auto graph = std::make_shared<cuda::Graph>(device_.index);
    cuda::set_philox_shift(device_.index, 0);
    capture_offset_ = gen_.offset();
    graph->begin_capture();
    try {
      outputs_ = body(inputs_);
      graph->end_capture();
    } catch (...) {
      graph->abort_capture();
      throw;
    }
    offsets_per_step_ = gen_.offset() - capture_offset_;
    graph_ = graph;
    // The capture recorded the step without running it: this replay is the step.
    graph->replay();
    return outputs_;
  }
  LVIT_CHECK(inputs.size() == inputs_.size(), "CUDA graph step: {} inputs, captured with {}",
             inputs.size(), inputs_.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    LVIT_CHECK(inputs[i].shape() == inputs_[i].shape() && inputs[i].dtype() == inputs_[i].dtype(),
               "CUDA graph step: input {} is {} {}, captured as {} {} (static shapes only)", i,
               dtype_name(inputs[i].dtype()), shape_str(inputs[i].shape()),
               dtype_name(inputs_[i].dtype()), shape_str(inputs_[i].shape()));
    inputs_[i].copy_(inputs[i]);
  }
  prepare();
  // The captured kernels carry the offsets of the capture; shift them to where the generator
  // stands now, and reserve this step's offsets as the eager step would have.
  cuda::set_philox_shift(device_.index, gen_.offset() - capture_offset_);
  gen_.set_state(gen_.seed(), gen_.offset() + offsets_per_step_);
  static_cast<cuda::Graph*>(graph_.get())->replay();
  return outputs_;
#else
  (void)inputs;
  (void)prepare;
  (void)body;
  throw Error("CUDA graphs: lvit was built without CUDA");
#endif
}

}  // namespace lvit::app
