// NCCL collectives through src/dist/nccl.h (label cuda; skips without a GPU or without NCCL):
//  - one rank: all-reduce and broadcast leave the data as it is, bit for bit (the N=1 path of
//    data-parallel training must equal single-GPU training);
//  - two ranks (needs 2 GPUs; skipped otherwise): this binary launched twice by dist::launch_local,
//    each rank on GPU LOCAL_RANK, the ranks' buffers summed exactly (small integers in f32).
#include <cstdlib>
#include <functional>
#include <vector>

#include "dist/dist.h"
#include "dist/nccl.h"
#include "ssm/tensor.h"
#include "testing.h"

using namespace ssm;

namespace {

bool nccl_loadable(std::string* why) {
  try {
    dist::Nccl::make_id();
    return true;
  } catch (const std::exception& e) {
    *why = e.what();
    return false;
  }
}

// Copies host data to the GPU, applies f to the device buffer, returns the result on the host.
std::vector<float> round_trip(const std::vector<float>& host, const std::function<void(float*)>& f) {
  Tensor d = Tensor::from_vector(host, {int64_t(host.size())}).to(Device::cuda);
  f(static_cast<float*>(d.raw_data()));
  return d.to(Device::cpu).to_vector_f32();
}

class CudaNccl : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
    std::string why;
    if (!nccl_loadable(&why)) GTEST_SKIP() << why;
  }
};

TEST_F(CudaNccl, OneRankLeavesDataUnchanged) {
  dist::Nccl comm(dist::Nccl::make_id(), 0, 1);
  std::vector<float> x(1000003);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 977) * 0.37f - 11.f;
  EXPECT_EQ(round_trip(x, [&](float* d) { comm.all_reduce_sum(d, int64_t(x.size())); }), x);
  EXPECT_EQ(round_trip(x, [&](float* d) { comm.broadcast(d, int64_t(x.size()), 0); }), x);
}

// The body of one rank of TwoRanksSum (runs only when launched with RANK set).
TEST_F(CudaNccl, RankBody) {
  const dist::Env env = dist::env_from_environment();
  if (!env.distributed) GTEST_SKIP() << "run by TwoRanksSum as one of its ranks";
  cuda_set_device(env.local_rank);
  const std::string id = dist::broadcast_bytes(env, env.rank == 0 ? dist::Nccl::make_id() : std::string());
  dist::Nccl comm(id, env.rank, env.world);
  std::vector<float> x(4099);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 13) + 100 * env.rank);
  std::vector<float> got = round_trip(x, [&](float* d) { comm.all_reduce_sum(d, int64_t(x.size())); });
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], float(2 * int(i % 13) + 100)) << "element " << i;
  got = round_trip(x, [&](float* d) { comm.broadcast(d, int64_t(x.size()), 1); });
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], float(int(i % 13) + 100)) << "element " << i;
}

TEST_F(CudaNccl, TwoRanksSum) {
  if (dist::env_from_environment().distributed) GTEST_SKIP() << "already a rank";
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, " << cuda_device_count() << " visible";
  EXPECT_EQ(dist::launch_local(2, {"/proc/self/exe", "--gtest_filter=CudaNccl.RankBody"}), 0);
}

}  // namespace
