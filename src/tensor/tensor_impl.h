// Internal: the state behind a Tensor handle.
#pragma once
#include <memory>

#include "ssm/autograd.h"
#include "ssm/tensor.h"

namespace ssm {

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  size_t byte_offset = 0;
  Shape shape, strides;  // strides in elements
  DType dtype = DType::f32;
  // autograd
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;
  int output_nr = 0;

  static Tensor make(std::shared_ptr<TensorImpl> impl) { return Tensor(std::move(impl)); }
};

Shape contiguous_strides(const Shape& shape);

}  // namespace ssm
