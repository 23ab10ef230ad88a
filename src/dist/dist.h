// Internal: what data-parallel training needs besides NCCL itself: the rank layout from the
// environment (as torchrun or mpirun set it, or `ssm train --gpus N`, which starts one process per
// GPU on this host), a rendezvous that hands rank 0's bytes (the NCCL unique id) to every rank over
// TCP, and the split of a global batch between ranks.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ssm::dist {

struct Env {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  bool distributed = false;  // a launcher set the variables (even with world 1)
};

// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (torchrun's names; ssm's own launcher sets
// them too), else OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK (Open MPI's mpirun) with MASTER_ADDR /
// MASTER_PORT. Nothing set: one process, not distributed. Malformed or inconsistent values fail
// naming the variable.
Env env_from_environment();

// Rank 0 sends `data` (its argument; ignored on the other ranks) to every rank; returns it on all.
// Rank 0 listens on master_port, the others connect to master_addr:master_port, retrying until
// timeout_s. Fails with the address and the cause (refused, timed out, short read).
std::string broadcast_bytes(const Env& env, const std::string& data, int timeout_s = 120);

// Rows [begin, end) of a global batch of `global` rows that `rank` of `world` takes: equal
// contiguous shares (global must be divisible by world; the error says so).
struct Shard {
  int64_t begin = 0, end = 0;
};
Shard shard(int64_t global, int rank, int world);

// A free TCP port on 127.0.0.1 (for the local launcher's rendezvous).
int free_port();

// Runs `n` copies of argv[0] with argv (argv[0] a path to the executable), each with RANK, LOCAL_RANK =
// 0..n-1, WORLD_SIZE = n, MASTER_ADDR = 127.0.0.1, MASTER_PORT = a free port, and returns when all have
// ended: 0 if all exited 0, else the first failure's exit code (the others are then stopped with
// SIGTERM, so that no rank waits forever in a collective). Output of every rank goes to this
// process's stdout/stderr. While waiting, this process ignores SIGINT (Ctrl-C reaches the ranks).
int launch_local(int n, const std::vector<std::string>& argv);

}  // namespace ssm::dist
