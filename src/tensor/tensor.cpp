#include "ssm/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>

#include "ops/op_util.h"
#include "tensor/tensor_impl.h"

namespace ssm {

void cuda_memcpy(void* dst, const void* src, size_t bytes, bool dst_on_device, bool src_on_device);
void cuda_copy(const Tensor& dst, const Tensor& src);  // src/ops/cuda_ops.cpp: strided or casting copies
void cuda_memset0(void* p, size_t bytes);              // src/backend/cuda/device.cu

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

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = acc;
    acc *= std::max<int64_t>(shape[i], 1);
  }
  return st;
}

namespace {
std::shared_ptr<TensorImpl> new_impl(std::shared_ptr<Storage> st, size_t off, Shape shape, Shape strides, DType dt) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(st);
  impl->byte_offset = off;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->dtype = dt;
  return impl;
}

void check_shape_valid(const Shape& shape) {
  int64_t acc = 1;
  for (int64_t d : shape) {
    SSM_CHECK(d >= 0, "tensor", "negative dimension in shape " + shape_str(shape));
    SSM_CHECK(!__builtin_mul_overflow(acc, std::max<int64_t>(d, 1), &acc) && acc <= (int64_t(1) << 48), "tensor",
              "shape " + shape_str(shape) + " is too large");
  }
}

// Reads element i (flat index into a contiguous buffer of dtype t) as double.
double load_as_double(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f64: return static_cast<const double*>(p)[i];
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::i64: return double(static_cast<const int64_t*>(p)[i]);
    case DType::i32: return static_cast<const int32_t*>(p)[i];
    case DType::i8: return static_cast<const int8_t*>(p)[i];
    case DType::u8: return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}

void store_from_double(void* p, DType t, int64_t i, double v) {
  switch (t) {
    case DType::f64: static_cast<double*>(p)[i] = v; break;
    case DType::f32: static_cast<float*>(p)[i] = float(v); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = f32_to_f16(float(v)); break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(float(v)); break;
    case DType::i64: static_cast<int64_t*>(p)[i] = int64_t(v); break;
    case DType::i32: static_cast<int32_t*>(p)[i] = int32_t(v); break;
    case DType::i8: static_cast<int8_t*>(p)[i] = int8_t(v); break;
    case DType::u8: static_cast<uint8_t*>(p)[i] = uint8_t(v); break;
  }
}

// Converts n contiguous elements between dtypes (fast paths for the common float pairs).
void convert(void* dst, DType dt, const void* src, DType st, int64_t n) {
  if (n == 0) return;
  if (dt == st) {
    std::memcpy(dst, src, size_t(n) * dtype_size(dt));
    return;
  }
  if (dt == DType::f32 && st == DType::bf16) {
    auto* d = static_cast<float*>(dst);
    auto* s = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
    return;
  }
  if (dt == DType::bf16 && st == DType::f32) {
    auto* d = static_cast<uint16_t*>(dst);
    auto* s = static_cast<const float*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(s[i]);
    return;
  }
  if (dt == DType::f32 && st == DType::f64) {
    auto* d = static_cast<float*>(dst);
    auto* s = static_cast<const double*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] = float(s[i]);
    return;
  }
  if (dt == DType::f64 && st == DType::f32) {
    auto* d = static_cast<double*>(dst);
    auto* s = static_cast<const float*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] = s[i];
    return;
  }
  for (int64_t i = 0; i < n; ++i) store_from_double(dst, dt, i, load_as_double(src, st, i));
}

// Calls f(dst_byte_offset, src_byte_offset) for every element of `shape`, in row-major order,
// over the innermost dimension in runs: f(d, s, run_length, d_stride, s_stride) (strides in bytes).
template <typename F>
void for_each_run(const Shape& shape, const Shape& dst_strides, size_t dsize, const Shape& src_strides, size_t ssize,
                  F&& f) {
  int64_t nd = int64_t(shape.size());
  if (shape_numel(shape) == 0) return;
  if (nd == 0) {
    f(int64_t(0), int64_t(0), int64_t(1), int64_t(0), int64_t(0));
    return;
  }
  std::vector<int64_t> idx(size_t(nd), 0);
  int64_t inner = shape[size_t(nd - 1)];
  int64_t dsi = dst_strides[size_t(nd - 1)] * int64_t(dsize), ssi = src_strides[size_t(nd - 1)] * int64_t(ssize);
  for (;;) {
    int64_t doff = 0, soff = 0;
    for (int64_t k = 0; k < nd - 1; ++k) {
      doff += idx[size_t(k)] * dst_strides[size_t(k)] * int64_t(dsize);
      soff += idx[size_t(k)] * src_strides[size_t(k)] * int64_t(ssize);
    }
    f(doff, soff, inner, dsi, ssi);
    int64_t k = nd - 2;
    for (; k >= 0; --k) {
      if (++idx[size_t(k)] < shape[size_t(k)]) break;
      idx[size_t(k)] = 0;
    }
    if (k < 0) return;
  }
}

