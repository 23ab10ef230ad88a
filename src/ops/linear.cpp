// matmul, linear, embedding. f32 runs on OpenBLAS (sgemm, sgemv for one row/column); f64 and
// reference mode run the loops of ops/reference/linear.h. linear() of a few rows (the decode case:
// bound by the bandwidth of streaming the weight once) runs ops/matvec for f32, bf16 and f16
// weights alike. More rows: f32 weights on sgemm; bf16 weights on the AVX-512 BF16 GEMM where the
// CPU has it; otherwise blocks of weight rows widened into an f32 scratch for sgemm.
#include "ops/reference/linear.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ops/matvec.h"
#include "ops/matvec_avx512.h"
#include "ops/cuda_ops.h"
#include "ops/op_util.h"

namespace ssm {
namespace {

using detail::check_defined;
using detail::check_dim;

bool is_half(DType t) { return t == DType::f16 || t == DType::bf16; }

// OpenBLAS has its own thread pool; keep its size equal to ours.
void sync_blas_threads() {
  static std::atomic<int> set{0};
  int n = num_threads();
  if (set.load(std::memory_order_relaxed) != n) {
    openblas_set_num_threads(n);
    set.store(n, std::memory_order_relaxed);
  }
}

void check_blas_size(int64_t v) {
  SSM_CHECK(v <= INT_MAX, "matmul", "dimension " + std::to_string(v) + " exceeds the BLAS limit of 2^31-1");
}

// C[M, N] = op(A) op(B) + beta C, row-major (see ref::gemm for the layout conventions).
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T beta,
          T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS rejects lda = 0; the product is empty
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) C[m * ldc + n] = beta == T(0) ? T(0) : beta * C[m * ldc + n];
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (!reference_kernels()) {
      for (int64_t v : {M, N, K, lda, ldb, ldc}) check_blas_size(v);
      sync_blas_threads();
      auto op = [](bool t) { return t ? CblasTrans : CblasNoTrans; };
      if (M == 1) {  // C[1, N] = a[K] · op(B): one GEMV over B
        const int inca = ta ? int(lda) : 1;
        if (tb)  // B [N, K]
          cblas_sgemv(CblasRowMajor, CblasNoTrans, int(N), int(K), 1.f, B, int(ldb), A, inca, beta, C, 1);
        else  // B [K, N]
          cblas_sgemv(CblasRowMajor, CblasTrans, int(K), int(N), 1.f, B, int(ldb), A, inca, beta, C, 1);
        return;
      }
      if (N == 1) {  // C[M, 1] = op(A) · b[K]
        const int incb = tb ? 1 : int(ldb);
        if (ta)  // A [K, M]
          cblas_sgemv(CblasRowMajor, CblasTrans, int(K), int(M), 1.f, A, int(lda), B, incb, beta, C, int(ldc));
        else
          cblas_sgemv(CblasRowMajor, CblasNoTrans, int(M), int(K), 1.f, A, int(lda), B, incb, beta, C, int(ldc));
        return;
      }
      cblas_sgemm(CblasRowMajor, op(ta), op(tb), int(M), int(N), int(K), 1.f, A, int(lda), B, int(ldb), beta, C,
                  int(ldc));
      return;
    }
  }
  ref::gemm<T>(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

// ---- matmul -------------------------------------------------------------------------------------------

// The product without autograd. a [..., M, K] (or [..., K, M] if ta), b likewise or 2-D.
Tensor matmul_impl(const Tensor& a_in, const Tensor& b_in, bool ta, bool tb) {
  Tensor a = a_in.contiguous(), b = b_in.contiguous();
  const int64_t M = ta ? a.size(-1) : a.size(-2), K = ta ? a.size(-2) : a.size(-1);
  const int64_t N = tb ? b.size(-2) : b.size(-1);
  Shape out_shape(a.shape().begin(), a.shape().end() - 2);
  const int64_t nbatch = shape_numel(out_shape);
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, a.dtype());  // [..., M, N]
  const bool b2d = b.dim() == 2;
  detail::dispatch_float("matmul", a.dtype(), [&]<typename T>() {
    const T* A = a.data<T>();
    const T* B = b.data<T>();
    T* C = out.data<T>();
    const int64_t lda = ta ? M : K, ldb = tb ? K : N;
    if (b2d && !ta) {  // fold the batch into the rows: one GEMM
      gemm<T>(false, tb, nbatch * M, N, K, A, lda, B, ldb, T(0), C, N);
      return;
    }
    for (int64_t i = 0; i < nbatch; ++i)
      gemm<T>(ta, tb, M, N, K, A + i * M * K, lda, B + (b2d ? 0 : i * K * N), ldb, T(0), C + i * M * N, N);
  });
  return out;
}

