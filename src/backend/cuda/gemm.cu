// Every GEMM on the GPU, through cuBLASLt: row-major C [M, N] = op(A) · op(B) (the backward passes),
// and linear's y = x · wᵀ as its case A = x, B = w transposed. In cuBLAS's column-major terms
// Cᵀ [N, M] = op(B)ᵀ · op(A)ᵀ, so B is cuBLAS's first operand: a row-major B [K, N] is column-major
// [N, K] (no transpose), a row-major B [N, K] needs OP_T; the same for A. One handle and one 32 MiB
// workspace per process; plans (descriptors and the heuristic's algorithm) cached per (shapes, dtypes,
// transposes, alignments).
#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/train_kernels.h"

namespace ssm::cuda {
namespace {

constexpr size_t kWorkspace = size_t(32) << 20;

void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("matmul", std::string(what) + " failed: " + cublasGetStatusString(s));
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: fail("matmul", std::string("no CUDA GEMM for dtype ") + dtype_name(t));
  }
}

uint32_t alignment(const void* p) {
  uint32_t a = 256;
  while (a > 1 && reinterpret_cast<uintptr_t>(p) % a) a /= 2;
  return a;
}

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};
using Key = std::tuple<int, int, int64_t, int64_t, int64_t, bool, bool, bool, uint32_t, uint32_t, uint32_t>;

struct Lt {
  std::mutex m;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<Key, Plan> plans;
};
Lt& lt() {
  static Lt* s = [] {
    auto* l = new Lt;  // lives until the process ends
    check(cublasLtCreate(&l->handle), "cublasLtCreate");
    l->workspace = ssm::cuda_alloc(kWorkspace);
    return l;
  }();
  return *s;
}

Plan make_plan(Lt& l, DType in, DType out, const void* A, bool ta, const void* B, bool tb, const void* C, int64_t M,
               int64_t N, int64_t K, bool tf32) {
  Plan p;
  const cublasComputeType_t compute = in == DType::f32 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  check(cublasLtMatmulDescCreate(&p.op, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
  // cuBLAS operand 1 = B (column-major [N, K] when not transposed), operand 2 = A ([K, M]).
  const cublasOperation_t op1 = tb ? CUBLAS_OP_T : CUBLAS_OP_N, op2 = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &op1, sizeof op1), "set TRANSA");
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &op2, sizeof op2), "set TRANSB");
  if (tb)
    check(cublasLtMatrixLayoutCreate(&p.a, cuda_type(in), uint64_t(K), uint64_t(N), K), "layout B");
  else
    check(cublasLtMatrixLayoutCreate(&p.a, cuda_type(in), uint64_t(N), uint64_t(K), N), "layout B");
  if (ta)
    check(cublasLtMatrixLayoutCreate(&p.b, cuda_type(in), uint64_t(M), uint64_t(K), M), "layout A");
  else
    check(cublasLtMatrixLayoutCreate(&p.b, cuda_type(in), uint64_t(K), uint64_t(M), K), "layout A");
  check(cublasLtMatrixLayoutCreate(&p.c, cuda_type(out), uint64_t(N), uint64_t(M), N), "layout C");
  cublasLtMatmulPreference_t pref = nullptr;
  check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = kWorkspace;
  const uint32_t a1 = alignment(B), a2 = alignment(A), ac = alignment(C);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a1, sizeof a1);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a2, sizeof a2);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac);
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(l.handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  SSM_CHECK(s == CUBLAS_STATUS_SUCCESS && found > 0, "matmul",
            "cuBLASLt has no algorithm for [" + std::to_string(M) + ", " + std::to_string(K) + "] · [" +
                std::to_string(K) + ", " + std::to_string(N) + "] in " + dtype_name(in) + " -> " + dtype_name(out));
  p.algo = res.algo;
  return p;
}

}  // namespace

void matmul(DType in, DType out, const void* A, bool trans_a, const void* B, bool trans_b, void* C, int64_t M,
            int64_t N, int64_t K, bool tf32, void* stream) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    SSM_CHECK(cudaMemsetAsync(C, 0, size_t(M * N) * dtype_size(out), static_cast<cudaStream_t>(stream)) == cudaSuccess,
              "matmul", "cudaMemsetAsync failed");
    return;
  }
  Lt& l = lt();
  std::lock_guard<std::mutex> lock(l.m);
  const Key key{int(in), int(out), M, N, K, trans_a, trans_b, tf32, alignment(A), alignment(B), alignment(C)};
  auto it = l.plans.find(key);
  if (it == l.plans.end())
    it = l.plans.emplace(key, make_plan(l, in, out, A, trans_a, B, trans_b, C, M, N, K, tf32)).first;
  const Plan& p = it->second;
  const float alpha = 1.f, beta = 0.f;
  check(cublasLtMatmul(l.handle, p.op, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c, &p.algo, l.workspace, kWorkspace,
                       static_cast<cudaStream_t>(stream)),
        "cublasLtMatmul");
}

void gemm(DType in, DType out, const void* x, const void* w, void* y, int64_t R, int64_t I, int64_t O, bool tf32,
          void* stream) {
  matmul(in, out, x, false, w, true, y, R, O, I, tf32, stream);
}

}  // namespace ssm::cuda
