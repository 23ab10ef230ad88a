// The selective_scan op on GPU tensors: output allocation, the fused CUDA kernels
// (src/backend/cuda/selective_scan_*.cu) and the autograd record. Arguments are checked by
// selective_scan() (activations f32/bf16/f16, parameters and states f32).
#include "ops/op_util.h"

#ifdef SSM_HAVE_CUDA
#include "backend/cuda/selective_scan.h"
#endif

namespace ssm::detail {

#ifndef SSM_HAVE_CUDA
ScanOut selective_scan_cuda(const SelectiveScanArgs&) { fail_no_cuda("selective_scan"); }
#else
namespace {
constexpr const char* kOp = "selective_scan";

const float* fptr(const Tensor& t) { return t.defined() ? static_cast<const float*>(t.raw_data()) : nullptr; }
const void* vptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

// The kernels' view of the 9 inputs (u, delta, A, B, C, D, z, delta_bias, initial_state); no outputs.
cuda::ScanFwdArgs fwd_args(const std::vector<Tensor>& in, bool softplus) {
  cuda::ScanFwdArgs f{};
  f.act = in[0].dtype();
  f.u = vptr(in[0]);
  f.delta = vptr(in[1]);
  f.A = fptr(in[2]);
  f.B = vptr(in[3]);
  f.C = vptr(in[4]);
  f.D = fptr(in[5]);
  f.z = vptr(in[6]);
  f.delta_bias = fptr(in[7]);
  f.h0 = fptr(in[8]);
  f.batch = in[0].size(0);
  f.L = in[0].size(1);
  f.dim = in[0].size(2);
  f.N = in[2].size(1);
  f.G = in[3].size(2);
  f.softplus = softplus;
  return f;
}

// Gradients of the 9 inputs (u, delta, A, B, C, D, z, delta_bias, initial_state) given dy, dhT.
std::vector<Tensor> backward(const std::vector<Tensor>& in, const Tensor& ckpt, bool softplus, const Tensor& dy_in,
                             const Tensor& dhT_in) {
  const DType act = in[0].dtype();
  const Device dev = Device::cuda;
  const Shape& xs = in[0].shape();  // [B, L, D]
  const int64_t Bsz = xs[0], D = xs[2], N = in[2].size(1);
  auto ready = [&](const Tensor& g, DType dt, const char* name) {  // a contiguous GPU gradient of dtype dt
    if (!g.defined()) return Tensor();
    SSM_CHECK(g.device() == dev && g.dtype() == dt, kOp,
              std::string("the gradient of ") + name + " must be " + dtype_name(dt) + " on the GPU, got " +
                  dtype_name(g.dtype()) + " on " + device_name(g.device()));
    SSM_CHECK(g.is_contiguous(), kOp, std::string("the gradient of ") + name + " must be contiguous");
    return g;
  };
  Tensor dy = ready(dy_in, act, "y"), dhT = ready(dhT_in, DType::f32, "final_state");
  Tensor du = Tensor::empty(xs, act, dev), ddelta = Tensor::empty(xs, act, dev);
  Tensor dz = in[6].defined() ? Tensor::empty(xs, act, dev) : Tensor();
  Tensor dB = Tensor::empty(in[3].shape(), act, dev), dC = Tensor::empty(in[4].shape(), act, dev);
  Tensor dA = Tensor::empty({D, N}, DType::f32, dev), dD = Tensor::empty({D}, DType::f32, dev);
  Tensor dbias = Tensor::empty({D}, DType::f32, dev), dh0 = Tensor::empty({Bsz, D, N}, DType::f32, dev);
  cuda::ScanBwdArgs g{};
  g.f = fwd_args(in, softplus);
  g.f.ckpt = const_cast<float*>(fptr(ckpt));
  g.dy = vptr(dy);
  g.dhT = fptr(dhT);
  g.du = du.raw_data();
  g.ddelta = ddelta.raw_data();
  g.dz = dz.defined() ? dz.raw_data() : nullptr;
  g.dB = dB.raw_data();
  g.dC = dC.raw_data();
  g.dA = static_cast<float*>(dA.raw_data());
  g.dD = static_cast<float*>(dD.raw_data());
  g.ddelta_bias = static_cast<float*>(dbias.raw_data());
  g.dh0 = static_cast<float*>(dh0.raw_data());
  cuda::scan_bwd(g);
  return {du,
          ddelta,
          dA,
          dB,
          dC,
          in[5].defined() ? dD : Tensor(),
          dz,
          in[7].defined() ? dbias : Tensor(),
          in[8].defined() ? dh0 : Tensor()};
}
}  // namespace

ScanOut selective_scan_cuda(const SelectiveScanArgs& a) {
  const std::vector<Tensor> orig = {a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, a.initial_state};
  const char* names[] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"};
  for (size_t i = 0; i < orig.size(); ++i)
    SSM_CHECK(!orig[i].defined() || orig[i].is_contiguous(), kOp,
              std::string(names[i]) + " on the GPU must be contiguous (no strided CUDA copies yet)");
  const DType act = a.u.dtype();
  const Device dev = Device::cuda;
  const int64_t Bsz = a.u.size(0), L = a.u.size(1), D = a.u.size(2), N = a.A.size(1);
  const bool grad = autograd::needs_grad(orig);
  Tensor y = Tensor::empty({Bsz, L, D}, act, dev);          // [B, L, D]
  Tensor hT = Tensor::empty({Bsz, D, N}, DType::f32, dev);  // [B, D, N]
  Tensor ckpt = grad ? Tensor::empty({Bsz, (L + cuda::kScanCkpt - 1) / cuda::kScanCkpt, D, N}, DType::f32, dev)
                     : Tensor();  // [B, chunks, D, N]: the state before each chunk
  cuda::ScanFwdArgs f = fwd_args(orig, a.delta_softplus);
  f.y = y.raw_data();
  f.hT = static_cast<float*>(hT.raw_data());
  f.ckpt = ckpt.defined() ? static_cast<float*>(ckpt.raw_data()) : nullptr;
  cuda::scan_fwd(f);
  if (grad) {
    std::vector<Tensor> in;  // the inputs without history, kept alive for the backward
    for (const Tensor& t : orig) in.push_back(t.defined() ? t.detach() : Tensor());
    const bool softplus = a.delta_softplus;
    autograd::record(kOp, orig, {&y, &hT}, [in, ckpt, softplus](const std::vector<Tensor>& g) {
      return backward(in, ckpt, softplus, g[0], g[1]);
    });
  }
  return {y, hT};
}
#endif

}  // namespace ssm::detail
