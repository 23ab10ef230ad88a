// Elementwise ops: NumPy-broadcasting binary ops, scalar ops and activations.
// Fast f32 path: contiguous buffers, parallel_for over chunks, straight-line loops that GCC vectorises
// (activations use ops/fast_math.h). Reference path (f64, or reference mode): ops/reference/elementwise.h.
// GCC: no-trapping-math lets if-conversion turn the selects in the kernels into blends and
// no-math-errno drops errno paths, so the loops below vectorise; neither changes a computed value.
#if defined(__GNUC__) && !defined(__clang__)
#endif
#include <algorithm>
#include <cmath>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "ops/cuda_ops.h"
#include "ops/cuda_train.h"
#include "ops/ssd_cuda.h"
#include "ops/fast_math.h"
#include "ops/op_util.h"
#include "ops/reference/elementwise.h"

namespace ssm {
namespace {

constexpr int64_t kGrain = 16384;  // elements per task (64 KiB of f32): amortises the thread handoff

Tensor cont(const Tensor& t) {  // contiguous copy that records no history (the op records its own)
  autograd::NoGradGuard ng;
  return t.contiguous();
}

void check_input(const char* op, const Tensor& x, const char* name) {
  detail::check_float(op, x, name);
  SSM_NO_CUDA(op, x);
}

// y = f(x) elementwise. `fast` maps float -> float (vectorisable); `ref` is generic over T.
template <typename Fast, typename Ref>
Tensor map_unary(const char* op, const Tensor& x, Fast fast, Ref ref) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());  // same shape as x
  int64_t n = x.numel();
  if (detail::use_fast(x.dtype())) {
    const float* xp = x.data<float>();
    float* yp = y.data<float>();
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) yp[i] = fast(xp[i]);
    });
  } else {
    detail::dispatch_float(op, x.dtype(), [&]<typename T>() { ref::unary<T>(x.data<T>(), y.data<T>(), n, ref); });
  }
  return y;
}

// dx = g * d(v) elementwise, v the saved forward input or output (contiguous, same shape as g).
template <typename Fast, typename Ref>
Tensor map_grad(const char* op, const Tensor& v, const Tensor& g_in, Fast fast_d, Ref ref_d) {
  Tensor g = cont(g_in.to(v.dtype()));
  detail::check_shape(op, g, v.shape(), "gradient");
  Tensor dx = Tensor::empty(v.shape(), v.dtype());  // same shape as v
  int64_t n = v.numel();
  if (detail::use_fast(v.dtype())) {
    const float* vp = v.data<float>();
    const float* gp = g.data<float>();
    float* dp = dx.data<float>();
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dp[i] = gp[i] * fast_d(vp[i]);
    });
  } else {
    detail::dispatch_float(op, v.dtype(),
                           [&]<typename T>() { ref::unary_grad<T>(v.data<T>(), g.data<T>(), dx.data<T>(), n, ref_d); });
  }
  return dx;
}

// Records a one-input op whose gradient is back(g).
void record_unary(const char* op, const Tensor& x, Tensor& y, std::function<Tensor(const Tensor&)> back) {
  if (!autograd::needs_grad({&x})) return;
  autograd::record(op, {x}, {&y}, [back = std::move(back)](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    if (!g[0].defined()) return {Tensor()};
    return {back(g[0])};
  });
}

// ---- broadcasting binary kernel (fast path) ------------------------------------------------------------
// The output's dims with size 1 dropped and adjacent dims merged where both operands stay linear, so
// that most cases become one flat loop ([n] op [n], [n] op scalar) or rows of a contiguous last dim.
struct BroadcastPlan {
  std::vector<int64_t> size, sa, sb;  // per merged dim: extent, element stride in a, in b (0 = broadcast)
};