Tensor transpose_last(const Tensor& t) { return t.transpose(-1, -2).contiguous(); }

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const char* op = "matmul";
  detail::check_float(op, a, "a");
  detail::check_float(op, b, "b");
  detail::check_same_dtype(op, a, "a", b, "b");
  SSM_NO_CUDA(op, a);
  SSM_NO_CUDA(op, b);
  SSM_CHECK(a.dim() >= 2, op, "a must have at least 2 dims, got shape " + shape_str(a.shape()));
  SSM_CHECK(b.dim() >= 2, op, "b must have at least 2 dims, got shape " + shape_str(b.shape()));
  SSM_CHECK(
      b.dim() == 2 || Shape(a.shape().begin(), a.shape().end() - 2) == Shape(b.shape().begin(), b.shape().end() - 2),
      op, "batch dims differ: a " + shape_str(a.shape()) + ", b " + shape_str(b.shape()) + " (b may also be 2-D)");
  const int64_t Ka = trans_a ? a.size(-2) : a.size(-1), Kb = trans_b ? b.size(-1) : b.size(-2);
  SSM_CHECK(Ka == Kb, op,
            "inner dims differ: op(a) of " + shape_str(a.shape()) + " has K=" + std::to_string(Ka) + ", op(b) of " +
                shape_str(b.shape()) + " has K=" + std::to_string(Kb));
  Tensor out;
  {
    autograd::NoGradGuard ng;
    out = matmul_impl(a, b, trans_a, trans_b);
  }
  if (!autograd::needs_grad({&a, &b})) return out;
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  autograd::record(op, {a, b}, {&out}, [ad, bd, ga, gb, trans_a, trans_b](const std::vector<Tensor>& g) {
    std::vector<Tensor> r(2);
    if (!g[0].defined()) return r;
    const Tensor& dc = g[0];  // [..., M, N]
    if (ga) {                 // op(a) grad = dc · op(b)ᵀ; a grad is its transpose when trans_a
      Tensor t = matmul_impl(dc, bd, false, !trans_b);
      r[0] = trans_a ? transpose_last(t) : t;
    }
    if (gb) {  // op(b) grad = op(a)ᵀ · dc, summed over the batch when b is 2-D
      Tensor t;
      if (bd.dim() == 2 && ad.dim() > 2) {
        Tensor a_rows = (trans_a ? transpose_last(ad) : ad).reshape({-1, ad.size(trans_a ? -2 : -1)});  // [B·M, K]
        t = matmul_impl(a_rows, dc.reshape({-1, dc.size(-1)}), true, false);                            // [K, N]
      } else {
        t = matmul_impl(ad, dc, !trans_a, false);
      }
      r[1] = trans_b ? transpose_last(t) : t;
    }
    return r;
  });
  return out;
}

// ---- half-precision weights ---------------------------------------------------------------------------
namespace {

template <bool kBf16>
inline __m256 load8h(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kBf16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  else
    return _mm256_cvtph_ps(h);
}
template <bool kBf16>
inline float load1h(const uint16_t* p) {
  if constexpr (kBf16)
    return bf16_to_f32(*p);
  else
    return _cvtsh_ss(*p);
}
// dst[n] = widen(src[n]) for a bf16/f16 buffer.
template <bool kBf16>
void widen(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8h<kBf16>(src + i));
  for (; i < n; ++i) dst[i] = load1h<kBf16>(src + i);
}

void widen_half(const Tensor& w, int64_t begin, int64_t n, float* dst) {  // elements [begin, begin + n)
  const uint16_t* src = static_cast<const uint16_t*>(w.raw_data()) + begin;
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    if (w.dtype() == DType::bf16)
      widen<true>(src + b, dst + b, e - b);
    else
      widen<false>(src + b, dst + b, e - b);
  });
}

