// Elementwise ops: fast f32 kernels vs the reference loops, hand-checked values, broadcasting,
// finite-difference gradients in f64, and argument errors.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "ops/fast_math.h"
#include "ops/op_util.h"
#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "testing.h"

namespace ssm {
namespace {

using testing::AllClose;
using testing::expect_error;
using testing::expect_grad;
using testing::reference;
const int64_t kSizes[] = {1, 7, 33, 257, 2049};

// Max over elements of |got - want| / max(|want|, floor): a per-element relative error.
double max_rel_err(const Tensor& got, const Tensor& want, double floor) {
  auto g = got.to_vector_f64(), w = want.to_vector_f64();
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(w[i]) && std::isnan(g[i])) continue;
    if (g[i] == w[i]) continue;  // also exact zeros and infinities
    double e = std::fabs(g[i] - w[i]) / std::max(std::fabs(w[i]), floor);
    if (!(e <= worst)) worst = e;  // NaN mismatch counts as infinite
  }
  return worst;
}

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> fn;
  double lo, hi;   // input range
  double rel_tol;  // per-element relative tolerance of the fast f32 kernel vs the f32 reference
  double floor;    // |want| below which the error is measured absolutely
};

// Tolerances: the fast kernels use polynomial exp/log/erfc (~2 ulp) instead of libm (<1 ulp), and
// the reference rounds a double result once, so a few f32 ulps (1 ulp = 6e-8) separate them; tanh
// near |x| = 1/4 and gelu/sigmoid in the far negative tail (exp of a large argument) are the worst.
std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, -10, 10, 0, 0},
      {"add_scalar", [](const Tensor& x) { return add_scalar(x, 0.5); }, -10, 10, 0, 0},
      {"mul_scalar", [](const Tensor& x) { return mul_scalar(x, -3.0); }, -10, 10, 0, 0},
      {"square", [](const Tensor& x) { return square(x); }, -10, 10, 0, 0},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0, 100, 0, 0},
      {"relu", [](const Tensor& x) { return relu(x); }, -10, 10, 0, 0},
      {"clamp", [](const Tensor& x) { return clamp(x, -1.5, 2.0); }, -10, 10, 0, 0},
      {"exp", [](const Tensor& x) { return exp(x); }, -80, 80, 3e-7, 1e-30},
      {"log", [](const Tensor& x) { return log(x); }, 1e-6, 1e6, 3e-7, 1e-30},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -30, 30, 5e-7, 1e-30},
      {"tanh", [](const Tensor& x) { return tanh(x); }, -6, 6, 1e-6, 1e-30},
      {"silu", [](const Tensor& x) { return silu(x); }, -30, 30, 5e-7, 1e-30},
      {"gelu", [](const Tensor& x) { return gelu(x); }, -6, 6, 1e-6, 1e-30},
      {"softplus", [](const Tensor& x) { return softplus(x); }, -30, 30, 5e-7, 1e-30},
  };
}

TEST(Elementwise, FastMatchesReferenceUnary) {
  for (const auto& c : unary_cases()) {
    for (int64_t n : kSizes) {
      Tensor x = Tensor::rand({n}, 7 + uint64_t(n), c.lo, c.hi);  // [n] f32
      Tensor fast = c.fn(x);
      Tensor ref;
      {
        ReferenceKernelsGuard g(true);
        ref = c.fn(x);
      }
      ASSERT_EQ(fast.shape(), x.shape());
      double err = max_rel_err(fast, ref, c.floor);
      EXPECT_LE(err, c.rel_tol) << c.name << " n=" << n;
    }
  }
}

TEST(Elementwise, FastMathAccuracyAndSpecialValues) {
  // Dense sweeps against double libm; tolerance in ulps of f32 (2^-23 relative).
  const double ulp = std::ldexp(1.0, -23);
  double worst_exp = 0, worst_log = 0;
  for (double x = -87.0; x <= 88.5; x += 0.0137) {
    double want = std::exp(double(float(x)));
    worst_exp = std::max(worst_exp, std::fabs(fm::exp(float(x)) - want) / want);
  }
  for (double x = 1e-37; x < 1e37; x *= 1.0137) {
    double want = std::log(double(float(x)));
    worst_log = std::max(worst_log, std::fabs(fm::log(float(x)) - want) / std::max(std::fabs(want), 1e-3));
  }
  EXPECT_LE(worst_exp, 3 * ulp);
  EXPECT_LE(worst_log, 3 * ulp);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(fm::exp(-inf), 0.0f);
  EXPECT_EQ(fm::exp(-200.0f), 0.0f);
  EXPECT_EQ(fm::exp(inf), inf);
  EXPECT_EQ(fm::exp(100.0f), inf);
  EXPECT_TRUE(std::isnan(fm::exp(nan)));
  EXPECT_NEAR(fm::exp(-100.0f), std::exp(-100.0), 2e-45);  // subnormal result
  EXPECT_EQ(fm::log(0.0f), -inf);
  EXPECT_EQ(fm::log(inf), inf);
  EXPECT_TRUE(std::isnan(fm::log(-1.0f)));
  EXPECT_TRUE(std::isnan(fm::log(nan)));
  EXPECT_NEAR(fm::log(1e-40f), std::log(double(1e-40f)), 1e-5);  // subnormal input
  EXPECT_EQ(fm::log(1.0f), 0.0f);
  for (double z = 0; z < 9; z += 0.01) {  // erfc: relative error < 1e-6 over its whole f32 range (measured 4e-7)
    double want = std::erfc(double(float(z)));
    EXPECT_LE(std::fabs(fm::erfc_pos(float(z)) - want) / want, 1e-6) << "z=" << z;
  }
}

