// RMSNorm, LayerNorm, their fused residual-add forms and the Mamba-2 gated grouped RMSNorm. One
// forward and one backward kernel per norm kind (plain RMSNorm is the gated one without a gate and
// with one group); f32 runs a row-parallel kernel with AVX2 reductions, f64 and reference mode run
// ops/reference/norm.h. The backward is a dedicated kernel (no autodiff through the forward).
#include "ops/reference/norm.h"

#include <immintrin.h>

#include <cmath>
#include <vector>

#include "ops/fast_math.h"
#include "ops/cuda_ops.h"
#include "ops/ssd_cuda.h"
#include "ops/op_util.h"
#include "ops/rows.h"

namespace ssm {
namespace {

using detail::check_float;
using detail::check_same_dtype;
using detail::check_shape;

// What to compute: LayerNorm (with optional bias), or gated grouped RMSNorm (optional gate z).
struct NormSpec {
  bool layer = false;
  int64_t group = 0;  // RMS group size (= C for a plain RMSNorm)
  bool norm_before_gate = false;
  double eps = 1e-5;
};

// ---- f32 row kernels --------------------------------------------------------------------------------
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
float vsum(const float* a, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + i + 8));
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
  float s = hsum8(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i];
  return s;
}
float vdot(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum8(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void kernels::rms_norm_row(const float* x, const float* z, const float* w, float* y, int64_t C, int64_t group,
                           double eps, bool norm_before_gate, float* tmp) {
  const float* v = x;
  if (z && !norm_before_gate) {
    for (int64_t c = 0; c < C; ++c) tmp[c] = x[c] * z[c] * fm::sigmoid(z[c]);
    v = tmp;
  }
  for (int64_t g0 = 0; g0 < C; g0 += group) {
    const float rs = 1.f / std::sqrt(float(double(vdot(v + g0, v + g0, group)) / double(group) + eps));
    for (int64_t c = g0; c < g0 + group; ++c) y[c] = v[c] * rs * w[c];
  }
  if (z && norm_before_gate)
    for (int64_t c = 0; c < C; ++c) y[c] *= z[c] * fm::sigmoid(z[c]);
}

void kernels::layer_norm_row(const float* x, const float* w, const float* b, float* y, int64_t C, double eps,
                             float* tmp) {
  const float mu = vsum(x, C) / float(C);
  for (int64_t c = 0; c < C; ++c) tmp[c] = x[c] - mu;
  const float rs = 1.f / std::sqrt(float(double(vdot(tmp, tmp, C)) / double(C) + eps));
  for (int64_t c = 0; c < C; ++c) y[c] = tmp[c] * rs * w[c] + (b ? b[c] : 0.f);
}

namespace {

// Rows per task for a row-parallel kernel over rows of C channels.
int64_t row_grain(int64_t C) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)); }

void rms_forward_f32(const NormSpec& s, const float* x, const float* z, const float* w, float* y, int64_t R,
                     int64_t C) {
  parallel_for(R, row_grain(C), [&](int64_t r0, int64_t r1) {
    std::vector<float> v(static_cast<size_t>(C));  // [C] the gated input of one row
    for (int64_t r = r0; r < r1; ++r)
      kernels::rms_norm_row(x + r * C, z ? z + r * C : nullptr, w, y + r * C, C, s.group, s.eps, s.norm_before_gate,
                            v.data());
  });
}

void layer_forward_f32(const NormSpec& s, const float* x, const float* w, const float* b, float* y, int64_t R,
                       int64_t C) {
  parallel_for(R, row_grain(C), [&](int64_t r0, int64_t r1) {
    std::vector<float> xc(static_cast<size_t>(C));  // [C] centred row
    for (int64_t r = r0; r < r1; ++r) kernels::layer_norm_row(x + r * C, w, b, y + r * C, C, s.eps, xc.data());
  });
}

// Runs fn(r0, r1, dw_partial, db_partial) over blocks of rows, each with its own zeroed [C] partial
// sums, then adds the partials (in a fixed order: deterministic) into dw / db.
template <typename F>
void rows_with_partials(int64_t R, int64_t C, float* dw, float* db, const F& fn) {
  const int64_t nblk = std::max<int64_t>(1, std::min<int64_t>(R, 4 * int64_t(num_threads())));
  std::vector<float> pw(size_t(nblk * C), 0.f), pb(db ? size_t(nblk * C) : 0, 0.f);  // [nblk, C]
  parallel_for(nblk, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t k = b0; k < b1; ++k)
      fn(R * k / nblk, R * (k + 1) / nblk, pw.data() + k * C, db ? pb.data() + k * C : nullptr);
  });
  for (int64_t c = 0; c < C; ++c) {
    double sw = 0, sb = 0;
    for (int64_t k = 0; k < nblk; ++k) {
      sw += pw[size_t(k * C + c)];
      if (db) sb += pb[size_t(k * C + c)];
    }
    if (dw) dw[c] = float(sw);
    if (db) db[c] = float(sb);
  }
}

