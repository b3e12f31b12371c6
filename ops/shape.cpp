#include "ops/shape.h"

#include <numeric>

#include "autograd/engine.h"
#include "ops/dispatch.h"

namespace lvit::ops {

namespace {
int64_t norm_dim(int64_t d, int64_t nd, const char* op) {
  int64_t r = d < 0 ? d + nd : d;
  LVIT_CHECK(r >= 0 && r < nd, "{}: dimension {} out of range for rank {}", op, d, nd);
  return r;
}
}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor y = x.contiguous().view(shape);
  autograd::record(y, {x}, "ReshapeBackward",
                   [xs = x.shape()](const Tensor& g, const autograd::Node&) {
                     return std::vector<Tensor>{g.contiguous().view(xs)};
                   });
  return y;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  const int64_t nd = x.dim();
  LVIT_CHECK(static_cast<int64_t>(dims.size()) == nd, "permute: {} dims for rank {}", dims.size(),
             nd);
  Shape shape(nd), strides(nd);
  std::vector<int64_t> inverse(nd, -1);
  for (int64_t i = 0; i < nd; ++i) {
    int64_t d = norm_dim(dims[i], nd, "permute");
    LVIT_CHECK(inverse[d] < 0, "permute: dimension {} repeated", d);
    inverse[d] = i;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  Tensor y = x.as_strided(shape, strides, x.offset());
  autograd::record(y, {x}, "PermuteBackward", [inverse](const Tensor& g, const autograd::Node&) {
    return std::vector<Tensor>{permute(g, inverse)};
  });
  return y;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(x.dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[norm_dim(d0, x.dim(), "transpose")], dims[norm_dim(d1, x.dim(), "transpose")]);
  return permute(x, dims);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
  const int64_t d = norm_dim(dim, x.dim(), "slice");
  const int64_t n = x.shape()[d];
  LVIT_CHECK(0 <= start && start <= end && end <= n, "slice: [{}, {}) of a dimension of size {}",
             start, end, n);
  Shape shape = x.shape();
  shape[d] = end - start;
  Tensor y = x.as_strided(shape, x.strides(), x.offset() + start * x.strides()[d]);
  autograd::record(y, {x}, "SliceBackward",
                   [xs = x.shape(), d, start, end](const Tensor& g, const autograd::Node&) {
                     Tensor gx = Tensor::zeros(xs, g.dtype(), g.device());
                     Shape st = gx.strides();
                     Shape sh = xs;
                     sh[d] = end - start;
                     gx.as_strided(sh, st, start * st[d]).copy_(g);
                     return std::vector<Tensor>{gx};
                   });
  return y;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  LVIT_CHECK(!xs.empty(), "concat of nothing");
  const int64_t d = norm_dim(dim, xs[0].dim(), "concat");
  Shape shape = xs[0].shape();
  shape[d] = 0;
  std::vector<int64_t> sizes;
  for (const Tensor& t : xs) {
    LVIT_CHECK(t.dim() == xs[0].dim() && t.dtype() == xs[0].dtype() && t.device() == xs[0].device(),
               "concat: inputs differ in rank, dtype or device");
    for (int64_t i = 0; i < t.dim(); ++i)
      LVIT_CHECK(i == d || t.shape()[i] == xs[0].shape()[i], "concat: {} and {} along dim {}",
                 shape_str(xs[0].shape()), shape_str(t.shape()), d);
    sizes.push_back(t.shape()[d]);
    shape[d] += t.shape()[d];
  }
  Tensor y = Tensor::empty(shape, xs[0].dtype(), xs[0].device());
  int64_t off = 0;
  for (const Tensor& t : xs) {
    Shape sh = shape;
    sh[d] = t.shape()[d];
    y.as_strided(sh, y.strides(), off * y.strides()[d]).copy_(t);
    off += t.shape()[d];
  }
  autograd::record(y, xs, "ConcatBackward", [sizes, d](const Tensor& g, const autograd::Node& n) {
    std::vector<Tensor> gs;
    int64_t o = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      Shape sh = g.shape();
      sh[d] = sizes[i];
      if (n.needs_input_grad(i))
        gs.push_back(g.as_strided(sh, g.strides(), g.offset() + o * g.strides()[d]));
      else
        gs.emplace_back();
      o += sizes[i];
    }
    return gs;
  });
  return y;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  const int64_t d = norm_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  LVIT_CHECK(total == x.shape()[d], "split: sizes add to {}, dimension is {}", total, x.shape()[d]);
  std::vector<Tensor> out;
  int64_t o = 0;
  for (int64_t s : sizes) {
    out.push_back(slice(x, d, o, o + s));
    o += s;
  }
  return out;
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor y = x.clone();
  autograd::record(y, {x}, "ContiguousBackward",
                   [](const Tensor& g, const autograd::Node&) { return std::vector<Tensor>{g}; });
  return y;
}

}  // namespace lvit::ops