void record_unary(const char* name, const Tensor& in, Tensor& out, std::function<Tensor(const Tensor& g)> back) {
  if (!autograd::needs_grad({&in})) return;
  autograd::record(name, {in}, {&out},
                   [back](const std::vector<Tensor>& g) -> std::vector<Tensor> { return {back(g[0])}; });
}
}  // namespace

// ---- construction ----------------------------------------------------------------------------------
Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape_valid(shape);
  size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  return Tensor(new_impl(Storage::allocate(bytes, device), 0, shape, contiguous_strides(shape), dtype));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  check_shape_valid(shape);
  size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  Tensor t(
      new_impl(Storage::allocate(bytes, device, device == Device::cpu), 0, shape, contiguous_strides(shape), dtype));
  if (device != Device::cpu) cuda_memset0(t.raw_data(), bytes);
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  SSM_CHECK(int64_t(v.size()) == shape_numel(shape), "tensor",
            std::to_string(v.size()) + " values do not fill shape " + shape_str(shape));
  Tensor t = empty(shape, DType::f32);
  std::memcpy(t.raw_data(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& shape) {
  SSM_CHECK(int64_t(v.size()) == shape_numel(shape), "tensor",
            std::to_string(v.size()) + " values do not fill shape " + shape_str(shape));
  Tensor t = empty(shape, DType::f64);
  std::memcpy(t.raw_data(), v.data(), v.size() * 8);
  return t;
}

Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& shape) {
  SSM_CHECK(int64_t(v.size()) == shape_numel(shape), "tensor",
            std::to_string(v.size()) + " values do not fill shape " + shape_str(shape));
  Tensor t = empty(shape, DType::i64);
  std::memcpy(t.raw_data(), v.data(), v.size() * 8);
  return t;
}

Tensor Tensor::arange(int64_t n, DType dtype) {
  Tensor t = empty({n}, dtype);
  for (int64_t i = 0; i < n; ++i) store_from_double(t.raw_data(), dtype, i, double(i));
  return t;
}

Tensor Tensor::rand(const Shape& shape, uint64_t seed, double lo, double hi, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) store_from_double(t.raw_data(), dtype, i, d(rng));
  return t;
}

Tensor Tensor::randn(const Shape& shape, uint64_t seed, double mean, double std, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(mean, std);
  for (int64_t i = 0; i < t.numel(); ++i) store_from_double(t.raw_data(), dtype, i, d(rng));
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype) {
  check_shape_valid(shape);
  SSM_CHECK(storage != nullptr, "tensor", "from_storage with a null storage");
  size_t need = size_t(shape_numel(shape)) * dtype_size(dtype);
  SSM_CHECK(byte_offset <= storage->bytes() && need <= storage->bytes() - byte_offset, "tensor",
            "view of " + std::to_string(need) + " bytes at offset " + std::to_string(byte_offset) +
                " exceeds a storage of " + std::to_string(storage->bytes()) + " bytes");
  return Tensor(new_impl(std::move(storage), byte_offset, shape, contiguous_strides(shape), dtype));
}

// ---- accessors --------------------------------------------------------------------------------------
#define SSM_IMPL_CHECK() SSM_CHECK(impl_ != nullptr, "tensor", "use of an undefined tensor")
const Shape& Tensor::shape() const {
  SSM_IMPL_CHECK();
  return impl_->shape;
}
const Shape& Tensor::strides() const {
  SSM_IMPL_CHECK();
  return impl_->strides;
}
DType Tensor::dtype() const {
  SSM_IMPL_CHECK();
  return impl_->dtype;
}
Device Tensor::device() const {
  SSM_IMPL_CHECK();
  return impl_->storage->device();
}
const std::shared_ptr<Storage>& Tensor::storage() const {
  SSM_IMPL_CHECK();
  return impl_->storage;
}
size_t Tensor::byte_offset() const {
  SSM_IMPL_CHECK();
  return impl_->byte_offset;
}
int64_t Tensor::numel() const { return shape_numel(shape()); }

