// Internal helpers shared by op implementations: argument checks and dtype dispatch.
#pragma once
#include <string>

#include "ssm/autograd.h"
#include "ssm/ops.h"

namespace ssm::detail {

// The one greppable line for a backend that lacks an op.
#define SSM_NO_CUDA(op, t)                          \
  SSM_CHECK((t).device() == ::ssm::Device::cpu, op, \
            "no CUDA kernel for this op yet; move the tensors to the CPU (tensor.to(Device::cpu))")

inline void check_defined(const char* op, const Tensor& t, const char* name) {
  SSM_CHECK(t.defined(), op, std::string(name) + " is undefined");
}
inline void check_float(const char* op, const Tensor& t, const char* name) {
  check_defined(op, t, name);
  SSM_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, op,
            std::string(name) + " must be f32 or f64, got " + dtype_name(t.dtype()) + " (cast with .to())");
}
inline void check_same_dtype(const char* op, const Tensor& a, const char* an, const Tensor& b, const char* bn) {
  SSM_CHECK(a.dtype() == b.dtype(), op,
            std::string(an) + " is " + dtype_name(a.dtype()) + " but " + bn + " is " + dtype_name(b.dtype()));
}
inline void check_shape(const char* op, const Tensor& t, const Shape& want, const char* name) {
  SSM_CHECK(t.shape() == want, op,
            std::string(name) + " has shape " + shape_str(t.shape()) + ", expected " + shape_str(want));
}
inline void check_dim(const char* op, const Tensor& t, int64_t d, const char* name) {
  SSM_CHECK(t.dim() == d, op,
            std::string(name) + " must have " + std::to_string(d) + " dims, got shape " + shape_str(t.shape()));
}
inline int64_t wrap_dim(const char* op, int64_t dim, int64_t ndim) {
  int64_t d = dim < 0 ? dim + ndim : dim;
  SSM_CHECK(d >= 0 && d < ndim, op,
            "dimension " + std::to_string(dim) + " out of range for a tensor of " + std::to_string(ndim) + " dims");
  return d;
}

// Calls f.template operator()<T>() with T = float or double for the tensor's dtype.
template <typename F>
decltype(auto) dispatch_float(const char* op, DType t, F&& f) {
  if (t == DType::f32) return f.template operator()<float>();
  if (t == DType::f64) return f.template operator()<double>();
  fail(op, std::string("unsupported dtype ") + dtype_name(t) + " (expected f32 or f64)");
}

// True when the fast f32 kernel should run for tensors of dtype t.
inline bool use_fast(DType t) { return t == DType::f32 && !reference_kernels(); }

// Broadcast result shape of a and b (NumPy rules); error names the op.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
// Sum `g` down to `shape` (undoing a broadcast); used by backward of broadcasting ops.
Tensor sum_to(const Tensor& g, const Shape& shape);

}  // namespace ssm::detail
