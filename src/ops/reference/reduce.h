// Reference loops for the reductions (T = float or double). Sums accumulate in double. Contiguous inputs.
#pragma once
#include <cstdint>
#include <vector>

namespace ssm::ref {

// out[kept coords] = scale * sum of x over the dims flagged in `reduced` (out is x's shape with those
// dims removed, row-major).
template <typename T>
void sum_dims(const T* x, const std::vector<int64_t>& shape, const std::vector<bool>& reduced, T* out, double scale) {
  const size_t nd = shape.size();
  std::vector<int64_t> ostride(nd, 0), idx(nd, 0);
  int64_t acc = 1, n = 1, n_out = 1;
  for (size_t k = nd; k-- > 0;) {
    if (!reduced[k]) {
      ostride[k] = acc;
      acc *= shape[k];
      n_out *= shape[k];
    }
    n *= shape[k];
  }
  std::vector<double> sums(size_t(n_out), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t o = 0;
    for (size_t k = 0; k < nd; ++k) o += idx[k] * ostride[k];
    sums[size_t(o)] += double(x[i]);
    for (size_t k = nd; k-- > 0;) {
      if (++idx[k] < shape[k]) break;
      idx[k] = 0;
    }
  }
  for (int64_t o = 0; o < n_out; ++o) out[o] = T(sums[size_t(o)] * scale);
}

// Max over the middle dim of x [outer, n, inner] (n >= 1) -> val [outer, inner], arg [outer, inner]
// (either may be null). NaN counts as the maximum; ties and NaNs resolve to the first index.
template <typename T>
void max_dim(const T* x, int64_t outer, int64_t n, int64_t inner, T* val, int64_t* arg) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t k = 0; k < inner; ++k) {
      const T* p = x + o * n * inner + k;
      T best = p[0];
      int64_t bi = 0;
      for (int64_t j = 1; j < n; ++j) {
        T v = p[j * inner];
        if (v > best || (v != v && best == best)) {
          best = v;
          bi = j;
        }
      }
      if (val) val[o * inner + k] = best;
      if (arg) arg[o * inner + k] = bi;
    }
  }
}

}  // namespace ssm::ref