int64_t Tensor::size(int64_t d) const { return shape()[size_t(detail::wrap_dim("tensor.size", d, dim()))]; }

void* Tensor::raw_data() const {
  SSM_IMPL_CHECK();
  return static_cast<uint8_t*>(impl_->storage->data()) + impl_->byte_offset;
}

bool Tensor::is_contiguous() const {
  const Shape& sh = shape();
  int64_t acc = 1;
  for (size_t i = sh.size(); i-- > 0;) {
    if (sh[i] != 1 && impl_->strides[i] != acc) return false;
    acc *= sh[i];
  }
  return true;
}

std::string Tensor::str(int max_items) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor " << dtype_name(dtype()) << " " << shape_str(shape());
  if (device() == Device::cpu) {
    Tensor c = contiguous();
    os << " {";
    int64_t n = std::min<int64_t>(numel(), max_items);
    for (int64_t i = 0; i < n; ++i) os << (i ? ", " : "") << load_as_double(c.raw_data(), dtype(), i);
    if (numel() > n) os << ", ...";
    os << "}";
  }
  return os.str();
}

// ---- views ------------------------------------------------------------------------------------------
Tensor Tensor::view(const Shape& shape_in) const {
  SSM_CHECK(is_contiguous(), "view", "tensor of shape " + shape_str(shape()) + " is not contiguous; use reshape");
  Shape sh = shape_in;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < sh.size(); ++i) {
    if (sh[i] == -1) {
      SSM_CHECK(infer < 0, "view", "more than one -1 in " + shape_str(shape_in));
      infer = int64_t(i);
    } else {
      SSM_CHECK(sh[i] >= 0, "view", "invalid shape " + shape_str(shape_in));
      known *= sh[i];
    }
  }
  if (infer >= 0) {
    SSM_CHECK(known != 0 && numel() % known == 0, "view",
              "cannot view " + shape_str(shape()) + " as " + shape_str(shape_in));
    sh[size_t(infer)] = numel() / known;
  }
  SSM_CHECK(shape_numel(sh) == numel(), "view", "cannot view " + shape_str(shape()) + " as " + shape_str(shape_in));
  Tensor out(new_impl(impl_->storage, impl_->byte_offset, sh, contiguous_strides(sh), dtype()));
  Shape orig = shape();
  record_unary("view", *this, out, [orig](const Tensor& g) { return g.reshape(orig); });
  return out;
}

