#include "ops/reduce.h"

#include <algorithm>

#include "autograd/engine.h"
#include "ops/cpu/elementwise.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/column_sums.cuh"
#include "cuda/elementwise.cuh"
#endif

namespace lvit::ops {

namespace {

// The shape of x with `axes` set to 1 (keepdim form) and the shape without them.
void reduced_shapes(const Shape& s, std::vector<int64_t> axes, Shape* keep, Shape* squeezed) {
  const int64_t nd = static_cast<int64_t>(s.size());
  if (axes.empty())
    for (int64_t i = 0; i < nd; ++i) axes.push_back(i);
  std::vector<bool> red(nd, false);
  for (int64_t a : axes) {
    int64_t d = a < 0 ? a + nd : a;
    LVIT_CHECK(d >= 0 && d < nd, "reduction axis {} out of range for {}", a, shape_str(s));
    red[d] = true;
  }
  keep->clear();
  squeezed->clear();
  for (int64_t i = 0; i < nd; ++i) {
    keep->push_back(red[i] ? 1 : s[i]);
    if (!red[i]) squeezed->push_back(s[i]);
  }
}

}  // namespace

Tensor sum_to(const Tensor& x, const Shape& shape) {
  LVIT_CHECK(shape.size() <= static_cast<size_t>(x.dim()), "sum_to: {} to {}", shape_str(x.shape()),
             shape_str(shape));
  LVIT_CHECK(broadcast_shapes(shape, x.shape()) == x.shape(), "sum_to: {} does not broadcast to {}",
             shape_str(shape), shape_str(x.shape()));
  Shape padded(x.dim() - shape.size(), 1);
  padded.insert(padded.end(), shape.begin(), shape.end());
  Tensor out = Tensor::empty(padded, x.dtype(), x.device());
  if (on_cuda("sum_to", {x})) {
#ifdef LVIT_WITH_CUDA
    // A sum over the leading dimensions of a contiguous x (a position embedding's or class
    // token's gradient over the batch) is the column sums of x as an [M, N] matrix: many blocks
    // per group of columns, where the general kernel below gives each of the N outputs one
    // thread looping over M (a [512, 65, 384] -> [65, 384] sum took 30x as long on an H200).
    int64_t lead = x.dim();  // dims from `lead` on are kept whole
    while (lead > 0 && padded[lead - 1] == x.shape()[lead - 1]) --lead;
    const bool leading_only =
        x.is_contiguous() && lead > 0 &&
        (x.dtype() == DType::f32 || x.dtype() == DType::f64 || x.dtype() == DType::bf16) &&
        std::all_of(padded.begin(), padded.begin() + lead, [](int64_t n) { return n == 1; });
    int64_t M = 1;
    for (int64_t k = 0; k < lead; ++k) M *= x.shape()[k];
    // Fewer than a warp's width of columns: the general kernel's block per output is better.
    if (leading_only && x.numel() >= 32 * M) {
      cuda::column_sums(x.dtype(), x.dtype(), x.raw_data(), M, x.numel() / M, out.raw_data(),
                        cuda_stream(x));
    } else {
      cuda::ReduceLayout l;
      for (int64_t k = 0; k < x.dim(); ++k) {
        if (x.shape()[k] == 1) continue;
        const bool kept = padded[k] != 1;
        int& rank = kept ? l.kept_rank : l.red_rank;
        LVIT_CHECK(rank < cuda::kMaxElementwiseRank, "sum_to: {} has too many dimensions for CUDA",
                   shape_str(x.shape()));
        (kept ? l.kept_shape : l.red_shape)[rank] = x.shape()[k];
        (kept ? l.kept_strides : l.red_strides)[rank] = x.strides()[k];
        ++rank;
      }
      cuda::sum_to(x.dtype(), x.raw_data(), out.raw_data(), l, cuda_stream(x));
    }
#endif
  } else {
    cpu::sum_to(x, out);
  }
  out = out.view(shape);
  autograd::record(out, {x}, "SumToBackward",
                   [xs = x.shape()](const Tensor& g, const autograd::Node&) {
                     return std::vector<Tensor>{broadcast_to(g, xs)};
                   });
  return out;
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  LVIT_CHECK(broadcast_shapes(x.shape(), shape) == shape, "broadcast_to: {} to {}",
             shape_str(x.shape()), shape_str(shape));
  // x + zeros(shape) reuses the broadcasting kernel and its backward (sum_to).
  return add(x, Tensor::zeros(shape, x.dtype(), x.device()));
}

Tensor sum(const Tensor& x, std::vector<int64_t> axes, bool keepdim) {
  Shape keep, squeezed;
  reduced_shapes(x.shape(), std::move(axes), &keep, &squeezed);
  Tensor s = sum_to(x, keep);
  if (keepdim) return s;
  // A reshape of a freshly made contiguous tensor: record the view's gradient by hand.
  Tensor out = s.view(squeezed);
  autograd::record(out, {s}, "SqueezeBackward", [keep](const Tensor& g, const autograd::Node&) {
    return std::vector<Tensor>{g.contiguous().view(keep)};
  });
  return out;
}

Tensor mean(const Tensor& x, std::vector<int64_t> axes, bool keepdim) {
  Tensor s = sum(x, axes, keepdim);
  int64_t n = s.numel() ? x.numel() / s.numel() : 1;
  return mul_scalar(s, 1.0 / static_cast<double>(n));
}

}  // namespace lvit::ops