std::vector<int64_t> broadcast_strides(const Shape& s, size_t nd) {
  std::vector<int64_t> st(nd, 0);
  int64_t acc = 1;
  for (size_t k = 0; k < s.size(); ++k) {
    size_t src = s.size() - 1 - k;
    st[nd - 1 - k] = s[src] == 1 ? 0 : acc;
    acc *= s[src];
  }
  return st;
}

BroadcastPlan make_plan(const Shape& a, const Shape& b, const Shape& out) {
  std::vector<int64_t> sa = broadcast_strides(a, out.size()), sb = broadcast_strides(b, out.size());
  BroadcastPlan p;
  for (size_t k = 0; k < out.size(); ++k) {
    if (out[k] == 1) continue;
    if (!p.size.empty() && p.sa.back() == sa[k] * out[k] && p.sb.back() == sb[k] * out[k]) {
      p.size.back() *= out[k];
      p.sa.back() = sa[k];
      p.sb.back() = sb[k];
    } else {
      p.size.push_back(out[k]);
      p.sa.push_back(sa[k]);
      p.sb.push_back(sb[k]);
    }
  }
  if (p.size.empty()) p = {{1}, {0}, {0}};
  return p;
}

template <int IA, int IB, typename F>
void binary_run(const float* a, const float* b, float* o, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) o[i] = f(a[i * IA], b[i * IB]);
}

template <typename F>
void binary_fast(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  BroadcastPlan p = make_plan(a.shape(), b.shape(), out.shape());
  const float* ap = a.data<float>();
  const float* bp = b.data<float>();
  float* op = out.data<float>();
  const int64_t nd = int64_t(p.size.size()), inner = p.size.back();
  const int64_t ia = p.sa.back(), ib = p.sb.back();  // 0 or 1: the last merged dim is dense or broadcast
  parallel_for(out.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      int64_t row = i / inner, col = i % inner, len = std::min(inner - col, end - i);
      int64_t oa = col * ia, ob = col * ib;
      for (int64_t k = nd - 2, r = row; k >= 0; --k) {
        int64_t c = r % p.size[size_t(k)];
        r /= p.size[size_t(k)];
        oa += c * p.sa[size_t(k)];
        ob += c * p.sb[size_t(k)];
      }
      if (ia && ib)
        binary_run<1, 1>(ap + oa, bp + ob, op + i, len, f);
      else if (ia)
        binary_run<1, 0>(ap + oa, bp + ob, op + i, len, f);
      else if (ib)
        binary_run<0, 1>(ap + oa, bp + ob, op + i, len, f);
      else
        binary_run<0, 0>(ap + oa, bp + ob, op + i, len, f);
      i += len;
    }
  });
}

// out = f(a, b) with broadcasting; f is generic over the element type.
template <typename F>
Tensor map_binary(const char* op, const Tensor& a, const Tensor& b, F f) {
  Shape out_shape = detail::broadcast_shapes(op, a.shape(), b.shape());
  Tensor out = Tensor::empty(out_shape, a.dtype());  // broadcast(a, b)
  if (detail::use_fast(a.dtype())) {
    binary_fast(a, b, out, f);
  } else {
    detail::dispatch_float(op, a.dtype(), [&]<typename T>() {
      ref::binary_broadcast<T>(a.data<T>(), a.shape(), b.data<T>(), b.shape(), out.data<T>(), out_shape, f);
    });
  }
  return out;
}

// Checks, computes and records a broadcasting binary op. back(g, a, b, out) returns {grad_a, grad_b}
// before reduction to the input shapes (sum_to is applied here); entries may be left undefined.
using BinaryBack = std::function<std::vector<Tensor>(const Tensor& g, const Tensor& a, const Tensor& b,
                                                     const Tensor& out, bool need_a, bool need_b)>;