void rms_backward_f32(const NormSpec& s, const float* x, const float* z, const float* w, const float* dy, float* dx,
                      float* dz, float* dw, int64_t R, int64_t C) {
  const int64_t G = s.group;
  const bool pre_gate = z && !s.norm_before_gate, post_gate = z && s.norm_before_gate;
  rows_with_partials(R, C, dw, nullptr, [&](int64_t r0, int64_t r1, float* pw, float*) {
    const size_t n = static_cast<size_t>(C);
    std::vector<float> v(n), gate(n), dvh(n);  // [C] each: normalised input, silu(z), d out/d vhat
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * C;
      const float* zr = z ? z + r * C : nullptr;
      const float* dyr = dy + r * C;
      float* dxr = dx + r * C;
      for (int64_t c = 0; c < C; ++c) {
        gate[size_t(c)] = z ? zr[c] * fm::sigmoid(zr[c]) : 1.f;
        v[size_t(c)] = pre_gate ? xr[c] * gate[size_t(c)] : xr[c];
        dvh[size_t(c)] = dyr[c] * w[c] * (post_gate ? gate[size_t(c)] : 1.f);
      }
      for (int64_t g0 = 0; g0 < C; g0 += G) {
        const float rs = 1.f / std::sqrt(float(double(vdot(&v[size_t(g0)], &v[size_t(g0)], G)) / double(G) + s.eps));
        const float dot = vdot(&dvh[size_t(g0)], &v[size_t(g0)], G) * rs / float(G);
        for (int64_t c = g0; c < g0 + G; ++c) {
          const size_t i = size_t(c);
          const float vhat = v[i] * rs, dv = rs * (dvh[i] - vhat * dot);
          pw[c] += dyr[c] * vhat * (post_gate ? gate[i] : 1.f);
          if (!z) {
            dxr[c] = dv;
            continue;
          }
          const float sg = fm::sigmoid(zr[c]), dsilu = sg * (1.f + zr[c] * (1.f - sg));
          if (post_gate) {
            dxr[c] = dv;
            if (dz) dz[r * C + c] = dyr[c] * vhat * w[c] * dsilu;
          } else {
            dxr[c] = dv * gate[i];
            if (dz) dz[r * C + c] = dv * xr[c] * dsilu;
          }
        }
      }
    }
  });
}

void layer_backward_f32(const NormSpec& s, const float* x, const float* w, const float* dy, float* dx, float* dw,
                        float* db, int64_t R, int64_t C) {
  rows_with_partials(R, C, dw, db, [&](int64_t r0, int64_t r1, float* pw, float* pb) {
    const size_t n = static_cast<size_t>(C);
    std::vector<float> xh(n), d(n);  // [C] xhat and dy·w of one row
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * C;
      const float* dyr = dy + r * C;
      const float mu = vsum(xr, C) / float(C);
      for (int64_t c = 0; c < C; ++c) xh[size_t(c)] = xr[c] - mu;
      const float rs = 1.f / std::sqrt(float(double(vdot(xh.data(), xh.data(), C)) / double(C) + s.eps));
      for (int64_t c = 0; c < C; ++c) {
        xh[size_t(c)] *= rs;
        d[size_t(c)] = dyr[c] * w[c];
      }
      const float mean_d = vsum(d.data(), C) / float(C), mean_dx = vdot(d.data(), xh.data(), C) / float(C);
      for (int64_t c = 0; c < C; ++c) {
        dx[r * C + c] = rs * (d[size_t(c)] - mean_d - xh[size_t(c)] * mean_dx);
        pw[c] += dyr[c] * xh[size_t(c)];
        if (pb) pb[c] += dyr[c];
      }
    }
  });
}

// ---- dtype dispatch -----------------------------------------------------------------------------

// y = norm(x) for contiguous x [R, C] (z like x or undefined; w [C]; b [C] or undefined).
Tensor norm_forward(const NormSpec& s, const Tensor& x, const Tensor& z, const Tensor& w, const Tensor& b) {
  const int64_t C = x.size(-1), R = x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), x.dtype());  // like x
  detail::dispatch_float("norm", x.dtype(), [&]<typename T>() {
    const T* zp = z.defined() ? z.data<T>() : nullptr;
    const T* bp = b.defined() ? b.data<T>() : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (!reference_kernels()) {
        if (s.layer)
          layer_forward_f32(s, x.data<float>(), w.data<float>(), bp, y.data<float>(), R, C);
        else
          rms_forward_f32(s, x.data<float>(), zp, w.data<float>(), y.data<float>(), R, C);
        return;
      }
    }
    if (s.layer)
      ref::layer_norm<T>(x.data<T>(), w.data<T>(), bp, y.data<T>(), R, C, s.eps);
    else
      ref::gated_rms_norm<T>(x.data<T>(), zp, w.data<T>(), y.data<T>(), R, C, s.group, s.eps, s.norm_before_gate);
  });
  return y;
}

