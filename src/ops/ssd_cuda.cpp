// The Mamba-2 ops on GPU tensors (see ssd_cuda.h): checks, output allocation and the kernels of
// src/backend/cuda/ssd.cu and mamba2_ops.cu.
#include "ops/ssd_cuda.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "ops/op_util.h"

#ifdef SSM_HAVE_CUDA
#include "backend/cuda/ssd.h"
#endif

namespace ssm::detail {

#ifndef SSM_HAVE_CUDA
ScanOut ssd_scan_cuda(const SSDArgs&) { fail_no_cuda("ssd_scan"); }
Tensor gated_rms_norm_cuda(const Tensor&, const Tensor&, const Tensor&, int64_t, double, bool) {
  fail_no_cuda("gated_rms_norm");
}
Tensor clamp_cuda(const Tensor&, double, double) { fail_no_cuda("clamp"); }
#else
namespace {
constexpr Device kGpu = Device::cuda;

Tensor cont(const Tensor& t, DType dt) {  // contiguous copy of dtype dt recording no history
  autograd::NoGradGuard ng;
  return t.defined() ? t.contiguous().to(dt) : Tensor();
}
void no_grad(const char* op, const std::vector<Tensor>& in) {
  SSM_CHECK(!autograd::needs_grad(in), op,
            "no CUDA backward for this op yet; run the GPU forward under autograd::NoGradGuard (train on the CPU)");
}
bool is_act(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }
void check_act(const char* op, const Tensor& t, const char* name) {
  check_defined(op, t, name);
  SSM_CHECK(t.device() == kGpu, op, std::string(name) + " is on the CPU but the op runs on the GPU");
  SSM_CHECK(is_act(t.dtype()), op,
            std::string(name) + " on the GPU must be f32, bf16 or f16, got " + dtype_name(t.dtype()));
}

cuda::SSDKernel forced_kernel() {
  const char* e = std::getenv("SSM_SSD_KERNEL");
  if (!e || !*e) return cuda::SSDKernel::automatic;
  if (std::strcmp(e, "recurrent") == 0) return cuda::SSDKernel::recurrent;
  if (std::strcmp(e, "chunked") == 0) return cuda::SSDKernel::chunked;
  fail("ssd_scan", std::string("SSM_SSD_KERNEL must be recurrent or chunked, got '") + e + "'");
}
}  // namespace

ScanOut ssd_scan_cuda(const SSDArgs& a) {
  const char* op = "ssd_scan";
  no_grad(op, {a.x, a.A, a.B, a.C, a.initial_state});
  const DType act = a.x.dtype();
  const int64_t Bsz = a.x.size(0), L = a.x.size(1), H = a.x.size(2), P = a.x.size(3), G = a.B.size(2), N = a.B.size(3);
  Tensor x = cont(a.x, act), A = cont(a.A, DType::f32), B = cont(a.B, act), C = cont(a.C, act);
  Tensor h0 = cont(a.initial_state, DType::f32);
  Tensor y = Tensor::empty({Bsz, L, H, P}, act, kGpu);          // [B, L, H, P]
  Tensor hT = Tensor::empty({Bsz, H, P, N}, DType::f32, kGpu);  // [B, H, P, N]
  cuda::SSDFwdArgs f;
  f.act = act;
  f.x = x.raw_data();
  f.A = static_cast<const float*>(A.raw_data());
  f.B = B.raw_data();
  f.C = C.raw_data();
  f.h0 = h0.defined() ? static_cast<const float*>(h0.raw_data()) : nullptr;
  f.y = y.raw_data();
  f.hT = static_cast<float*>(hT.raw_data());
  f.batch = Bsz, f.L = L, f.H = H, f.P = P, f.N = N, f.G = G;
  cuda::ssd_fwd(f, forced_kernel());
  return {y, hT};
}

Tensor gated_rms_norm_cuda(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, double eps,
                           bool norm_before_gate) {
  const char* op = "gated_rms_norm";
  check_act(op, x, "x");
  SSM_CHECK(x.dim() >= 1 && x.size(-1) >= 1, op, "x must have a non-empty last dim, got shape " + shape_str(x.shape()));
  const int64_t C = x.size(-1), R = x.numel() / C;
  if (z.defined()) {
    check_act(op, z, "z");
    check_same_dtype(op, z, "z", x, "x");
    check_shape(op, z, x.shape(), "z");
  }
  check_defined(op, w, "w");
  SSM_CHECK(w.device() == kGpu && w.dtype() == DType::f32, op,
            std::string("w on the GPU must be f32 on the GPU, got ") + dtype_name(w.dtype()) + " on " +
                device_name(w.device()));
  check_shape(op, w, {C}, "w");
  SSM_CHECK(group_size >= 1 && C % group_size == 0, op,
            "group_size " + std::to_string(group_size) + " must be >= 1 and divide the " + std::to_string(C) +
                " channels of x");
  SSM_CHECK(eps >= 0 && std::isfinite(eps), op, "eps must be finite and >= 0, got " + std::to_string(eps));
  no_grad(op, {x, z, w});
  Tensor xc = cont(x, x.dtype()), zc = cont(z, x.dtype()), wc = cont(w, DType::f32);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), kGpu);
  cuda::gated_rms_norm(x.dtype(), xc.raw_data(), zc.defined() ? zc.raw_data() : nullptr, C,
                       static_cast<const float*>(wc.raw_data()), out.raw_data(), R, C, group_size, float(eps),
                       norm_before_gate);
  return out;
}

Tensor clamp_cuda(const Tensor& x, double lo, double hi) {
  const char* op = "clamp";
  check_act(op, x, "x");
  SSM_CHECK(lo <= hi, op, "lo (" + std::to_string(lo) + ") must be <= hi (" + std::to_string(hi) + ")");
  no_grad(op, {x});
  Tensor xc = cont(x, x.dtype()), y = Tensor::empty(x.shape(), x.dtype(), kGpu);
  cuda::clamp(x.dtype(), xc.raw_data(), y.raw_data(), x.numel(), float(lo), float(hi));
  return y;
}
#endif

}  // namespace ssm::detail