TEST(Elementwise, HandCheckedValues) {
  auto v = [](const Tensor& t) { return t.to_vector_f64(); };
  for (DType dt : {DType::f32, DType::f64}) {
    double tol = dt == DType::f32 ? 2e-7 : 1e-15;  // one f32 / f64 rounding of values of magnitude ~1
    Tensor x = Tensor::from_vector(std::vector<double>{-1.0, 0.0, 1.0, 25.0}, {4}).to(dt);
    auto sp = v(softplus(x));  // threshold 20: x = 25 is returned as is
    EXPECT_NEAR(sp[0], std::log1p(std::exp(-1.0)), tol);
    EXPECT_NEAR(sp[1], std::log(2.0), tol);
    EXPECT_EQ(sp[3], 25.0);
    auto sp2 = v(softplus(x, 0.5));  // threshold 0.5: x = 1 passes through
    EXPECT_EQ(sp2[2], 1.0);
    EXPECT_NEAR(sp2[1], std::log(2.0), tol);
    EXPECT_NEAR(v(softplus(Tensor::full({1}, -30.0, dt)))[0], 9.357622968839299e-14, 1e-6 * 9.36e-14);
    auto ge = v(gelu(x));  // Φ(1) = 0.841344746068543
    EXPECT_NEAR(ge[0], -0.15865525393145707, tol);
    EXPECT_NEAR(ge[2], 0.8413447460685429, tol);
    EXPECT_NEAR(v(silu(x))[2], 0.7310585786300049, tol);
    EXPECT_NEAR(v(sigmoid(x))[1], 0.5, 0);
    EXPECT_NEAR(v(tanh(x))[2], 0.7615941559557649, tol);
    auto r = v(relu(x));
    EXPECT_EQ(r[0], 0.0);
    EXPECT_EQ(r[3], 25.0);
    auto cl = v(clamp(x, -0.5, 2.0));
    EXPECT_EQ(cl[0], -0.5);
    EXPECT_EQ(cl[2], 1.0);
    EXPECT_EQ(cl[3], 2.0);
    EXPECT_NEAR(v(exp(x))[2], std::exp(1.0), tol * 3);
    EXPECT_NEAR(v(log(Tensor::full({1}, std::exp(2.0), dt)))[0], 2.0, tol * 2);
    EXPECT_EQ(v(sqrt(Tensor::full({1}, 6.25, dt)))[0], 2.5);
    EXPECT_EQ(v(square(x))[0], 1.0);
    EXPECT_TRUE(std::isnan(v(relu(Tensor::full({1}, std::nan(""), dt)))[0]));  // NaN passes, as in PyTorch
  }
}

