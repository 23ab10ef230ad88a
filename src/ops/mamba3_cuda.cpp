// The mamba3_siso_scan op on GPU tensors: output allocation and the CUDA kernel
// (src/backend/cuda/mamba3_fwd.cu). Forward only. Arguments are checked by mamba3_siso_scan().
#include "ops/cuda_ops.h"
#include "ops/op_util.h"
#include "ssm/autograd.h"

#ifdef SSM_HAVE_CUDA
#include "backend/cuda/mamba3.h"
#endif

namespace ssm::detail {

#ifndef SSM_HAVE_CUDA
Mamba3SisoOut mamba3_siso_cuda(const Mamba3SisoArgs&) {
  fail("mamba3_siso_scan", "this build of ssm has no CUDA backend (rebuild with nvcc installed)");
}
#else
Mamba3SisoOut mamba3_siso_cuda(const Mamba3SisoArgs& a) {
  constexpr const char* kOp = "mamba3_siso_scan";
  const std::vector<Tensor> all = {a.q,      a.k, a.v, a.adt,         a.dt,        a.trap,    a.q_bias, a.k_bias,
                                   a.angles, a.D, a.z, a.angle_state, a.ssm_state, a.k_state, a.v_state};
  SSM_CHECK(!autograd::needs_grad(all), kOp, "no CUDA backward yet: run training of Mamba-3 on the CPU");
  std::vector<Tensor> in;  // contiguous, same order as all
  for (const Tensor& t : all) in.push_back(t.defined() ? t.contiguous() : Tensor());
  const int64_t B = a.v.size(0), L = a.v.size(1), H = a.v.size(2), P = a.v.size(3);
  const int64_t G = a.q.size(2), N = a.q.size(3), S = a.angles.size(2);
  const Device dev = Device::cuda;
  Mamba3SisoOut o;
  o.y = Tensor::empty({B, L, H, P}, a.v.dtype(), dev);
  o.angle_state = Tensor::empty({B, H, S}, DType::f32, dev);
  o.ssm_state = Tensor::empty({B, H, P, N}, DType::f32, dev);
  o.k_state = Tensor::empty({B, H, N}, DType::f32, dev);
  o.v_state = Tensor::empty({B, H, P}, DType::f32, dev);
  auto v = [&](size_t i) -> const void* { return in[i].defined() ? in[i].raw_data() : nullptr; };
  auto f = [&](size_t i) { return static_cast<const float*>(v(i)); };
  auto out = [](Tensor& t) { return static_cast<float*>(t.raw_data()); };
  const cuda::Mamba3FwdArgs k{.act = a.v.dtype(),
                              .q = v(0), .k = v(1), .v = v(2), .z = v(10),
                              .adt = f(3), .dt = f(4), .trap = f(5), .angles = f(8),
                              .q_bias = f(6), .k_bias = f(7), .D = f(9),
                              .angle0 = f(11), .ssm0 = f(12), .k0 = f(13), .v0 = f(14),
                              .y = o.y.raw_data(),
                              .angle_out = out(o.angle_state), .ssm_out = out(o.ssm_state),
                              .k_out = out(o.k_state), .v_out = out(o.v_state),
                              .B = B, .L = L, .H = H, .P = P, .N = N, .G = G, .S = S};
  cuda::mamba3_fwd(k);
  return o;
}
#endif

}  // namespace ssm::detail
