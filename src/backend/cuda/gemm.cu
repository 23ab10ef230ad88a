// linear's GEMM through cuBLASLt: y [R, O] = x [R, I] · w [O, I]ᵀ, fp32 accumulation. In cuBLAS's
// column-major terms: yᵀ [O, R] = op_T(w as [I, O]) · xᵀ [I, R]. One handle and one 32 MiB workspace per
// process; the descriptors and the heuristic's algorithm are cached per (shapes, dtypes, alignments).
#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"

namespace ssm {
void* cuda_alloc(size_t bytes);
}

namespace ssm::cuda {
namespace {

constexpr size_t kWorkspace = size_t(32) << 20;

void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail("linear", std::string(what) + " failed: " + cublasGetStatusString(s));
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      fail("linear", std::string("no CUDA GEMM for dtype ") + dtype_name(t));
  }
}

// The largest power of two (at most 256) dividing the address: cuBLASLt's alignment preference.
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
using Key = std::tuple<int, int, int64_t, int64_t, int64_t, bool, uint32_t, uint32_t, uint32_t>;

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

Plan make_plan(Lt& l, DType in, DType out, int64_t R, int64_t I, int64_t O, bool tf32, const void* x, const void* w,
               const void* y) {
  Plan p;
  const cublasComputeType_t compute = in == DType::f32 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  check(cublasLtMatmulDescCreate(&p.op, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "set TRANSA");
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "set TRANSB");
  check(cublasLtMatrixLayoutCreate(&p.a, cuda_type(in), uint64_t(I), uint64_t(O), I), "layout w");
  check(cublasLtMatrixLayoutCreate(&p.b, cuda_type(in), uint64_t(I), uint64_t(R), I), "layout x");
  check(cublasLtMatrixLayoutCreate(&p.c, cuda_type(out), uint64_t(O), uint64_t(R), O), "layout y");
  cublasLtMatmulPreference_t pref = nullptr;
  check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = kWorkspace;
  const uint32_t aw = alignment(w), ax = alignment(x), ay = alignment(y);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof aw);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax, sizeof ax);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ay, sizeof ay);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ay, sizeof ay);
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(l.handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  SSM_CHECK(s == CUBLAS_STATUS_SUCCESS && found > 0, "linear",
            "cuBLASLt has no algorithm for x [" + std::to_string(R) + ", " + std::to_string(I) + "] · w [" +
                std::to_string(O) + ", " + std::to_string(I) + "]ᵀ in " + dtype_name(in) + " -> " + dtype_name(out));
  p.algo = res.algo;
  return p;
}

}  // namespace

void gemm(DType in, DType out, const void* x, const void* w, void* y, int64_t R, int64_t I, int64_t O, bool tf32,
          void* stream) {
  if (R == 0 || O == 0)
    return;
  Lt& l = lt();
  std::lock_guard<std::mutex> lock(l.m);
  const Key key{int(in), int(out), R, I, O, tf32, alignment(x), alignment(w), alignment(y)};
  auto it = l.plans.find(key);
  if (it == l.plans.end())
    it = l.plans.emplace(key, make_plan(l, in, out, R, I, O, tf32, x, w, y)).first;
  const Plan& p = it->second;
  const float alpha = 1.f, beta = 0.f;
  check(cublasLtMatmul(l.handle, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo, l.workspace, kWorkspace,
                       static_cast<cudaStream_t>(stream)),
        "cublasLtMatmul");
}

}  // namespace ssm::cuda
