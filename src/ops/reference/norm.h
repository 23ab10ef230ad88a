// Reference loops for the norms (statistics in double): the f64 kernels, the f32 fallback in
// reference mode and the oracle for the fast kernels. Rows are independent; the last dim has C
// channels. Backward functions accumulate (+=) into dw / db, and overwrite dx / dz.
#pragma once
#include <cmath>
#include <cstdint>

namespace ssm::ref {

inline double sigmoid_d(double z) { return 1.0 / (1.0 + std::exp(-z)); }
inline double silu_d(double z) { return z * sigmoid_d(z); }
inline double dsilu_d(double z) {
  double s = sigmoid_d(z);
  return s * (1.0 + z * (1.0 - s));
}

// Gated grouped RMSNorm; covers plain RMSNorm (z == nullptr, group == C). Per row and group of
// `group` channels: v = x (· silu(z) unless norm_before_gate), y = v / sqrt(mean(v²) + eps) · w
// (· silu(z) when norm_before_gate).
template <typename T>
void gated_rms_norm(const T* x, const T* z, const T* w, T* y, int64_t R, int64_t C, int64_t group, double eps,
                    bool norm_before_gate) {
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t g0 = 0; g0 < C; g0 += group) {
      const int64_t base = r * C + g0;
      auto v = [&](int64_t c) {
        double xv = double(x[base + c]);
        return (z && !norm_before_gate) ? xv * silu_d(double(z[base + c])) : xv;
      };
      double ss = 0;
      for (int64_t c = 0; c < group; ++c) ss += v(c) * v(c);
      const double rs = 1.0 / std::sqrt(ss / double(group) + eps);
      for (int64_t c = 0; c < group; ++c) {
        double out = v(c) * rs * double(w[g0 + c]);
        if (z && norm_before_gate) out *= silu_d(double(z[base + c]));
        y[base + c] = T(out);
      }
    }
  }
}

template <typename T>
void gated_rms_norm_backward(const T* x, const T* z, const T* w, const T* dy, T* dx, T* dz, T* dw, int64_t R, int64_t C,
                             int64_t group, double eps, bool norm_before_gate) {
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t g0 = 0; g0 < C; g0 += group) {
      const int64_t base = r * C + g0;
      auto gate = [&](int64_t c) { return z ? silu_d(double(z[base + c])) : 1.0; };
      auto v = [&](int64_t c) { return double(x[base + c]) * ((z && !norm_before_gate) ? gate(c) : 1.0); };
      double ss = 0;
      for (int64_t c = 0; c < group; ++c) ss += v(c) * v(c);
      const double rs = 1.0 / std::sqrt(ss / double(group) + eps);
      // dvhat = d out / d vhat, with vhat = v · rs.
      auto dvhat = [&](int64_t c) {
        double d = double(dy[base + c]) * double(w[g0 + c]);
        return (z && norm_before_gate) ? d * gate(c) : d;
      };
      double dot = 0;
      for (int64_t c = 0; c < group; ++c) dot += dvhat(c) * v(c) * rs;
      dot /= double(group);
      for (int64_t c = 0; c < group; ++c) {
        const double vhat = v(c) * rs;
        const double dv = rs * (dvhat(c) - vhat * dot);
        if (dw) dw[g0 + c] += T(double(dy[base + c]) * vhat * ((z && norm_before_gate) ? gate(c) : 1.0));
        if (!z) {
          dx[base + c] = T(dv);
          continue;
        }
        const double xv = double(x[base + c]), zv = double(z[base + c]);
        if (norm_before_gate) {
          dx[base + c] = T(dv);
          if (dz) dz[base + c] = T(double(dy[base + c]) * vhat * double(w[g0 + c]) * dsilu_d(zv));
        } else {
          dx[base + c] = T(dv * gate(c));
          if (dz) dz[base + c] = T(dv * xv * dsilu_d(zv));
        }
      }
    }
  }
}

// LayerNorm over the last dim: y = (x - mean) / sqrt(var + eps) · w + b (biased variance); b may
// be null.
template <typename T>
void layer_norm(const T* x, const T* w, const T* b, T* y, int64_t R, int64_t C, double eps) {
  for (int64_t r = 0; r < R; ++r) {
    const T* xr = x + r * C;
    double mu = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mu += double(xr[c]);
    mu /= double(C);
    for (int64_t c = 0; c < C; ++c) var += (double(xr[c]) - mu) * (double(xr[c]) - mu);
    const double rs = 1.0 / std::sqrt(var / double(C) + eps);
    for (int64_t c = 0; c < C; ++c)
      y[r * C + c] = T((double(xr[c]) - mu) * rs * double(w[c]) + (b ? double(b[c]) : 0.0));
  }
}

template <typename T>
void layer_norm_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int64_t R, int64_t C, double eps) {
  for (int64_t r = 0; r < R; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy + r * C;
    double mu = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mu += double(xr[c]);
    mu /= double(C);
    for (int64_t c = 0; c < C; ++c) var += (double(xr[c]) - mu) * (double(xr[c]) - mu);
    const double rs = 1.0 / std::sqrt(var / double(C) + eps);
    double mean_d = 0, mean_dx = 0;  // mean(dxhat), mean(dxhat · xhat)
    for (int64_t c = 0; c < C; ++c) {
      const double d = double(dyr[c]) * double(w[c]);
      mean_d += d;
      mean_dx += d * (double(xr[c]) - mu) * rs;
    }
    mean_d /= double(C);
    mean_dx /= double(C);
    for (int64_t c = 0; c < C; ++c) {
      const double xhat = (double(xr[c]) - mu) * rs;
      const double d = double(dyr[c]) * double(w[c]);
      dx[r * C + c] = T(rs * (d - mean_d - xhat * mean_dx));
      if (dw) dw[c] += T(double(dyr[c]) * xhat);
      if (db) db[c] += dyr[c];
    }
  }
}

}  // namespace ssm::ref
