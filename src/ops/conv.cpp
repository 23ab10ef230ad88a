// Depthwise causal conv1d over token-major activations x [B, L, D] with w [D, W] (2 <= W <= 8),
// optional bias, initial and final state [B, W-1, D], optional SiLU. The f32 kernels vectorise over
// the contiguous channel dim (taps stored transposed as [W, D]); f64 and reference mode run
// ops/reference/conv.h. The backward is a dedicated kernel that recomputes the pre-activation.
#include "ops/reference/conv.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cuda_ops.h"
#include "ops/op_util.h"

namespace ssm {
namespace {

// e^x for 8 floats: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^6 (relative
// error < 2e-7), 2^n built in the exponent bits; x is clamped to [-87, 88] so 2^n stays normal
// (then sigmoid(x) saturates correctly). Written with intrinsics so it vectorises under any flags.
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln2 = hi + lo (Cody-Waite)
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
inline __m256 sigmoid8(__m256 v) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), v))));
}

struct ConvF32 {
  const float* x;     // [B, L, D]
  const float* wt;    // [W, D] (w transposed)
  const float* bias;  // [D] or null
  const float* init;  // [B, W-1, D] or null
  int64_t B, L, D, W;
  bool silu;
  // Row s of xcat = concat(init or zeros, x) for batch b; `zeros` [D] stands for a zero history.
  const float* xcat(int64_t b, int64_t s, const float* zeros) const {
    const int64_t H = W - 1;
    if (s >= H) return x + (b * L + s - H) * D;
    return init ? init + (b * H + s) * D : zeros;
  }
  // One pass per token: pre = bias + Σ_k wt[k] ⊙ xcat[t + k] in registers, then
  //   mode 0: out = pre; mode 1: out = silu(pre); mode 2: out = dy ⊙ silu'(pre) (dy [D]).
  void token(int64_t b, int64_t t, const float* zeros, int mode, const float* dy, float* out) const {
    const float* src[8];
    for (int64_t k = 0; k < W; ++k) src[k] = xcat(b, t + k, zeros);
    const __m256 one = _mm256_set1_ps(1.f);
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
      __m256 p = bias ? _mm256_loadu_ps(bias + d) : _mm256_setzero_ps();
      for (int64_t k = 0; k < W; ++k)
        p = _mm256_fmadd_ps(_mm256_loadu_ps(wt + k * D + d), _mm256_loadu_ps(src[k] + d), p);
      if (mode == 1) {
        p = _mm256_mul_ps(p, sigmoid8(p));
      } else if (mode == 2) {  // silu'(p) = s (1 + p (1 - s))
        const __m256 sg = sigmoid8(p);
        p = _mm256_mul_ps(_mm256_loadu_ps(dy + d), _mm256_mul_ps(sg, _mm256_fmadd_ps(p, _mm256_sub_ps(one, sg), one)));
      }
      _mm256_storeu_ps(out + d, p);
    }
    for (; d < D; ++d) {
      float p = bias ? bias[d] : 0.f;
      for (int64_t k = 0; k < W; ++k) p = std::fma(wt[k * D + d], src[k][d], p);
      const float sg = 1.f / (1.f + std::exp(-p));
      out[d] = mode == 0 ? p : mode == 1 ? p * sg : dy[d] * sg * (1.f + p * (1.f - sg));
    }
  }
};

int64_t token_grain(int64_t D) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)); }

// y [B, L, D] (mode 0/1) or dpre [B, L, D] = dy ⊙ silu'(pre) (mode 2).
void conv_tokens_f32(const ConvF32& c, int mode, const float* dy, float* out) {
  parallel_for(c.B * c.L, token_grain(c.D), [&](int64_t i0, int64_t i1) {
    std::vector<float> zeros(static_cast<size_t>(c.D), 0.f);  // [D]
    for (int64_t i = i0; i < i1; ++i)
      c.token(i / c.L, i % c.L, zeros.data(), mode, dy ? dy + i * c.D : nullptr, out + i * c.D);
  });
}