// A weight of any float dtype as a dense T buffer (the slow path: reference mode, f64).
template <typename T>
std::vector<T> weight_as(const Tensor& w) {
  std::vector<double> v = w.to_vector_f64();
  return std::vector<T>(v.begin(), v.end());
}

// Rows of w per widened block: an f32 scratch of about 1 MiB.
int64_t half_block_rows(int64_t I, int64_t O) {
  return std::min<int64_t>(O, std::max<int64_t>(16, (int64_t(1) << 18) / std::max<int64_t>(I, 1)));
}

constexpr int64_t kGemvMaxRows = 8;  // up to this many rows of x, linear streams the weight (matvec)

// y [R, O] = x [R, I] · wᵀ with bf16 w on the AVX-512 BF16 dot products: x rounded to bf16 once,
// products summed in f32 (what PyTorch's bf16 matmul and llama.cpp's BF16 path compute).
void bf16_linear(const float* x, int64_t R, int64_t I, const uint16_t* w, float* y, int64_t O) {
  const int64_t Kp = (I + 1) / 2 * 2;
  std::vector<uint16_t> xb(size_t(R * Kp));  // [R, Kp]
  parallel_for(R, std::max<int64_t>(1, 8192 / Kp), [&](int64_t r0, int64_t r1) {
    kernels::avx512::round_bf16(x + r0 * I, r1 - r0, I, xb.data() + r0 * Kp);
  });
  const int64_t strips = (O + 47) / 48, panel = kernels::bf16_gemm_panel_elems(I);
  parallel_for(strips, 1, [&](int64_t s0, int64_t s1) {
    std::vector<uint16_t> p(static_cast<size_t>(panel));  // this thread's packed strip
    kernels::avx512::bf16_gemm(xb.data(), R, I, w, y, O, s0 * 48, std::min(O, s1 * 48), p.data());
  });
}

// ---- linear ----------------------------------------------------------------------------------------

// y [R, O] = x [R, I] · wᵀ (+ bias); x contiguous, w contiguous of any float dtype.
template <typename T>
void linear_forward(const T* x, const Tensor& w, const Tensor& bias, T* y, int64_t R) {
  const int64_t O = w.size(0), I = w.size(1);
  const bool fast = std::is_same_v<T, float> && !reference_kernels();
  if (!fast) {
    std::vector<T> wv, bv;
    const T* wp;
    if (w.dtype() == dtype_of<T>::value) {
      wp = w.data<T>();
    } else {
      wv = weight_as<T>(w);
      wp = wv.data();
    }
    if (bias.defined()) bv = weight_as<T>(bias);
    ref::linear<T>(x, wp, bias.defined() ? bv.data() : nullptr, y, R, I, O);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    std::vector<float> bv;
    const float* bp = nullptr;
    if (bias.defined()) {
      if (bias.dtype() != DType::f32) bv = weight_as<float>(bias);
      bp = bias.dtype() == DType::f32 ? bias.data<float>() : bv.data();
    }
    if (R <= kGemvMaxRows) {  // few rows (decode): stream the weight once, bias included
      kernels::matvec_parallel(x, R, I, w.raw_data(), kernels::weight_kind(w.dtype()), bp, y, O, O);
      return;
    }
    if (w.dtype() == DType::f32) {
      gemm<float>(false, true, R, O, I, x, I, w.data<float>(), I, 0.f, y, O);
    } else if (w.dtype() == DType::bf16 && kernels::have_avx512_bf16()) {
      bf16_linear(x, R, I, static_cast<const uint16_t*>(w.raw_data()), y, O);
    } else {
      const int64_t nb = half_block_rows(I, O);
      std::vector<float> scratch(size_t(nb * I));  // [nb, I]
      for (int64_t o0 = 0; o0 < O; o0 += nb) {
        const int64_t n = std::min(nb, O - o0);
        widen_half(w, o0 * I, n * I, scratch.data());
        gemm<float>(false, true, R, n, I, x, I, scratch.data(), I, 0.f, y + o0, O);
      }
    }
    if (bp) {
      parallel_for(R, std::max<int64_t>(1, 16384 / std::max<int64_t>(O, 1)), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t o = 0; o < O; ++o) y[r * O + o] += bp[o];
      });
    }
  }
}

