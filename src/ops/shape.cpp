// Shape ops: concat, split (views), gather, scatter_add.
// concat is a blocked memcpy for every dtype. gather / scatter_add: the fast f32 path handles the usual
// case where index matches x (and src) outside `dim` as [outer, n, inner] loops under parallel_for,
// race-free for scatter_add because tasks own disjoint (outer, inner) columns; other shapes and
// dtypes use the generic reference loops.
#include <algorithm>
#include <cstring>

#include "ops/cuda_ops.h"
#include "ops/op_util.h"
#include "ops/reference/shape.h"

namespace ssm {
namespace {

constexpr int64_t kGrain = 16384;  // elements per task

Tensor cont(const Tensor& t) {
  autograd::NoGradGuard ng;
  return t.contiguous();
}

int64_t prod(const Shape& s, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t k = from; k < to; ++k) p *= s[k];
  return p;
}

// Calls f.template operator()<U>() with U an unsigned integer of the dtype's size (bit copies).
template <typename F>
void dispatch_bits(DType t, F&& f) {
  switch (dtype_size(t)) {
    case 1: f.template operator()<uint8_t>(); break;
    case 2: f.template operator()<uint16_t>(); break;
    case 4: f.template operator()<uint32_t>(); break;
    default: f.template operator()<uint64_t>(); break;
  }
}

// index: i64, same number of dims as x, every value in [0, x.size(dim)).
void check_index(const char* op, const Tensor& index, const Tensor& x, int64_t dim) {
  detail::check_defined(op, index, "index");
  SSM_NO_CUDA(op, index);
  SSM_CHECK(index.dtype() == DType::i64, op, std::string("index must be i64, got ") + dtype_name(index.dtype()));
  SSM_CHECK(index.dim() == x.dim(), op,
            "index has shape " + shape_str(index.shape()) + " but x has shape " + shape_str(x.shape()) +
                " (they need the same number of dims)");
  for (int64_t k = 0; k < x.dim(); ++k)
    SSM_CHECK(k == dim || index.shape()[size_t(k)] <= x.shape()[size_t(k)], op,
              "index shape " + shape_str(index.shape()) + " exceeds x shape " + shape_str(x.shape()) + " in dim " +
                  std::to_string(k));
}

void check_index_values(const char* op, const Tensor& index, int64_t n) {  // index contiguous
  const int64_t* p = index.data<int64_t>();
  for (int64_t i = 0; i < index.numel(); ++i)
    SSM_CHECK(p[i] >= 0 && p[i] < n, op,
              "index " + std::to_string(p[i]) + " at position " + std::to_string(i) +
                  " is out of range for a dimension of size " + std::to_string(n));
}

// True when a and b agree in every dim except `dim` (the [outer, n, inner] fast layout applies).
bool same_outside(const Shape& a, const Shape& b, int64_t dim) {
  for (size_t k = 0; k < a.size(); ++k)
    if (int64_t(k) != dim && a[k] != b[k]) return false;
  return true;
}

}  // namespace

