#include "ops/autocast.h"

#include "ops/elementwise.h"

namespace lvit::ops {

namespace {
thread_local DType g_autocast = DType::f32;
}

DType autocast_dtype() { return g_autocast; }

bool autocast_applies(const Tensor& x) {
  return g_autocast == DType::bf16 && x.dtype() == DType::f32 && x.device().is_cuda();
}

Tensor autocast(const Tensor& x) { return autocast_applies(x) ? cast(x, DType::bf16) : x; }

AutocastGuard::AutocastGuard(DType dtype) : previous_(g_autocast) {
  LVIT_CHECK(dtype == DType::f32 || dtype == DType::bf16, "autocast to {}: only bf16 or f32",
             dtype_name(dtype));
  g_autocast = dtype;
}

AutocastGuard::~AutocastGuard() { g_autocast = previous_; }

}  // namespace lvit::ops
