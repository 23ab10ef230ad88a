// Reference loops for matmul / linear / embedding: slow, obvious, accumulate in double. They are the
// f64 kernels, the f32 fallback in reference mode, and the oracle the fast kernels are tested against.
#pragma once
#include <cstdint>

namespace ssm::ref {

// C[M, N] = op(A) · op(B) + beta · C, row-major. op(A) is A [M, K] (lda >= K) or, when ta, Aᵀ with
// A [K, M] (lda >= M); likewise op(B) is B [K, N] or Bᵀ with B [N, K].
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T beta,
          T* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        double a = ta ? A[k * lda + m] : A[m * lda + k];
        double b = tb ? B[n * ldb + k] : B[k * ldb + n];
        acc += a * b;
      }
      T& c = C[m * ldc + n];
      c = T(acc + (beta == T(0) ? 0.0 : double(beta) * double(c)));
    }
  }
}

// y[R, O] = x[R, I] · w[O, I]ᵀ (+ bias[O]); bias may be null.
template <typename T>
void linear(const T* x, const T* w, const T* bias, T* y, int64_t R, int64_t I, int64_t O) {
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t o = 0; o < O; ++o) {
      double acc = bias ? double(bias[o]) : 0.0;
      for (int64_t i = 0; i < I; ++i) acc += double(x[r * I + i]) * double(w[o * I + i]);
      y[r * O + o] = T(acc);
    }
  }
}

// out[n, D] = weight[ids[n], D]; ids already validated.
template <typename T, typename Id>
void embedding(const T* weight, const Id* ids, T* out, int64_t n, int64_t D) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t d = 0; d < D; ++d) out[t * D + d] = weight[int64_t(ids[t]) * D + d];
}

// dweight[V, D] += scatter of dout[n, D] into the rows ids[n].
template <typename T, typename Id>
void embedding_backward(const T* dout, const Id* ids, T* dweight, int64_t n, int64_t D) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t d = 0; d < D; ++d) dweight[int64_t(ids[t]) * D + d] += dout[t * D + d];
}

}  // namespace ssm::ref