// ---- concat / split ----------------------------------------------------------------------------------------
Tensor concat(const std::vector<Tensor>& xs_in, int64_t dim) {
  const char* op = "concat";
  SSM_CHECK(!xs_in.empty(), op, "needs at least one tensor");
  for (size_t i = 0; i < xs_in.size(); ++i) {
    SSM_CHECK(xs_in[i].defined(), op, "tensor " + std::to_string(i) + " is undefined");
    if (xs_in[0].device() == Device::cuda) continue;
    SSM_NO_CUDA(op, xs_in[i]);
  }
  if (xs_in[0].device() == Device::cuda) return detail::concat_cuda(xs_in, dim);
  const Tensor& x0 = xs_in[0];
  int64_t d = detail::wrap_dim(op, dim, x0.dim());
  Shape out_shape = x0.shape();
  out_shape[size_t(d)] = 0;
  for (size_t i = 0; i < xs_in.size(); ++i) {
    const Tensor& x = xs_in[i];
    SSM_CHECK(
        x.dtype() == x0.dtype(), op,
        "tensor " + std::to_string(i) + " is " + dtype_name(x.dtype()) + " but tensor 0 is " + dtype_name(x0.dtype()));
    SSM_CHECK(x.dim() == x0.dim() && same_outside(x.shape(), x0.shape(), d), op,
              "tensor " + std::to_string(i) + " has shape " + shape_str(x.shape()) + ", incompatible with " +
                  shape_str(x0.shape()) + " outside dimension " + std::to_string(d));
    out_shape[size_t(d)] += x.shape()[size_t(d)];
  }
  std::vector<Tensor> xs;
  for (const Tensor& x : xs_in) xs.push_back(cont(x));
  Tensor out = Tensor::empty(out_shape, x0.dtype());  // inputs stacked along d
  const size_t es = dtype_size(x0.dtype());
  const int64_t outer = prod(out_shape, 0, size_t(d)), inner = prod(out_shape, size_t(d) + 1, out_shape.size());
  const int64_t out_row = out_shape[size_t(d)] * inner;  // elements per outer index in out
  auto* op_bytes = static_cast<uint8_t*>(out.raw_data());
  parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(out_row, 1)), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      int64_t col = 0;
      for (const Tensor& x : xs) {
        int64_t len = x.shape()[size_t(d)] * inner;
        if (len > 0)
          std::memcpy(op_bytes + size_t(o * out_row + col) * es,
                      static_cast<const uint8_t*>(x.raw_data()) + size_t(o * len) * es, size_t(len) * es);
        col += len;
      }
    }
  });
  if (autograd::needs_grad(xs_in)) {
    std::vector<int64_t> sizes;
    std::vector<bool> need;
    for (const Tensor& x : xs_in) sizes.push_back(x.shape()[size_t(d)]), need.push_back(x.requires_grad());
    autograd::record(op, xs_in, {&out}, [sizes, need, d](const std::vector<Tensor>& gs) -> std::vector<Tensor> {
      std::vector<Tensor> r(sizes.size());
      if (!gs[0].defined()) return r;
      int64_t off = 0;
      for (size_t i = 0; i < sizes.size(); ++i) {
        if (need[i]) r[i] = gs[0].narrow(d, off, sizes[i]).contiguous();
        off += sizes[i];
      }
      return r;
    });
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  const char* op = "split";
  detail::check_defined(op, x, "x");
  int64_t d = detail::wrap_dim(op, dim, x.dim());
  int64_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    SSM_CHECK(sizes[i] >= 0, op, "size " + std::to_string(i) + " is negative (" + std::to_string(sizes[i]) + ")");
    total += sizes[i];
  }
  SSM_CHECK(total == x.shape()[size_t(d)], op,
            "sizes add up to " + std::to_string(total) + " but dimension " + std::to_string(d) + " of " +
                shape_str(x.shape()) + " has " + std::to_string(x.shape()[size_t(d)]));
  std::vector<Tensor> out;
  int64_t off = 0;
  for (int64_t s : sizes) {
    out.push_back(x.narrow(d, off, s));  // a view; its backward is the slice's
    off += s;
  }
  return out;
}

// ---- gather / scatter_add ------------------------------------------------------------------------------------
Tensor gather(const Tensor& x_in, int64_t dim, const Tensor& index_in) {
  const char* op = "gather";
  detail::check_defined(op, x_in, "x");
  SSM_NO_CUDA(op, x_in);
  int64_t d = detail::wrap_dim(op, dim, x_in.dim());
  check_index(op, index_in, x_in, d);
  Tensor x = cont(x_in), index = cont(index_in);
  check_index_values(op, index, x.shape()[size_t(d)]);
  Tensor out = Tensor::empty(index.shape(), x.dtype());  // index's shape
  const int64_t* ip = index.data<int64_t>();
  if (detail::use_fast(x.dtype()) && same_outside(x.shape(), index.shape(), d)) {
    const int64_t outer = prod(x.shape(), 0, size_t(d)), inner = prod(x.shape(), size_t(d) + 1, x.shape().size());
    const int64_t nx = x.shape()[size_t(d)], ni = index.shape()[size_t(d)];
    const float* xp = x.data<float>();
    float* optr = out.data<float>();
    parallel_for(outer * ni, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {  // r = o * ni + j
        const float* xo = xp + (r / ni) * nx * inner;
        const int64_t* ir = ip + r * inner;
        float* orow = optr + r * inner;
        for (int64_t k = 0; k < inner; ++k) orow[k] = xo[ir[k] * inner + k];
      }
    });
  } else {
    dispatch_bits(x.dtype(), [&]<typename U>() {
      ref::gather<U>(static_cast<const U*>(x.raw_data()), x.shape(), d, ip, index.shape(),
                     static_cast<U*>(out.raw_data()));
    });
  }
  if (autograd::needs_grad({&x_in})) {
    Shape xs = x.shape();
    DType dt = x.dtype();
    autograd::record(op, {x_in}, {&out}, [xs, dt, d, index](const std::vector<Tensor>& gs) -> std::vector<Tensor> {
      if (!gs[0].defined()) return {Tensor()};
      return {scatter_add(Tensor::zeros(xs, dt), d, index, gs[0].to(dt))};
    });
  }
  return out;
}