struct NormGrads {
  Tensor dx, dz, dw, db;
};

// Gradients of norm(x) given dy (all contiguous). dz only when z is defined; db only for LayerNorm
// with a bias.
NormGrads norm_backward(const NormSpec& s, const Tensor& x, const Tensor& z, const Tensor& w, bool has_b,
                        const Tensor& dy_in) {
  const int64_t C = x.size(-1), R = x.numel() / C;
  Tensor dy = dy_in.contiguous();
  NormGrads g;
  g.dx = Tensor::empty(x.shape(), x.dtype());                   // like x
  if (z.defined()) g.dz = Tensor::empty(x.shape(), x.dtype());  // like x
  g.dw = Tensor::zeros({C}, x.dtype());                         // [C]
  if (s.layer && has_b) g.db = Tensor::zeros({C}, x.dtype());   // [C]
  detail::dispatch_float("norm", x.dtype(), [&]<typename T>() {
    const T* zp = z.defined() ? z.data<T>() : nullptr;
    T* dzp = g.dz.defined() ? g.dz.data<T>() : nullptr;
    T* dbp = g.db.defined() ? g.db.data<T>() : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (!reference_kernels()) {
        if (s.layer)
          layer_backward_f32(s, x.data<float>(), w.data<float>(), dy.data<float>(), g.dx.data<float>(),
                             g.dw.data<float>(), dbp, R, C);
        else
          rms_backward_f32(s, x.data<float>(), zp, w.data<float>(), dy.data<float>(), g.dx.data<float>(), dzp,
                           g.dw.data<float>(), R, C);
        return;
      }
    }
    if (s.layer)
      ref::layer_norm_backward<T>(x.data<T>(), w.data<T>(), dy.data<T>(), g.dx.data<T>(), g.dw.data<T>(), dbp, R, C,
                                  s.eps);
    else
      ref::gated_rms_norm_backward<T>(x.data<T>(), zp, w.data<T>(), dy.data<T>(), g.dx.data<T>(), dzp, g.dw.data<T>(),
                                      R, C, s.group, s.eps, s.norm_before_gate);
  });
  return g;
}

// Shared argument checks: x [..., C] float; z like x; w, b [C] of x's dtype.
void check_norm_args(const char* op, const Tensor& x, const Tensor& z, const Tensor& w, const Tensor& b, double eps) {
  check_float(op, x, "x");
  SSM_NO_CUDA(op, x);
  SSM_CHECK(x.dim() >= 1 && x.size(-1) >= 1, op, "x must have a non-empty last dim, got shape " + shape_str(x.shape()));
  const int64_t C = x.size(-1);
  detail::check_defined(op, w, "w");
  check_same_dtype(op, w, "w", x, "x");
  check_shape(op, w, {C}, "w");
  if (b.defined()) {
    check_same_dtype(op, b, "b", x, "x");
    check_shape(op, b, {C}, "b");
  }
  if (z.defined()) {
    check_same_dtype(op, z, "z", x, "x");
    check_shape(op, z, x.shape(), "z");
  }
  SSM_CHECK(eps >= 0 && std::isfinite(eps), op, "eps must be finite and >= 0, got " + std::to_string(eps));
}

// The op: forward, and a node whose backward is norm_backward.
Tensor norm_op(const char* op, const NormSpec& s, const Tensor& x, const Tensor& z, const Tensor& w, const Tensor& b) {
  Tensor xc = x.detach().contiguous(), zc = z.defined() ? z.detach().contiguous() : Tensor();
  Tensor wc = w.detach().contiguous(), bc = b.defined() ? b.detach().contiguous() : Tensor();
  Tensor y = norm_forward(s, xc, zc, wc, bc);
  const bool has_b = b.defined();
  autograd::record(op, {x, z, w, b}, {&y}, [s, xc, zc, wc, has_b](const std::vector<Tensor>& g) {
    if (!g[0].defined()) return std::vector<Tensor>(4);
    NormGrads n = norm_backward(s, xc, zc, wc, has_b, g[0]);
    return std::vector<Tensor>{n.dx, n.dz, n.dw, n.db};
  });
  return y;
}

