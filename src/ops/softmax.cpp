// softmax, log_softmax and cross_entropy. Fast f32 path: rows (softmax over the last dim) are processed
// as max, exp (fm::exp, vectorised), 16-lane sum, scale; other dims in blocks of columns.
// GCC: no-trapping-math lets if-conversion turn the selects in the kernels into blends and
// no-math-errno drops errno paths, so the loops below vectorise; neither changes a computed value.
#if defined(__GNUC__) && !defined(__clang__)
#endif
#include <algorithm>
#include <limits>

#include "ops/cuda_train.h"
#include "ops/fast_math.h"
#include "ops/op_util.h"
#include "ops/reference/softmax.h"

namespace ssm {
namespace {

constexpr int64_t kGrain = 16384;  // elements per task
constexpr int64_t kBlock = 256;    // columns per task when softmax runs over a non-last dim

Tensor cont(const Tensor& t) {
  autograd::NoGradGuard ng;
  return t.contiguous();
}

// One row: y = softmax(x) or log_softmax(x), n >= 1.
void softmax_row(const float* x, float* y, int64_t n, bool log) {
  float m = fm::max(x, n);  // NaNs are ignored here but make the sum NaN below
  for (int64_t i = 0; i < n; ++i) y[i] = fm::exp(x[i] - m);
  float s = fm::sum(y, n);
  if (log) {
    float shift = m + fm::log(s);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] - shift;
  } else {
    float inv = 1.0f / s;
    for (int64_t i = 0; i < n; ++i) y[i] *= inv;
  }
}

// x, y [outer, n, inner]: softmax over n.
void softmax_fast(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) softmax_row(x + o * n, y + o * n, n, log);
    });
    return;
  }
  int64_t nb = (inner + kBlock - 1) / kBlock;
  parallel_for(outer * nb, std::max<int64_t>(1, kGrain / (n * kBlock)), [&](int64_t b, int64_t e) {
    float m[kBlock];
    double s[kBlock];  // column sums of up to n terms: double keeps them exact to ~1e-16 relative
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / nb, c0 = (t % nb) * kBlock, len = std::min(kBlock, inner - c0);
      const float* p = x + o * n * inner + c0;
      float* q = y + o * n * inner + c0;
      std::fill(m, m + len, -std::numeric_limits<float>::infinity());
      std::fill(s, s + len, 0.0);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < len; ++j) m[j] = p[r * inner + j] > m[j] ? p[r * inner + j] : m[j];
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < len; ++j) {
          float ev = fm::exp(p[r * inner + j] - m[j]);
          q[r * inner + j] = ev;
          s[j] += double(ev);
        }
      if (log) {
        for (int64_t j = 0; j < len; ++j) m[j] += fm::log(float(s[j]));
        for (int64_t r = 0; r < n; ++r)
          for (int64_t j = 0; j < len; ++j) q[r * inner + j] = p[r * inner + j] - m[j];
      } else {
        float inv[kBlock];
        for (int64_t j = 0; j < len; ++j) inv[j] = float(1.0 / s[j]);
        for (int64_t r = 0; r < n; ++r)
          for (int64_t j = 0; j < len; ++j) q[r * inner + j] *= inv[j];
      }
    }
  });
}

