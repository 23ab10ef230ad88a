// Reference loops for gather and scatter_add (T is any element type; indices already range-checked).
// Generic over shapes: index may be smaller than x (and src) in every dim, as in torch.gather/scatter_add.
// All buffers contiguous.
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

namespace detail {
inline std::vector<int64_t> row_major_strides(const std::vector<int64_t>& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t k = s.size(); k-- > 1;) st[k - 1] = st[k] * s[k];
  return st;
}
// Calls f(coords) for every coordinate of `shape` in row-major order.
template <typename F>
void for_each_index(const std::vector<int64_t>& shape, F f) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    f(idx);
    for (size_t k = shape.size(); k-- > 0;) {
      if (++idx[k] < shape[k]) break;
      idx[k] = 0;
    }
  }
}
}  // namespace detail

// out[c] = x[c with c[dim] replaced by index[c]] for every coordinate c of index (out has index's shape).
template <typename T>
void gather(const T* x, const std::vector<int64_t>& x_shape, int64_t dim, const int64_t* index,
            const std::vector<int64_t>& index_shape, T* out) {
  std::vector<int64_t> xs = detail::row_major_strides(x_shape);
  int64_t i = 0;
  detail::for_each_index(index_shape, [&](const std::vector<int64_t>& c) {
    int64_t off = 0;
    for (size_t k = 0; k < c.size(); ++k) off += (int64_t(k) == dim ? index[i] : c[k]) * xs[k];
    out[i++] = x[off];
  });
}

// out (already holding x) [c with c[dim] replaced by index[c]] += src[c] for every coordinate c of index.
template <typename T>
void scatter_add(T* out, const std::vector<int64_t>& out_shape, int64_t dim, const int64_t* index,
                 const std::vector<int64_t>& index_shape, const T* src, const std::vector<int64_t>& src_shape) {
  std::vector<int64_t> os = detail::row_major_strides(out_shape), ss = detail::row_major_strides(src_shape);
  int64_t i = 0;
  detail::for_each_index(index_shape, [&](const std::vector<int64_t>& c) {
    int64_t off = 0, soff = 0;
    for (size_t k = 0; k < c.size(); ++k) {
      off += (int64_t(k) == dim ? index[i] : c[k]) * os[k];
      soff += c[k] * ss[k];
    }
    out[off] += src[soff];
    ++i;
  });
}

}  // namespace ssm::ref
