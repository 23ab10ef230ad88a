// GPU training support for the ops (see cuda_train.h): the training-only ops on GPU tensors and the
// backward passes of the forward GPU ops, on the kernels of src/backend/cuda/train_kernels.h.
// Backward closures run with recording off (autograd), so the ops they call record nothing.
#include "ops/cuda_train.h"

#include <cmath>
#include <limits>

#include "ops/op_util.h"

#ifdef SSM_HAVE_CUDA
#include "backend/cuda/train_kernels.h"
#endif

namespace ssm::detail {

#ifndef SSM_HAVE_CUDA
Tensor affine_cuda(const char* op, const Tensor&, double, double) { fail_no_cuda(op); }
Tensor sum_cuda(const char* op, const Tensor&, const std::vector<bool>&, bool, bool) { fail_no_cuda(op); }
Tensor softmax_cuda(const char* op, const Tensor&, int64_t, bool) { fail_no_cuda(op); }
Tensor cross_entropy_cuda(const Tensor&, const Tensor&, int64_t) { fail_no_cuda("cross_entropy"); }
#else
namespace {

constexpr Device kGpu = Device::cuda;

bool is_act(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

void check_act(const char* op, const Tensor& t, const char* name) {
  check_defined(op, t, name);
  SSM_CHECK(t.device() == kGpu, op,
            std::string(name) + " is on the CPU but the op runs on the GPU (move it with .to(Device::cuda))");
  SSM_CHECK(is_act(t.dtype()), op,
            std::string(name) + " on the GPU must be f32, bf16 or f16, got " + dtype_name(t.dtype()));
}

// A contiguous GPU tensor of dtype dt holding g (a gradient arriving at a backward), recording nothing.
Tensor ready(const Tensor& g, DType dt) {
  autograd::NoGradGuard ng;
  Tensor r = g.device() == kGpu ? g : g.to(kGpu);
  return r.to(dt).contiguous();
}

Tensor cont(const Tensor& t) {
  autograd::NoGradGuard ng;
  return t.defined() ? t.contiguous() : Tensor();
}

float* f32(const Tensor& t) { return t.defined() ? static_cast<float*>(t.raw_data()) : nullptr; }
const void* ptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

}  // namespace

// ---- training-only ops ------------------------------------------------------------------------------

Tensor affine_cuda(const char* op, const Tensor& x, double a, double b) {
  check_act(op, x, "x");
  Tensor xc = cont(x), y = Tensor::empty(x.shape(), x.dtype(), kGpu);
  cuda::affine(x.dtype(), xc.raw_data(), y.raw_data(), x.numel(), float(a), float(b));
  if (autograd::needs_grad({&x}))
    autograd::record(op, {x}, {&y}, [a](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      if (!g[0].defined()) return {Tensor()};
      return {a == 1.0 ? g[0] : affine_cuda("mul_scalar", g[0], a, 0.0)};
    });
  return y;
}

Tensor sum_cuda(const char* op, const Tensor& x, const std::vector<bool>& red, bool keepdim, bool mean) {
  check_act(op, x, "x");
  SSM_CHECK(x.dim() <= 8, op, "tensors of more than 8 dims are not supported on the GPU");
  cuda::ReduceWalk w;
  Shape out_shape, keep_shape;  // keep_shape: x's shape with the reduced dims as 1
  for (size_t k = 0; k < red.size(); ++k) {
    const int64_t n = x.shape()[k], s = x.strides()[k];
    if (red[k]) {
      w.rshape[w.nr] = n, w.rstride[w.nr++] = s, w.nred *= n;
      if (keepdim) out_shape.push_back(1);
      keep_shape.push_back(1);
    } else {
      w.kshape[w.nk] = n, w.kstride[w.nk++] = s, w.nout *= n;
      out_shape.push_back(n);
      keep_shape.push_back(n);
    }
  }
  double scale = mean ? 1.0 / double(w.nred) : 1.0;
  if (mean && w.nred == 0) scale = std::numeric_limits<double>::quiet_NaN();  // as the CPU op (PyTorch)
  Tensor out = Tensor::empty(out_shape, x.dtype(), kGpu);
  if (w.nred == 0) {
    autograd::NoGradGuard ng;
    out.fill_(mean ? scale : 0.0);
  } else {
    cuda::reduce_sum(x.dtype(), w, x.raw_data(), out.raw_data(), float(scale));
  }
  if (autograd::needs_grad({&x})) {
    const Shape xs = x.shape();
    autograd::record(op, {x}, {&out},
                     [xs, keep_shape, scale, mean](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                       if (!g[0].defined()) return {Tensor()};
                       Tensor gx = g[0].reshape(keep_shape).expand(xs).contiguous();
                       return {mean ? affine_cuda("mul_scalar", gx, scale, 0.0) : gx};
                     });
  }
  return out;
}

Tensor softmax_cuda(const char* op, const Tensor& x, int64_t dim, bool log) {
  check_act(op, x, "x");
  const int64_t d = wrap_dim(op, dim, x.dim());
  SSM_CHECK(d == x.dim() - 1, op, "on the GPU only over the last dimension (got dim " + std::to_string(dim) + ")");
  const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
  Tensor xc = cont(x), y = Tensor::empty(x.shape(), x.dtype(), kGpu);
  cuda::softmax_fwd(x.dtype(), xc.raw_data(), y.raw_data(), rows, n, log);
  if (autograd::needs_grad({&x})) {
    Tensor yd = y.detach();
    autograd::record(op, {x}, {&y}, [yd, rows, n, log](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      if (!g[0].defined()) return {Tensor()};
      Tensor gc = ready(g[0], yd.dtype()), dx = Tensor::empty(yd.shape(), yd.dtype(), kGpu);
      cuda::softmax_bwd(yd.dtype(), yd.raw_data(), gc.raw_data(), dx.raw_data(), rows, n, log);
      return {dx};
    });
  }
  return y;
}

Tensor cross_entropy_cuda(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  const char* op = "cross_entropy";
  check_act(op, logits, "logits");
  check_defined(op, targets, "targets");
  SSM_CHECK(logits.dim() >= 1, op, "logits must have at least 1 dim (the classes), got a scalar");
  SSM_CHECK(targets.dtype() == DType::i64, op, std::string("targets must be i64, got ") + dtype_name(targets.dtype()));
  Shape want(logits.shape().begin(), logits.shape().end() - 1);
  SSM_CHECK(targets.shape() == want, op,
            "targets have shape " + shape_str(targets.shape()) + " but logits " + shape_str(logits.shape()) +
                " need targets of shape " + shape_str(want));
  const int64_t V = logits.shape().back(), N = shape_numel(want);
  const std::vector<int64_t> tv = targets.to_vector_i64();  // checked on the host: errors name the position
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = tv[size_t(i)];
    SSM_CHECK(t == ignore_index || (t >= 0 && t < V), op,
              "target " + std::to_string(t) + " at position " + std::to_string(i) + " is out of range for " +
                  std::to_string(V) + " classes (ignore_index is " + std::to_string(ignore_index) + ")");
    count += t != ignore_index;
  }
  Tensor tg = Tensor::from_vector(tv, {N}).to(kGpu), lc = cont(logits);
  Tensor lse = Tensor::empty({N}, DType::f32, kGpu), rows = Tensor::empty({N}, DType::f32, kGpu);
  Tensor out = Tensor::empty({}, DType::f32, kGpu);
  if (count == 0) {  // 0/0 = NaN when every target is ignored (as the CPU op and PyTorch)
    autograd::NoGradGuard ng;
    out.fill_(std::numeric_limits<double>::quiet_NaN());
  } else {
    cuda::cross_entropy_fwd(lc.dtype(), lc.raw_data(), static_cast<const int64_t*>(tg.raw_data()), ignore_index,
                            f32(lse), f32(rows), N, V);
    cuda::ReduceWalk w;  // the mean of the row losses, in one block (deterministic)
    w.nr = 1, w.rshape[0] = N, w.rstride[0] = 1, w.nred = N;
    cuda::reduce_sum(DType::f32, w, rows.raw_data(), out.raw_data(), float(1.0 / double(count)));
  }
  if (autograd::needs_grad({&logits})) {
    Tensor ld = lc.detach();
    const float inv = count ? float(1.0 / double(count)) : 0.f;
    autograd::record(op, {logits}, {&out}, [ld, tg, lse, inv, ignore_index, N, V](const std::vector<Tensor>& g) {
      std::vector<Tensor> r(1);
      if (!g[0].defined()) return r;
      Tensor gs = ready(g[0], DType::f32), d = Tensor::empty(ld.shape(), ld.dtype(), kGpu);
      cuda::cross_entropy_bwd(ld.dtype(), ld.raw_data(), static_cast<const int64_t*>(tg.raw_data()), ignore_index,
                              f32(lse), f32(gs), inv, d.raw_data(), N, V);
      r[0] = d;
      return r;
    });
  }
  return out;
}

// ---- backward of the forward ops ----------------------------------------------------------------------

Tensor unary_backward_cuda(CudaUnary f, const Tensor& x, const Tensor& y, const Tensor& g_in, double param) {
  switch (f) {
    case CudaUnary::neg: return neg(g_in);
    case CudaUnary::exp: return mul(ready(g_in, y.dtype()), y);
    case CudaUnary::silu:
    case CudaUnary::softplus: {
      Tensor g = ready(g_in, x.dtype()), dx = Tensor::empty(x.shape(), x.dtype(), kGpu);
      cuda::unary_grad(f == CudaUnary::silu ? cuda::UnaryGrad::silu : cuda::UnaryGrad::softplus, x.dtype(),
                       x.raw_data(), g.raw_data(), dx.raw_data(), x.numel(), float(param));
      return dx;
    }
  }
  fail("backward", "unknown unary op");
}

std::vector<Tensor> binary_backward_cuda(CudaBinary f, const Tensor& a, const Tensor& b, const Tensor& out,
                                         const Tensor& g, const Shape& a_shape, const Shape& b_shape, bool need_a,
                                         bool need_b) {
  Tensor ga, gb;
  switch (f) {
    case CudaBinary::add: ga = g, gb = g; break;
    case CudaBinary::sub:
      ga = g;
      if (need_b) gb = neg(g);
      break;
    case CudaBinary::mul:
      if (need_a) ga = mul(g, b);
      if (need_b) gb = mul(g, a);
      break;
    case CudaBinary::div:
      if (need_a) ga = div(g, b);
      if (need_b) gb = neg(div(mul(g, out), b));
      break;
  }
  return {need_a ? sum_to(ga, a_shape) : Tensor(), need_b ? sum_to(gb, b_shape) : Tensor()};
}

std::vector<Tensor> linear_backward_cuda(const LinearSaved& s, const Tensor& g_in, int64_t R, int64_t I, int64_t O) {
  std::vector<Tensor> r(3);
  const DType cdt = s.cdt;
  Tensor g = ready(g_in, cdt);  // [R, O] (the upstream gradient in the GEMM dtype)
  if (s.gx) {
    Tensor dx = Tensor::empty({R, I}, s.x_dtype, kGpu);  // dx = g · w
    cuda::matmul(cdt, s.x_dtype, g.raw_data(), false, s.w.raw_data(), false, dx.raw_data(), R, I, O, cuda_tf32());
    r[0] = dx.view(s.x_shape);
  }
  if (s.gw) {
    Tensor dw = Tensor::empty({O, I}, s.w_dtype, kGpu);  // dw = gᵀ · x, fp32 accumulation
    cuda::matmul(cdt, s.w_dtype, g.raw_data(), true, s.x.raw_data(), false, dw.raw_data(), O, I, R, cuda_tf32());
    r[1] = dw;
  }
  if (s.gb) {
    Tensor db = Tensor::empty({O}, DType::f32, kGpu);
    cuda::col_sum(cdt, g.raw_data(), f32(db), R, O);
    r[2] = db;
  }
  return r;
}

Tensor embedding_backward_cuda(const Tensor& g_in, const Tensor& ids, int64_t V) {
  const int64_t D = g_in.size(-1), n = ids.numel();
  Tensor g = ready(g_in, DType::f32), dw = Tensor::zeros({V, D}, DType::f32, kGpu);
  cuda::embedding_backward(f32(g), static_cast<const int64_t*>(ids.raw_data()), f32(dw), n, D, V);
  return dw;
}

std::vector<Tensor> rms_norm_backward_cuda(const Tensor& x, const Tensor& r, const Tensor& w, double eps, DType dt,
                                           bool has_res, bool need_w, const Tensor& dout_in, const Tensor& dres_in) {
  const Tensor& v = r.defined() ? r : x;  // the normalised input
  const int64_t C = v.size(-1), rows = C ? v.numel() / C : 0;
  Tensor dres_out = dres_in.defined() ? ready(dres_in, DType::f32) : Tensor();
  std::vector<Tensor> out(3);
  if (!dout_in.defined()) {  // only the residual output is used: it passes straight through
    if (!dres_out.defined()) return out;
    out[0] = dres_out.to(dt);
    if (has_res) out[1] = dres_out;
    return out;
  }
  Tensor dout = ready(dout_in, dt), dx = Tensor::empty(v.shape(), dt, kGpu);
  Tensor dres = has_res ? Tensor::empty(v.shape(), DType::f32, kGpu) : Tensor();
  Tensor dw = need_w ? Tensor::empty({C}, DType::f32, kGpu) : Tensor();
  cuda::rms_norm_backward(dt, r.defined() ? nullptr : x.raw_data(), f32(r), f32(w), dout.raw_data(), f32(dres_out),
                          dx.raw_data(), f32(dres), f32(dw), rows, C, float(eps));
  return {dx, dres, dw};
}

std::vector<Tensor> conv1d_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& h0,
                                         bool silu, const Tensor& dy_in, const Tensor& dhT_in, const Tensor& dy2_in) {
  const DType dt = x.dtype();
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), W = w.size(1);
  Tensor dy = dy_in.defined() ? ready(dy_in, dt) : Tensor::zeros(x.shape(), dt, kGpu);
  Tensor dy2 = dy2_in.defined() ? ready(dy2_in, dt) : Tensor();
  Tensor dhT = dhT_in.defined() ? ready(dhT_in, dt) : Tensor();
  Tensor dx = Tensor::empty(x.shape(), dt, kGpu);
  Tensor dh0 = h0.defined() ? Tensor::empty(h0.shape(), dt, kGpu) : Tensor();
  Tensor dw = Tensor::empty({D, W}, DType::f32, kGpu);
  Tensor db = bias.defined() ? Tensor::empty({D}, DType::f32, kGpu) : Tensor();
  cuda::conv1d_backward(dt, x.raw_data(), f32(w), f32(bias), ptr(h0), dy.raw_data(), ptr(dy2), ptr(dhT), dx.raw_data(),
                        dh0.defined() ? dh0.raw_data() : nullptr, f32(dw), f32(db), B, L, D, W, silu);
  return {dx, dw, db, dh0};
}
#endif

}  // namespace ssm::detail