// Gradients given dpre [B, L, D] and dfinal [B, W-1, D] (or null). dx, dinit may be null; dwt is
// [W, D] (transposed), dbias [D] or null.
void conv_backward_f32(const ConvF32& c, const float* dpre, const float* dfinal, float* dx, float* dinit, float* dwt,
                       float* dbias) {
  const int64_t H = c.W - 1, S = c.L + H, D = c.D;
  // Gradient of each xcat row: Σ_k wt[k] ⊙ dpre[s - k] (+ dfinal for the last W-1 rows).
  if (dx || dinit) {
    parallel_for(c.B * S, token_grain(D), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / S, s = i % S;
        float* out = s >= H ? (dx ? dx + (b * c.L + s - H) * D : nullptr) : (dinit ? dinit + (b * H + s) * D : nullptr);
        if (!out) continue;
        if (dfinal && s >= c.L) {
          const float* f = dfinal + (b * H + s - c.L) * D;
          for (int64_t d = 0; d < D; ++d) out[d] = f[d];
        } else {
          for (int64_t d = 0; d < D; ++d) out[d] = 0.f;
        }
        for (int64_t k = 0; k < c.W; ++k) {
          const int64_t t = s - k;
          if (t < 0 || t >= c.L) continue;
          const float* g = dpre + (b * c.L + t) * D;
          const float* wk = c.wt + k * D;
          for (int64_t d = 0; d < D; ++d) out[d] += wk[d] * g[d];
        }
      }
    });
  }
  if (!dwt && !dbias) return;
  // dwt[k] = Σ_{b,t} dpre[b,t] ⊙ xcat[b, t+k]; dbias = Σ dpre. Per-block partials [W + 1, D], summed
  // in a fixed order.
  const int64_t N = c.B * c.L, nblk = std::max<int64_t>(1, std::min<int64_t>(N, 4 * int64_t(num_threads())));
  std::vector<float> part(size_t(nblk * (c.W + 1) * D), 0.f);  // [nblk, W + 1, D]
  parallel_for(nblk, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t blk = k0; blk < k1; ++blk) {
      float* p = part.data() + blk * (c.W + 1) * D;
      for (int64_t i = N * blk / nblk; i < N * (blk + 1) / nblk; ++i) {
        const int64_t b = i / c.L, t = i % c.L;
        const float* g = dpre + i * D;
        for (int64_t k = 0; k < c.W; ++k) {
          const float* src = c.xcat(b, t + k, nullptr);
          if (!src) continue;  // zero history
          float* pk = p + k * D;
          for (int64_t d = 0; d < D; ++d) pk[d] += g[d] * src[d];
        }
        float* pb = p + c.W * D;
        for (int64_t d = 0; d < D; ++d) pb[d] += g[d];
      }
    }
  });
  for (int64_t k = 0; k <= c.W; ++k) {
    float* dst = k < c.W ? (dwt ? dwt + k * D : nullptr) : dbias;
    if (!dst) continue;
    for (int64_t d = 0; d < D; ++d) {
      double s = 0;
      for (int64_t blk = 0; blk < nblk; ++blk) s += part[size_t((blk * (c.W + 1) + k) * D + d)];
      dst[d] = float(s);
    }
  }
}

// [D, W] ↔ [W, D]
template <typename T>
std::vector<T> transpose2(const T* a, int64_t rows, int64_t cols) {
  std::vector<T> out(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[size_t(c * rows + r)] = a[r * cols + c];
  return out;
}

struct ConvTensors {
  Tensor x, w, bias, init;  // contiguous, detached
  int64_t B, L, D, W;
  bool silu;
};

template <typename T>
ref::ConvRefArgs<T> ref_args(const ConvTensors& t) {
  return {t.x.data<T>(),
          t.w.data<T>(),
          t.bias.defined() ? t.bias.data<T>() : nullptr,
          t.init.defined() ? t.init.data<T>() : nullptr,
          t.B,
          t.L,
          t.D,
          t.W,
          t.silu};
}

ConvF32 f32_args(const ConvTensors& t, const std::vector<float>& wt) {
  return {t.x.data<float>(),
          wt.data(),
          t.bias.defined() ? t.bias.data<float>() : nullptr,
          t.init.defined() ? t.init.data<float>() : nullptr,
          t.B,
          t.L,
          t.D,
          t.W,
          t.silu};
}

// final_state [B, W-1, D] = the last W-1 rows of xcat.
template <typename T>
void final_state_rows(const ConvTensors& t, T* out) {
  const int64_t H = t.W - 1;
  const T* x = t.x.data<T>();
  const T* init = t.init.defined() ? t.init.data<T>() : nullptr;
  for (int64_t b = 0; b < t.B; ++b)
    for (int64_t j = 0; j < H; ++j) {
      const int64_t s = t.L + j;  // xcat row
      T* dst = out + (b * H + j) * t.D;
      const T* src = s >= H ? x + (b * t.L + s - H) * t.D : (init ? init + (b * H + s) * t.D : nullptr);
      for (int64_t d = 0; d < t.D; ++d) dst[d] = src ? src[d] : T(0);
    }
}

Conv1dOut conv_forward(const ConvTensors& t) {
  Conv1dOut o;
  o.y = Tensor::empty({t.B, t.L, t.D}, t.x.dtype());                // [B, L, D]
  o.final_state = Tensor::empty({t.B, t.W - 1, t.D}, t.x.dtype());  // [B, W-1, D]
  detail::dispatch_float("causal_conv1d", t.x.dtype(), [&]<typename T>() {
    if constexpr (std::is_same_v<T, float>) {
      if (!reference_kernels()) {
        std::vector<float> wt = transpose2(t.w.data<float>(), t.D, t.W);  // [W, D]
        conv_tokens_f32(f32_args(t, wt), t.silu ? 1 : 0, nullptr, o.y.data<float>());
        final_state_rows<float>(t, o.final_state.data<float>());
        return;
      }
    }
    ref::causal_conv1d<T>(ref_args<T>(t), o.y.data<T>(), o.final_state.data<T>());
  });
  return o;
}

struct ConvGrads {
  Tensor dx, dw, dbias, dinit;
};

// dy [B, L, D] and dfinal [B, W-1, D] may be undefined (zero).
ConvGrads conv_backward(const ConvTensors& t, const Tensor& dy_in, const Tensor& dfinal_in, bool want_x, bool want_w,
                        bool want_b, bool want_init) {
  const DType dt = t.x.dtype();
  Tensor dy = dy_in.defined() ? dy_in.contiguous() : Tensor::zeros({t.B, t.L, t.D}, dt);  // [B, L, D]
  Tensor dfinal = dfinal_in.defined() ? dfinal_in.contiguous() : Tensor();                // [B, W-1, D]
  ConvGrads g;
  if (want_x) g.dx = Tensor::empty({t.B, t.L, t.D}, dt);            // [B, L, D]
  if (want_w) g.dw = Tensor::empty({t.D, t.W}, dt);                 // [D, W]
  if (want_b) g.dbias = Tensor::empty({t.D}, dt);                   // [D]
  if (want_init) g.dinit = Tensor::empty({t.B, t.W - 1, t.D}, dt);  // [B, W-1, D]
  detail::dispatch_float("causal_conv1d", dt, [&]<typename T>() {
    auto ptr = [](const Tensor& x) { return x.defined() ? x.data<T>() : nullptr; };
    if constexpr (std::is_same_v<T, float>) {
      if (!reference_kernels()) {
        std::vector<float> wt = transpose2(t.w.data<float>(), t.D, t.W);  // [W, D]
        ConvF32 c = f32_args(t, wt);
        std::vector<float> dpre_buf;
        const float* dpre = dy.data<float>();
        if (t.silu) {
          dpre_buf.resize(size_t(t.B * t.L * t.D));  // [B, L, D]
          conv_tokens_f32(c, 2, dy.data<float>(), dpre_buf.data());
          dpre = dpre_buf.data();
        }
        std::vector<float> dwt(want_w ? size_t(t.W * t.D) : 0);  // [W, D]
        conv_backward_f32(c, dpre, ptr(dfinal), ptr(g.dx), ptr(g.dinit), want_w ? dwt.data() : nullptr, ptr(g.dbias));
        if (want_w) {
          std::vector<float> dw = transpose2(dwt.data(), t.W, t.D);
          std::copy(dw.begin(), dw.end(), g.dw.data<float>());
        }
        return;
      }
    }
    ref::causal_conv1d_backward<T>(ref_args<T>(t), dy.data<T>(), ptr(dfinal), ptr(g.dx), ptr(g.dw), ptr(g.dbias),
                                   ptr(g.dinit));
  });
  return g;
}

}  // namespace