Tensor softmax_impl(const char* op, const Tensor& x_in, int64_t dim, bool log) {
  if (x_in.defined() && x_in.device() == Device::cuda) return detail::softmax_cuda(op, x_in, dim, log);
  detail::check_float(op, x_in, "x");
  SSM_NO_CUDA(op, x_in);
  int64_t d = detail::wrap_dim(op, dim, x_in.dim());
  Tensor x = cont(x_in);
  Tensor y = Tensor::empty(x.shape(), x.dtype());  // same shape as x
  int64_t n = x.shape()[size_t(d)], outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= x.shape()[size_t(k)];
  for (int64_t k = d + 1; k < x.dim(); ++k) inner *= x.shape()[size_t(k)];
  if (x.numel() > 0) {
    if (detail::use_fast(x.dtype())) {
      softmax_fast(x.data<float>(), y.data<float>(), outer, n, inner, log);
    } else {
      detail::dispatch_float(
          op, x.dtype(), [&]<typename T>() { ref::softmax_dim<T>(x.data<T>(), outer, n, inner, y.data<T>(), log); });
    }
  }
  if (autograd::needs_grad({&x_in})) {
    Tensor y_d = y.detach();
    autograd::record(op, {x_in}, {&y}, [y_d, d, log](const std::vector<Tensor>& gs) -> std::vector<Tensor> {
      if (!gs[0].defined()) return {Tensor()};
      const Tensor& g = gs[0];
      if (log) return {sub(g, mul(exp(y_d), sum(g, {d}, true)))};  // g - softmax * Σg
      return {mul(y_d, sub(g, sum(mul(g, y_d), {d}, true)))};      // y (g - Σ g y)
    });
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl("log_softmax", x, dim, true); }

Tensor cross_entropy(const Tensor& logits_in, const Tensor& targets_in, int64_t ignore_index) {
  const char* op = "cross_entropy";
  if (logits_in.defined() && logits_in.device() == Device::cuda)
    return detail::cross_entropy_cuda(logits_in, targets_in, ignore_index);
  detail::check_float(op, logits_in, "logits");
  detail::check_defined(op, targets_in, "targets");
  SSM_NO_CUDA(op, logits_in);
  SSM_NO_CUDA(op, targets_in);
  SSM_CHECK(logits_in.dim() >= 1, op, "logits must have at least 1 dim (the classes), got a scalar");
  SSM_CHECK(targets_in.dtype() == DType::i64, op,
            std::string("targets must be i64, got ") + dtype_name(targets_in.dtype()));
  Shape want(logits_in.shape().begin(), logits_in.shape().end() - 1);
  SSM_CHECK(targets_in.shape() == want, op,
            "targets have shape " + shape_str(targets_in.shape()) + " but logits " + shape_str(logits_in.shape()) +
                " need targets of shape " + shape_str(want));
  const int64_t V = logits_in.shape().back(), N = shape_numel(want);
  Tensor logits = cont(logits_in), targets = cont(targets_in);
  const int64_t* tp = targets.data<int64_t>();
  for (int64_t i = 0; i < N; ++i)
    SSM_CHECK(tp[i] == ignore_index || (tp[i] >= 0 && tp[i] < V), op,
              "target " + std::to_string(tp[i]) + " at position " + std::to_string(i) + " is out of range for " +
                  std::to_string(V) + " classes (ignore_index is " + std::to_string(ignore_index) + ")");
  int64_t count = 0;
  double total = 0;
  if (detail::use_fast(logits.dtype())) {
    const float* lp = logits.data<float>();
    std::vector<double> row_loss(size_t(N), 0.0);  // [N]; summed in order afterwards (deterministic)
    parallel_for(N, std::max<int64_t>(1, kGrain / std::max<int64_t>(V, 1)), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        if (tp[i] == ignore_index) continue;
        const float* row = lp + i * V;
        float m = fm::max(row, V), s = 0;
        float tmp[kBlock];  // exp in blocks so the loop vectorises without a row-sized buffer
        for (int64_t c = 0; c < V; c += kBlock) {
          int64_t len = std::min(kBlock, V - c);
          for (int64_t j = 0; j < len; ++j) tmp[j] = fm::exp(row[c + j] - m);
          s += fm::sum(tmp, len);
        }
        row_loss[size_t(i)] = double(m) + double(fm::log(s)) - double(row[tp[i]]);
      }
    });
    for (int64_t i = 0; i < N; ++i)
      if (tp[i] != ignore_index) total += row_loss[size_t(i)], ++count;
  } else {
    detail::dispatch_float(op, logits.dtype(), [&]<typename T>() {
      total = ref::cross_entropy_sum<T>(logits.data<T>(), tp, N, V, ignore_index, &count);
    });
  }
  // Mean over counted targets; 0/0 = NaN when every target is ignored (as PyTorch).
  double loss = count > 0 ? total / double(count) : std::numeric_limits<double>::quiet_NaN();
  Tensor out = Tensor::full({}, loss, logits.dtype());  // scalar
  if (autograd::needs_grad({&logits_in})) {
    // d loss / d logits[i] = (softmax(logits[i]) - onehot(target[i])) / count on counted rows, 0 elsewhere.
    std::vector<double> sv(size_t(N), 0.0);  // [N]: 1/count on counted rows
    std::vector<int64_t> tv(size_t(N), 0);   // [N]: target, 0 on ignored rows
    for (int64_t i = 0; i < N; ++i) {
      bool on = tp[i] != ignore_index;
      sv[size_t(i)] = on ? 1.0 / double(count) : 0.0;
      tv[size_t(i)] = on ? tp[i] : 0;
    }
    Tensor scale = Tensor::from_vector(sv, {N, 1}).to(logits.dtype());  // [N, 1]
    Tensor safe_t = Tensor::from_vector(tv, {N, 1});                    // [N, 1] i64
    Shape ls = logits.shape();
    autograd::record(op, {logits_in}, {&out},
                     [logits, scale, safe_t, ls, N, V](const std::vector<Tensor>& gs) -> std::vector<Tensor> {
                       if (!gs[0].defined()) return {Tensor()};
                       Tensor w = mul(scale, gs[0].to(scale.dtype()));          // [N, 1]
                       Tensor p = mul(softmax(logits.reshape({N, V}), -1), w);  // [N, V]
                       return {scatter_add(p, 1, safe_t, neg(w)).reshape(ls)};  // [..., V]
                     });
  }
  return out;
}

}  // namespace ssm
