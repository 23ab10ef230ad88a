// The autodiff engine: accumulation through shared inputs, views, no_grad, error paths, and the
// finite-difference checker itself (it must catch a wrong gradient).
#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "testing.h"

using namespace ssm;

TEST(Autograd, AccumulatesThroughSharedInputs) {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3}).set_requires_grad();
  Tensor y = mul(x, x);  // d/dx sum(x*x + x) = 2x + 1
  Tensor z = sum(add(y, x));
  z.backward();
  EXPECT_EQ(x.grad().to_vector_f64(), (std::vector<double>{3, 5, 7}));
  // A second backward accumulates.
  sum(x).backward();
  EXPECT_EQ(x.grad().to_vector_f64(), (std::vector<double>{4, 6, 8}));
}

TEST(Autograd, ViewsAreDifferentiable) {
  Tensor x = Tensor::arange(12, DType::f64).view({3, 4}).detach().set_requires_grad();
  Tensor t = x.transpose(0, 1).slice(0, 1, 3);  // [2, 3]: columns 1, 2 of x
  sum(mul(t, t)).backward();
  auto g = x.grad().to_vector_f64();
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(g[size_t(i)], (i % 4 == 1 || i % 4 == 2) ? 2.0 * double(i) : 0.0) << i;
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor x = Tensor::full({2}, 1.0, DType::f64).set_requires_grad();
  autograd::NoGradGuard ng;
  Tensor y = mul(x, x);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_FALSE(y.grad_fn());
}

TEST(Autograd, Errors) {
  Tensor x = Tensor::full({2}, 1.0, DType::f64);
  EXPECT_THROW(x.backward(), Error);  // does not require grad
  Tensor w = Tensor::full({2}, 1.0, DType::f64).set_requires_grad();
  EXPECT_THROW(mul(w, w).backward(), Error);  // not a scalar and no gradient given
  EXPECT_THROW(Tensor::full({2}, 1.0, DType::i64).set_requires_grad(), Error);
}

TEST(Autograd, GradCheckCatchesAWrongGradient) {
  // An op whose recorded backward is deliberately wrong (2x instead of 3x^2) must fail the check.
  auto cube_wrong = [](const std::vector<Tensor>& in) {
    Tensor x = in[0];
    Tensor out;
    {
      autograd::NoGradGuard ng;
      out = mul(mul(x, x), x);
    }
    Tensor xs = x.detach();
    autograd::record("cube_wrong", {x}, {&out}, [xs](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      return {mul(g[0], mul_scalar(xs, 2.0))};
    });
    return out;
  };
  Tensor x = Tensor::rand({5}, 3, 0.5, 1.5, DType::f64).set_requires_grad();
  EXPECT_FALSE(autograd::grad_check(cube_wrong, {x}).ok);
  auto cube = [](const std::vector<Tensor>& in) { return mul(mul(in[0], in[0]), in[0]); };
  Tensor x2 = Tensor::rand({5}, 3, 0.5, 1.5, DType::f64).set_requires_grad();
  auto r = autograd::grad_check(cube, {x2});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Autograd, SplitSumsHandsGradientPartsToTheBackward) {
  // A node recorded with split_sums gets each output's gradient as up to two parts (g[k] and
  // g[num_outputs + k]); a third contribution is added into the second part. Here y = 2x with three
  // consumers of y (weights 1, 10, 100) and one of the second output s = x.
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2}, {2}).set_requires_grad();
  Tensor y, s;
  {
    autograd::NoGradGuard ng;
    y = mul_scalar(x, 2.0);
    s = x.clone();
  }
  std::vector<size_t> seen_sizes;
  std::vector<std::vector<double>> parts;
  autograd::record(
      "split", {x}, {&y, &s},
      [&](const std::vector<Tensor>& g) -> std::vector<Tensor> {
        seen_sizes.push_back(g.size());
        for (const Tensor& t : g) parts.push_back(t.defined() ? t.to_vector_f64() : std::vector<double>{});
        Tensor gy = add(g[0], g[2]);
        return {add(mul_scalar(gy, 2.0), g[1])};
      },
      /*split_sums=*/true);
  Tensor loss = add(add(sum(y), sum(mul_scalar(y, 10.0))), add(sum(mul_scalar(y, 100.0)), sum(s)));
  loss.backward();
  ASSERT_EQ(seen_sizes, (std::vector<size_t>{4}));
  ASSERT_EQ(parts.size(), 4u);
  // The two parts of y's gradient sum to 111 per element (which consumer lands in which part
  // depends on the traversal order); s's gradient arrives whole; no second part for s.
  ASSERT_EQ(parts[0].size(), 2u);
  ASSERT_EQ(parts[2].size(), 2u);
  EXPECT_EQ(parts[0][0] + parts[2][0], 111.0);
  EXPECT_EQ(parts[1], (std::vector<double>{1, 1}));
  EXPECT_TRUE(parts[3].empty());
  EXPECT_EQ(x.grad().to_vector_f64(), (std::vector<double>{223, 223}));
}
