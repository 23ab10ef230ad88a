// Reductions: sum and mean over a list of dims, amax / argmax over one dim.
// Fast f32 path: the input is brought to the form [K1, R, K2] (reduced dims adjacent, permuting with a
// copy only when they are not), then rows (K2 = 1) are summed with 16 independent accumulators and
// columns (K2 > 1) accumulate a block of K2 at a time; both vectorise and run under parallel_for.
// GCC: no-trapping-math lets if-conversion turn the selects in the kernels into blends and
// no-math-errno drops errno paths, so the loops below vectorise; neither changes a computed value.
#if defined(__GNUC__) && !defined(__clang__)
#endif
#include <algorithm>
#include <limits>

#include "ops/cuda_train.h"
#include "ops/fast_math.h"
#include "ops/op_util.h"
#include "ops/reference/reduce.h"

namespace ssm {
namespace {

constexpr int64_t kGrain = 16384;  // elements per task
constexpr int64_t kBlock = 256;    // columns accumulated together in the [K1, R, K2] column kernel

Tensor cont(const Tensor& t) {
  autograd::NoGradGuard ng;
  return t.contiguous();
}

// Sorted, wrapped, distinct dims as flags; {} means all dims.
std::vector<bool> reduced_flags(const char* op, const Tensor& x, const std::vector<int64_t>& dims) {
  std::vector<bool> red(size_t(x.dim()), dims.empty());
  for (int64_t d : dims) {
    int64_t w = detail::wrap_dim(op, d, x.dim());
    SSM_CHECK(!red[size_t(w)], op, "dimension " + std::to_string(d) + " listed twice");
    red[size_t(w)] = true;
  }
  return red;
}

Shape reduced_shape(const Shape& s, const std::vector<bool>& red, bool keepdim) {
  Shape out;
  for (size_t k = 0; k < s.size(); ++k) {
    if (!red[k])
      out.push_back(s[k]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

// out[k1, k2] = scale * sum_r x[k1, r, k2].
void sum_3d(const float* x, int64_t K1, int64_t R, int64_t K2, float* out, float scale) {
  if (K2 == 1) {
    parallel_for(K1, std::max<int64_t>(1, kGrain / std::max<int64_t>(R, 1)), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) out[k] = fm::sum(x + k * R, R) * scale;
    });
    return;
  }
  int64_t nb = (K2 + kBlock - 1) / kBlock;
  parallel_for(K1 * nb, std::max<int64_t>(1, kGrain / std::max<int64_t>(R * kBlock, 1)), [&](int64_t b, int64_t e) {
    double acc[kBlock];  // a serial sum down R rows: double keeps its error ~1e-16 R instead of 6e-8 R
    for (int64_t t = b; t < e; ++t) {
      int64_t k1 = t / nb, c0 = (t % nb) * kBlock, len = std::min(kBlock, K2 - c0);
      std::fill(acc, acc + len, 0.0);
      const float* p = x + k1 * R * K2 + c0;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < len; ++j) acc[j] += double(p[r * K2 + j]);
      float* o = out + k1 * K2 + c0;
      for (int64_t j = 0; j < len; ++j) o[j] = float(acc[j] * double(scale));
    }
  });
}

// Fast f32 sum of contiguous x over the flagged dims (x's shape with them removed, written to out).
void sum_fast(const Tensor& x, const std::vector<bool>& red, float* out, float scale) {
  // Drop size-1 dims, merge neighbours of the same kind.
  std::vector<int64_t> size;
  std::vector<bool> kind;
  for (size_t k = 0; k < red.size(); ++k) {
    if (x.shape()[k] == 1) continue;
    if (!kind.empty() && kind.back() == red[k])
      size.back() *= x.shape()[k];
    else {
      size.push_back(x.shape()[k]);
      kind.push_back(red[k]);
    }
  }
  int64_t n_red_groups = std::count(kind.begin(), kind.end(), true);
  if (n_red_groups == 0) {  // nothing of size > 1 is reduced: a scaled copy
    const float* p = x.data<float>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) out[i] = p[i] * scale;
    return;
  }
  if (n_red_groups == 1) {
    int64_t K1 = 1, R = 1, K2 = 1;
    bool after = false;
    for (size_t g = 0; g < size.size(); ++g) {
      if (kind[g]) {
        R = size[g];
        after = true;
      } else if (after)
        K2 *= size[g];
      else
        K1 *= size[g];
    }
    sum_3d(x.data<float>(), K1, R, K2, out, scale);
    return;
  }
  // Reduced dims not adjacent: permute kept dims first (a copy), then sum rows.
  std::vector<int64_t> order;
  int64_t K = 1, R = 1;
  for (size_t k = 0; k < red.size(); ++k)
    if (!red[k]) order.push_back(int64_t(k)), K *= x.shape()[k];
  for (size_t k = 0; k < red.size(); ++k)
    if (red[k]) order.push_back(int64_t(k)), R *= x.shape()[k];
  Tensor xp = cont(x.detach().permute(order));  // [kept..., reduced...]
  sum_3d(xp.data<float>(), K, R, 1, out, scale);
}

Tensor sum_impl(const char* op, const Tensor& x_in, const std::vector<int64_t>& dims, bool keepdim, bool is_mean) {
  if (x_in.defined() && x_in.device() == Device::cuda)
    return detail::sum_cuda(op, x_in, reduced_flags(op, x_in, dims), keepdim, is_mean);
  detail::check_float(op, x_in, "x");
  SSM_NO_CUDA(op, x_in);
  std::vector<bool> red = reduced_flags(op, x_in, dims);
  int64_t count = 1;
  for (size_t k = 0; k < red.size(); ++k)
    if (red[k]) count *= x_in.shape()[k];
  double scale = is_mean ? 1.0 / double(count) : 1.0;  // mean over nothing is 0/0 = NaN, as in PyTorch
  if (is_mean && count == 0) scale = std::numeric_limits<double>::quiet_NaN();
  Tensor x = cont(x_in);
  Tensor out = Tensor::empty(reduced_shape(x.shape(), red, keepdim), x.dtype());  // x's shape minus dims
  if (detail::use_fast(x.dtype())) {
    if (count == 0)
      out.fill_(is_mean ? scale : 0.0);
    else
      sum_fast(x, red, out.data<float>(), float(scale));
  } else {
    detail::dispatch_float(op, x.dtype(),
                           [&]<typename T>() { ref::sum_dims<T>(x.data<T>(), x.shape(), red, out.data<T>(), scale); });
  }
  if (autograd::needs_grad({&x_in})) {
    Shape xs = x.shape(), ks = reduced_shape(x.shape(), red, true);
    autograd::record(op, {x_in}, {&out}, [xs, ks, scale, is_mean](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      if (!g[0].defined()) return {Tensor()};
      Tensor gx = g[0].reshape(ks).expand(xs).contiguous();  // x's shape
      return {is_mean ? mul_scalar(gx, scale) : gx};
    });
  }
  return out;
}

// Fast f32 max over the middle dim of x [outer, n, inner]; NaN-propagating, first index on ties.
void max_fast(const float* x, int64_t outer, int64_t n, int64_t inner, float* val, int64_t* arg) {
  if (inner == 1) {
    // Per row: a NaN-ignoring vectorised max, and a vectorised sum of x*0 that is NaN iff the row holds a
    // NaN or an inf; only then a scalar scan looks for the first NaN (which, as in PyTorch, is the max).
    parallel_for(outer, std::max<int64_t>(1, kGrain / n), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const float* p = x + o * n;
        float probe[16] = {};
        int64_t i = 0;
        for (; i + 16 <= n; i += 16)
          for (int j = 0; j < 16; ++j) probe[j] += p[i + j] * 0.0f;
        for (; i < n; ++i) probe[0] += p[i] * 0.0f;
        float any = 0;
        for (int j = 0; j < 16; ++j) any += probe[j];
        int64_t first_nan = -1;
        if (any != any)
          for (int64_t k = 0; k < n && first_nan < 0; ++k)
            if (p[k] != p[k]) first_nan = k;
        float m = first_nan >= 0 ? p[first_nan] : fm::max(p, n);
        if (val) val[o] = m;
        if (arg) {  // the first index holding the max
          int64_t bi = first_nan;
          if (bi < 0)
            for (bi = 0; bi < n - 1 && p[bi] != m;) ++bi;
          arg[o] = bi;
        }
      }
    });
    return;
  }
  int64_t nb = (inner + kBlock - 1) / kBlock;
  parallel_for(outer * nb, std::max<int64_t>(1, kGrain / (n * kBlock)), [&](int64_t b, int64_t e) {
    float m[kBlock];
    int64_t a[kBlock];
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / nb, c0 = (t % nb) * kBlock, len = std::min(kBlock, inner - c0);
      const float* p = x + o * n * inner + c0;
      for (int64_t j = 0; j < len; ++j) m[j] = p[j], a[j] = 0;
      for (int64_t r = 1; r < n; ++r) {
        const float* q = p + r * inner;
        for (int64_t j = 0; j < len; ++j) {
          bool up = (q[j] > m[j]) | ((q[j] != q[j]) & (m[j] == m[j]));  // bitwise: no branches
          m[j] = up ? q[j] : m[j];
          a[j] = up ? r : a[j];
        }
      }
      if (val) std::copy(m, m + len, val + o * inner + c0);
      if (arg) std::copy(a, a + len, arg + o * inner + c0);
    }
  });
}