// dx [R, I] = dy [R, O] · w [O, I] for w of any float dtype.
template <typename T>
void linear_input_grad(const T* dy, const Tensor& w, T* dx, int64_t R) {
  const int64_t O = w.size(0), I = w.size(1);
  if (w.dtype() == dtype_of<T>::value) {
    gemm<T>(false, false, R, I, O, dy, O, w.data<T>(), I, T(0), dx, I);
    return;
  }
  if (!std::is_same_v<T, float> || reference_kernels()) {
    std::vector<T> wv = weight_as<T>(w);
    ref::gemm<T>(false, false, R, I, O, dy, O, wv.data(), I, T(0), dx, I);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    const int64_t nb = half_block_rows(I, O);
    std::vector<float> scratch(size_t(nb * I));  // [nb, I]
    for (int64_t o0 = 0; o0 < O; o0 += nb) {
      const int64_t n = std::min(nb, O - o0);
      widen_half(w, o0 * I, n * I, scratch.data());
      gemm<float>(false, false, R, I, n, dy + o0, O, scratch.data(), I, o0 == 0 ? 0.f : 1.f, dx, I);
    }
  }
}

// Sum of the rows of g [R, O] → [O].
Tensor sum_rows(const Tensor& g2) {
  const int64_t R = g2.size(0), O = g2.size(1);
  Tensor out = Tensor::zeros({O}, g2.dtype());  // [O]
  detail::dispatch_float("linear", g2.dtype(), [&]<typename T>() {
    const T* g = g2.data<T>();
    T* o = out.data<T>();
    parallel_for(O, 256, [&](int64_t o0, int64_t o1) {
      std::vector<double> acc(size_t(o1 - o0), 0.0);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = o0; j < o1; ++j) acc[size_t(j - o0)] += double(g[r * O + j]);
      for (int64_t j = o0; j < o1; ++j) o[j] = T(acc[size_t(j - o0)]);
    });
  });
  return out;
}

void check_frozen_half(const char* op, const Tensor& t, const char* name) {
  SSM_CHECK(!(autograd::grad_enabled() && t.requires_grad() && is_half(t.dtype())), op,
            std::string(name) + " is " + dtype_name(t.dtype()) +
                " and requires grad; half-precision weights are frozen (cast to f32 with .to(DType::f32) to train it)");
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const char* op = "linear";
  if (x.device() == Device::cuda || (w.defined() && w.device() == Device::cuda)) return detail::linear_cuda(x, w, bias);
  detail::check_float(op, x, "x");
  check_defined(op, w, "w");
  SSM_NO_CUDA(op, x);
  SSM_NO_CUDA(op, w);
  check_dim(op, w, 2, "w");
  SSM_CHECK(x.dim() >= 1, op, "x must have at least 1 dim");
  SSM_CHECK(w.dtype() == x.dtype() || is_half(w.dtype()), op,
            std::string("w is ") + dtype_name(w.dtype()) + " but x is " + dtype_name(x.dtype()) +
                " (w must match x, or be f16/bf16)");
  const int64_t I = w.size(1), O = w.size(0);
  SSM_CHECK(x.size(-1) == I, op,
            "x has " + std::to_string(x.size(-1)) + " input features (shape " + shape_str(x.shape()) + ") but w " +
                shape_str(w.shape()) + " expects " + std::to_string(I));
  if (bias.defined()) {
    SSM_NO_CUDA(op, bias);
    SSM_CHECK(bias.dtype() == x.dtype() || is_half(bias.dtype()), op,
              std::string("bias is ") + dtype_name(bias.dtype()) + " but x is " + dtype_name(x.dtype()));
    detail::check_shape(op, bias, {O}, "bias");
  }
  check_frozen_half(op, w, "w");
  if (bias.defined()) check_frozen_half(op, bias, "bias");
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  const int64_t R = shape_numel(out_shape);  // rows of x
  out_shape.push_back(O);
  Tensor out = Tensor::empty(out_shape, x.dtype());  // [..., O]
  Tensor xc = x.detach().contiguous(), wc = w.detach().contiguous(),
         bc = bias.defined() ? bias.detach().contiguous() : Tensor();
  detail::dispatch_float(op, x.dtype(),
                         [&]<typename T>() { linear_forward<T>(xc.data<T>(), wc, bc, out.data<T>(), R); });
  if (!autograd::needs_grad({&x, &w, &bias})) return out;
  const bool gx = x.requires_grad(), gw = w.requires_grad(), gb = bias.defined() && bias.requires_grad();
  Shape x_shape = x.shape();
  autograd::record(op, {x, w, bias}, {&out}, [xc, wc, gx, gw, gb, x_shape, R, I, O](const std::vector<Tensor>& g) {
    std::vector<Tensor> r(3);
    if (!g[0].defined()) return r;
    Tensor g2 = g[0].contiguous().view({R, O});  // [R, O]
    if (gx) {
      Tensor dx = Tensor::empty({R, I}, g2.dtype());  // [R, I]
      detail::dispatch_float("linear", g2.dtype(),
                             [&]<typename T>() { linear_input_grad<T>(g2.data<T>(), wc, dx.data<T>(), R); });
      r[0] = dx.view(x_shape);
    }
    if (gw) r[1] = matmul_impl(g2, xc.view({R, I}), true, false);  // [O, I]
    if (gb) r[2] = sum_rows(g2);                                   // [O]
    return r;
  });
  return out;
}