// residual_out = x + residual (or a copy of x), then out = norm(residual_out).
NormAdd norm_add_op(const char* op, const NormSpec& s, const Tensor& x, const Tensor& residual, const Tensor& w,
                    const Tensor& b) {
  if (residual.defined()) {
    check_same_dtype(op, residual, "residual", x, "x");
    SSM_NO_CUDA(op, residual);
    check_shape(op, residual, x.shape(), "residual");
  }
  NormAdd r;
  r.residual = Tensor::empty(x.shape(), x.dtype());  // like x
  {
    Tensor xc = x.detach().contiguous(), rc = residual.defined() ? residual.detach().contiguous() : Tensor();
    detail::dispatch_float(op, x.dtype(), [&]<typename T>() {
      const T* xp = xc.data<T>();
      const T* rp = rc.defined() ? rc.data<T>() : nullptr;
      T* out = r.residual.data<T>();
      parallel_for(x.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) out[i] = rp ? xp[i] + rp[i] : xp[i];
      });
    });
  }
  Tensor hc = r.residual;  // the norm's input (no history of its own)
  Tensor wc = w.detach().contiguous(), bc = b.defined() ? b.detach().contiguous() : Tensor();
  r.out = norm_forward(s, hc, Tensor(), wc, bc);
  const bool has_b = b.defined(), has_res = residual.defined();
  Tensor hd = hc.detach();
  autograd::record(op, {x, residual, w, b}, {&r.out, &r.residual},
                   [s, hd, wc, has_b, has_res](const std::vector<Tensor>& g) {
                     std::vector<Tensor> out(4);
                     Tensor dh = g[1].defined() ? g[1].contiguous() : Tensor();
                     if (g[0].defined()) {
                       NormGrads n = norm_backward(s, hd, Tensor(), wc, has_b, g[0]);
                       if (dh.defined()) {
                         detail::dispatch_float("norm_add", n.dx.dtype(), [&]<typename T>() {
                           T* a = n.dx.data<T>();
                           const T* b2 = dh.data<T>();
                           for (int64_t i = 0; i < n.dx.numel(); ++i) a[i] += b2[i];
                         });
                       }
                       dh = n.dx;
                       out[2] = n.dw;
                       out[3] = n.db;
                     }
                     out[0] = dh;
                     if (has_res) out[1] = dh;
                     return out;
                   });
  return r;
}

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& w, double eps) {
  if (x.defined() && x.device() == Device::cuda)
    return detail::rms_norm_cuda("rms_norm", x, Tensor(), w, eps, false).out;
  check_norm_args("rms_norm", x, Tensor(), w, Tensor(), eps);
  NormSpec s;
  s.group = x.size(-1);
  s.eps = eps;
  return norm_op("rms_norm", s, x, Tensor(), w, Tensor());
}

Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  check_norm_args("layer_norm", x, Tensor(), w, b, eps);
  NormSpec s;
  s.layer = true;
  s.eps = eps;
  return norm_op("layer_norm", s, x, Tensor(), w, b);
}

NormAdd rms_norm_add(const Tensor& x, const Tensor& residual, const Tensor& w, double eps) {
  if (x.defined() && x.device() == Device::cuda)
    return detail::rms_norm_cuda("rms_norm_add", x, residual, w, eps, true);
  check_norm_args("rms_norm_add", x, Tensor(), w, Tensor(), eps);
  NormSpec s;
  s.group = x.size(-1);
  s.eps = eps;
  return norm_add_op("rms_norm_add", s, x, residual, w, Tensor());
}

NormAdd layer_norm_add(const Tensor& x, const Tensor& residual, const Tensor& w, const Tensor& b, double eps) {
  check_norm_args("layer_norm_add", x, Tensor(), w, b, eps);
  NormSpec s;
  s.layer = true;
  s.eps = eps;
  return norm_add_op("layer_norm_add", s, x, residual, w, b);
}

Tensor gated_rms_norm(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, double eps,
                      bool norm_before_gate) {
  const char* op = "gated_rms_norm";
  if (x.defined() && x.device() == Device::cuda)
    return detail::gated_rms_norm_cuda(x, z, w, group_size, eps, norm_before_gate);
  check_norm_args(op, x, z, w, Tensor(), eps);
  const int64_t C = x.size(-1);
  SSM_CHECK(group_size >= 1 && C % group_size == 0, op,
            "group_size " + std::to_string(group_size) + " must be >= 1 and divide the " + std::to_string(C) +
                " channels of x");
  NormSpec s;
  s.group = group_size;
  s.eps = eps;
  s.norm_before_gate = norm_before_gate;
  return norm_op(op, s, x, z, w, Tensor());
}

}  // namespace ssm
