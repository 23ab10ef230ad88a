// The rank layout, the TCP rendezvous and the local launcher of src/dist/dist.h (POSIX sockets,
// fork/exec).
#include "dist/dist.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "ssm/base.h"

extern char** environ;

namespace ssm::dist {
namespace {

constexpr const char* kOp = "dist";

// The integer value of environment variable `name`, or `fallback` when unset.
int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  SSM_CHECK(
      *v && end && *end == 0 && errno == 0 && x >= lo && x <= hi, kOp,
      std::string(name) + "='" + v + "' is not an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return int(x);
}

std::string errno_str() { return std::strerror(errno); }

// Closes a socket when it goes out of scope.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

void write_all(int fd, const void* p, size_t n, const std::string& peer) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    SSM_CHECK(w > 0, kOp, "sending to " + peer + " failed: " + errno_str());
    c += w;
    n -= size_t(w);
  }
}

void read_all(int fd, void* p, size_t n, const std::string& peer, int timeout_s) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    const int r = ::poll(&pfd, 1, timeout_s * 1000);
    if (r < 0 && errno == EINTR) continue;
    SSM_CHECK(r > 0, kOp, "no data from " + peer + " within " + std::to_string(timeout_s) + " s");
    const ssize_t got = ::recv(fd, c, n, 0);
    if (got < 0 && errno == EINTR) continue;
    SSM_CHECK(got > 0, kOp,
              "connection to " + peer + " closed early (" + (got == 0 ? "end of stream" : errno_str()) + ")");
    c += got;
    n -= size_t(got);
  }
}

sockaddr_in resolve(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  const int e = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  SSM_CHECK(e == 0 && res, kOp, "cannot resolve MASTER_ADDR '" + host + "': " + ::gai_strerror(e));
  sockaddr_in a = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  ::freeaddrinfo(res);
  a.sin_port = htons(uint16_t(port));
  return a;
}

}  // namespace

Env env_from_environment() {
  Env e;
  const bool torch = std::getenv("RANK") || std::getenv("WORLD_SIZE");
  const bool ompi = std::getenv("OMPI_COMM_WORLD_RANK") || std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!torch && !ompi) return e;
  e.distributed = true;
  const char* rank = torch ? "RANK" : "OMPI_COMM_WORLD_RANK";
  const char* world = torch ? "WORLD_SIZE" : "OMPI_COMM_WORLD_SIZE";
  const char* local = torch ? "LOCAL_RANK" : "OMPI_COMM_WORLD_LOCAL_RANK";
  SSM_CHECK(std::getenv(rank) && std::getenv(world), kOp,
            std::string("set both ") + rank + " and " + world + " (one is missing)");
  e.world = env_int(world, 1, 1, 1 << 16);
  e.rank = env_int(rank, 0, 0, e.world - 1);
  e.local_rank = env_int(local, e.rank, 0, e.world - 1);
  if (const char* a = std::getenv("MASTER_ADDR")) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 0, 1, 65535);
  SSM_CHECK(e.world == 1 || e.master_port > 0, kOp,
            "MASTER_PORT must be set for " + std::to_string(e.world) + " processes (rank 0 listens there)");
  return e;
}

