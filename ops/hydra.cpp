// Hydra attention op: checks and the autograd node around the CPU kernels (ops/cpu/hydra.cpp)
// and the CUDA kernels (cuda/hydra.cu: f32 or bf16 activations, f32 arithmetic).
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
  LVIT_CHECK(qkv_in.dim() == 3 && qkv_in.shape()[2] % 3 == 0,
             "hydra_attention: qkv {} must be [B, N, 3D]", shape_str(qkv_in.shape()));
  const int64_t B = qkv_in.shape()[0], N = qkv_in.shape()[1], D = qkv_in.shape()[2] / 3;
  LVIT_USER_CHECK(branches >= 1 && D % branches == 0,
                  "hydra attention: {} branches do not divide the width D = {}", branches, D);
  LVIT_USER_CHECK(!gpu || qkv_in.dtype() == DType::f32 || qkv_in.dtype() == DType::bf16,
                  "hydra attention on CUDA supports f32 and bf16, got {}",
                  dtype_name(qkv_in.dtype()));
  Tensor qkv = qkv_in.contiguous();
  Tensor out = Tensor::empty({B, N, D}, qkv.dtype(), qkv.device());
  // kv [B, D] is the f32 accumulator on the GPU whatever the activations' dtype.
  Tensor kv = Tensor::empty({B, D}, gpu ? DType::f32 : qkv.dtype(), qkv.device());
  if (gpu) {
#ifdef LVIT_WITH_CUDA
    Tensor ws = Tensor::empty({cuda::hydra_workspace_floats(B, N, D)}, DType::f32, qkv.device());
    cuda::hydra_fwd(qkv.dtype(), qkv.raw_data(), B, N, D, branches, out.raw_data(),
                    kv.data<float>(), ws.data<float>(), cuda_stream(qkv));
#endif
  } else {
    cpu::hydra_fwd(qkv, branches, out, kv);
  }
  autograd::record(
      out, {qkv_in}, "HydraAttentionBackward",
      [qkv = qkv.detach(), kv, branches, gpu](const Tensor& g_in, const autograd::Node&) {
        const Tensor g = g_in.dtype() == qkv.dtype() ? g_in.contiguous() : cast(g_in, qkv.dtype());
        Tensor gqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
        if (gpu) {
#ifdef LVIT_WITH_CUDA
          const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3;
          Tensor ws =
              Tensor::empty({cuda::hydra_workspace_floats(B, N, D)}, DType::f32, qkv.device());
          cuda::hydra_bwd(qkv.dtype(), g.raw_data(), qkv.raw_data(), kv.data<float>(), B, N, D,
                          branches, gqkv.raw_data(), ws.data<float>(), cuda_stream(qkv));
#endif
        } else {
          cpu::hydra_bwd(g, qkv, kv, branches, gqkv);
        }
        return std::vector<Tensor>{gqkv};
      });
  return out;
}

}  // namespace lvit::ops
