// Tensor basics: construction, views without copies, copies across dtypes, mmap storage.
#include <cstdio>
#include <fstream>

#include "ssm/tensor.h"
#include "testing.h"

using namespace ssm;

TEST(Tensor, ShapesAndStrides) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_THROW(t.size(3), Error);
  EXPECT_THROW(Tensor::zeros({2, -1}), Error);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::arange(24).view({2, 3, 4});
  Tensor tr = t.transpose(0, 2);  // [4, 3, 2]
  EXPECT_EQ(tr.shape(), (Shape{4, 3, 2}));
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_EQ(tr.raw_data(), t.raw_data());
  // element [i, j, k] of tr is t[k, j, i] = k*12 + j*4 + i
  auto v = tr.contiguous().to_vector_f32();
  EXPECT_EQ(v[size_t((3 * 3 + 2) * 2 + 1)], 1 * 12 + 2 * 4 + 3);
  Tensor s = t.slice(2, 1, 4, 2);  // columns 1, 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.contiguous().to_vector_f32()[1], 3.0f);
  Tensor sel = t.select(1, 2);  // [2, 4] rows j=2
  EXPECT_EQ(sel.contiguous().to_vector_f32()[0], 8.0f);
  Tensor e = Tensor::arange(3).view({3, 1}).expand({3, 5});
  EXPECT_EQ(e.strides()[1], 0);
  EXPECT_EQ(e.contiguous().to_vector_f32()[7], 1.0f);
  EXPECT_THROW(t.view({5, 5}), Error);
  EXPECT_THROW(tr.view({24}), Error);  // not contiguous
  EXPECT_EQ(tr.reshape({24}).to_vector_f32()[1], 12.0f);
  EXPECT_EQ(t.view({-1, 4}).shape(), (Shape{6, 4}));
  EXPECT_EQ(t.unsqueeze(0).shape(), (Shape{1, 2, 3, 4}));
  EXPECT_EQ(t.unsqueeze(0).squeeze(0).shape(), (Shape{2, 3, 4}));
}

TEST(Tensor, WritesThroughViews) {
  Tensor t = Tensor::zeros({3, 4});
  t.slice(1, 1, 3).fill_(2.0);
  auto v = t.to_vector_f32();
  EXPECT_EQ(v[0], 0.0f);
  EXPECT_EQ(v[1], 2.0f);
  EXPECT_EQ(v[2], 2.0f);
  EXPECT_EQ(v[3], 0.0f);
  EXPECT_EQ(v[5], 2.0f);
}

TEST(Tensor, DTypeConversions) {
  std::vector<float> vals = {0.0f, 1.0f, -2.5f, 65504.0f, 1e-3f, 3.14159f};
  Tensor f = Tensor::from_vector(vals, {6});
  for (DType d : {DType::f64, DType::f16, DType::bf16}) {
    auto back = f.to(d).to(DType::f32).to_vector_f32();
    for (size_t i = 0; i < vals.size(); ++i) {
      double tol = d == DType::f64 ? 0 : d == DType::f16 ? 1e-3 : 8e-3;  // half: 10/7 mantissa bits
      EXPECT_NEAR(back[i], vals[i], tol * std::fabs(vals[i])) << dtype_name(d) << " " << vals[i];
    }
  }
  EXPECT_EQ(f.to(DType::i64).to_vector_i64()[2], -2);
  EXPECT_EQ(f16_to_f32(f32_to_f16(1e-7f)), f16_to_f32(f32_to_f16(1e-7f)));  // subnormal path stable
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));                     // smallest subnormal
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
}

TEST(Tensor, MappedStorageIsReadOnly) {
  std::string path = ::testing::TempDir() + "/mapped.bin";
  {
    std::ofstream o(path, std::ios::binary);
    float x[4] = {1, 2, 3, 4};
    o.write(reinterpret_cast<char*>(x), sizeof x);
  }
  auto mf = std::make_shared<MappedFile>(path);
  auto st = Storage::borrow(const_cast<uint8_t*>(mf->data()), mf->size(), true, mf);
  Tensor t = Tensor::from_storage(st, 4, {3}, DType::f32);
  EXPECT_EQ(t.to_vector_f32()[0], 2.0f);
  EXPECT_THROW(t.fill_(0), Error);
  EXPECT_THROW(Tensor::from_storage(st, 8, {3}, DType::f32), Error);
  EXPECT_THROW(MappedFile("/nonexistent/file"), Error);
  std::remove(path.c_str());
}

TEST(Tensor, ThreadPoolCoversRange) {
  std::vector<int> hit(10007, 0);
  parallel_for(10007, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hit[size_t(i)]++;
  });
  for (int h : hit) ASSERT_EQ(h, 1);
  EXPECT_THROW(parallel_for(100, 1, [](int64_t, int64_t) { throw Error("boom"); }), Error);
  EXPECT_THROW(set_num_threads(0), Error);
}