std::string broadcast_bytes(const Env& env, const std::string& data, int timeout_s) {
  if (env.world == 1) return data;
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  uint64_t n = data.size();
  if (env.rank == 0) {
    Fd s(::socket(AF_INET, SOCK_STREAM, 0));
    SSM_CHECK(s.fd >= 0, kOp, "socket: " + errno_str());
    const int one = 1;
    ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(uint16_t(env.master_port));
    SSM_CHECK(::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0, kOp,
              "rank 0 cannot listen on port " + std::to_string(env.master_port) + ": " + errno_str());
    SSM_CHECK(::listen(s.fd, env.world) == 0, kOp, "listen: " + errno_str());
    for (int served = 1; served < env.world; ++served) {
      pollfd pfd{s.fd, POLLIN, 0};
      int r;
      while ((r = ::poll(&pfd, 1, timeout_s * 1000)) < 0 && errno == EINTR) {
      }
      SSM_CHECK(r > 0, kOp,
                "rank 0 heard from only " + std::to_string(served - 1) + " of " + std::to_string(env.world - 1) +
                    " other ranks on port " + std::to_string(env.master_port) + " within " + std::to_string(timeout_s) +
                    " s");
      Fd c(::accept(s.fd, nullptr, nullptr));
      SSM_CHECK(c.fd >= 0, kOp, "accept: " + errno_str());
      write_all(c.fd, &n, sizeof(n), "a rank");
      write_all(c.fd, data.data(), data.size(), "a rank");
    }
    return data;
  }
  const sockaddr_in a = resolve(env.master_addr, env.master_port);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {  // rank 0 may not be listening yet
    Fd s(::socket(AF_INET, SOCK_STREAM, 0));
    SSM_CHECK(s.fd >= 0, kOp, "socket: " + errno_str());
    if (::connect(s.fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0) {
      read_all(s.fd, &n, sizeof(n), "rank 0 at " + where, timeout_s);
      SSM_CHECK(n <= (1u << 20), kOp, "rank 0 at " + where + " sent a malformed header (not an ssm rank 0?)");
      std::string out(n, '\0');
      read_all(s.fd, out.data(), n, "rank 0 at " + where, timeout_s);
      return out;
    }
    SSM_CHECK(std::chrono::steady_clock::now() < deadline, kOp,
              "rank " + std::to_string(env.rank) + " could not reach rank 0 at " + where + " within " +
                  std::to_string(timeout_s) + " s (" + errno_str() + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Shard shard(int64_t global, int rank, int world) {
  SSM_CHECK(world >= 1 && rank >= 0 && rank < world, kOp,
            "rank " + std::to_string(rank) + " of " + std::to_string(world));
  SSM_CHECK(global % world == 0, kOp,
            "the batch of " + std::to_string(global) + " sequences does not split evenly over " +
                std::to_string(world) + " GPUs; choose a batch size divisible by the GPU count");
  const int64_t per = global / world;
  return {per * rank, per * (rank + 1)};
}

int free_port() {
  Fd s(::socket(AF_INET, SOCK_STREAM, 0));
  SSM_CHECK(s.fd >= 0, kOp, "socket: " + errno_str());
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  SSM_CHECK(::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                ::getsockname(s.fd, reinterpret_cast<sockaddr*>(&a), &len) == 0,
            kOp, "no free TCP port on 127.0.0.1: " + errno_str());
  return ntohs(a.sin_port);
}

int launch_local(int n, const std::vector<std::string>& argv) {
  SSM_CHECK(n >= 1 && !argv.empty(), kOp, "launch: need at least one process and a command");
  const std::string port = std::to_string(free_port());
  // Each rank's argv and environment are built before fork: the child only calls execve (fork in a
  // threaded process allows nothing else).
  const char* ours[] = {"RANK=", "LOCAL_RANK=", "WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="};
  std::vector<std::string> base;
  for (char** e = environ; *e; ++e) {
    bool replaced = false;
    for (const char* o : ours) replaced = replaced || std::strncmp(*e, o, std::strlen(o)) == 0;
    if (!replaced) base.emplace_back(*e);
  }
  std::vector<std::vector<std::string>> envs(static_cast<size_t>(n), base);
  std::vector<std::vector<char*>> envps(static_cast<size_t>(n));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (int r = 0; r < n; ++r) {
    auto& e = envs[size_t(r)];
    for (const char* k : {"RANK=", "LOCAL_RANK="}) e.push_back(k + std::to_string(r));
    e.push_back("WORLD_SIZE=" + std::to_string(n));
    e.push_back("MASTER_ADDR=127.0.0.1");
    e.push_back("MASTER_PORT=" + port);
    for (auto& v : e) envps[size_t(r)].push_back(v.data());
    envps[size_t(r)].push_back(nullptr);
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    const pid_t pid = ::fork();
    SSM_CHECK(pid >= 0, kOp, "fork: " + errno_str());
    if (pid == 0) {
      ::execve(args[0], args.data(), envps[size_t(r)].data());
      static const char msg[] = "error: [dist] cannot start a rank: execve failed\n";
      [[maybe_unused]] ssize_t w = ::write(2, msg, sizeof(msg) - 1);
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  // Ctrl-C reaches every rank (one process group); this process waits for them to save and exit.
  struct sigaction ignore {
  }, prev{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGINT, &ignore, &prev);
  int first_failure = 0, left = n;
  while (left > 0) {
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, 0);
    if (done < 0 && errno == EINTR) continue;
    if (done < 0) break;
    bool ours = false;
    for (pid_t& p : pids)
      if (p == done) p = -1, ours = true;
    if (!ours) continue;
    --left;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    if (code != 0 && first_failure == 0) {
      first_failure = code;
      for (pid_t p : pids)
        if (p > 0) ::kill(p, SIGTERM);
    }
  }
  ::sigaction(SIGINT, &prev, nullptr);
  return first_failure;
}

}  // namespace ssm::dist
