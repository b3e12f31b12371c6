#include "ops/autocast.h"

#include <unordered_map>

#include "ops/dispatch.h"
#include "ops/elementwise.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/optim.cuh"
#endif

namespace lvit::ops {

namespace {
thread_local DType g_autocast = DType::f32;
// parameter data pointer -> its bf16 copy (while an AutocastParamCopies is alive)
thread_local std::unordered_map<const void*, Tensor>* g_param_copies = nullptr;
}  // namespace

AutocastParamCopies::AutocastParamCopies(const std::vector<Tensor>& params) {
  if (g_autocast != DType::bf16 || g_param_copies) return;
#ifdef LVIT_WITH_CUDA
  std::vector<const Tensor*> cast;
  int64_t total = 0;
  // Each copy starts on a 128-byte boundary of one buffer (the GEMMs' vector loads).
  auto padded = [](int64_t n) { return (n + 63) / 64 * 64; };
  for (const Tensor& p : params)
    if (p.dtype() == DType::f32 && p.device().is_cuda() && p.is_contiguous() && p.numel() > 0) {
      cast.push_back(&p);
      total += padded(p.numel());
    }
  if (cast.empty()) return;
  const Tensor buffer = Tensor::empty({total}, DType::bf16, cast[0]->device());
  auto copies = std::make_unique<std::unordered_map<const void*, Tensor>>();
  std::vector<cuda::CastPair> pairs;
  int64_t offset = 0;
  for (const Tensor* p : cast) {
    LVIT_CHECK(p->device() == buffer.device(), "AutocastParamCopies: parameters on two devices");
    Tensor copy = buffer.as_strided(p->shape(), contiguous_strides(p->shape()), offset);
    pairs.push_back({p->data<float>(), copy.raw_data(), p->numel()});
    copies->emplace(p->raw_data(), std::move(copy));
    offset += padded(p->numel());
  }
  cuda::cast_to_bf16_many(pairs, cuda_stream(buffer));
  g_param_copies = copies.release();
  owner_ = true;
#else
  (void)params;
#endif
}

AutocastParamCopies::~AutocastParamCopies() {
  if (!owner_) return;
  delete g_param_copies;
  g_param_copies = nullptr;
}

Tensor autocast_param(const Tensor& w, DType dtype) {
  if (w.dtype() == dtype) return w;
  if (dtype == DType::bf16 && g_param_copies) {
    const auto it = g_param_copies->find(w.raw_data());
    if (it != g_param_copies->end() && it->second.shape() == w.shape()) return it->second;
  }
  return w.to(dtype);
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