// ---- embedding --------------------------------------------------------------------------------------

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  const char* op = "embedding";
  check_defined(op, weight, "weight");
  if (weight.device() == Device::cuda) return detail::embedding_cuda(weight, ids);
  check_defined(op, ids, "ids");
  SSM_NO_CUDA(op, weight);
  SSM_NO_CUDA(op, ids);
  check_dim(op, weight, 2, "weight");
  SSM_CHECK(dtype_is_float(weight.dtype()), op,
            std::string("weight must be a float tensor, got ") + dtype_name(weight.dtype()));
  SSM_CHECK(ids.dtype() == DType::i64 || ids.dtype() == DType::i32, op,
            std::string("ids must be i64 or i32, got ") + dtype_name(ids.dtype()));
  check_frozen_half(op, weight, "weight");
  const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
  Tensor idc = ids.contiguous();
  std::vector<int64_t> idv = idc.to_vector_i64();  // [n]
  for (int64_t t = 0; t < n; ++t)
    SSM_CHECK(idv[size_t(t)] >= 0 && idv[size_t(t)] < V, op,
              "id " + std::to_string(idv[size_t(t)]) + " at position " + std::to_string(t) +
                  " is out of range for a vocabulary of " + std::to_string(V) + " rows");
  const DType out_dt = weight.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, out_dt);  // [..., D]
  Tensor wc = weight.detach().contiguous();
  const int64_t* id = idv.data();
  if (is_half(wc.dtype())) {
    const uint16_t* src = static_cast<const uint16_t*>(wc.raw_data());
    float* dst = out.data<float>();
    const bool bf = wc.dtype() == DType::bf16;
    parallel_for(n, std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1)), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        if (bf)
          widen<true>(src + id[t] * D, dst + t * D, D);
        else
          widen<false>(src + id[t] * D, dst + t * D, D);
      }
    });
  } else {
    detail::dispatch_float(op, wc.dtype(), [&]<typename T>() {
      const T* src = wc.data<T>();
      T* dst = out.data<T>();
      if (!detail::use_fast(wc.dtype())) {
        ref::embedding<T, int64_t>(src, id, dst, n, D);
        return;
      }
      parallel_for(n, std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1)), [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) std::memcpy(dst + t * D, src + id[t] * D, size_t(D) * sizeof(T));
      });
    });
  }
  if (!autograd::needs_grad({&weight})) return out;
  autograd::record(op, {weight, ids}, {&out}, [idv, V, D, n](const std::vector<Tensor>& g) {
    std::vector<Tensor> r(2);
    if (!g[0].defined()) return r;
    Tensor gc = g[0].contiguous();                  // [..., D]
    Tensor dw = Tensor::zeros({V, D}, gc.dtype());  // [V, D]
    detail::dispatch_float("embedding", gc.dtype(), [&]<typename T>() {
      ref::embedding_backward<T, int64_t>(gc.data<T>(), idv.data(), dw.data<T>(), n, D);
    });
    r[0] = dw;
    return r;
  });
  return out;
}

}  // namespace ssm
