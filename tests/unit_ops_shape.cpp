// Shape ops: concat, split (views), gather, scatter_add — hand-checked values, fast f32 vs reference,
// generic index shapes, f64 gradient checks, and errors.
#include <functional>

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

// Deterministic pseudo-random indices in [0, n) of the given shape.
Tensor indices(const Shape& s, int64_t n, uint64_t seed) {
  std::vector<int64_t> v(size_t(shape_numel(s)));
  uint64_t h = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& x : v) {
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    x = int64_t((h >> 17) % uint64_t(n));
  }
  return Tensor::from_vector(v, s);
}

TEST(Concat, HandCheckedAndLayouts) {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector(std::vector<float>{5, 6}, {2, 1});
  Tensor c = concat({a, b}, 1);
  ASSERT_EQ(c.shape(), (Shape{2, 3}));
  EXPECT_EQ(c.to_vector_f32(), (std::vector<float>{1, 2, 5, 3, 4, 6}));
  EXPECT_EQ(concat({a, a.transpose(0, 1)}, 0).to_vector_f32(), (std::vector<float>{1, 2, 3, 4, 1, 3, 2, 4}));
  EXPECT_EQ(concat({a, Tensor::zeros({2, 0})}, -1).to_vector_f32(), a.to_vector_f32());  // empty piece
  Tensor ids = concat(
      {Tensor::from_vector(std::vector<int64_t>{1, 2}, {2}), Tensor::from_vector(std::vector<int64_t>{3}, {1})}, 0);
  EXPECT_EQ(ids.to_vector_i64(), (std::vector<int64_t>{1, 2, 3}));  // any dtype
  for (int64_t n : kSizes) {                                        // against a slice-by-slice oracle
    Tensor x = Tensor::rand({3, n, 2}, uint64_t(n)), y = Tensor::rand({3, 5, 2}, 2);
    Tensor z = concat({x, y}, 1);
    EXPECT_TRUE(AllClose(z.narrow(1, 0, n).contiguous(), x, 0, 0));
    EXPECT_TRUE(AllClose(z.narrow(1, n, 5).contiguous(), y, 0, 0));
  }
}

TEST(Split, ViewsAndSizes) {
  Tensor x = Tensor::arange(12).reshape({3, 4});
  auto parts = split(x, {1, 3}, 1);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].shape(), (Shape{3, 1}));
  EXPECT_EQ(parts[1].shape(), (Shape{3, 3}));
  EXPECT_EQ(parts[1].contiguous().to_vector_f32(), (std::vector<float>{1, 2, 3, 5, 6, 7, 9, 10, 11}));
  EXPECT_EQ(parts[1].storage(), x.storage());  // a view, no copy
  parts[0].fill_(-1);
  EXPECT_EQ(x.to_vector_f32()[4], -1);
  auto rows = split(x, {0, 2, 1}, 0);
  EXPECT_EQ(rows[0].numel(), 0);
  EXPECT_TRUE(AllClose(concat(rows, 0), x, 0, 0));  // split then concat is the identity
}

TEST(Gather, HandChecked) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor i1 = Tensor::from_vector(std::vector<int64_t>{2, 0, 1, 1}, {2, 2});
  EXPECT_EQ(gather(x, 1, i1).to_vector_f32(), (std::vector<float>{3, 1, 5, 5}));
  Tensor i0 = Tensor::from_vector(std::vector<int64_t>{1, 0, 1}, {1, 3});
  EXPECT_EQ(gather(x, 0, i0).to_vector_f32(), (std::vector<float>{4, 2, 6}));
  Tensor xi = Tensor::from_vector(std::vector<int64_t>{10, 20, 30}, {3});  // i64 data
  EXPECT_EQ(gather(xi, 0, Tensor::from_vector(std::vector<int64_t>{2, 2, 0}, {3})).to_vector_i64(),
            (std::vector<int64_t>{30, 30, 10}));
}

TEST(ScatterAdd, HandCheckedWithDuplicates) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 1, 1, 1}, {4});
  Tensor idx = Tensor::from_vector(std::vector<int64_t>{0, 3, 0, 0}, {4});
  Tensor src = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {4});
  Tensor out = scatter_add(x, 0, idx, src);
  EXPECT_EQ(out.to_vector_f32(), (std::vector<float>{9, 1, 1, 3}));
  EXPECT_EQ(x.to_vector_f32(), (std::vector<float>{1, 1, 1, 1}));  // not in place
  // 2-D along dim 1, index smaller than src (only its extent is used).
  Tensor x2 = Tensor::zeros({2, 3});
  Tensor i2 = Tensor::from_vector(std::vector<int64_t>{2, 2, 0, 1}, {2, 2});
  Tensor s2 = Tensor::from_vector(std::vector<float>{1, 2, 9, 3, 4, 9}, {2, 3});
  EXPECT_EQ(scatter_add(x2, 1, i2, s2).to_vector_f32(), (std::vector<float>{0, 0, 3, 3, 4, 0}));
}