Tensor scatter_add(const Tensor& x_in, int64_t dim, const Tensor& index_in, const Tensor& src_in) {
  const char* op = "scatter_add";
  detail::check_float(op, x_in, "x");
  detail::check_float(op, src_in, "src");
  SSM_NO_CUDA(op, x_in);
  SSM_NO_CUDA(op, src_in);
  detail::check_same_dtype(op, x_in, "x", src_in, "src");
  int64_t d = detail::wrap_dim(op, dim, x_in.dim());
  check_index(op, index_in, x_in, d);
  SSM_CHECK(src_in.dim() == index_in.dim(), op,
            "src has shape " + shape_str(src_in.shape()) + " but index has shape " + shape_str(index_in.shape()));
  for (int64_t k = 0; k < src_in.dim(); ++k)
    SSM_CHECK(index_in.shape()[size_t(k)] <= src_in.shape()[size_t(k)], op,
              "index shape " + shape_str(index_in.shape()) + " exceeds src shape " + shape_str(src_in.shape()) +
                  " in dim " + std::to_string(k));
  Tensor index = cont(index_in), src = cont(src_in);
  check_index_values(op, index, x_in.shape()[size_t(d)]);
  Tensor out;  // x's shape
  {
    autograd::NoGradGuard ng;
    out = x_in.clone();  // a contiguous copy
  }
  const int64_t* ip = index.data<int64_t>();
  if (detail::use_fast(out.dtype()) && same_outside(out.shape(), index.shape(), d) && src.shape() == index.shape()) {
    const int64_t outer = prod(out.shape(), 0, size_t(d)), inner = prod(out.shape(), size_t(d) + 1, out.shape().size());
    const int64_t nx = out.shape()[size_t(d)], ni = index.shape()[size_t(d)];
    constexpr int64_t kCols = 256;  // inner columns per task
    const int64_t nb = (inner + kCols - 1) / kCols;
    const float* sp = src.data<float>();
    float* optr = out.data<float>();
    parallel_for(outer * nb, std::max<int64_t>(1, kGrain / std::max<int64_t>(ni * kCols, 1)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t t = b; t < e; ++t) {
                     int64_t o = t / nb, c0 = (t % nb) * kCols, c1 = std::min(inner, c0 + kCols);
                     float* oo = optr + o * nx * inner;
                     for (int64_t j = 0; j < ni; ++j) {
                       const int64_t* ir = ip + (o * ni + j) * inner;
                       const float* sr = sp + (o * ni + j) * inner;
                       for (int64_t k = c0; k < c1; ++k) oo[ir[k] * inner + k] += sr[k];
                     }
                   }
                 });
  } else {
    detail::dispatch_float(op, out.dtype(), [&]<typename T>() {
      ref::scatter_add<T>(out.data<T>(), out.shape(), d, ip, index.shape(), src.data<T>(), src.shape());
    });
  }
  if (autograd::needs_grad({&x_in, &src_in})) {
    bool need_x = x_in.requires_grad(), need_src = src_in.requires_grad();
    Shape ss = src.shape();
    autograd::record(op, {x_in, src_in}, {&out},
                     [need_x, need_src, ss, d, index](const std::vector<Tensor>& gs) -> std::vector<Tensor> {
                       std::vector<Tensor> r(2);
                       if (!gs[0].defined()) return r;
                       if (need_x) r[0] = gs[0];
                       if (need_src) {
                         Tensor gsrc = gather(gs[0], d, index);  // index's shape
                         if (gsrc.shape() != ss) {               // src larger than index: zeros elsewhere
                           Tensor full = Tensor::zeros(ss, gsrc.dtype());
                           Tensor view = full;
                           for (size_t k = 0; k < ss.size(); ++k) view = view.narrow(int64_t(k), 0, gsrc.shape()[k]);
                           view.copy_(gsrc);
                           gsrc = full;
                         }
                         r[1] = gsrc;
                       }
                       return r;
                     });
  }
  return out;
}

}  // namespace ssm