TEST(Elementwise, BroadcastingBinaryOps) {
  // Hand case: [2, 1] + [3] -> [2, 3].
  Tensor a = Tensor::from_vector(std::vector<float>{10, 20}, {2, 1});
  Tensor b = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3});
  Tensor c = add(a, b);
  ASSERT_EQ(c.shape(), (Shape{2, 3}));
  EXPECT_EQ(c.to_vector_f32(), (std::vector<float>{11, 12, 13, 21, 22, 23}));
  EXPECT_EQ(sub(b, a).to_vector_f32(), (std::vector<float>{-9, -8, -7, -19, -18, -17}));
  EXPECT_EQ(div(a, Tensor::full({}, 4.0)).to_vector_f32(), (std::vector<float>{2.5, 5}));  // 0-dim scalar

  // Fast vs reference: both do one IEEE op per element, so they agree exactly.
  std::vector<std::pair<Shape, Shape>> shapes = {{{257}, {257}},  {{257}, {1}},           {{1}, {2049}},
                                                 {{3, 33}, {33}}, {{3, 1, 7}, {1, 4, 1}}, {{2, 3, 4}, {3, 1}},
                                                 {{}, {7}},       {{5, 1}, {1, 2049}},    {{2, 1, 3, 1}, {2, 5, 1, 7}}};
  std::vector<std::pair<const char*, std::function<Tensor(const Tensor&, const Tensor&)>>> ops = {
      {"add", [](const Tensor& x, const Tensor& y) { return add(x, y); }},
      {"sub", [](const Tensor& x, const Tensor& y) { return sub(x, y); }},
      {"mul", [](const Tensor& x, const Tensor& y) { return mul(x, y); }},
      {"div", [](const Tensor& x, const Tensor& y) { return div(x, y); }}};
  for (auto& [sa, sb] : shapes) {
    Tensor x = Tensor::rand(sa, 1, 0.5, 2.0), y = Tensor::rand(sb, 2, 0.5, 2.0);
    for (auto& [name, op] : ops) {
      Tensor fast = op(x, y), ref;
      {
        ReferenceKernelsGuard g(true);
        ref = op(x, y);
      }
      ASSERT_EQ(fast.shape(), detail::broadcast_shapes("test", sa, sb));
      EXPECT_TRUE(AllClose(fast, ref, 0, 0)) << name << " " << shape_str(sa) << " " << shape_str(sb);
      Tensor swapped = op(y, x);  // the other operand order takes the mirrored kernel
      ASSERT_EQ(swapped.shape(), fast.shape());
    }
  }
}

TEST(Elementwise, NonContiguousInputs) {
  Tensor x = Tensor::rand({33, 7}, 3, -2, 2);
  Tensor xt = x.transpose(0, 1);  // [7, 33] view
  ASSERT_FALSE(xt.is_contiguous());
  EXPECT_TRUE(AllClose(silu(xt), silu(xt.contiguous()), 0, 0));
  Tensor y = Tensor::rand({7, 33}, 4, -2, 2);
  EXPECT_TRUE(AllClose(mul(xt, y), mul(xt.contiguous(), y), 0, 0));
}

TEST(Elementwise, BroadcastShapesAndSumTo) {
  EXPECT_EQ(detail::broadcast_shapes("t", {2, 1, 3}, {4, 1}), (Shape{2, 4, 3}));
  EXPECT_EQ(detail::broadcast_shapes("t", {}, {5}), (Shape{5}));
  expect_error([] { detail::broadcast_shapes("myop", {2, 3}, {4}); }, "[myop] cannot broadcast shapes [2, 3] and [4]");
  Tensor g = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(detail::sum_to(g, {3}).to_vector_f64(), (std::vector<double>{5, 7, 9}));
  EXPECT_EQ(detail::sum_to(g, {2, 1}).to_vector_f64(), (std::vector<double>{6, 15}));
  EXPECT_EQ(detail::sum_to(g, {1, 1}).to_vector_f64(), (std::vector<double>{21}));
  EXPECT_EQ(detail::sum_to(g, {}).to_vector_f64(), (std::vector<double>{21}));
  expect_error([&] { detail::sum_to(g, {2}); }, "[sum_to] cannot sum [2, 3] down to [2]");
}

