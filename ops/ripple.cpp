// Ripple attention op: checks, the stage logits -> weights (stick-breaking) map and its
// Jacobian, and the autograd node around the CPU kernels of ops/cpu/ripple.cpp and the CUDA
// kernels (they map logits to weights and back on the device): the linear form of
// cuda/ripple.cu (f32), and on tensor cores in bf16 the dense form of cuda/ripple_small.cu
// (short sequences) and the linear form of cuda/ripple_linear_mma.cu (longer grids).
#include "ops/ripple.h"

#include <cmath>

#include "autograd/engine.h"
#include "ops/cpu/ripple.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/ripple.cuh"
#endif

namespace lvit::ops {

namespace {

double sigmoid(double x) {
  return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x));
}

// sigmoid(beta) [heads * (stages-1)], in f64 whatever the logits' dtype (H (S-1) scalars).
std::vector<double> logit_sigmoids(const Tensor& logits, int64_t heads, int64_t stages) {
  if (stages == 1) return {};
  std::vector<double> beta = logits.to_vector<double>();
  LVIT_CHECK(static_cast<int64_t>(beta.size()) == heads * (stages - 1), "ripple logits size");
  for (double& b : beta) b = sigmoid(b);
  return beta;
}

// alpha_s = sig_s prod_{s'<s} (1 - sig_s'), alpha_{S-1} = prod_{s'<S-1} (1 - sig_s').
std::vector<double> stick_breaking(const std::vector<double>& sig, int64_t heads, int64_t stages) {
  std::vector<double> alpha(heads * stages);
  for (int64_t h = 0; h < heads; ++h) {
    double rem = 1;  // prod_{s'<s} (1 - sig_s')
    for (int64_t s = 0; s + 1 < stages; ++s) {
      const double sg = sig[h * (stages - 1) + s];
      alpha[h * stages + s] = sg * rem;
      rem *= 1 - sg;
    }
    alpha[h * stages + stages - 1] = rem;
  }
  return alpha;
}

// d loss / d beta from d loss / d alpha. d alpha_t / d beta_t = rem_t sig_t (1 - sig_t) (t < S-1);
// for s > t, alpha_s carries the factor (1 - sig_t), so d alpha_s / d beta_t = -sig_t alpha_s;
// for s < t it is 0. Hence g_beta_t = g_alpha_t rem_t sig_t (1 - sig_t) - sig_t sum_{s>t}
// g_alpha_s alpha_s (no division by 1 - sig_t, so saturated logits stay finite).
std::vector<double> stick_breaking_grad(const std::vector<double>& galpha,
                                        const std::vector<double>& sig,
                                        const std::vector<double>& alpha, int64_t heads,
                                        int64_t stages) {
  std::vector<double> gbeta(heads * (stages - 1));
  std::vector<double> rem(stages);
  for (int64_t h = 0; h < heads; ++h) {
    const double* sg = sig.data() + h * (stages - 1);
    const double* ga = galpha.data() + h * stages;
    const double* al = alpha.data() + h * stages;
    rem[0] = 1;  // rem_t = prod_{s'<t} (1 - sig_s')
    for (int64_t t = 1; t < stages; ++t) rem[t] = rem[t - 1] * (1 - sg[t - 1]);
    double tail = ga[stages - 1] * al[stages - 1];  // sum_{s>t} g_alpha_s alpha_s
    for (int64_t t = stages - 2; t >= 0; --t) {
      gbeta[h * (stages - 1) + t] = ga[t] * rem[t] * sg[t] * (1 - sg[t]) - sg[t] * tail;
      tail += ga[t] * al[t];
    }
  }
  return gbeta;
}

#ifdef LVIT_WITH_CUDA
// A packed copy of the logits [heads, stages-1] (undefined for 1 stage): backward recomputes the
// stage weights from it, so it must see the values the forward used even if the parameter
// changes in between (the CPU path saves them on the host).
Tensor saved_logits(const Tensor& logits, int64_t stages) {
  return stages > 1 ? logits.detach().clone() : Tensor();
}
const float* logits_ptr(const Tensor& lg) { return lg.defined() ? lg.data<float>() : nullptr; }

