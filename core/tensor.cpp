#include "core/tensor.h"

#include <cstring>
#include <sstream>

#include "autograd/engine.h"
#include "core/bf16.h"
#include "core/thread_pool.h"

#ifdef LVIT_WITH_CUDA
#include "cuda/copy.cuh"
#endif

namespace lvit {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

// ---- factories ----

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return empty_on(shape, dtype, device, allocator_for(device));
}

Tensor Tensor::empty_host(const Shape& shape, DType dtype, Allocator* allocator) {
  return empty_on(shape, dtype, Device::cpu(), allocator ? allocator : cpu_allocator());
}

Tensor Tensor::empty_on(const Shape& shape, DType dtype, Device device, Allocator* allocator) {
  for (int64_t d : shape) LVIT_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage =
      std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device, allocator);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& v, const Shape& shape) {
  LVIT_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "{} values for shape {}",
             v.size(), shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>::value);
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
  return t;
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<uint8_t>&, const Shape&);

// ---- metadata ----

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  LVIT_CHECK(d >= 0 && d < n, "dimension {} out of range for shape {}", d, shape_str(shape()));
  return impl_->shape[d];
}

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl_->shape[i] != 1 && impl_->strides[i] != acc) return false;
    acc *= impl_->shape[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  if (!impl_->storage || !impl_->storage->data()) return nullptr;
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * dtype_size(dtype());
}

// ---- views ----

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  LVIT_CHECK(shape.size() == strides.size(), "shape {} and strides {} differ in rank",
             shape_str(shape), shape_str(strides));
  if (shape_numel(shape) > 0) {
    // The view must stay inside its storage: reads and writes through it are unchecked.
    int64_t lo = offset, hi = offset;
    for (size_t i = 0; i < shape.size(); ++i) {
      const int64_t span = (shape[i] - 1) * strides[i];
      (span < 0 ? lo : hi) += span;
    }
    const int64_t capacity =
        impl_->storage ? static_cast<int64_t>(impl_->storage->nbytes() / dtype_size(dtype())) : 0;
    LVIT_CHECK(lo >= 0 && hi < capacity,
               "as_strided: view {} with strides {} at offset {} spans elements [{}, {}] of a "
               "storage of {}",
               shape_str(shape), shape_str(strides), offset, lo, hi, capacity);
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::view(const Shape& shape_in) const {
  Shape shape = shape_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      LVIT_CHECK(infer < 0, "view: more than one -1 in {}", shape_str(shape_in));
      infer = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    LVIT_CHECK(known > 0 && numel() % known == 0, "view: cannot infer {} from {}",
               shape_str(shape_in), shape_str(this->shape()));
    shape[infer] = numel() / known;
  }
  LVIT_CHECK(shape_numel(shape) == numel(), "view: {} has {} elements, {} has {}",
             shape_str(this->shape()), numel(), shape_str(shape), shape_numel(shape));
  LVIT_CHECK(is_contiguous(), "view of a non-contiguous tensor (call contiguous() first)");
  return as_strided(shape, contiguous_strides(shape), offset());
}

Tensor Tensor::detach() const {
  if (!defined()) return Tensor();
  return as_strided(shape(), strides(), offset());
}

Tensor& Tensor::set_requires_grad(bool r) {
  LVIT_CHECK(!r || is_floating(dtype()), "only floating tensors can require grad");
  LVIT_CHECK(is_leaf(), "set_requires_grad on a non-leaf tensor");
  impl_->requires_grad = r;
  return *this;
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  autograd::backward(*this, grad, retain_graph);
}

// ---- copies ----

