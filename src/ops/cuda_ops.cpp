// The forward ops on GPU tensors: argument checks, output allocation and the CUDA kernels of
// src/backend/cuda (elementwise.cu, norm.cu, conv.cu, gemm.cu), and their autograd records, whose
// backward passes live in cuda_train.cpp.
#include "ops/cuda_ops.h"

#include <cmath>
#include <cstdlib>

#include "ops/cuda_train.h"
#include "ops/op_util.h"

#ifdef SSM_HAVE_CUDA
#include "backend/cuda/kernels.h"
#endif

namespace ssm {

#ifndef SSM_HAVE_CUDA
void cuda_copy(const Tensor&, const Tensor&) { fail_no_cuda("copy_"); }
namespace detail {
Tensor unary_cuda(const char* op, CudaUnary, const Tensor&, double) { fail_no_cuda(op); }
Tensor binary_cuda(const char* op, CudaBinary, const Tensor&, const Tensor&) { fail_no_cuda(op); }
Tensor linear_cuda(const Tensor&, const Tensor&, const Tensor&) { fail_no_cuda("linear"); }
Tensor embedding_cuda(const Tensor&, const Tensor&) { fail_no_cuda("embedding"); }
NormAdd rms_norm_cuda(const char* op, const Tensor&, const Tensor&, const Tensor&, double, bool) { fail_no_cuda(op); }
Conv1dOut causal_conv1d_cuda(const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool) {
  fail_no_cuda("causal_conv1d");
}
Tensor concat_cuda(const std::vector<Tensor>&, int64_t) { fail_no_cuda("concat"); }
bool cuda_tf32() { return false; }
}  // namespace detail
#else
namespace {

constexpr Device kGpu = Device::cuda;

bool is_act(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

cuda::Walk walk(const Shape& shape, const Shape& s0, const Shape& s1, const Shape& s2 = {}) {
  cuda::Walk w;
  SSM_CHECK(shape.size() <= size_t(cuda::kMaxDims), "cuda",
            "tensors of more than " + std::to_string(cuda::kMaxDims) + " dims are not supported on the GPU");
  w.nd = int(shape.size());
  w.n = shape_numel(shape);
  for (size_t d = 0; d < shape.size(); ++d) {
    w.shape[d] = shape[d];
    w.s0[d] = s0[d];
    w.s1[d] = s1[d];
    w.s2[d] = s2.empty() ? 0 : s2[d];
  }
  // Merge each dim into the previous kept one where every operand walks the two as one (outer stride =
  // inner stride × inner size), and drop size-1 dims: fewer index divisions per element.
  int o = 0;
  for (int d = 0; d < w.nd; ++d) {
    if (w.shape[d] == 1) continue;
    const int64_t n = w.shape[d];
    if (o > 0 && w.s0[o - 1] == w.s0[d] * n && w.s1[o - 1] == w.s1[d] * n && w.s2[o - 1] == w.s2[d] * n) {
      w.shape[o - 1] *= n;
      w.s0[o - 1] = w.s0[d], w.s1[o - 1] = w.s1[d], w.s2[o - 1] = w.s2[d];
    } else {
      w.shape[o] = n, w.s0[o] = w.s0[d], w.s1[o] = w.s1[d], w.s2[o] = w.s2[d];
      ++o;
    }
  }
  if (o == 0) w.shape[0] = 1, w.s0[0] = w.s1[0] = w.s2[0] = 0, o = 1;  // one element (or a scalar)
  w.nd = o;
  return w;
}

Tensor cont(const Tensor& t) {  // contiguous copy recording no history
  autograd::NoGradGuard ng;
  return t.defined() ? t.contiguous() : Tensor();
}

}  // namespace

// Tensor::copy_ when either side is on the GPU and the copy is not one contiguous block of one dtype.
void cuda_copy(const Tensor& dst, const Tensor& src) {
  if (dst.device() == kGpu && src.device() == kGpu) {
    cuda::copy(walk(dst.shape(), dst.strides(), src.strides()), dst.raw_data(), dst.dtype(), src.raw_data(),
               src.dtype());
  } else if (dst.device() == kGpu) {  // upload as is, then convert on the GPU
    Tensor up = src.contiguous().to(kGpu);
    cuda_copy(dst, up);
  } else {  // convert on the GPU into dst's dtype, download, then place on the CPU
    Tensor tmp = Tensor::empty(src.shape(), dst.dtype(), kGpu);
    cuda_copy(tmp, src);
    Tensor(dst).copy_(tmp.to(Device::cpu));
  }
}

namespace detail {
namespace {

void check_gpu(const char* op, const Tensor& t, const char* name) {
  check_defined(op, t, name);
  SSM_CHECK(t.device() == kGpu, op,
            std::string(name) + " is on the CPU but the op runs on the GPU (move it with .to(Device::cuda))");
}
void check_act(const char* op, const Tensor& t, const char* name) {
  check_gpu(op, t, name);
  SSM_CHECK(is_act(t.dtype()), op,
            std::string(name) + " on the GPU must be f32, bf16 or f16, got " + dtype_name(t.dtype()));
}
void check_param(const char* op, const Tensor& t, const char* name, const Shape& shape) {
  check_gpu(op, t, name);
  SSM_CHECK(t.dtype() == DType::f32, op, std::string(name) + " on the GPU must be f32, got " + dtype_name(t.dtype()));
  check_shape(op, t, shape, name);
}
const float* fptr(const Tensor& t) { return t.defined() ? static_cast<const float*>(t.raw_data()) : nullptr; }

}  // namespace

bool cuda_tf32() {
  static const bool on = [] {
    const char* e = std::getenv("SSM_CUDA_TF32");
    return e && std::string(e) == "1";
  }();
  return on;
}

Tensor unary_cuda(const char* op, CudaUnary f, const Tensor& x, double param) {
  check_act(op, x, "x");
  Tensor xc = cont(x), y = Tensor::empty(x.shape(), x.dtype(), kGpu);
  cuda::unary(cuda::Unary(int(f)), x.dtype(), xc.raw_data(), y.raw_data(), x.numel(), float(param));
  if (autograd::needs_grad({&x})) {
    // silu and softplus need the input, exp its output, neg neither.
    Tensor xd = f == CudaUnary::silu || f == CudaUnary::softplus ? xc.detach() : Tensor();
    Tensor yd = f == CudaUnary::exp ? y.detach() : Tensor();
    autograd::record(op, {x}, {&y}, [f, xd, yd, param](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      if (!g[0].defined()) return {Tensor()};
      return {unary_backward_cuda(f, xd, yd, g[0], param)};
    });
  }
  return y;
}

Tensor binary_cuda(const char* op, CudaBinary f, const Tensor& a, const Tensor& b) {
  check_act(op, a, "a");
  check_act(op, b, "b");
  check_same_dtype(op, a, "a", b, "b");
  const Shape shape = broadcast_shapes(op, a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, a.dtype(), kGpu);
  {
    autograd::NoGradGuard ng;
    Tensor ae = a.expand(shape), be = b.expand(shape);
    cuda::binary(cuda::Binary(int(f)), a.dtype(), walk(shape, out.strides(), ae.strides(), be.strides()),
                 out.raw_data(), ae.raw_data(), be.raw_data());
  }
  if (autograd::needs_grad({&a, &b})) {
    const bool na = a.requires_grad(), nb = b.requires_grad();
    const bool keep = f == CudaBinary::mul || f == CudaBinary::div;  // the ops whose gradients read the inputs
    Tensor ad = keep ? a.detach() : Tensor(), bd = keep ? b.detach() : Tensor();
    Tensor od = f == CudaBinary::div ? out.detach() : Tensor();
    const Shape as = a.shape(), bs = b.shape();
    autograd::record(op, {a, b}, {&out}, [f, ad, bd, od, as, bs, na, nb](const std::vector<Tensor>& g) {
      if (!g[0].defined()) return std::vector<Tensor>(2);
      return binary_backward_cuda(f, ad, bd, od, g[0], as, bs, na, nb);
    });
  }
  return out;
}

Tensor linear_cuda(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const char* op = "linear";
  check_act(op, x, "x");
  check_act(op, w, "w");
  check_dim(op, w, 2, "w");
  SSM_CHECK(x.dim() >= 1, op, "x must have at least 1 dim");
  const int64_t I = w.size(1), O = w.size(0);
  SSM_CHECK(x.size(-1) == I, op,
            "x has " + std::to_string(x.size(-1)) + " input features (shape " + shape_str(x.shape()) + ") but w " +
                shape_str(w.shape()) + " expects " + std::to_string(I));
  SSM_CHECK(x.dtype() == w.dtype() || x.dtype() == DType::f32 || w.dtype() == DType::f32, op,
            std::string("x is ") + dtype_name(x.dtype()) + " but w is " + dtype_name(w.dtype()) +
                " (on the GPU they must match, or one be f32)");
  if (bias.defined()) check_param(op, bias, "bias", {O});
  const DType cdt = x.dtype() == DType::f32 ? w.dtype() : x.dtype();  // the half dtype when they differ
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  const int64_t R = shape_numel(out_shape);
  out_shape.push_back(O);
  Tensor out = Tensor::empty(out_shape, x.dtype(), kGpu);  // [..., O]
  Tensor xc, wc;                                           // x [R, I] and w in the GEMM dtype, kept for the backward
  {
    autograd::NoGradGuard ng;
    xc = x.contiguous().to(cdt).view({R, I});
    wc = w.contiguous().to(cdt);
  }
  if (I == 0) {
    out.fill_(0);
  } else {
    cuda::gemm(cdt, x.dtype(), xc.raw_data(), wc.raw_data(), out.raw_data(), R, I, O, cuda_tf32());
  }
  if (bias.defined()) cuda::add_bias(x.dtype(), out.raw_data(), fptr(bias), R, O);
  if (autograd::needs_grad({&x, &w, &bias})) {
    LinearSaved s{xc.detach(),
                  wc.detach(),
                  x.shape(),
                  cdt,
                  x.dtype(),
                  w.dtype(),
                  x.requires_grad(),
                  w.requires_grad(),
                  bias.defined() && bias.requires_grad()};
    if (!s.gw) s.x = Tensor();  // dw needs x, dx needs w, the bias gradient neither
    if (!s.gx) s.w = Tensor();
    autograd::record(op, {x, w, bias}, {&out}, [s, R, I, O](const std::vector<Tensor>& g) {
      if (!g[0].defined()) return std::vector<Tensor>(3);
      return linear_backward_cuda(s, g[0], R, I, O);
    });
  }
  return out;
}

Tensor embedding_cuda(const Tensor& weight, const Tensor& ids) {
  const char* op = "embedding";
  check_act(op, weight, "weight");
  check_dim(op, weight, 2, "weight");
  check_defined(op, ids, "ids");
  SSM_CHECK(ids.dtype() == DType::i64 || ids.dtype() == DType::i32, op,
            std::string("ids must be i64 or i32, got ") + dtype_name(ids.dtype()));
  const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
  std::vector<int64_t> idv = ids.to_vector_i64();  // [n], checked on the host
  for (int64_t t = 0; t < n; ++t)
    SSM_CHECK(idv[size_t(t)] >= 0 && idv[size_t(t)] < V, op,
              "id " + std::to_string(idv[size_t(t)]) + " at position " + std::to_string(t) +
                  " is out of range for a vocabulary of " + std::to_string(V) + " rows");
  Tensor dev_ids = Tensor::from_vector(idv, {n}).to(kGpu);
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, DType::f32, kGpu);  // [..., D]
  Tensor wc = cont(weight);
  cuda::embedding(wc.dtype(), wc.raw_data(), static_cast<const int64_t*>(dev_ids.raw_data()),
                  static_cast<float*>(out.raw_data()), n, D);
  if (autograd::needs_grad({&weight}))
    autograd::record(op, {weight, ids}, {&out}, [dev_ids, V](const std::vector<Tensor>& g) {
      std::vector<Tensor> r(2);
      if (g[0].defined()) r[0] = embedding_backward_cuda(g[0], dev_ids, V);
      return r;
    });
  return out;
}

NormAdd rms_norm_cuda(const char* op, const Tensor& x, const Tensor& residual, const Tensor& w, double eps, bool add) {
  check_act(op, x, "x");
  SSM_CHECK(x.dim() >= 1 && x.size(-1) >= 1, op, "x must have a non-empty last dim, got shape " + shape_str(x.shape()));
  const int64_t C = x.size(-1), rows = x.numel() / C;
  check_param(op, w, "w", {C});
  if (residual.defined()) {
    check_gpu(op, residual, "residual");
    SSM_CHECK(residual.dtype() == DType::f32, op,
              std::string("residual on the GPU must be f32, got ") + dtype_name(residual.dtype()));
    check_shape(op, residual, x.shape(), "residual");
  }
  SSM_CHECK(eps >= 0 && std::isfinite(eps), op, "eps must be finite and >= 0, got " + std::to_string(eps));
  Tensor xc = cont(x), rc = cont(residual);
  NormAdd r;
  r.out = Tensor::empty(x.shape(), x.dtype(), kGpu);
  if (add) r.residual = Tensor::empty(x.shape(), DType::f32, kGpu);
  cuda::rms_norm(x.dtype(), xc.raw_data(), fptr(rc), add ? static_cast<float*>(r.residual.raw_data()) : nullptr,
                 fptr(w), r.out.raw_data(), rows, C, float(eps));
  if (autograd::needs_grad({&x, &residual, &w})) {
    // The backward recomputes the row statistics from the norm's input: the f32 residual output of the
    // fused add, or x itself.
    Tensor xd = add ? Tensor() : xc.detach(), rd = add ? r.residual.detach() : Tensor(), wd = w.detach();
    const bool has_res = residual.defined(), need_w = w.requires_grad();
    const DType xdt = x.dtype();
    std::vector<Tensor*> outs{&r.out};
    if (add) outs.push_back(&r.residual);
    autograd::record(op, {x, residual, w}, outs, [xd, rd, wd, eps, xdt, has_res, need_w](const std::vector<Tensor>& g) {
      return rms_norm_backward_cuda(xd, rd, wd, eps, xdt, has_res, need_w, g[0], g.size() > 1 ? g[1] : Tensor());
    });
  }
  return r;
}

Conv1dOut causal_conv1d_cuda(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& initial_state,
                             bool silu) {
  const char* op = "causal_conv1d";
  check_act(op, x, "x");
  check_dim(op, x, 3, "x [B, L, D]");
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  check_gpu(op, w, "w");
  check_dim(op, w, 2, "w [D, W]");
  const int64_t W = w.size(1);
  check_param(op, w, "w", {D, W});
  SSM_CHECK(W >= 2 && W <= 8, op, "kernel width W=" + std::to_string(W) + " is not in [2, 8]");
  if (bias.defined()) check_param(op, bias, "bias", {D});
  if (initial_state.defined()) {
    check_gpu(op, initial_state, "initial_state");
    check_same_dtype(op, initial_state, "initial_state", x, "x");
    check_shape(op, initial_state, {B, W - 1, D}, "initial_state");
  }
  Tensor xc = cont(x), wc = cont(w), h0 = cont(initial_state);
  Conv1dOut r{Tensor::empty({B, L, D}, x.dtype(), kGpu), Tensor::empty({B, W - 1, D}, x.dtype(), kGpu)};
  cuda::conv1d(x.dtype(), xc.raw_data(), fptr(wc), fptr(bias), h0.defined() ? h0.raw_data() : nullptr, r.y.raw_data(),
               r.final_state.raw_data(), B, L, D, W, silu);
  if (autograd::needs_grad({&x, &w, &bias, &initial_state})) {
    Tensor xd = xc.detach(), wd = wc.detach(), bd = bias.defined() ? bias.detach() : Tensor();
    Tensor hd = h0.defined() ? h0.detach() : Tensor();
    // split_sums: y usually has two consumers (x_proj and the scan in the Mamba-1 mixer); the backward
    // kernel adds their gradients as it reads them instead of a separate add.
    autograd::record(
        op, {x, w, bias, initial_state}, {&r.y, &r.final_state},
        [xd, wd, bd, hd, silu](const std::vector<Tensor>& g) {
          Tensor dy = g[0], dy2 = g[2], dhT = g[1];
          if (!dy.defined()) std::swap(dy, dy2);
          if (g[3].defined()) dhT = dhT.defined() ? add(dhT, g[3]) : g[3];
          if (!dy.defined() && !dhT.defined()) return std::vector<Tensor>(4);
          return conv1d_backward_cuda(xd, wd, bd, hd, silu, dy, dhT, dy2);
        },
        /*split_sums=*/true);
  }
  return r;
}

Tensor concat_cuda(const std::vector<Tensor>& xs, int64_t dim) {
  const char* op = "concat";
  const Tensor& x0 = xs[0];
  const int64_t d = wrap_dim(op, dim, x0.dim());
  Shape shape = x0.shape();
  shape[size_t(d)] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    check_gpu(op, xs[i], "every tensor");
    SSM_CHECK(xs[i].dtype() == x0.dtype(), op,
              "tensor " + std::to_string(i) + " is " + dtype_name(xs[i].dtype()) + " but tensor 0 is " +
                  dtype_name(x0.dtype()));
    bool same = xs[i].dim() == x0.dim();
    for (int64_t k = 0; same && k < x0.dim(); ++k) same = k == d || xs[i].size(k) == x0.size(k);
    SSM_CHECK(same, op,
              "tensor " + std::to_string(i) + " has shape " + shape_str(xs[i].shape()) + ", incompatible with " +
                  shape_str(x0.shape()) + " outside dimension " + std::to_string(d));
    shape[size_t(d)] += xs[i].size(d);
  }
  Tensor out = Tensor::empty(shape, x0.dtype(), kGpu);
  std::vector<int64_t> sizes;
  {
    autograd::NoGradGuard ng;
    int64_t at = 0;
    for (const Tensor& x : xs) {
      out.narrow(d, at, x.size(d)).copy_(x);
      at += x.size(d);
      sizes.push_back(x.size(d));
    }
  }
  if (autograd::needs_grad(xs))
    autograd::record(op, xs, {&out}, [sizes, d](const std::vector<Tensor>& g) {
      std::vector<Tensor> r(sizes.size());
      if (!g[0].defined()) return r;
      int64_t at = 0;
      for (size_t i = 0; i < sizes.size(); ++i) {
        r[i] = g[0].narrow(d, at, sizes[i]).contiguous();
        at += sizes[i];
      }
      return r;
    });
  return out;
}

}  // namespace detail
#endif

}  // namespace ssm
