// Reference loops for the depthwise causal conv1d (token-major x [B, L, D], w [D, W]). Sums in
// double. Think of the input as xcat = concat(initial_state or zeros [W-1], x [L]) along time
// (length L + W - 1): y[t] = bias + Σ_k w[k] · xcat[t + k], final_state = xcat[L .. L + W - 1).
#pragma once
#include <cmath>
#include <cstdint>

namespace ssm::ref {

template <typename T>
struct ConvRefArgs {
  const T* x;     // [B, L, D]
  const T* w;     // [D, W]
  const T* bias;  // [D] or null
  const T* init;  // [B, W-1, D] or null (zeros)
  int64_t B, L, D, W;
  bool silu;
};

// xcat[b, s, d] as described above.
template <typename T>
double conv_xcat(const ConvRefArgs<T>& a, int64_t b, int64_t s, int64_t d) {
  const int64_t H = a.W - 1;
  if (s >= H) return double(a.x[(b * a.L + s - H) * a.D + d]);
  return a.init ? double(a.init[(b * H + s) * a.D + d]) : 0.0;
}

template <typename T>
double conv_pre(const ConvRefArgs<T>& a, int64_t b, int64_t t, int64_t d) {
  double acc = a.bias ? double(a.bias[d]) : 0.0;
  for (int64_t k = 0; k < a.W; ++k) acc += double(a.w[d * a.W + k]) * conv_xcat(a, b, t + k, d);
  return acc;
}

// y [B, L, D], final_state [B, W-1, D].
template <typename T>
void causal_conv1d(const ConvRefArgs<T>& a, T* y, T* final_state) {
  const int64_t H = a.W - 1;
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t t = 0; t < a.L; ++t)
      for (int64_t d = 0; d < a.D; ++d) {
        double p = conv_pre(a, b, t, d);
        y[(b * a.L + t) * a.D + d] = T(a.silu ? p / (1.0 + std::exp(-p)) : p);
      }
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t j = 0; j < H; ++j)
      for (int64_t d = 0; d < a.D; ++d) final_state[(b * H + j) * a.D + d] = T(conv_xcat(a, b, a.L + j, d));
}

// dy [B, L, D] (required), dfinal [B, W-1, D] or null. Outputs may be null when not wanted; dx and
// dinit are overwritten, dw [D, W] and dbias [D] are overwritten too.
template <typename T>
void causal_conv1d_backward(const ConvRefArgs<T>& a, const T* dy, const T* dfinal, T* dx, T* dw, T* dbias, T* dinit) {
  const int64_t H = a.W - 1, S = a.L + H;
  for (int64_t d = 0; d < a.D; ++d) {
    double dwk[8] = {0, 0, 0, 0, 0, 0, 0, 0}, db = 0;
    for (int64_t b = 0; b < a.B; ++b) {
      // dpre[t] = dy[t] · act'(pre[t])
      auto dpre = [&](int64_t t) {
        double g = double(dy[(b * a.L + t) * a.D + d]);
        if (!a.silu) return g;
        double p = conv_pre(a, b, t, d), s = 1.0 / (1.0 + std::exp(-p));
        return g * s * (1.0 + p * (1.0 - s));
      };
      for (int64_t s = 0; s < S; ++s) {  // gradient of xcat[s]
        double g = 0;
        for (int64_t k = 0; k < a.W; ++k) {
          int64_t t = s - k;
          if (t >= 0 && t < a.L) g += double(a.w[d * a.W + k]) * dpre(t);
        }
        if (dfinal && s >= a.L) g += double(dfinal[(b * H + s - a.L) * a.D + d]);
        if (s >= H) {
          if (dx) dx[(b * a.L + s - H) * a.D + d] = T(g);
        } else if (dinit) {
          dinit[(b * H + s) * a.D + d] = T(g);
        }
      }
      for (int64_t t = 0; t < a.L; ++t) {
        double g = dpre(t);
        db += g;
        for (int64_t k = 0; k < a.W; ++k) dwk[k] += g * conv_xcat(a, b, t + k, d);
      }
    }
    if (dw)
      for (int64_t k = 0; k < a.W; ++k) dw[d * a.W + k] = T(dwk[k]);
    if (dbias) dbias[d] = T(db);
  }
}

}  // namespace ssm::ref
