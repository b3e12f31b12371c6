#include "ops/dispatch.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/check.cuh"
#include "cuda/context.cuh"
#endif

namespace lvit::ops {

Device check_same(const char* op, std::initializer_list<Tensor> ts) {
  const Tensor* first = nullptr;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
      continue;
    }
    LVIT_CHECK(t.device() == first->device(), "{}: tensors on {} and {}", op, first->device().str(),
               t.device().str());
    LVIT_CHECK(t.dtype() == first->dtype(), "{}: dtypes {} and {}", op, dtype_name(first->dtype()),
               dtype_name(t.dtype()));
  }
  LVIT_CHECK(first, "{}: no defined input", op);
  return first->device();
}

void require_cpu(const char* op, std::initializer_list<Tensor> ts) {
  for (const Tensor& t : ts) {
    if (!t.defined() || t.device().is_cpu()) continue;
#ifdef LVIT_WITH_CUDA
    throw Error(fmt::format("{}: no CUDA kernel for this op yet", op));
#else
    throw Error(fmt::format("{}: lvit was built without CUDA", op));
#endif
  }
}

bool on_cuda(const char* op, std::initializer_list<Tensor> ts) {
  for (const Tensor& t : ts) {
    if (!t.defined() || t.device().is_cpu()) continue;
#ifdef LVIT_WITH_CUDA
    return true;
#else
    throw Error(fmt::format("{}: lvit was built without CUDA", op));
#endif
  }
  return false;
}

#ifdef LVIT_WITH_CUDA
cudaStream_t cuda_stream(const Tensor& t) {
  const int dev = t.device().index;
  // The current device is per thread; the common case (already current) costs one query.
  int current = -1;
  LVIT_CUDA_CHECK(cudaGetDevice(&current));
  if (current != dev) LVIT_CUDA_CHECK(cudaSetDevice(dev));
  return cuda::stream(dev);
}
#endif

}  // namespace lvit::ops