Conv1dOut causal_conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& initial_state,
                        bool silu_activation) {
  const char* op = "causal_conv1d";
  detail::check_defined(op, x, "x");
  if (x.device() == Device::cuda) return detail::causal_conv1d_cuda(x, w, bias, initial_state, silu_activation);
  detail::check_float(op, x, "x");
  SSM_NO_CUDA(op, x);
  detail::check_dim(op, x, 3, "x [B, L, D]");
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  detail::check_defined(op, w, "w");
  detail::check_same_dtype(op, w, "w", x, "x");
  detail::check_dim(op, w, 2, "w [D, W]");
  const int64_t W = w.size(1);
  SSM_CHECK(w.size(0) == D, op,
            "w has shape " + shape_str(w.shape()) + " but x " + shape_str(x.shape()) + " has D=" + std::to_string(D));
  SSM_CHECK(W >= 2 && W <= 8, op, "kernel width W=" + std::to_string(W) + " is not in [2, 8]");
  if (bias.defined()) {
    detail::check_same_dtype(op, bias, "bias", x, "x");
    detail::check_shape(op, bias, {D}, "bias");
  }
  if (initial_state.defined()) {
    detail::check_same_dtype(op, initial_state, "initial_state", x, "x");
    detail::check_shape(op, initial_state, {B, W - 1, D}, "initial_state");
  }
  ConvTensors t{x.detach().contiguous(),
                w.detach().contiguous(),
                bias.defined() ? bias.detach().contiguous() : Tensor(),
                initial_state.defined() ? initial_state.detach().contiguous() : Tensor(),
                B,
                L,
                D,
                W,
                silu_activation};
  Conv1dOut o = conv_forward(t);
  if (!autograd::needs_grad({&x, &w, &bias, &initial_state})) return o;
  const bool gx = x.requires_grad(), gw = w.requires_grad(), gb = bias.defined() && bias.requires_grad(),
             gi = initial_state.defined() && initial_state.requires_grad();
  autograd::record(op, {x, w, bias, initial_state}, {&o.y, &o.final_state},
                   [t, gx, gw, gb, gi](const std::vector<Tensor>& g) {
                     if (!g[0].defined() && !g[1].defined()) return std::vector<Tensor>(4);
                     ConvGrads r = conv_backward(t, g[0], g[1], gx, gw, gb, gi);
                     return std::vector<Tensor>{r.dx, r.dw, r.dbias, r.dinit};
                   });
  return o;
}

}  // namespace ssm
