// GPU smoke test (label cuda; runs on the device machine): tensors travel to the GPU and back.
#include "ssm/tensor.h"
#include "testing.h"

using namespace ssm;

TEST(CudaDevice, RoundTrip) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
  Tensor h = Tensor::randn({3, 257}, 7);
  Tensor d = h.to(Device::cuda);
  EXPECT_EQ(d.device(), Device::cuda);
  Tensor d2 = Tensor::zeros({3, 257}, DType::f32, Device::cuda);
  d2.copy_(d);
  Tensor back = d2.to(Device::cpu);
  EXPECT_EQ(back.to_vector_f32(), h.to_vector_f32());
}
