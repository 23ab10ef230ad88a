// The optimizer's GPU half: gradient norm, clipping scale and AdamW on the kernels of
// src/backend/cuda/optim.cu.
#include "train/optim_cuda.h"

#ifdef SSM_HAVE_CUDA
#include "backend/cuda/train_kernels.h"
#endif

namespace ssm::train::gpu {

#ifndef SSM_HAVE_CUDA
double sum_squares(const std::vector<Tensor>&) { fail_no_cuda("clip_grad_norm"); }
void scale_(const Tensor&, float) { fail_no_cuda("clip_grad_norm"); }
void adamw_(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float, float, float, float, float, float) {
  fail_no_cuda("adamw");
}
#else
namespace {
float* f32(const Tensor& t) { return static_cast<float*>(t.raw_data()); }
void check(const char* op, const Tensor& t) {
  SSM_CHECK(t.device() == Device::cuda && t.dtype() == DType::f32 && t.is_contiguous(), op,
            "expected a contiguous f32 tensor on the GPU, got " + std::string(dtype_name(t.dtype())) + " on " +
                device_name(t.device()));
}
}  // namespace

double sum_squares(const std::vector<Tensor>& xs) {
  Tensor acc = Tensor::zeros({1}, DType::f64, Device::cuda);
  for (const Tensor& x : xs) {
    check("clip_grad_norm", x);
    cuda::sum_squares(f32(x), x.numel(), static_cast<double*>(acc.raw_data()));
  }
  return acc.item();
}

void scale_(const Tensor& x, float s) {
  check("clip_grad_norm", x);
  cuda::scale(f32(x), x.numel(), s);
}

void adamw_(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr_bc1, float b1, float b2,
            float eps, float wd, float inv_sqrt_bc2) {
  for (const Tensor* t : {&p, &g, &m, &v}) check("adamw", *t);
  cuda::adamw(f32(p), f32(g), f32(m), f32(v), p.numel(), cuda::AdamWStep{lr_bc1, b1, b2, eps, wd, inv_sqrt_bc2});
}
#endif

}  // namespace ssm::train::gpu
