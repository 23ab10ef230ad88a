// ssm.cpp — Tensor: shape, strides (in elements), dtype, device, refcounted storage, views.
// Shapes are row-major in PyTorch order. A Tensor is a shared handle (copying it aliases, as in
// PyTorch); use clone() for a deep copy.
#pragma once
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "ssm/base.h"

namespace ssm {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);

// Raw bytes owned by someone: heap memory, a read-only mmap, or device memory.
class Storage {
 public:
  virtual ~Storage() = default;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool read_only() const { return read_only_; }

  static std::shared_ptr<Storage> allocate(size_t bytes, Device device, bool zero = false);
  // Wraps memory someone else keeps alive through `owner` (e.g. an mmapped file).
  static std::shared_ptr<Storage> borrow(void* data, size_t bytes, bool read_only, std::shared_ptr<void> owner);

 protected:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::cpu;
  bool read_only_ = false;
};

// A read-only mapping of a whole file; keeps the mapping alive while any tensor uses it.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws ssm::Error naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

namespace autograd {
struct Node;
}

struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;                                                                              // undefined tensor
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);  // uninitialised
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape);
  static Tensor from_vector(const std::vector<int64_t>& v, const Shape& shape);
  static Tensor arange(int64_t n, DType dtype = DType::f32);
  // Uniform in [lo, hi) / normal(mean, std) from a deterministic generator seeded by `seed`.
  static Tensor rand(const Shape& shape, uint64_t seed, double lo = 0, double hi = 1, DType dtype = DType::f32);
  static Tensor randn(const Shape& shape, uint64_t seed, double mean = 0, double std = 1, DType dtype = DType::f32);
  // A view over existing storage (no copy).
  static Tensor from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t dim() const { return int64_t(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const;
  size_t byte_offset() const;

  // Pointer to the first element (CPU). Throws if the dtype does not match T.
  template <typename T>
  T* data() const;
  void* raw_data() const;
  std::string str(int max_items = 8) const;  // "Tensor f32 [2, 3] {..}" for messages

  // ---- views (no copy) ----
  Tensor view(const Shape& shape) const;     // requires contiguous; one dimension may be -1
  Tensor reshape(const Shape& shape) const;  // view if possible, else copy
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops the dimension
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const { return slice(dim, start, start + length); }
  Tensor expand(const Shape& shape) const;  // broadcast size-1 dims with stride 0
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;

  // ---- copies ----
  Tensor contiguous() const;  // self if already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;  // self if same dtype; differentiable between float dtypes
  Tensor to(Device device) const;
  void copy_(const Tensor& src);  // same shape (src may broadcast), any dtypes, into this view
  void fill_(double value);
  double item() const;  // single-element tensor as double
  std::vector<float> to_vector_f32() const;
  std::vector<double> to_vector_f64() const;
  std::vector<int64_t> to_vector_i64() const;

  // ---- autograd ----
  bool requires_grad() const;
  Tensor& set_requires_grad(bool r = true);  // only on leaves
  Tensor grad() const;                       // undefined if none accumulated yet
  void set_grad(const Tensor& g);
  void zero_grad();
  void backward(const Tensor& grad_output = Tensor()) const;  // default: ones for a scalar
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<autograd::Node> fn, int output_nr);
  int output_nr() const;
  Tensor detach() const;  // shares storage, no history

  bool same(const Tensor& o) const { return impl_ == o.impl_; }
  TensorImpl* impl() const { return impl_.get(); }

 private:
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<TensorImpl> impl_;
  friend struct TensorImpl;
};

template <typename T>
struct dtype_of;
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::i64;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<int8_t> {
  static constexpr DType value = DType::i8;
};
template <>
struct dtype_of<uint8_t> {
  static constexpr DType value = DType::u8;
};

template <typename T>
T* Tensor::data() const {
  SSM_CHECK(defined(), "tensor", "data() of an undefined tensor");
  SSM_CHECK(dtype() == dtype_of<T>::value, "tensor",
            std::string("data<") + dtype_name(dtype_of<T>::value) + ">() on a " + dtype_name(dtype()) + " tensor");
  return static_cast<T*>(raw_data());
}

}  // namespace ssm
