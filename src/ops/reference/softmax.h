// Reference loops for softmax, log_softmax and cross-entropy (T = float or double); math in double.
#pragma once
#include <cmath>
#include <cstdint>

namespace ssm::ref {

// Softmax (or log-softmax) over the middle dim of x [outer, n, inner] into y (same shape).
template <typename T>
void softmax_dim(const T* x, int64_t outer, int64_t n, int64_t inner, T* y, bool log) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t k = 0; k < inner; ++k) {
      const T* p = x + o * n * inner + k;
      T* q = y + o * n * inner + k;
      double m = -INFINITY;  // NaN inputs make s NaN, an all -inf row gives -inf - -inf = NaN (as PyTorch)
      for (int64_t j = 0; j < n; ++j) m = std::fmax(m, double(p[j * inner]));
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += std::exp(double(p[j * inner]) - m);
      double ls = std::log(s);
      for (int64_t j = 0; j < n; ++j) {
        double z = double(p[j * inner]) - m;
        q[j * inner] = T(log ? z - ls : std::exp(z) / s);
      }
    }
  }
}

// Sum over rows i with target[i] != ignore of logsumexp(logits[i, :]) - logits[i, target[i]];
// logits [N, V], targets [N] already range-checked. *count receives the number of rows summed.
template <typename T>
double cross_entropy_sum(const T* logits, const int64_t* target, int64_t N, int64_t V, int64_t ignore, int64_t* count) {
  double total = 0;
  int64_t c = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (target[i] == ignore) continue;
    const T* row = logits + i * V;
    double m = -INFINITY;
    for (int64_t j = 0; j < V; ++j) m = std::fmax(m, double(row[j]));
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(double(row[j]) - m);
    total += m + std::log(s) - double(row[target[i]]);
    ++c;
  }
  *count = c;
  return total;
}

}  // namespace ssm::ref