namespace {

template <typename D, typename S>
inline D convert(S v) {
  return static_cast<D>(v);
}

// Element reads/writes through the dtype, with bf16 as uint16 storage.
inline double load(const char* p, DType t) {
  switch (t) {
    case DType::f32:
      return *reinterpret_cast<const float*>(p);
    case DType::f64:
      return *reinterpret_cast<const double*>(p);
    case DType::bf16:
      return bf16_to_float(*reinterpret_cast<const uint16_t*>(p));
    case DType::i32:
      return *reinterpret_cast<const int32_t*>(p);
    case DType::i64:
      return static_cast<double>(*reinterpret_cast<const int64_t*>(p));
    case DType::u8:
      return *reinterpret_cast<const uint8_t*>(p);
  }
  return 0;
}

inline void store(char* p, DType t, double v) {
  switch (t) {
    case DType::f32:
      *reinterpret_cast<float*>(p) = static_cast<float>(v);
      break;
    case DType::f64:
      *reinterpret_cast<double*>(p) = v;
      break;
    case DType::bf16:
      *reinterpret_cast<uint16_t*>(p) = float_to_bf16(static_cast<float>(v));
      break;
    case DType::i32:
      *reinterpret_cast<int32_t*>(p) = static_cast<int32_t>(v);
      break;
    case DType::i64:
      *reinterpret_cast<int64_t*>(p) = static_cast<int64_t>(v);
      break;
    case DType::u8:
      *reinterpret_cast<uint8_t*>(p) = static_cast<uint8_t>(v);
      break;
  }
}

// Strided copy on the host. The innermost dimension is the inner loop; outer indices are
// split over threads. Same-dtype copies with unit inner strides use memcpy.
void cpu_strided_copy(const Tensor& dst, const Tensor& src) {
  const int64_t nd = dst.dim();
  const int64_t n = dst.numel();
  if (n == 0) return;
  // Signed element sizes: offsets computed from negative strides must stay negative.
  const int64_t ds = static_cast<int64_t>(dtype_size(dst.dtype())),
                ss = static_cast<int64_t>(dtype_size(src.dtype()));
  char* dbase = static_cast<char*>(dst.raw_data());
  const char* sbase = static_cast<const char*>(src.raw_data());
  if (nd == 0) {
    if (dst.dtype() == src.dtype())
      std::memcpy(dbase, sbase, ds);
    else
      store(dbase, dst.dtype(), load(sbase, src.dtype()));
    return;
  }
  const int64_t inner = dst.shape()[nd - 1];
  const int64_t dsi = dst.strides()[nd - 1], ssi = src.strides()[nd - 1];
  const int64_t outer = n / inner;
  const bool same = dst.dtype() == src.dtype();
  parallel_for(outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t o = b; o < e; ++o) {
                   int64_t rem = o, doff = 0, soff = 0;
                   for (int64_t d = nd - 2; d >= 0; --d) {
                     int64_t idx = rem % dst.shape()[d];
                     rem /= dst.shape()[d];
                     doff += idx * dst.strides()[d];
                     soff += idx * src.strides()[d];
                   }
                   char* dp = dbase + doff * ds;
                   const char* sp = sbase + soff * ss;
                   if (same && dsi == 1 && ssi == 1) {
                     std::memcpy(dp, sp, inner * ds);
                   } else if (same && ds == 4) {
                     for (int64_t i = 0; i < inner; ++i)
                       reinterpret_cast<uint32_t*>(dp)[i * dsi] =
                           reinterpret_cast<const uint32_t*>(sp)[i * ssi];
                   } else if (same) {
                     // Bytes as they are: a round trip through double would lose i64 values beyond
                     // 2^53.
                     for (int64_t i = 0; i < inner; ++i)
                       std::memcpy(dp + i * dsi * ds, sp + i * ssi * ss, ds);
                   } else if (dst.dtype() == DType::f32 && src.dtype() == DType::f64) {
                     for (int64_t i = 0; i < inner; ++i)
                       reinterpret_cast<float*>(dp)[i * dsi] =
                           static_cast<float>(reinterpret_cast<const double*>(sp)[i * ssi]);
                   } else {
                     for (int64_t i = 0; i < inner; ++i)
                       store(dp + i * dsi * ds, dst.dtype(), load(sp + i * ssi * ss, src.dtype()));
                   }
                 }
               });
}

}  // namespace

void Tensor::copy_(const Tensor& src) {
  LVIT_CHECK(shape() == src.shape(), "copy_: shape {} from {}", shape_str(shape()),
             shape_str(src.shape()));
  if (device().is_cpu() && src.device().is_cpu()) {
    cpu_strided_copy(*this, src);
    return;
  }
#ifdef LVIT_WITH_CUDA
  cuda::copy_tensor(*this, src);
#else
  throw Error("lvit was built without CUDA");
#endif
}

void Tensor::fill_(double value) {
  if (numel() == 0) return;
  if (device().is_cuda()) {
#ifdef LVIT_WITH_CUDA
    cuda::fill_tensor(*this, value);
    return;
#else
    throw Error("lvit was built without CUDA");
#endif
  }
  LVIT_CHECK(is_contiguous(), "fill_ on a non-contiguous tensor");
  char* p = static_cast<char*>(raw_data());
  const size_t es = dtype_size(dtype());
  if (dtype() == DType::f32) {
    std::fill_n(reinterpret_cast<float*>(p), numel(), static_cast<float>(value));
  } else if (value == 0.0) {
    std::memset(p, 0, nbytes());
  } else {
    store(p, dtype(), value);
    const int64_t n = numel();
    for (int64_t i = 1; i < n; ++i) std::memcpy(p + i * es, p, es);
  }
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), dtype(), device());
  t.copy_(*this);
  return t;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor t = empty(shape(), dtype(), d);
  t.copy_(*this);
  return t;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor t = empty(shape(), dt, device());
  t.copy_(*this);
  return t;
}

// ---- host access ----

double Tensor::item() const {
  LVIT_CHECK(numel() == 1, "item() on a tensor of shape {}", shape_str(shape()));
  Tensor h = to(Device::cpu());
  return load(static_cast<const char*>(h.raw_data()), h.dtype());
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor h = to(Device::cpu()).to(dtype_of<T>::value).contiguous();
  std::vector<T> v(numel());
  if (!v.empty()) std::memcpy(v.data(), h.raw_data(), v.size() * sizeof(T));
  return v;
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;
template std::vector<uint8_t> Tensor::to_vector() const;

std::string Tensor::str(int64_t max_elems) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(" << shape_str(shape()) << ", " << dtype_name(dtype()) << ", " << device().str()
     << ") [";
  auto v = to_vector<double>();
  for (int64_t i = 0; i < std::min<int64_t>(max_elems, numel()); ++i) os << (i ? ", " : "") << v[i];
  if (numel() > max_elems) os << ", ...";
  os << "]";
  return os.str();
}

}  // namespace lvit