TEST(Elementwise, GradientsF64) {
  auto r = [](Shape s, uint64_t seed, double lo = -2, double hi = 2) {
    return Tensor::rand(s, seed, lo, hi, DType::f64);
  };
  expect_grad([](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, {r({2, 3}, 1), r({3}, 2)});
  expect_grad([](const std::vector<Tensor>& in) { return sub(in[0], in[1]); }, {r({2, 1, 3}, 3), r({4, 1}, 4)});
  expect_grad([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {r({2, 1, 3}, 5), r({4, 1}, 6)});
  expect_grad([](const std::vector<Tensor>& in) { return div(in[0], in[1]); }, {r({3, 4}, 7), r({4}, 8, 0.5, 2)});
  expect_grad([](const std::vector<Tensor>& in) { return add_scalar(in[0], 1.5); }, {r({5}, 9)});
  expect_grad([](const std::vector<Tensor>& in) { return mul_scalar(in[0], -2.5); }, {r({5}, 10)});
  expect_grad([](const std::vector<Tensor>& in) { return neg(in[0]); }, {r({5}, 11)});
  expect_grad([](const std::vector<Tensor>& in) { return exp(in[0]); }, {r({5}, 12)});
  expect_grad([](const std::vector<Tensor>& in) { return log(in[0]); }, {r({5}, 13, 0.2, 3)});
  expect_grad([](const std::vector<Tensor>& in) { return sqrt(in[0]); }, {r({5}, 14, 0.2, 3)});
  expect_grad([](const std::vector<Tensor>& in) { return square(in[0]); }, {r({5}, 15)});
  expect_grad([](const std::vector<Tensor>& in) { return sigmoid(in[0]); }, {r({2, 4}, 16, -5, 5)});
  expect_grad([](const std::vector<Tensor>& in) { return tanh(in[0]); }, {r({2, 4}, 17)});
  expect_grad([](const std::vector<Tensor>& in) { return silu(in[0]); }, {r({2, 4}, 18, -5, 5)});
  expect_grad([](const std::vector<Tensor>& in) { return gelu(in[0]); }, {r({2, 4}, 19, -4, 4)});
  // Values stay >= 0.1 away from the kinks (relu at 0, clamp at its bounds, softplus at its threshold)
  // so that the central difference with eps = 1e-6 never straddles one.
  Tensor kinked = Tensor::from_vector(std::vector<double>{-2.0, -0.7, -0.3, 0.4, 0.9, 1.6, 2.5, 3.3}, {8});
  expect_grad([](const std::vector<Tensor>& in) { return relu(in[0]); }, {kinked.clone()});
  expect_grad([](const std::vector<Tensor>& in) { return clamp(in[0], -0.5, 1.2); }, {kinked.clone()});
  expect_grad([](const std::vector<Tensor>& in) { return softplus(in[0], 1.0); }, {kinked.clone()});
  expect_grad([](const std::vector<Tensor>& in) { return softplus(in[0]); }, {r({6}, 20, -25, 25)});
  // A composite through a non-contiguous view: gradients flow back through transpose and broadcasting.
  expect_grad([](const std::vector<Tensor>& in) { return mul(silu(in[0].transpose(0, 1)), exp(in[1])); },
              {r({3, 2}, 21), r({3}, 22)});
}

TEST(Elementwise, GradientOfF32MatchesF64) {  // the fast backward kernels against the reference ones
  Tensor x64 = Tensor::rand({257}, 30, -5, 5, DType::f64);
  for (auto fn : std::vector<std::function<Tensor(const Tensor&)>>{
           [](const Tensor& t) { return sigmoid(t); }, [](const Tensor& t) { return tanh(t); },
           [](const Tensor& t) { return silu(t); }, [](const Tensor& t) { return gelu(t); },
           [](const Tensor& t) { return softplus(t, 2.0); }, [](const Tensor& t) { return relu(t); },
           [](const Tensor& t) { return clamp(t, -1, 1); }}) {
    Tensor a = x64.clone().set_requires_grad(true), b = x64.to(DType::f32).set_requires_grad(true);
    sum(fn(a)).backward();
    sum(fn(b)).backward();
    EXPECT_TRUE(AllClose(b.grad(), a.grad(), 2e-6, 1e-7));  // f32 rounding of derivatives of size <= ~1.1
  }
}

TEST(Elementwise, NoRecordingWithoutGrad) {
  Tensor x = Tensor::rand({4}, 1, -1, 1, DType::f64).set_requires_grad(true);
  EXPECT_TRUE(exp(x).requires_grad());
  autograd::NoGradGuard ng;
  EXPECT_FALSE(exp(x).requires_grad());
  EXPECT_FALSE(add(x, x).requires_grad());
}

class FakeCudaStorage : public Storage {  // host memory labelled as CUDA, to reach the device checks
 public:
  explicit FakeCudaStorage(size_t bytes) : buf_(bytes) {
    data_ = buf_.data();
    bytes_ = bytes;
    device_ = Device::cuda;
  }

 private:
  std::vector<uint8_t> buf_;
};

TEST(Elementwise, Errors) {
  Tensor f = Tensor::zeros({3}), d = Tensor::zeros({3}, DType::f64), i = Tensor::zeros({3}, DType::i64);
  expect_error([&] { add(f, d); }, "[add] a is f32 but b is f64");
  expect_error([&] { mul(Tensor::zeros({2, 3}), Tensor::zeros({2})); }, "[mul] cannot broadcast shapes [2, 3] and [2]");
  expect_error([&] { exp(i); }, "[exp] x must be f32 or f64, got i64");
  expect_error([&] { div(f, i); }, "[div] b must be f32 or f64");
  expect_error([&] { sigmoid(Tensor()); }, "[sigmoid] x is undefined");
  expect_error([&] { clamp(f, 2, 1); }, "[clamp] lo (2.000000) must be <= hi (1.000000)");
  Tensor cuda = Tensor::from_storage(std::make_shared<FakeCudaStorage>(12), 0, {3}, DType::f32);
  expect_error([&] { gelu(cuda); }, "[gelu] no CUDA kernel");
#ifdef SSM_HAVE_CUDA
  expect_error([&] { add(f, cuda); }, "[add] a is on the CPU but the op runs on the GPU");
#else
  expect_error([&] { add(f, cuda); }, "[add] this build of ssm has no CUDA backend");
#endif
}

}  // namespace
}  // namespace ssm
