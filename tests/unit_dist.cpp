// The data-parallel plumbing of src/dist/dist.h that needs no GPU: the rank layout from the
// environment (torchrun and Open MPI names, bad values), the TCP rendezvous (rank 0's bytes reach
// every rank; a missing rank 0 times out with a clear error), batch sharding and the local launcher
// (environment of each rank, exit codes, stopping the other ranks when one fails).
#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <thread>

#include "dist/dist.h"
#include "testing.h"

using namespace ssm;
using ssm::testing::expect_error;

namespace {

// Sets variables for one test and restores the previous environment afterwards.
class EnvGuard {
 public:
  explicit EnvGuard(const std::map<std::string, std::string>& vars) {
    for (const char* n : kNames) {
      const char* v = std::getenv(n);
      saved_[n] = v ? std::optional<std::string>(v) : std::nullopt;
      ::unsetenv(n);
    }
    for (const auto& [k, v] : vars) ::setenv(k.c_str(), v.c_str(), 1);
  }
  ~EnvGuard() {
    for (const auto& [k, v] : saved_) {
      if (v)
        ::setenv(k.c_str(), v->c_str(), 1);
      else
        ::unsetenv(k.c_str());
    }
  }

 private:
  static constexpr const char* kNames[] = {
      "RANK",        "WORLD_SIZE",           "LOCAL_RANK",           "MASTER_ADDR",
      "MASTER_PORT", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"};
  std::map<std::string, std::optional<std::string>> saved_;
};

TEST(DistEnv, SingleProcessWhenNothingIsSet) {
  EnvGuard g({});
  dist::Env e = dist::env_from_environment();
  EXPECT_FALSE(e.distributed);
  EXPECT_EQ(e.world, 1);
  EXPECT_EQ(e.rank, 0);
}

TEST(DistEnv, TorchrunAndOpenMpiNames) {
  {
    EnvGuard g({{"RANK", "3"},
                {"WORLD_SIZE", "4"},
                {"LOCAL_RANK", "1"},
                {"MASTER_ADDR", "10.0.0.2"},
                {"MASTER_PORT", "29500"}});
    dist::Env e = dist::env_from_environment();
    EXPECT_TRUE(e.distributed);
    EXPECT_EQ(e.rank, 3);
    EXPECT_EQ(e.world, 4);
    EXPECT_EQ(e.local_rank, 1);
    EXPECT_EQ(e.master_addr, "10.0.0.2");
    EXPECT_EQ(e.master_port, 29500);
  }
  {
    EnvGuard g({{"OMPI_COMM_WORLD_RANK", "1"},
                {"OMPI_COMM_WORLD_SIZE", "2"},
                {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                {"MASTER_PORT", "29501"}});
    dist::Env e = dist::env_from_environment();
    EXPECT_EQ(e.rank, 1);
    EXPECT_EQ(e.world, 2);
    EXPECT_EQ(e.local_rank, 1);
    EXPECT_EQ(e.master_addr, "127.0.0.1");
  }
}

TEST(DistEnv, BadValuesNameTheVariable) {
  {
    EnvGuard g({{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"MASTER_PORT", "1"}});
    expect_error([] { dist::env_from_environment(); }, "RANK='4' is not an integer in [0, 3]");
  }
  {
    EnvGuard g({{"RANK", "x"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}});
    expect_error([] { dist::env_from_environment(); }, "RANK='x'");
  }
  {
    EnvGuard g(std::map<std::string, std::string>{{"RANK", "0"}});
    expect_error([] { dist::env_from_environment(); }, "set both RANK and WORLD_SIZE");
  }
  {
    EnvGuard g({{"RANK", "0"}, {"WORLD_SIZE", "2"}});
    expect_error([] { dist::env_from_environment(); }, "MASTER_PORT must be set");
  }
  {
    EnvGuard g({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}});
    expect_error([] { dist::env_from_environment(); }, "MASTER_PORT='70000'");
  }
}

// Rank 0 and three other ranks as threads of this process, over loopback.
TEST(DistRendezvous, RankZeroBytesReachEveryRank) {
  std::string blob(128, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = char((i * 37 + 11) & 0xff);  // zeros and high bytes
  const int world = 4, port = dist::free_port();
  std::vector<std::string> got(world);
  std::vector<std::string> errors(world);
  std::vector<std::thread> ts;
  for (int r = world - 1; r >= 0; --r) {  // the other ranks start before rank 0 listens
    ts.emplace_back([&, r] {
      dist::Env e;
      e.rank = r, e.world = world, e.master_port = port, e.distributed = true;
      try {
        got[size_t(r)] = dist::broadcast_bytes(e, r == 0 ? blob : std::string("ignored"), 20);
      } catch (const std::exception& ex) {
        errors[size_t(r)] = ex.what();
      }
    });
    if (r == world - 1) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  for (auto& t : ts) t.join();
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
    EXPECT_EQ(got[size_t(r)], blob) << "rank " << r;
  }
}

TEST(DistRendezvous, MissingRankZeroTimesOut) {
  dist::Env e;
  e.rank = 1, e.world = 2, e.master_port = dist::free_port(), e.distributed = true;
  expect_error([&] { dist::broadcast_bytes(e, "", 1); }, "rank 1 could not reach rank 0 at 127.0.0.1:");
}

TEST(DistShard, EqualContiguousShares) {
  EXPECT_EQ(dist::shard(8, 0, 1).end, 8);
  int64_t next = 0;
  for (int r = 0; r < 4; ++r) {
    dist::Shard s = dist::shard(16, r, 4);
    EXPECT_EQ(s.begin, next);
    EXPECT_EQ(s.end - s.begin, 4);
    next = s.end;
  }
  EXPECT_EQ(next, 16);
  expect_error([] { dist::shard(6, 0, 4); }, "the batch of 6 sequences does not split evenly over 4 GPUs");
}

TEST(DistLaunch, EveryRankGetsItsEnvironment) {
  // Each rank checks its own variables and exits 0 only if they are right.
  const std::string check =
      "test \"$WORLD_SIZE\" = 3 && test \"$RANK\" = \"$LOCAL_RANK\" && test \"$RANK\" -ge 0 && test \"$RANK\" -lt 3 && "
      "test \"$MASTER_ADDR\" = 127.0.0.1 && test \"$MASTER_PORT\" -gt 0";
  EXPECT_EQ(dist::launch_local(3, {"/bin/sh", "-c", check}), 0);
  EXPECT_EQ(dist::launch_local(3, {"/bin/sh", "-c", "test \"$WORLD_SIZE\" = 2"}), 1);
}

TEST(DistLaunch, OneFailureStopsTheOthers) {
  const auto t0 = std::chrono::steady_clock::now();
  const int code = dist::launch_local(3, {"/bin/sh", "-c", "if [ \"$RANK\" = 1 ]; then exit 7; fi; exec sleep 60"});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(code, 7);
  EXPECT_LT(s, 30.0) << "the sleeping ranks were not stopped";
  EXPECT_EQ(dist::launch_local(1, {"/nonexistent/ssm"}), 127);
}

}  // namespace
