// Internal: launch functions of the CUDA forward kernels behind the ops (elementwise.cu, norm.cu, conv.cu,
// gemm.cu), called by src/ops/cuda_ops.cpp on device pointers. Activations are f32, bf16 or f16 (`dt`);
// math is fp32 throughout. Everything runs on the default stream.
#pragma once
#include <cstdint>

#include "ssm/base.h"

namespace ssm::cuda {

constexpr int kMaxDims = 8;

// A walk over `shape` (row-major order) with per-operand strides in elements.
struct Walk {
  int nd = 0;
  int64_t shape[kMaxDims] = {};
  int64_t s0[kMaxDims] = {}, s1[kMaxDims] = {}, s2[kMaxDims] = {};  // strides of out, in0, in1
  int64_t n = 0;                                                    // elements
};

// out[i] = in[i] over the walk (strides s0 for out, s1 for in), converting between float dtypes;
// other dtypes copy bytes and need dt == st.
void copy(const Walk& w, void* out, DType dt, const void* in, DType st);

enum class Unary { neg, exp, silu, softplus };
// y = f(x) over n contiguous elements; `param` is softplus's threshold.
void unary(Unary op, DType dt, const void* x, void* y, int64_t n, float param);

enum class Binary { add, sub, mul, div };
// out (s0, contiguous) = a (s1) op b (s2); broadcasting comes as zero strides.
void binary(Binary op, DType dt, const Walk& w, void* out, const void* a, const void* b);

// out[t, :] = weight[ids[t], :] as f32 (weight f32/bf16/f16 [V, D]); ids already range-checked.
void embedding(DType wdt, const void* weight, const int64_t* ids, float* out, int64_t n, int64_t D);

// out[r, c] += bias[c] (out [rows, cols] of dtype dt, bias f32).
void add_bias(DType dt, void* out, const float* bias, int64_t rows, int64_t cols);

// Per row of C channels: r = x (+ res_in), written to res_out (f32) when given; out = r / rms(r) * w
// in x's dtype. res_in, res_out may be null.
void rms_norm(DType dt, const void* x, const float* res_in, float* res_out, const float* w, void* out, int64_t rows,
              int64_t C, float eps);

// Depthwise causal conv over x [B, L, D] (dt) with w [D, W], bias [D] (f32, may be null) and h0
// [B, W-1, D] (dt, may be null = zeros); y [B, L, D] (dt), optional SiLU; hT [B, W-1, D] (dt) the
// last W-1 inputs.
void conv1d(DType dt, const void* x, const float* w, const float* bias, const void* h0, void* y, void* hT, int64_t B,
            int64_t L, int64_t D, int64_t W, bool silu);

// y [R, O] (out) = x [R, I] · w [O, I]ᵀ through cuBLASLt; x and w both of `in` (f32, bf16, f16),
// fp32 accumulation. f32 inputs compute in exact fp32 unless tf32. `stream` (a cudaStream_t) null: the default.
void gemm(DType in, DType out, const void* x, const void* w, void* y, int64_t R, int64_t I, int64_t O, bool tf32,
          void* stream = nullptr);

}  // namespace ssm::cuda