template <typename F>
Tensor binary_op(const char* op, const Tensor& a_in, const Tensor& b_in, F f, BinaryBack back) {
  check_input(op, a_in, "a");
  check_input(op, b_in, "b");
  detail::check_same_dtype(op, a_in, "a", b_in, "b");
  Tensor a = cont(a_in), b = cont(b_in);
  Tensor out = map_binary(op, a, b, f);
  if (autograd::needs_grad({&a_in, &b_in})) {
    bool need_a = a_in.requires_grad(), need_b = b_in.requires_grad();
    Tensor out_d = out.detach();
    autograd::record(op, {a_in, b_in}, {&out},
                     [a, b, out_d, need_a, need_b, back](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                       if (!g[0].defined()) return {Tensor(), Tensor()};
                       std::vector<Tensor> r = back(g[0], a, b, out_d, need_a, need_b);
                       if (r[0].defined()) r[0] = detail::sum_to(r[0], a.shape());
                       if (r[1].defined()) r[1] = detail::sum_to(r[1], b.shape());
                       return r;
                     });
  }
  return out;
}

}  // namespace

// ---- binary ---------------------------------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b) {
  if (a.device() == Device::cuda || b.device() == Device::cuda)
    return detail::binary_cuda("add", detail::CudaBinary::add, a, b);
  return binary_op(
      "add", a, b, [](auto x, auto y) { return x + y; },
      [](const Tensor& g, const Tensor&, const Tensor&, const Tensor&, bool na, bool nb) {
        return std::vector<Tensor>{na ? g : Tensor(), nb ? g : Tensor()};
      });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  if (a.device() == Device::cuda || b.device() == Device::cuda)
    return detail::binary_cuda("sub", detail::CudaBinary::sub, a, b);
  return binary_op(
      "sub", a, b, [](auto x, auto y) { return x - y; },
      [](const Tensor& g, const Tensor&, const Tensor&, const Tensor&, bool na, bool nb) {
        return std::vector<Tensor>{na ? g : Tensor(), nb ? neg(g) : Tensor()};
      });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  if (a.device() == Device::cuda || b.device() == Device::cuda)
    return detail::binary_cuda("mul", detail::CudaBinary::mul, a, b);
  return binary_op(
      "mul", a, b, [](auto x, auto y) { return x * y; },
      [](const Tensor& g, const Tensor& a, const Tensor& b, const Tensor&, bool na, bool nb) {
        return std::vector<Tensor>{na ? mul(g, b) : Tensor(), nb ? mul(g, a) : Tensor()};
      });
}

Tensor div(const Tensor& a, const Tensor& b) {
  if (a.device() == Device::cuda || b.device() == Device::cuda)
    return detail::binary_cuda("div", detail::CudaBinary::div, a, b);
  // d(a/b)/db = -a/b² = -out/b.
  return binary_op(
      "div", a, b, [](auto x, auto y) { return x / y; },
      [](const Tensor& g, const Tensor&, const Tensor& b, const Tensor& out, bool na, bool nb) {
        return std::vector<Tensor>{na ? div(g, b) : Tensor(), nb ? neg(div(mul(g, out), b)) : Tensor()};
      });
}

// ---- scalar and simple unary ops ---------------------------------------------------------------------------
Tensor add_scalar(const Tensor& x_in, double s) {
  if (x_in.defined() && x_in.device() == Device::cuda) return detail::affine_cuda("add_scalar", x_in, 1.0, s);
  check_input("add_scalar", x_in, "x");
  Tensor x = cont(x_in);
  float sf = float(s);
  Tensor y = map_unary(
      "add_scalar", x, [sf](float v) { return v + sf; }, [s](auto v) { return v + decltype(v)(s); });
  record_unary("add_scalar", x_in, y, [](const Tensor& g) { return g; });
  return y;
}

Tensor mul_scalar(const Tensor& x_in, double s) {
  if (x_in.defined() && x_in.device() == Device::cuda) return detail::affine_cuda("mul_scalar", x_in, s, 0.0);
  check_input("mul_scalar", x_in, "x");
  Tensor x = cont(x_in);
  float sf = float(s);
  Tensor y = map_unary(
      "mul_scalar", x, [sf](float v) { return v * sf; }, [s](auto v) { return v * decltype(v)(s); });
  record_unary("mul_scalar", x_in, y, [s](const Tensor& g) { return mul_scalar(g, s); });
  return y;
}

