// Hydra attention op: checks and the autograd node around the CPU kernels (ops/cpu/hydra.cpp)
// and the CUDA kernels (cuda/hydra.cu, f32 only).
#include "ops/hydra.h"

#include "autograd/engine.h"
#include "ops/cpu/hydra.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/hydra.cuh"
#endif

namespace lvit::ops {

Tensor hydra_attention(const Tensor& qkv_in, int64_t branches) {
  const bool gpu = on_cuda("hydra_attention", {qkv_in});
  // Mixed precision: the kernels are f32 (the op is memory-bound and tiny next to the GEMMs), so
  // bf16 activations are widened around them.
  if (gpu && qkv_in.dtype() == DType::bf16)
    return cast(hydra_attention(cast(qkv_in, DType::f32), branches), DType::bf16);
  LVIT_CHECK(qkv_in.dim() == 3 && qkv_in.shape()[2] % 3 == 0,
             "hydra_attention: qkv {} must be [B, N, 3D]", shape_str(qkv_in.shape()));
  const int64_t B = qkv_in.shape()[0], N = qkv_in.shape()[1], D = qkv_in.shape()[2] / 3;
  LVIT_USER_CHECK(branches >= 1 && D % branches == 0,
                  "hydra attention: {} branches do not divide the width D = {}", branches, D);
  LVIT_USER_CHECK(!gpu || qkv_in.dtype() == DType::f32,
                  "hydra attention on CUDA supports f32 only, got {} (keep the attention core in "
                  "f32 under mixed precision)",
                  dtype_name(qkv_in.dtype()));
  Tensor qkv = qkv_in.contiguous();
  Tensor out = Tensor::empty({B, N, D}, qkv.dtype(), qkv.device());
  Tensor kv = Tensor::empty({B, D}, qkv.dtype(), qkv.device());
  if (gpu) {
#ifdef LVIT_WITH_CUDA
    Tensor ws = Tensor::empty({cuda::hydra_workspace_floats(B, N, D)}, DType::f32, qkv.device());
    cuda::hydra_fwd(qkv.data<float>(), B, N, D, branches, out.data<float>(), kv.data<float>(),
                    ws.data<float>(), cuda_stream(qkv));
#endif
  } else {
    cpu::hydra_fwd(qkv, branches, out, kv);
  }
  autograd::record(
      out, {qkv_in}, "HydraAttentionBackward",
      [qkv = qkv.detach(), kv, branches, gpu](const Tensor& g_in, const autograd::Node&) {
        const Tensor g = g_in.contiguous();
        Tensor gqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
        if (gpu) {
#ifdef LVIT_WITH_CUDA
          const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3;
          Tensor ws =
              Tensor::empty({cuda::hydra_workspace_floats(B, N, D)}, DType::f32, qkv.device());
          cuda::hydra_bwd(g.data<float>(), qkv.data<float>(), kv.data<float>(), B, N, D, branches,
                          gqkv.data<float>(), ws.data<float>(), cuda_stream(qkv));
#endif
        } else {
          cpu::hydra_bwd(g, qkv, kv, branches, gqkv);
        }
        return std::vector<Tensor>{gqkv};
      });
  return out;
}

}  // namespace lvit::ops
