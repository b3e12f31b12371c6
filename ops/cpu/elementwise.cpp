#include "ops/cpu/elementwise.h"

#include <cmath>

#include "ops/cpu/strided.h"
#include "ops/dispatch.h"

namespace lvit::cpu {

namespace {

template <typename T, typename F>
void binary_loop(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* po = out.data<T>();
  if (a.is_contiguous() && b.is_contiguous() && a.shape() == b.shape()) {
    parallel_for(out.numel(), 1 << 15, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) po[i] = f(pa[i], pb[i]);
    });
    return;
  }
  const int64_t nd = out.dim();
  const int64_t sa = nd ? a.strides()[nd - 1] : 0, sb = nd ? b.strides()[nd - 1] : 0;
  for_each_row<3>(out.shape(), {&a.strides(), &b.strides(), &out.strides()},
                  [&](const std::array<int64_t, 3>& off, int64_t n) {
                    const T* ra = pa + off[0];
                    const T* rb = pb + off[1];
                    T* ro = po + off[2];
                    if (sa == 1 && sb == 1) {
                      for (int64_t i = 0; i < n; ++i) ro[i] = f(ra[i], rb[i]);
                    } else if (sa == 1 && sb == 0) {
                      const T vb = rb[0];
                      for (int64_t i = 0; i < n; ++i) ro[i] = f(ra[i], vb);
                    } else if (sa == 0 && sb == 1) {
                      const T va = ra[0];
                      for (int64_t i = 0; i < n; ++i) ro[i] = f(va, rb[i]);
                    } else {
                      for (int64_t i = 0; i < n; ++i) ro[i] = f(ra[i * sa], rb[i * sb]);
                    }
                  });
}

template <typename T, typename F>
void unary_loop(const Tensor& x, Tensor& out, F f) {
  Tensor xc = x.contiguous();
  const T* px = xc.data<T>();
  T* po = out.data<T>();
  parallel_for(out.numel(), 1 << 15, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) po[i] = f(px[i]);
  });
}

}  // namespace

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  LVIT_DISPATCH_FLOAT(out.dtype(), "binary", [&] {
    using T = scalar_t;
    switch (op) {
      case BinaryOp::add:
        binary_loop<T>(a, b, out, [](T x, T y) { return x + y; });
        break;
      case BinaryOp::sub:
        binary_loop<T>(a, b, out, [](T x, T y) { return x - y; });
        break;
      case BinaryOp::mul:
        binary_loop<T>(a, b, out, [](T x, T y) { return x * y; });
        break;
      case BinaryOp::div:
        binary_loop<T>(a, b, out, [](T x, T y) { return x / y; });
        break;
    }
  });
}

void unary(UnaryOp op, const Tensor& x, double s, Tensor& out) {
  LVIT_DISPATCH_FLOAT(out.dtype(), "unary", [&] {
    using T = scalar_t;
    const T c = static_cast<T>(s);
    switch (op) {
      case UnaryOp::neg:
        unary_loop<T>(x, out, [](T v) { return -v; });
        break;
      case UnaryOp::exp:
        unary_loop<T>(x, out, [](T v) { return std::exp(v); });
        break;
      case UnaryOp::log:
        unary_loop<T>(x, out, [](T v) { return std::log(v); });
        break;
      case UnaryOp::sqrt:
        unary_loop<T>(x, out, [](T v) { return std::sqrt(v); });
        break;
      case UnaryOp::square:
        unary_loop<T>(x, out, [](T v) { return v * v; });
        break;
      case UnaryOp::add_scalar:
        unary_loop<T>(x, out, [c](T v) { return v + c; });
        break;
      case UnaryOp::mul_scalar:
        unary_loop<T>(x, out, [c](T v) { return v * c; });
        break;
    }
  });
}

void axpy(Tensor& dst, const Tensor& src, double alpha) {
  LVIT_DISPATCH_FLOAT(dst.dtype(), "axpy", [&] {
    using T = scalar_t;
    T* d = dst.data<T>();
    const T* s = src.data<T>();
    const T a = static_cast<T>(alpha);
    parallel_for(dst.numel(), 1 << 15, [&](int64_t b, int64_t e) {
      if (a == T(1)) {
        for (int64_t i = b; i < e; ++i) d[i] += s[i];
      } else {
        for (int64_t i = b; i < e; ++i) d[i] += a * s[i];
      }
    });
  });
}

void sum_to(const Tensor& x_in, Tensor& out) {
  // Reduce over the dims where out has size 1 and x does not. Runs per output row in parallel
  // when the reduced dims are leading (the common case: bias and position-embedding grads).
  Tensor x = x_in.contiguous();
  const int64_t nd = x.dim();
  LVIT_DISPATCH_FLOAT(x.dtype(), "sum_to", [&] {
    using T = scalar_t;
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t on = out.numel();
    std::fill(po, po + on, T(0));
    // Split x's shape into [outer-reduced..., kept...] when possible: find the first kept dim
    // after which nothing is reduced.
    int64_t k = nd;  // dims [k, nd) are all kept
    while (k > 0 && out.shape()[k - 1] == x.shape()[k - 1]) --k;
    bool leading_only = true;
    for (int64_t d = 0; d < k; ++d) leading_only &= out.shape()[d] == 1;
    if (leading_only) {
      const int64_t inner = on;  // product of kept dims
      const int64_t outer = x.numel() / std::max<int64_t>(inner, 1);
      parallel_for(inner, 4096, [&](int64_t b, int64_t e) {
        for (int64_t o = 0; o < outer; ++o) {
          const T* row = px + o * inner;
          for (int64_t i = b; i < e; ++i) po[i] += row[i];
        }
      });
      return;
    }
    // General case, single-threaded: map each x index to its out index.
    Shape ostr(nd);
    for (int64_t d = 0; d < nd; ++d) ostr[d] = out.shape()[d] == 1 ? 0 : out.strides()[d];
    std::vector<int64_t> idx(nd, 0);
    int64_t ooff = 0;
    const int64_t xn = x.numel();
    for (int64_t i = 0; i < xn; ++i) {
      po[ooff] += px[i];
      for (int64_t d = nd - 1; d >= 0; --d) {
        ++idx[d];
        ooff += ostr[d];
        if (idx[d] < x.shape()[d]) break;
        ooff -= ostr[d] * idx[d];
        idx[d] = 0;
      }
    }
  });
}

}  // namespace lvit::cpu