Tensor neg(const Tensor& x_in) {
  if (x_in.device() == Device::cuda) return detail::unary_cuda("neg", detail::CudaUnary::neg, x_in);
  check_input("neg", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y = map_unary(
      "neg", x, [](float v) { return -v; }, [](auto v) { return -v; });
  record_unary("neg", x_in, y, [](const Tensor& g) { return neg(g); });
  return y;
}

Tensor exp(const Tensor& x_in) {
  if (x_in.device() == Device::cuda) return detail::unary_cuda("exp", detail::CudaUnary::exp, x_in);
  check_input("exp", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y = map_unary(
      "exp", x, [](float v) { return fm::exp(v); }, [](auto v) { return std::exp(v); });
  Tensor y_d = y.detach();
  record_unary("exp", x_in, y, [y_d](const Tensor& g) { return mul(g, y_d); });
  return y;
}

Tensor log(const Tensor& x_in) {
  check_input("log", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y = map_unary(
      "log", x, [](float v) { return fm::log(v); }, [](auto v) { return std::log(v); });
  record_unary("log", x_in, y, [x](const Tensor& g) { return div(g, x); });
  return y;
}

Tensor sqrt(const Tensor& x_in) {
  check_input("sqrt", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y;
  if (detail::use_fast(x.dtype())) {          // GCC will not vectorise std::sqrt (errno), so use vsqrtps directly
    y = Tensor::empty(x.shape(), x.dtype());  // same shape as x
    const float* xp = x.data<float>();
    float* yp = y.data<float>();
    parallel_for(x.numel(), kGrain, [&](int64_t b, int64_t e) {
      int64_t i = b;
#if defined(__AVX__)
      for (; i + 8 <= e; i += 8) _mm256_storeu_ps(yp + i, _mm256_sqrt_ps(_mm256_loadu_ps(xp + i)));
#endif
      for (; i < e; ++i) yp[i] = std::sqrt(xp[i]);
    });
  } else {
    y = map_unary(
        "sqrt", x, [](float v) { return std::sqrt(v); }, [](auto v) { return std::sqrt(v); });
  }
  Tensor y_d = y.detach();
  record_unary("sqrt", x_in, y, [y_d](const Tensor& g) { return div(g, mul_scalar(y_d, 2.0)); });
  return y;
}

Tensor square(const Tensor& x_in) {
  check_input("square", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y = map_unary(
      "square", x, [](float v) { return v * v; }, [](auto v) { return v * v; });
  record_unary("square", x_in, y, [x](const Tensor& g) { return mul(g, mul_scalar(x, 2.0)); });
  return y;
}

// ---- activations (backward through fused derivative kernels) -------------------------------------------------
Tensor sigmoid(const Tensor& x_in) {
  check_input("sigmoid", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y = map_unary(
      "sigmoid", x, [](float v) { return fm::sigmoid(v); }, [](auto v) { return ref::sigmoid(v); });
  Tensor y_d = y.detach();
  record_unary("sigmoid", x_in, y, [y_d](const Tensor& g) {
    return map_grad(
        "sigmoid_backward", y_d, g, [](float s) { return s * (1.0f - s); },
        [](auto s) { return ref::d_sigmoid_from_y(s); });
  });
  return y;
}

Tensor tanh(const Tensor& x_in) {
  check_input("tanh", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y = map_unary(
      "tanh", x, [](float v) { return fm::tanh(v); }, [](auto v) { return std::tanh(v); });
  Tensor y_d = y.detach();
  record_unary("tanh", x_in, y, [y_d](const Tensor& g) {
    return map_grad(
        "tanh_backward", y_d, g, [](float t) { return 1.0f - t * t; }, [](auto t) { return ref::d_tanh_from_y(t); });
  });
  return y;
}

Tensor relu(const Tensor& x_in) {
  check_input("relu", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y = map_unary(
      "relu", x, [](float v) { return v < 0.0f ? 0.0f : v; }, [](auto v) { return ref::relu(v); });
  record_unary("relu", x_in, y, [x](const Tensor& g) {
    return map_grad(
        "relu_backward", x, g, [](float v) { return v > 0.0f ? 1.0f : 0.0f; }, [](auto v) { return ref::d_relu(v); });
  });
  return y;
}

Tensor silu(const Tensor& x_in) {
  if (x_in.device() == Device::cuda) return detail::unary_cuda("silu", detail::CudaUnary::silu, x_in);
  check_input("silu", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y = map_unary(
      "silu", x, [](float v) { return fm::silu(v); }, [](auto v) { return ref::silu(v); });
  record_unary("silu", x_in, y, [x](const Tensor& g) {
    return map_grad(
        "silu_backward", x, g,
        [](float v) {
          float s = fm::sigmoid(v);
          return s * (1.0f + v * (1.0f - s));
        },
        [](auto v) { return ref::d_silu(v); });
  });
  return y;
}

Tensor gelu(const Tensor& x_in) {
  check_input("gelu", x_in, "x");
  Tensor x = cont(x_in);
  Tensor y = map_unary(
      "gelu", x, [](float v) { return v * fm::normal_cdf(v); }, [](auto v) { return ref::gelu(v); });
  record_unary("gelu", x_in, y, [x](const Tensor& g) {
    return map_grad(
        "gelu_backward", x, g,
        [](float v) { return fm::normal_cdf(v) + v * 0.398942280401432678f * fm::exp(-0.5f * v * v); },
        [](auto v) { return ref::d_gelu(v); });
  });
  return y;
}

Tensor softplus(const Tensor& x_in, double threshold) {
  if (x_in.device() == Device::cuda)
    return detail::unary_cuda("softplus", detail::CudaUnary::softplus, x_in, threshold);
  check_input("softplus", x_in, "x");
  SSM_CHECK(!std::isnan(threshold), "softplus", "threshold is NaN");
  Tensor x = cont(x_in);
  float tf = float(threshold);
  Tensor y = map_unary(
      "softplus", x, [tf](float v) { return fm::softplus(v, tf); },
      [threshold](auto v) { return ref::softplus(v, decltype(v)(threshold)); });
  record_unary("softplus", x_in, y, [x, threshold, tf](const Tensor& g) {
    return map_grad(
        "softplus_backward", x, g, [tf](float v) { return v > tf ? 1.0f : fm::sigmoid(v); },
        [threshold](auto v) { return ref::d_softplus(v, decltype(v)(threshold)); });
  });
  return y;
}

Tensor clamp(const Tensor& x_in, double lo, double hi) {
  if (x_in.device() == Device::cuda) return detail::clamp_cuda(x_in, lo, hi);
  check_input("clamp", x_in, "x");
  SSM_CHECK(lo <= hi, "clamp", "lo (" + std::to_string(lo) + ") must be <= hi (" + std::to_string(hi) + ")");
  Tensor x = cont(x_in);
  float lf = float(lo), hf = float(hi);
  Tensor y = map_unary(
      "clamp", x, [lf, hf](float v) { return v < lf ? lf : (v > hf ? hf : v); },
      [lo, hi](auto v) { return ref::clamp(v, decltype(v)(lo), decltype(v)(hi)); });
  record_unary("clamp", x_in, y, [x, lo, hi, lf, hf](const Tensor& g) {
    return map_grad(
        "clamp_backward", x, g, [lf, hf](float v) { return (v >= lf && v <= hf) ? 1.0f : 0.0f; },
        [lo, hi](auto v) { return ref::d_clamp(v, decltype(v)(lo), decltype(v)(hi)); });
  });
  return y;
}

}  // namespace ssm
