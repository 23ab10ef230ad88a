// The Mamba-3 SISO scan on GPU tensors (see mamba3_cuda.h): output allocation and the kernel of
// src/backend/cuda/mamba3.cu.
#include "ops/mamba3_cuda.h"

#include "ops/op_util.h"
#include "ssm/autograd.h"

#ifdef SSM_HAVE_CUDA
#include "backend/cuda/mamba3.h"
#endif

namespace ssm::detail {

#ifndef SSM_HAVE_CUDA
Mamba3SisoOut mamba3_siso_cuda(const Mamba3SisoArgs&) { fail_no_cuda("mamba3_siso_scan"); }
#else
Mamba3SisoOut mamba3_siso_cuda(const Mamba3SisoArgs& a) {
  const char* op = "mamba3_siso_scan";
  const std::vector<Tensor> all = {a.q,      a.k, a.v, a.adt,         a.dt,        a.trap,    a.q_bias, a.k_bias,
                                   a.angles, a.D, a.z, a.angle_state, a.ssm_state, a.k_state, a.v_state};
  SSM_CHECK(!autograd::needs_grad(all), op,
            "no CUDA backward for this op yet; run the GPU forward under autograd::NoGradGuard (train on the CPU)");
  autograd::NoGradGuard ng;
  const DType act = a.v.dtype();
  auto cont = [](const Tensor& t, DType dt) { return t.defined() ? t.contiguous().to(dt) : Tensor(); };
  Tensor q = cont(a.q, act), k = cont(a.k, act), v = cont(a.v, act), z = cont(a.z, act);
  Tensor adt = cont(a.adt, DType::f32), dt = cont(a.dt, DType::f32), trap = cont(a.trap, DType::f32);
  Tensor angles = cont(a.angles, DType::f32), qb = cont(a.q_bias, DType::f32), kb = cont(a.k_bias, DType::f32);
  Tensor D = cont(a.D, DType::f32), th0 = cont(a.angle_state, DType::f32), s0 = cont(a.ssm_state, DType::f32);
  Tensor k0 = cont(a.k_state, DType::f32), v0 = cont(a.v_state, DType::f32);
  const int64_t B = v.size(0), L = v.size(1), H = v.size(2), P = v.size(3), G = q.size(2), N = q.size(3),
                S = angles.size(2);
  const Device dev = Device::cuda;
  Mamba3SisoOut o;
  o.y = Tensor::empty({B, L, H, P}, act, dev);
  o.angle_state = Tensor::empty({B, H, S}, DType::f32, dev);
  o.ssm_state = Tensor::empty({B, H, P, N}, DType::f32, dev);
  o.k_state = Tensor::empty({B, H, N}, DType::f32, dev);
  o.v_state = Tensor::empty({B, H, P}, DType::f32, dev);
  auto f = [](const Tensor& t) { return t.defined() ? static_cast<const float*>(t.raw_data()) : nullptr; };
  auto w = [](Tensor& t) { return static_cast<float*>(t.raw_data()); };
  cuda::Mamba3FwdArgs c;
  c.act = act;
  c.q = q.raw_data(), c.k = k.raw_data(), c.v = v.raw_data(), c.z = z.defined() ? z.raw_data() : nullptr;
  c.adt = f(adt), c.dt = f(dt), c.trap = f(trap), c.angles = f(angles), c.q_bias = f(qb), c.k_bias = f(kb);
  c.D = f(D), c.angle0 = f(th0), c.ssm0 = f(s0), c.k0 = f(k0), c.v0 = f(v0);
  c.y = o.y.raw_data();
  c.angle_out = w(o.angle_state), c.ssm_out = w(o.ssm_state), c.k_out = w(o.k_state), c.v_out = w(o.v_state);
  c.B = B, c.L = L, c.H = H, c.P = P, c.N = N, c.G = G, c.S = S;
  cuda::mamba3_siso_fwd(c);
  return o;
}
#endif

}  // namespace ssm::detail
