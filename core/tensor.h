// Tensor: a shared Storage plus shape, strides (in elements), offset (in elements), dtype and
// device, and the autograd fields (requires_grad, grad, grad_fn). Copying a Tensor copies the
// handle; views share storage. The differentiable shape ops (reshape, permute, slice, ...) live
// in ops/shape.h; the raw view functions here record no gradient.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/storage.h"

namespace lvit {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

namespace autograd {
class Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;
  DType dtype = DType::f32;

  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;         // set on op outputs that need a gradient
  std::weak_ptr<autograd::Node> grad_accumulator;  // leaves: shared by every use of the leaf
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories ----
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  // A host tensor whose memory comes from `allocator` (e.g. cuda/pinned.cuh's pinned memory,
  // which uploads without staging); null means the CPU allocator, as empty().
  static Tensor empty_host(const Shape& shape, DType dtype, Allocator* allocator);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
    return full(shape, 1.0, dtype, device);
  }
  template <typename T>
  static Tensor from_vector(const std::vector<T>& v, const Shape& shape);
  static Tensor scalar(double value, DType dtype = DType::f32) { return full({}, value, dtype); }

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  const Shape& strides() const { return impl_->strides; }
  int64_t offset() const { return impl_->offset; }
  int64_t dim() const { return static_cast<int64_t>(impl_->shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the back
  int64_t numel() const { return shape_numel(impl_->shape); }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage ? impl_->storage->device() : Device::cpu(); }
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return impl_->storage; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  // Pointer to element 0 of this view. T must match dtype.
  template <typename T>
  T* data() const {
    LVIT_CHECK(defined(), "undefined tensor");
    LVIT_CHECK(dtype_of<T>::value == dtype(), "data<{}>() on a {} tensor",
               dtype_name(dtype_of<T>::value), dtype_name(dtype()));
    return static_cast<T*>(raw_data());
  }
  void* raw_data() const;

  // ---- raw views and copies (no autograd) ----
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;
  Tensor view(const Shape& shape) const;  // contiguous tensors only; one -1 allowed
  Tensor contiguous() const;              // this if already contiguous, else a packed copy
  Tensor clone() const;                   // always a packed copy
  Tensor to(Device d) const;
  Tensor to(DType t) const;
  void copy_(const Tensor& src);  // same shape; any strides, dtypes and devices
  void fill_(double value);
  Tensor detach() const;  // shares storage, no autograd history

  // ---- autograd ----
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  Tensor& set_requires_grad(bool r);
  Tensor grad() const { return impl_->grad ? Tensor(impl_->grad) : Tensor(); }
  void set_grad(const Tensor& g) { impl_->grad = g.impl_; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl_->grad_fn; }
  bool is_leaf() const { return !impl_->grad_fn; }
  // Backpropagates from this tensor. `grad` defaults to ones for a one-element tensor.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

  // ---- host access ----
  double item() const;  // one-element tensors
  template <typename T>
  std::vector<T> to_vector() const;  // copies to host, converting to T
  std::string str(int64_t max_elems = 16) const;

 private:
  static Tensor empty_on(const Shape& shape, DType dtype, Device device, Allocator* allocator);
  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace lvit