// What a CUDA backward writes: gqkv (like qkv, in `dtype`), the f64 workspace of d loss / d alpha
// per (image, head), and glogits [heads, stages-1] (f32; undefined unless it is needed).
struct CudaGrads {
  Tensor gqkv, ws, glogits;
  CudaGrads(const Tensor& qkv, DType dtype, int64_t heads, int64_t stages, bool logits_grad)
      : gqkv(Tensor::empty(qkv.shape(), dtype, qkv.device())),
        ws(Tensor::empty({cuda::ripple_bwd_workspace_doubles(qkv.shape()[0], heads, stages)},
                         DType::f64, qkv.device())) {
    if (stages > 1 && logits_grad)
      glogits = Tensor::empty({heads, stages - 1}, DType::f32, qkv.device());
  }
  float* glogits_ptr() const { return glogits.defined() ? glogits.data<float>() : nullptr; }
  std::vector<Tensor> result(const autograd::Node& n) const {
    return {n.needs_input_grad(0) ? gqkv : Tensor(), glogits};
  }
};

// The linear-form CUDA path: same contract as the CPU one, with the stage weights and the
// logits' gradient computed on the device (no host synchronisation, so the step stays
// capturable as a graph).
Tensor ripple_attention_cuda(const Tensor& qkv_in, const Tensor& logits, int64_t heads,
                             int64_t stages, int64_t grid) {
  LVIT_USER_CHECK(qkv_in.dtype() == DType::f32,
                  "ripple attention on CUDA supports f32 only, got {} (keep the attention core "
                  "in f32 under mixed precision)",
                  dtype_name(qkv_in.dtype()));
  const int64_t B = qkv_in.shape()[0], N = qkv_in.shape()[1], D = qkv_in.shape()[2] / 3;
  LVIT_USER_CHECK(D / heads <= cuda::kRippleMaxHeadDim,
                  "ripple attention on CUDA supports head widths up to {}, got {}",
                  cuda::kRippleMaxHeadDim, D / heads);
  Tensor qkv = qkv_in.contiguous();
  const Tensor lg = saved_logits(logits, stages);
  Tensor out = Tensor::empty({B, N, D}, qkv.dtype(), qkv.device());
  Tensor den = Tensor::empty({B, heads, N}, qkv.dtype(), qkv.device());
  cuda::ripple_fwd(qkv.data<float>(), logits_ptr(lg), B, N, D, heads, stages, grid,
                   out.data<float>(), den.data<float>(), cuda_stream(qkv));
  autograd::record(out, {qkv_in, logits}, "RippleAttentionBackward",
                   [qkv = qkv.detach(), lg, out = out.detach(), den, heads, stages, grid](
                       const Tensor& g_in, const autograd::Node& n) {
                     const Tensor g = g_in.contiguous();
                     const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3;
                     const CudaGrads r(qkv, DType::f32, heads, stages, n.needs_input_grad(1));
                     cuda::ripple_bwd(g.data<float>(), qkv.data<float>(), logits_ptr(lg),
                                      out.data<float>(), den.data<float>(), B, N, D, heads, stages,
                                      grid, r.gqkv.data<float>(), r.glogits_ptr(),
                                      r.ws.data<double>(), cuda_stream(qkv));
                     return r.result(n);
                   });
  return out;
}

// A contiguous tensor whose data starts on a 16-byte boundary (the bf16 kernels move 16-byte
// vectors); fresh allocations always do, a view with an offset may not and is then copied.
Tensor packed16(const Tensor& t) {
  Tensor c = t.contiguous();
  if (reinterpret_cast<uintptr_t>(c.raw_data()) % 16 != 0) c = c.clone();
  return c;
}