TEST(GatherScatter, FastMatchesReference) {
  for (int64_t n : kSizes) {
    for (int64_t d : {0, 1, 2}) {
      Shape xs = {3, 5, 4};
      xs[size_t(d)] = n;  // the gathered dim has n entries
      Shape is = {3, 5, 4};
      is[size_t(d)] = 6;
      Tensor x = Tensor::randn(xs, uint64_t(n));
      Tensor idx = indices(is, n, uint64_t(n + d));
      // Gather copies elements and scatter_add adds them in the same order on both paths: exact.
      EXPECT_TRUE(AllClose(gather(x, d, idx), reference([&] { return gather(x, d, idx); }), 0, 0)) << n << " " << d;
      Tensor src = Tensor::randn(is, 99);
      EXPECT_TRUE(AllClose(scatter_add(x, d, idx, src), reference([&] { return scatter_add(x, d, idx, src); }), 0, 0))
          << n << " " << d;
    }
  }
  // Index smaller than x outside dim: the generic loop, checked against a direct computation.
  Tensor x = Tensor::randn({4, 6}, 5);
  Tensor idx = indices({2, 3}, 4, 7);
  auto g = gather(x, 0, idx).to_vector_f32(), xv = x.to_vector_f32();
  auto iv = idx.to_vector_i64();
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(g[size_t(i * 3 + j)], xv[size_t(iv[size_t(i * 3 + j)] * 6 + j)]);
}

TEST(ShapeOps, GradientsF64) {
  auto r = [](Shape s, uint64_t seed) { return Tensor::rand(s, seed, -2, 2, DType::f64); };
  expect_grad([](const std::vector<Tensor>& in) { return concat({in[0], in[1]}, 1); }, {r({2, 3}, 1), r({2, 2}, 2)});
  expect_grad(
      [](const std::vector<Tensor>& in) {
        return concat({in[0], exp(in[1]), in[0]}, 0);
      },
      {r({1, 3}, 3), r({2, 3}, 4)});
  expect_grad(
      [](const std::vector<Tensor>& in) {
        auto p = split(in[0], {2, 2}, 1);
        return mul(p[0], p[1]);
      },
      {r({3, 4}, 5)});
  Tensor idx = Tensor::from_vector(std::vector<int64_t>{0, 2, 2, 1, 0, 0}, {2, 3});
  expect_grad([idx](const std::vector<Tensor>& in) { return gather(in[0], 1, idx); }, {r({2, 4}, 6)});
  expect_grad([idx](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, idx, in[1]); },
              {r({2, 4}, 7), r({2, 3}, 8)});
  Tensor small = Tensor::from_vector(std::vector<int64_t>{1, 0}, {1, 2});
  expect_grad([small](const std::vector<Tensor>& in) { return scatter_add(in[0], 0, small, in[1]); },
              {r({2, 3}, 9), r({2, 3}, 10)});  // src larger than index: unused entries get zero gradient
}

TEST(ShapeOps, Errors) {
  Tensor a = Tensor::zeros({2, 3});
  expect_error([] { concat({}, 0); }, "[concat] needs at least one tensor");
  expect_error(
      [&] {
        concat({a, Tensor::zeros({2, 3}, DType::f64)}, 0);
      },
      "[concat] tensor 1 is f64 but tensor 0 is f32");
  expect_error([&] { concat({a, Tensor::zeros({3, 3})}, 1); }, "[concat] tensor 1 has shape [3, 3], incompatible");
  expect_error([&] { concat({a, a}, 2); }, "[concat] dimension 2 out of range");
  expect_error([&] { split(a, {1, 1}, 1); }, "[split] sizes add up to 2 but dimension 1 of [2, 3] has 3");
  expect_error([&] { split(a, {4, -1}, 1); }, "[split] size 1 is negative");
  Tensor bad = Tensor::from_vector(std::vector<int64_t>{0, 3}, {1, 2});
  expect_error([&] { gather(a, 1, bad); }, "[gather] index 3 at position 1 is out of range for a dimension of size 3");
  expect_error([&] { gather(a, 1, Tensor::zeros({2, 2}, DType::f32)); }, "[gather] index must be i64, got f32");
  expect_error([&] { gather(a, 1, Tensor::zeros({2}, DType::i64)); },
               "[gather] index has shape [2] but x has shape [2, 3]");
  expect_error([&] { gather(a, 1, Tensor::zeros({3, 1}, DType::i64)); }, "[gather] index shape [3, 1] exceeds x shape");
  Tensor ok = Tensor::zeros({2, 2}, DType::i64);
  expect_error([&] { scatter_add(a, 1, bad, Tensor::zeros({1, 2})); }, "[scatter_add] index 3 at position 1");
  expect_error(
      [&] {
        scatter_add(a, 1, ok, Tensor::zeros({2, 1}));
      },
      "[scatter_add] index shape [2, 2] exceeds src shape");
  expect_error(
      [&] {
        scatter_add(a, 1, ok, Tensor::zeros({2, 2}, DType::f64));
      },
      "[scatter_add] x is f32 but src is f64");
  expect_error(
      [&] {
        scatter_add(Tensor::zeros({2, 3}, DType::i64), 1, ok, ok);
      },
      "[scatter_add] x must be f32 or f64");
}

}  // namespace
}  // namespace ssm