Tensor Tensor::reshape(const Shape& shape) const { return is_contiguous() ? view(shape) : contiguous().view(shape); }

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  std::vector<int64_t> order(static_cast<size_t>(dim()));
  std::iota(order.begin(), order.end(), 0);
  a = detail::wrap_dim("transpose", a, dim());
  b = detail::wrap_dim("transpose", b, dim());
  std::swap(order[size_t(a)], order[size_t(b)]);
  return permute(order);
}

Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  SSM_CHECK(
      int64_t(order.size()) == dim(), "permute",
      "order has " + std::to_string(order.size()) + " entries for a tensor of " + std::to_string(dim()) + " dims");
  Shape sh(order.size()), st(order.size());
  std::vector<int64_t> inv(order.size(), -1);
  for (size_t i = 0; i < order.size(); ++i) {
    int64_t o = detail::wrap_dim("permute", order[i], dim());
    SSM_CHECK(inv[size_t(o)] < 0, "permute", "dimension " + std::to_string(o) + " repeated");
    inv[size_t(o)] = int64_t(i);
    sh[i] = shape()[size_t(o)];
    st[i] = strides()[size_t(o)];
  }
  Tensor out(new_impl(impl_->storage, impl_->byte_offset, sh, st, dtype()));
  record_unary("permute", *this, out, [inv](const Tensor& g) { return g.permute(inv); });
  return out;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = detail::wrap_dim("slice", d, dim());
  int64_t n = shape()[size_t(d)];
  SSM_CHECK(step >= 1, "slice", "step must be >= 1");
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape sh = shape(), st = strides();
  sh[size_t(d)] = (end - start + step - 1) / step;
  st[size_t(d)] *= step;
  size_t off = impl_->byte_offset + size_t(start * strides()[size_t(d)]) * dtype_size(dtype());
  Tensor out(new_impl(impl_->storage, off, sh, st, dtype()));
  Shape orig = shape();
  DType dt = dtype();
  Device dev = device();
  record_unary("slice", *this, out, [orig, dt, dev, d, start, end, step](const Tensor& g) {
    Tensor r = Tensor::zeros(orig, dt, dev);
    r.slice(d, start, end, step).copy_(g);
    return r;
  });
  return out;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = detail::wrap_dim("select", d, dim());
  int64_t n = shape()[size_t(d)];
  if (index < 0) index += n;
  SSM_CHECK(index >= 0 && index < n, "select",
            "index " + std::to_string(index) + " out of range for dimension of size " + std::to_string(n));
  return slice(d, index, index + 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& target) const {
  SSM_CHECK(int64_t(target.size()) >= dim(), "expand",
            "cannot expand " + shape_str(shape()) + " to " + shape_str(target));
  size_t lead = target.size() - shape().size();
  Shape st(target.size(), 0);
  for (size_t i = 0; i < target.size(); ++i) {
    if (i < lead) continue;
    int64_t s = shape()[i - lead];
    SSM_CHECK(s == target[i] || s == 1, "expand", "cannot expand " + shape_str(shape()) + " to " + shape_str(target));
    st[i] = s == target[i] ? strides()[i - lead] : 0;
  }
  Tensor out(new_impl(impl_->storage, impl_->byte_offset, target, st, dtype()));
  Shape orig = shape();
  record_unary("expand", *this, out, [orig](const Tensor& g) { return detail::sum_to(g, orig); });
  return out;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = detail::wrap_dim("unsqueeze", d, dim() + 1);
  Shape sh = shape(), st = strides();
  int64_t s = size_t(d) < st.size() ? st[size_t(d)] * sh[size_t(d)] : 1;
  sh.insert(sh.begin() + d, 1);
  st.insert(st.begin() + d, s);
  Tensor out(new_impl(impl_->storage, impl_->byte_offset, sh, st, dtype()));
  record_unary("unsqueeze", *this, out, [d](const Tensor& g) { return g.squeeze(d); });
  return out;
}

Tensor Tensor::squeeze(int64_t d) const {
  d = detail::wrap_dim("squeeze", d, dim());
  SSM_CHECK(shape()[size_t(d)] == 1, "squeeze",
            "dimension " + std::to_string(d) + " of " + shape_str(shape()) + " is not 1");
  Shape sh = shape(), st = strides();
  sh.erase(sh.begin() + d);
  st.erase(st.begin() + d);
  Tensor out(new_impl(impl_->storage, impl_->byte_offset, sh, st, dtype()));
  record_unary("squeeze", *this, out, [d](const Tensor& g) { return g.unsqueeze(d); });
  return out;
}

// ---- copies -----------------------------------------------------------------------------------------
void Tensor::copy_(const Tensor& src_in) {
  SSM_CHECK(defined() && src_in.defined(), "copy_", "undefined tensor");
  SSM_CHECK(!impl_->storage->read_only(), "copy_", "destination is read-only (a memory-mapped weight)");
  Tensor src = src_in.shape() == shape() ? src_in : src_in.expand(shape());
  if (device() != Device::cpu || src.device() != Device::cpu) {
    if (dtype() != src.dtype() || !is_contiguous() || !src.is_contiguous()) return cuda_copy(*this, src);
    cuda_memcpy(raw_data(), src.raw_data(), nbytes(), device() == Device::cuda, src.device() == Device::cuda);
    return;
  }
  if (is_contiguous() && src.is_contiguous()) {
    convert(raw_data(), dtype(), src.raw_data(), src.dtype(), numel());
    return;
  }
  auto* d = static_cast<uint8_t*>(raw_data());
  auto* s = static_cast<const uint8_t*>(src.raw_data());
  DType dt = dtype(), stt = src.dtype();
  size_t ds = dtype_size(dt), ss = dtype_size(stt);
  for_each_run(shape(), strides(), ds, src.strides(), ss,
               [&](int64_t doff, int64_t soff, int64_t n, int64_t dstep, int64_t sstep) {
                 if (dt == stt && int64_t(ds) == dstep && int64_t(ss) == sstep) {
                   std::memcpy(d + doff, s + soff, size_t(n) * ds);
                 } else if (dt == stt && ds == 4) {
                   for (int64_t i = 0; i < n; ++i) std::memcpy(d + doff + i * dstep, s + soff + i * sstep, 4);
                 } else {
                   for (int64_t i = 0; i < n; ++i)
                     store_from_double(d + doff + i * dstep, dt, 0, load_as_double(s + soff + i * sstep, stt, 0));
                 }
               });
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  {
    autograd::NoGradGuard ng;
    out.copy_(*this);
  }
  record_unary("clone", *this, out, [](const Tensor& g) { return g; });
  return out;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor out = empty(shape(), dt, device());
  {
    autograd::NoGradGuard ng;
    out.copy_(*this);
  }
  DType orig = dtype();
  if (dtype_is_float(dt) && dtype_is_float(orig))
    record_unary("cast", *this, out, [orig](const Tensor& g) { return g.to(orig); });
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape(), dtype(), dev);
  out.copy_(src);
  return out;
}