// The tensor-core paths (bf16 qkv, out and gradient; f32 logits, den and logits gradient): the
// dense kernels (short sequences) or the linear-form ones (longer grids). The node of the f32
// linear path, minus the saved output (the backward recomputes what it needs of it in fp32).
Tensor ripple_attention_cuda_tc(const Tensor& qkv_in, const Tensor& logits, int64_t heads,
                                int64_t stages, int64_t grid, bool dense) {
  const int64_t B = qkv_in.shape()[0], N = qkv_in.shape()[1], D = qkv_in.shape()[2] / 3;
  if (dense)
    LVIT_USER_CHECK(qkv_in.dtype() == DType::bf16 && cuda::ripple_small_supported(N, D / heads),
                    "dense ripple attention on CUDA runs bf16 tensor-core kernels for up to 128 "
                    "tokens and head widths 16, 32 or 64; got {} with {} tokens and head width {}",
                    dtype_name(qkv_in.dtype()), N, D / heads);
  else
    LVIT_CHECK(
        qkv_in.dtype() == DType::bf16 && cuda::ripple_linear_mma_supported(N, D / heads, stages),
        "ripple_attention: no linear tensor-core kernel for {} tokens of width {}", N, D / heads);
  LVIT_CHECK(
      !logits.defined() || (logits.dtype() == DType::f32 && logits.device() == qkv_in.device()),
      "ripple_attention: logits must be f32 on {} for bf16 qkv, got {} on {}",
      qkv_in.device().str(), dtype_name(logits.dtype()), logits.device().str());
  Tensor qkv = packed16(qkv_in);
  const Tensor lg = saved_logits(logits, stages);
  Tensor out = Tensor::empty({B, N, D}, DType::bf16, qkv.device());
  Tensor den = Tensor::empty({B, heads, N}, DType::f32, qkv.device());
  (dense ? cuda::ripple_small_fwd : cuda::ripple_linear_mma_fwd)(
      qkv.raw_data(), logits_ptr(lg), B, N, D, heads, stages, grid, out.raw_data(),
      den.data<float>(), cuda_stream(qkv));
  autograd::record(
      out, {qkv_in, logits}, "RippleAttentionBackward",
      [qkv = qkv.detach(), lg, den, heads, stages, grid, dense](const Tensor& g_in,
                                                                const autograd::Node& n) {
        const Tensor g = packed16(g_in.dtype() == DType::bf16 ? g_in : g_in.to(DType::bf16));
        const int64_t B = qkv.shape()[0], N = qkv.shape()[1], D = qkv.shape()[2] / 3;
        const CudaGrads r(qkv, DType::bf16, heads, stages, n.needs_input_grad(1));
        (dense ? cuda::ripple_small_bwd : cuda::ripple_linear_mma_bwd)(
            g.raw_data(), qkv.raw_data(), logits_ptr(lg), den.data<float>(), B, N, D, heads, stages,
            grid, r.gqkv.raw_data(), r.glogits_ptr(), r.ws.data<double>(), cuda_stream(qkv));
        return r.result(n);
      });
  return out;
}

// Which tensor-core kernels take bf16 qkv on CUDA (none: widen around the f32 linear ones).
enum class TcKernels { none, dense, linear };
TcKernels tc_kernels(RippleImpl impl, int64_t N, int64_t D, int64_t heads, int64_t stages) {
  if (impl == RippleImpl::dense) return TcKernels::dense;  // or a one-line error
  if (heads <= 0 || D % heads != 0) return TcKernels::none;
  if (impl == RippleImpl::automatic && cuda::ripple_small_supported(N, D / heads))
    return TcKernels::dense;
  if (cuda::ripple_linear_mma_supported(N, D / heads, stages)) return TcKernels::linear;
  return TcKernels::none;
}
#endif

}  // namespace

void check_ripple_geometry(int64_t stages, int64_t grid_h, int64_t grid_w) {
  LVIT_USER_CHECK(stages >= 1, "ripple attention needs at least 1 stage, got {}", stages);
  // Stages beyond log2(grid) + 1 only reweight the class token; 32 covers any real grid.
  LVIT_USER_CHECK(stages <= 32, "ripple attention supports at most 32 stages, got {}", stages);
  LVIT_USER_CHECK(grid_h == grid_w && grid_h > 0 && (grid_h & (grid_h - 1)) == 0,
                  "ripple attention needs a power-of-two square patch grid, got {}x{}", grid_h,
                  grid_w);
}

std::vector<double> ripple_stage_weights(const Tensor& logits, int64_t heads, int64_t stages) {
  return stick_breaking(logit_sigmoids(logits, heads, stages), heads, stages);
}

Tensor ripple_init_logits(int64_t heads, int64_t stages, DType dtype) {
  LVIT_USER_CHECK(stages >= 2, "ripple logits exist only for at least 2 stages, got {}", stages);
  std::vector<double> v(heads * (stages - 1));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t s = 0; s + 1 < stages; ++s)
      v[h * (stages - 1) + s] = -std::log(static_cast<double>(stages - 1 - s));
  return Tensor::from_vector(v, {heads, stages - 1}).to(dtype);
}

