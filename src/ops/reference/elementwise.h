// Reference loops for the elementwise ops (T = float or double): the f64 path, the f32 path in
// reference mode, and the oracle the fast kernels are tested against. Obvious code, libm math,
// no threads. Inputs are contiguous.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace ssm::ref {

// ---- scalar functions and their derivatives ---------------------------------------------------------
template <typename T>
T sigmoid(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  T e = std::exp(x);
  return e / (T(1) + e);
}
template <typename T>
T silu(T x) {
  return x * sigmoid(x);
}
template <typename T>
T relu(T x) {
  return x < 0 ? T(0) : x;
}  // NaN passes through
// gelu in double even for T = float: erfc of a rounded x/√2 in float would lose z² ulps in the tail.
template <typename T>
T gelu(T x) {
  return T(0.5 * double(x) * std::erfc(-double(x) / std::sqrt(2.0)));
}
template <typename T>
T softplus(T x, T threshold) {
  return x > threshold ? x : std::log1p(std::exp(x));
}
template <typename T>
T clamp(T x, T lo, T hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}  // NaN passes

// d/dx of the above (the backward kernels multiply these by the incoming gradient).
template <typename T>
T d_sigmoid_from_y(T y) {
  return y * (T(1) - y);
}
template <typename T>
T d_tanh_from_y(T y) {
  return T(1) - y * y;
}
template <typename T>
T d_silu(T x) {
  T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}
template <typename T>
T d_relu(T x) {
  return x > 0 ? T(1) : T(0);
}
template <typename T>
T d_gelu(T x) {  // Φ(x) + x φ(x), in double as gelu
  const double inv_sqrt_2pi = 0.398942280401432677939946059934, xd = double(x);
  return T(0.5 * std::erfc(-xd / std::sqrt(2.0)) + xd * inv_sqrt_2pi * std::exp(-0.5 * xd * xd));
}
template <typename T>
T d_softplus(T x, T threshold) {
  return x > threshold ? T(1) : sigmoid(x);
}
template <typename T>
T d_clamp(T x, T lo, T hi) {
  return (x >= lo && x <= hi) ? T(1) : T(0);
}

// ---- loops --------------------------------------------------------------------------------------------
// y[i] = f(x[i]), i < n.
template <typename T, typename F>
void unary(const T* x, T* y, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

// dx[i] = g[i] * d(x[i]), i < n (x may be the forward input or output, as the op needs).
template <typename T, typename D>
void unary_grad(const T* x, const T* g, T* dx, int64_t n, D d) {
  for (int64_t i = 0; i < n; ++i) dx[i] = g[i] * d(x[i]);
}

// out[i...] = f(a[i...], b[i...]) with NumPy broadcasting. a_shape / b_shape are right-aligned to
// out_shape (size-1 or missing dims broadcast). All three contiguous.
template <typename T, typename F>
void binary_broadcast(const T* a, const std::vector<int64_t>& a_shape, const T* b, const std::vector<int64_t>& b_shape,
                      T* out, const std::vector<int64_t>& out_shape, F f) {
  const size_t nd = out_shape.size();
  // Element strides of a and b in out's coordinates: 0 where the operand broadcasts.
  auto bstrides = [&](const std::vector<int64_t>& s) {
    std::vector<int64_t> st(nd, 0);
    int64_t acc = 1;
    for (size_t k = 0; k < s.size(); ++k) {
      size_t src = s.size() - 1 - k, dst = nd - 1 - k;
      st[dst] = s[src] == 1 ? 0 : acc;
      acc *= s[src];
    }
    return st;
  };
  std::vector<int64_t> sa = bstrides(a_shape), sb = bstrides(b_shape), idx(nd, 0);
  int64_t n = 1;
  for (int64_t s : out_shape) n *= s;
  for (int64_t i = 0; i < n; ++i) {
    int64_t oa = 0, ob = 0;
    for (size_t k = 0; k < nd; ++k) {
      oa += idx[k] * sa[k];
      ob += idx[k] * sb[k];
    }
    out[i] = f(a[oa], b[ob]);
    for (size_t k = nd; k-- > 0;) {
      if (++idx[k] < out_shape[k]) break;
      idx[k] = 0;
    }
  }
}

}  // namespace ssm::ref