void Tensor::fill_(double value) {
  SSM_CHECK(!impl_->storage->read_only(), "fill_", "tensor is read-only (a memory-mapped weight)");
  if (device() != Device::cpu) {
    if (value == 0 && is_contiguous()) {  // +0.0 is all-zero bytes in every dtype
      cuda_memset0(raw_data(), nbytes());
      return;
    }
    Tensor host = full(shape(), value, dtype());
    copy_(host);
    return;
  }
  Tensor one = empty({}, dtype());
  store_from_double(one.raw_data(), dtype(), 0, value);
  copy_(one.expand(shape()));
}

double Tensor::item() const {
  SSM_CHECK(numel() == 1, "item", "tensor of shape " + shape_str(shape()) + " has more than one element");
  Tensor c = to(Device::cpu);
  return load_as_double(c.raw_data(), dtype(), 0);
}

std::vector<double> Tensor::to_vector_f64() const {
  Tensor c = to(Device::cpu).contiguous();
  std::vector<double> v(static_cast<size_t>(numel()));
  convert(v.data(), DType::f64, c.raw_data(), dtype(), numel());
  return v;
}

std::vector<float> Tensor::to_vector_f32() const {
  Tensor c = to(Device::cpu).contiguous();
  std::vector<float> v(static_cast<size_t>(numel()));
  convert(v.data(), DType::f32, c.raw_data(), dtype(), numel());
  return v;
}

std::vector<int64_t> Tensor::to_vector_i64() const {
  Tensor c = to(Device::cpu).contiguous();
  std::vector<int64_t> v(static_cast<size_t>(numel()));
  convert(v.data(), DType::i64, c.raw_data(), dtype(), numel());
  return v;
}

// ---- autograd accessors -------------------------------------------------------------------------------
bool Tensor::requires_grad() const { return impl_ && (impl_->requires_grad || impl_->grad_fn); }

Tensor& Tensor::set_requires_grad(bool r) {
  SSM_IMPL_CHECK();
  SSM_CHECK(!impl_->grad_fn, "autograd", "requires_grad can only be set on leaf tensors");
  SSM_CHECK(!r || dtype_is_float(dtype()), "autograd",
            std::string("a ") + dtype_name(dtype()) + " tensor cannot require grad");
  impl_->requires_grad = r;
  return *this;
}

Tensor Tensor::grad() const {
  SSM_IMPL_CHECK();
  return impl_->grad;
}
void Tensor::set_grad(const Tensor& g) {
  SSM_IMPL_CHECK();
  impl_->grad = g;
}
void Tensor::zero_grad() {
  SSM_IMPL_CHECK();
  impl_->grad = Tensor();
}
const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
  SSM_IMPL_CHECK();
  return impl_->grad_fn;
}
int Tensor::output_nr() const {
  SSM_IMPL_CHECK();
  return impl_->output_nr;
}

void Tensor::set_grad_fn(std::shared_ptr<autograd::Node> fn, int nr) {
  SSM_IMPL_CHECK();
  impl_->grad_fn = std::move(fn);
  impl_->output_nr = nr;
}

Tensor Tensor::detach() const {
  SSM_IMPL_CHECK();
  return Tensor(new_impl(impl_->storage, impl_->byte_offset, impl_->shape, impl_->strides, impl_->dtype));
}

void Tensor::backward(const Tensor& grad_output) const { autograd::run_backward(*this, grad_output); }

}  // namespace ssm