Tensor ripple_attention(const Tensor& qkv_in, const Tensor& logits, int64_t heads, int64_t stages,
                        int64_t grid_h, int64_t grid_w, RippleImpl impl) {
  check_ripple_geometry(stages, grid_h, grid_w);
  const bool gpu = on_cuda("ripple_attention", {qkv_in, logits});
  LVIT_CHECK(qkv_in.dim() == 3 && qkv_in.shape()[2] % 3 == 0,
             "ripple_attention: qkv {} must be [B, N, 3D]", shape_str(qkv_in.shape()));
  const int64_t B = qkv_in.shape()[0], N = qkv_in.shape()[1], D = qkv_in.shape()[2] / 3;
  if (gpu && qkv_in.dtype() == DType::bf16) {
#ifdef LVIT_WITH_CUDA
    // Mixed precision: the tensor-core kernels in bf16 (fp32 accumulation) where they apply,
    // else the activations widened around the f32 linear kernels.
    if (tc_kernels(impl, N, D, heads, stages) == TcKernels::none)
#endif
      return cast(ripple_attention(cast(qkv_in, DType::f32), logits, heads, stages, grid_h, grid_w,
                                   RippleImpl::linear),
                  DType::bf16);
  } else {
    check_same("ripple_attention", {qkv_in, logits});
  }
  LVIT_CHECK(heads > 0 && D % heads == 0, "ripple_attention: {} heads do not divide D = {}", heads,
             D);
  LVIT_CHECK(N == 1 + grid_h * grid_w,
             "ripple_attention: {} tokens for a class token and a {}x{} grid", N, grid_h, grid_w);
  if (stages == 1) {
    LVIT_CHECK(!logits.defined() || logits.numel() == 0,
               "ripple_attention: 1 stage takes no logits, got {}", shape_str(logits.shape()));
  } else {
    LVIT_CHECK(logits.defined() && logits.shape() == (Shape{heads, stages - 1}),
               "ripple_attention: logits {} for {} heads and {} stages must be [{}, {}]",
               logits.defined() ? shape_str(logits.shape()) : "undefined", heads, stages, heads,
               stages - 1);
  }

  if (gpu) {
#ifdef LVIT_WITH_CUDA
    if (qkv_in.dtype() == DType::bf16 || impl == RippleImpl::dense)
      return ripple_attention_cuda_tc(qkv_in, logits, heads, stages, grid_h,
                                      tc_kernels(impl, N, D, heads, stages) == TcKernels::dense);
    return ripple_attention_cuda(qkv_in, logits, heads, stages, grid_h);
#endif
  }

  Tensor qkv = qkv_in.contiguous();
  std::vector<double> sig = logit_sigmoids(logits, heads, stages);
  cpu::RippleArgs args{heads, stages, grid_h, stick_breaking(sig, heads, stages)};
  Tensor out = Tensor::empty({B, N, D}, qkv.dtype(), qkv.device());
  Tensor den = Tensor::empty({B, heads, N}, qkv.dtype(), qkv.device());
  if (impl == RippleImpl::dense)  // automatic is the linear form on the CPU
    cpu::ripple_dense_fwd(qkv, args, out, den);
  else
    cpu::ripple_linear_fwd(qkv, args, out, den);

  const DType ldt = logits.defined() ? logits.dtype() : qkv.dtype();
  autograd::record(out, {qkv_in, logits}, "RippleAttentionBackward",
                   [qkv = qkv.detach(), out = out.detach(), den, args, sig, impl, ldt](
                       const Tensor& g, const autograd::Node& n) {
                     Tensor gqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
                     std::vector<double> galpha;
                     if (impl == RippleImpl::dense)
                       cpu::ripple_dense_bwd(g.contiguous(), qkv, out, den, args, gqkv, galpha);
                     else
                       cpu::ripple_linear_bwd(g.contiguous(), qkv, out, den, args, gqkv, galpha);
                     Tensor glogits;
                     if (n.needs_input_grad(1)) {
                       std::vector<double> gb =
                           stick_breaking_grad(galpha, sig, args.alpha, args.heads, args.stages);
                       glogits = Tensor::from_vector(gb, {args.heads, args.stages - 1}).to(ldt);
                     }
                     return std::vector<Tensor>{n.needs_input_grad(0) ? gqkv : Tensor(), glogits};
                   });
  return out;
}

}  // namespace lvit::ops