// Shared by amax / argmax: fills val (x's dtype) and/or arg (i64), both shaped like the reduced output.
void max_impl(const char* op, const Tensor& x, int64_t d, Tensor* val, Tensor* arg) {
  int64_t n = x.shape()[size_t(d)], outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= x.shape()[size_t(k)];
  for (int64_t k = d + 1; k < x.dim(); ++k) inner *= x.shape()[size_t(k)];
  SSM_CHECK(n > 0, op,
            "cannot reduce dimension " + std::to_string(d) + " of size 0 (shape " + shape_str(x.shape()) + ")");
  int64_t* ap = arg ? arg->data<int64_t>() : nullptr;
  if (detail::use_fast(x.dtype())) {
    max_fast(x.data<float>(), outer, n, inner, val ? val->data<float>() : nullptr, ap);
  } else {
    detail::dispatch_float(op, x.dtype(), [&]<typename T>() {
      ref::max_dim<T>(x.data<T>(), outer, n, inner, val ? val->data<T>() : nullptr, ap);
    });
  }
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_impl("sum", x, dims, keepdim, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_impl("mean", x, dims, keepdim, true);
}

Tensor amax(const Tensor& x_in, int64_t dim, bool keepdim) {
  detail::check_float("amax", x_in, "x");
  SSM_NO_CUDA("amax", x_in);
  int64_t d = detail::wrap_dim("amax", dim, x_in.dim());
  std::vector<bool> red(size_t(x_in.dim()), false);
  red[size_t(d)] = true;
  Tensor x = cont(x_in);
  Tensor out = Tensor::empty(reduced_shape(x.shape(), red, keepdim), x.dtype());  // x's shape minus dim
  max_impl("amax", x, d, &out, nullptr);
  if (autograd::needs_grad({&x_in})) {
    Shape ks = reduced_shape(x.shape(), red, true);
    autograd::record("amax", {x_in}, {&out}, [x, d, ks](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      if (!g[0].defined()) return {Tensor()};
      Tensor idx = argmax(x, d, true);  // ks, i64
      return {scatter_add(Tensor::zeros(x.shape(), x.dtype()), d, idx, g[0].to(x.dtype()).reshape(ks))};
    });
  }
  return out;
}

Tensor argmax(const Tensor& x_in, int64_t dim, bool keepdim) {
  detail::check_float("argmax", x_in, "x");
  SSM_NO_CUDA("argmax", x_in);
  int64_t d = detail::wrap_dim("argmax", dim, x_in.dim());
  std::vector<bool> red(size_t(x_in.dim()), false);
  red[size_t(d)] = true;
  Tensor x = cont(x_in);
  Tensor out = Tensor::empty(reduced_shape(x.shape(), red, keepdim), DType::i64);  // x's shape minus dim
  max_impl("argmax", x, d, nullptr, &out);
  return out;
}

}  // namespace ssm
