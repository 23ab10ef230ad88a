// Shared test helpers: fixture paths, tolerance checks that print max/mean error.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <vector>
#include <string>

#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "ssm/tensor.h"

namespace ssm::testing {

// The read-only ../shared folder beside the repository (SSM_SHARED overrides). Empty if absent.
inline std::string shared_dir() {
  if (const char* e = std::getenv("SSM_SHARED")) return e;
  std::filesystem::path p = std::filesystem::path(SSM_SOURCE_DIR) / ".." / "shared";
  return std::filesystem::exists(p) ? std::filesystem::canonical(p).string() : std::string();
}

// Skips the test with a clear message when ../shared (or a file under it) is missing.
#define SSM_REQUIRE_SHARED(rel)                                                                                       \
  do {                                                                                                                \
    if (::ssm::testing::shared_dir().empty() || !std::filesystem::exists(::ssm::testing::shared_dir() + "/" + (rel))) \
      GTEST_SKIP() << "needs ../shared/" << (rel) << " (reference fixtures, not part of the repository)";             \
  } while (0)

inline std::string shared_path(const std::string& rel) { return shared_dir() + "/" + rel; }

// The whole content of a file ("" if it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The ssm binary the command-line tests run: $SSM_BIN (a staged copy on the GPU machine), else the build's.
inline std::string ssm_binary() {
  const char* b = std::getenv("SSM_BIN");
  return b ? std::string(b) : std::string(SSM_BINARY_DIR) + "/ssm";
}

struct ErrStats {
  double max_abs = 0, mean_abs = 0, ref_max = 0;
};

inline ErrStats compare(const Tensor& got, const Tensor& want) {
  auto g = got.to_vector_f64(), w = want.to_vector_f64();
  ErrStats s;
  for (size_t i = 0; i < g.size() && i < w.size(); ++i) {
    double e = std::fabs(g[i] - w[i]);
    if (!(e <= s.max_abs)) s.max_abs = e;  // NaN propagates
    s.mean_abs += e;
    s.ref_max = std::max(s.ref_max, std::fabs(w[i]));
  }
  if (!g.empty()) s.mean_abs /= double(g.size());
  return s;
}

// Passes when max |got - want| <= rtol * max|want| + atol; prints the errors otherwise.
inline ::testing::AssertionResult AllClose(const Tensor& got, const Tensor& want, double rtol, double atol = 0) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(got.shape()) << " vs " << shape_str(want.shape());
  ErrStats s = compare(got, want);
  double bound = rtol * s.ref_max + atol;
  if (s.max_abs <= bound) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max abs err " << s.max_abs << " > bound " << bound << " (mean abs err "
                                       << s.mean_abs << ", max |ref| " << s.ref_max << ")";
}

// f64 finite-difference check of f's gradient in every input. eps 1e-6 central differences in
// f64: truncation O(eps^2) and rounding O(1e-16/eps) stay below 1e-7.
// Undefined inputs (optional arguments) stay undefined.
inline void expect_grad(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs) {
  for (auto& t : inputs)
    if (t.defined()) t.set_requires_grad(true);
  auto r = autograd::grad_check(f, inputs, 1e-6, 1e-7, 1e-5);
  EXPECT_TRUE(r.ok) << r.message << " (max abs err " << r.max_abs_err << ")";
}

// f() must throw an ssm::Error whose message contains substr.
template <typename F>
void expect_error(F f, const std::string& substr) {
  try {
    f();
    ADD_FAILURE() << "expected an ssm::Error containing '" << substr << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(substr), std::string::npos) << "message: " << e.what();
  }
}

// f() evaluated with the reference loops instead of the fast kernels.
template <typename F>
Tensor reference(F f) {
  ReferenceKernelsGuard g(true);
  return f();
}

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Forward output and input gradients of f on fresh leaf copies of `inputs` (undefined stay
// undefined; `no_grad[i]` leaves input i without requires_grad), backpropagating a fixed random dy.
struct RunResult {
  Tensor out;
  std::vector<Tensor> grads;
};
inline RunResult run(const OpFn& f, const std::vector<Tensor>& inputs, std::vector<bool> no_grad = {}) {
  std::vector<Tensor> leaves;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor t = inputs[i].defined() ? inputs[i].clone() : Tensor();
    if (t.defined() && (t.dtype() == DType::f32 || t.dtype() == DType::f64) && !(i < no_grad.size() && no_grad[i]))
      t.set_requires_grad(true);
    leaves.push_back(t);
  }
  RunResult r;
  r.out = f(leaves);
  r.out.backward(Tensor::randn(r.out.shape(), 99, 0, 1, r.out.dtype()));
  for (auto& t : leaves) r.grads.push_back(t.defined() && t.requires_grad() ? t.grad() : Tensor());
  return r;
}

// Fast f32 kernels vs reference loops on the same inputs: output and every gradient.
inline void expect_fast_matches_reference(const OpFn& f, const std::vector<Tensor>& inputs, double rtol,
                                          std::vector<bool> no_grad = {}) {
  RunResult fast = run(f, inputs, no_grad), ref;
  {
    ReferenceKernelsGuard g(true);
    ref = run(f, inputs, no_grad);
  }
  EXPECT_TRUE(AllClose(fast.out, ref.out, rtol)) << "forward";
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_EQ(fast.grads[i].defined(), ref.grads[i].defined()) << "input " << i;
    if (fast.grads[i].defined()) {
      EXPECT_TRUE(AllClose(fast.grads[i], ref.grads[i], rtol)) << "grad of input " << i;
    }
  }
}

}  // namespace ssm::testing
