#include "ops/attention.h"

#include <cstdint>

#include "autograd/engine.h"
#include "ops/cpu/attention.h"
#include "ops/dispatch.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/attention.cuh"
#endif

namespace lvit::ops {

namespace {
void check_qkv(const Tensor& qkv, int64_t heads, const char* op) {
  LVIT_CHECK(qkv.dim() == 3 && qkv.shape()[2] % 3 == 0, "{}: qkv {} must be [B, N, 3D]", op,
             shape_str(qkv.shape()));
  LVIT_CHECK(heads > 0 && (qkv.shape()[2] / 3) % heads == 0, "{}: {} heads do not divide D = {}",
             op, heads, qkv.shape()[2] / 3);
}

#ifdef LVIT_WITH_CUDA
// A contiguous tensor whose data starts on a 16-byte boundary (the bf16 kernels move 16-byte
// vectors); fresh allocations always do, a view with an offset may not and is then copied.
Tensor packed(const Tensor& t) {
  Tensor c = t.contiguous();
  if (reinterpret_cast<uintptr_t>(c.raw_data()) % 16 != 0) c = c.clone();
  return c;
}

// The CUDA path: flash-style kernels (cuda/attention.cuh) that never build the N x N
// probabilities; the node saves qkv, out and the per-row logsumexp [B, H, N] (f32).
Tensor softmax_attention_cuda(const Tensor& qkv_in, int64_t heads) {
  const int64_t B = qkv_in.shape()[0], N = qkv_in.shape()[1], D = qkv_in.shape()[2] / 3;
  const int64_t d = D / heads;
  LVIT_CHECK(cuda::attention_dtype_supported(qkv_in.dtype()),
             "softmax_attention: CUDA kernels take f32 or bf16 tensors, got {}",
             dtype_name(qkv_in.dtype()));
  LVIT_CHECK(cuda::attention_head_dim_supported(d),
             "softmax_attention: head dim {} (D = {}, {} heads) has no CUDA kernel; supported: 8, "
             "16, 32, 64, 128",
             d, D, heads);
  LVIT_CHECK(B * heads * N < (int64_t{1} << 31),
             "softmax_attention: qkv {} is too large for the CUDA kernels",
             shape_str(qkv_in.shape()));
  const cuda::AttentionDims dims{B, N, heads, d};
  Tensor qkv = packed(qkv_in);
  Tensor out = Tensor::empty({B, N, D}, qkv.dtype(), qkv.device());
  Tensor lse = Tensor::empty({B, heads, N}, DType::f32, qkv.device());
  cuda::attention_fwd(qkv.dtype(), qkv.raw_data(), out.raw_data(), lse.data<float>(), dims,
                      cuda_stream(qkv));
  autograd::record(
      out, {qkv_in}, "SoftmaxAttentionBackward",
      [qkv = qkv.detach(), out = out.detach(), lse, dims](const Tensor& g, const autograd::Node&) {
        Tensor go = packed(g.dtype() == qkv.dtype() ? g : g.to(qkv.dtype()));
        Tensor gqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
        // Per-row scratch of the streaming kernels; the one-CTA-per-head kernels (bf16, short
        // sequences) keep it on chip and get none.
        const bool small = !cuda::attention_bwd_needs_delta(qkv.dtype(), dims);
        Tensor delta = small ? Tensor() : Tensor::empty(lse.shape(), DType::f32, qkv.device());
        cuda::attention_bwd(qkv.dtype(), go.raw_data(), qkv.raw_data(), out.raw_data(),
                            lse.data<float>(), small ? nullptr : delta.data<float>(),
                            gqkv.raw_data(), dims, cuda_stream(qkv));
        return std::vector<Tensor>{gqkv};
      });
  return out;
}
#endif
}  // namespace

Tensor softmax_attention(const Tensor& qkv_in, int64_t heads) {
  check_qkv(qkv_in, heads, "softmax_attention");
  if (on_cuda("softmax_attention", {qkv_in})) {
#ifdef LVIT_WITH_CUDA
    return softmax_attention_cuda(qkv_in, heads);
#endif
  }
  Tensor qkv = qkv_in.contiguous();
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3;
  Tensor out = Tensor::empty({B, N, D}, qkv.dtype(), qkv.device());
  Tensor probs = Tensor::empty({B, heads, N, N}, qkv.dtype(), qkv.device());
  cpu::softmax_attention_fwd(qkv, heads, out, probs);
  autograd::record(out, {qkv_in}, "SoftmaxAttentionBackward",
                   [qkv = qkv.detach(), out = out.detach(), probs, heads](const Tensor& g,
                                                                          const autograd::Node&) {
                     Tensor gqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
                     cpu::softmax_attention_bwd(g.contiguous(), qkv, out, probs, heads, gqkv);
                     return std::vector<Tensor>{gqkv};
                   });
  return out;
}

}  // namespace lvit::ops
