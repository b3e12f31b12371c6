// CUDA graphs: capture a stretch of work queued on a device's context stream once, then replay
// it with one launch. Host-only header.
//
// What a replay repeats exactly: every kernel with the arguments it had at capture (pointers,
// sizes, scalars). So whatever changes between replays must live in device memory that the
// host rewrites before each replay: the training step's input batch (copied into the same
// tensors), the optimizer's learning-rate scalars (models/optim/optimizer.h: prepare), and the
// dropout stream, moved on through Context::philox_shift. Blocks the capture allocates belong to
// the graph's pool for the graph's lifetime (cuda/allocator.cuh), so no other tensor ever
// shares an address the replays write.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace lvit::cuda {

class Graph {
 public:
  explicit Graph(int device);
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Starts capturing the device's context stream (relaxed mode: other threads may still
  // allocate). Everything queued until end_capture() is recorded, not run.
  void begin_capture();
  // Ends the capture and instantiates the graph. Throws lvit::Error if the capture was
  // invalidated (e.g. by a synchronisation inside it).
  void end_capture();
  // Ends a capture that failed half-way (after an exception), leaving the stream usable.
  void abort_capture();
  // Queues one replay on the context stream.
  void replay();
  bool ready() const { return exec_ != nullptr; }

 private:
  int device_;
  bool capturing_ = false;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

// Sets the device's dropout offset shift (Context::philox_shift) to `shift`, queued on the
// context stream: masks drawn by replayed kernels use offset + shift.
void set_philox_shift(int device, uint64_t shift);

}  // namespace lvit::cuda
