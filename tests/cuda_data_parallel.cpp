// Data-parallel training (`ssm train --gpus N`, src/train/data_parallel.cpp) on the device (label cuda;
// skips without a GPU or without NCCL), through the ssm binary (SSM_BIN, else the build's):
//  - --gpus 1 (NCCL with one rank, sharding, the rank-0-only writes) equals single-GPU training bit for
//    bit: the same exported weights and the same logged losses;
//  - resuming on a different GPU count: 3 steps on one GPU, the last 3 with --gpus 1, equals 6 straight;
//  - 2 GPUs (skipped with fewer): the loss curve of --gpus 2 matches one GPU with the same global batch
//    within 1e-5 relative per step (f32: only the order of the batch-mean sums differs, and NCCL's sum of
//    two shard means), and the weights within 1e-4 of their largest magnitude.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ssm/safetensors.h"
#include "testing.h"

using namespace ssm;
using namespace ssm::testing;
namespace fs = std::filesystem;

namespace {

class CudaDataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
    bin_ = ssm_binary();
    if (!fs::exists(bin_)) GTEST_SKIP() << "no ssm binary at " << bin_ << " (set SSM_BIN)";
    dir_ = fs::temp_directory_path() / ("ssm_cuda_dp_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::string err;
    if (train("dp-probe", "--gpus 1 --steps 1", &err) != 0 && err.find("cannot load NCCL") != std::string::npos)
      GTEST_SKIP() << err;
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string out(const std::string& n) const { return (dir_ / n).string(); }
  // A small Mamba-1 on the induction task (repeated token ids: the embedding gradient sums many rows).
  int train(const std::string& name, const std::string& extra, std::string* err) const {
    const std::string cmd = bin_ +
                            " train --task induction --task-len 64 --n-layer 2 --d-model 32 -b 8 --lr 3e-3 "
                            "--warmup 2 --eval-every 0 --ckpt-every 100 --log-every 100 --seed 5 --device cuda "
                            "--dtype f32 -o " +
                            out(name) + " " + extra + " > " + out(name + ".out") + " 2> " + out(name + ".err");
    const int st = std::system(cmd.c_str());
    *err = slurp(out(name + ".err"));
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  std::vector<double> losses(const std::string& name) const {
    std::vector<double> r;
    std::ifstream f(out(name) + "/train.jsonl");
    for (std::string line; std::getline(f, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) r.push_back(j["loss"].get<double>());
    }
    return r;
  }
  Tensor weights(const std::string& name, const std::string& tensor) const {
    return io::SafeTensors::open(out(name) + "/model/model.safetensors").get(tensor);
  }
  std::string bytes(const std::string& name) const { return slurp(out(name) + "/model/model.safetensors"); }
  std::string bin_;
  fs::path dir_;
};

TEST_F(CudaDataParallel, OneGpuEqualsSingleGpuBitForBit) {
  std::string err;
  ASSERT_EQ(train("single", "--steps 6", &err), 0) << err;
  ASSERT_EQ(train("dp1", "--steps 6 --gpus 1", &err), 0) << err;
  EXPECT_NE(err.find("1 GPUs (data parallel)"), std::string::npos) << err;
  EXPECT_EQ(losses("dp1"), losses("single"));
  EXPECT_EQ(losses("single").size(), 6u);
  EXPECT_TRUE(bytes("dp1") == bytes("single")) << "exported weights differ";
}

TEST_F(CudaDataParallel, ResumesOnAnotherGpuCount) {
  std::string err;
  ASSERT_EQ(train("straight", "--steps 6", &err), 0) << err;
  ASSERT_EQ(train("split", "--steps 6 --stop-after 3", &err), 0) << err;
  ASSERT_EQ(train("split", "--steps 6 --gpus 1 --resume", &err), 0) << err;
  EXPECT_EQ(losses("split"), losses("straight"));
  EXPECT_TRUE(bytes("split") == bytes("straight")) << "exported weights differ";
}

TEST_F(CudaDataParallel, TwoGpusMatchOneGpuWithTheSameGlobalBatch) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, " << cuda_device_count() << " visible";
  std::string err;
  ASSERT_EQ(train("one", "--steps 6", &err), 0) << err;
  ASSERT_EQ(train("two", "--steps 6 --gpus 2", &err), 0) << err;
  const auto a = losses("one"), b = losses("two");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-5 * std::fabs(a[i])) << "step " << i;
  for (const char* t : {"backbone.embeddings.weight", "backbone.layers.1.mixer.in_proj.weight"})
    EXPECT_TRUE(AllClose(weights("two", t), weights("one", t), 1e-4)) << t;
}

}  // namespace
