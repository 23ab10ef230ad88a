#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "ssm/base.h"

namespace ssm {

void fail(const std::string& where, const std::string& what) { throw Error("[" + where + "] " + what); }

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64: return 8;
    case DType::f32:
    case DType::i32: return 4;
    case DType::f16:
    case DType::bf16: return 2;
    case DType::i8:
    case DType::u8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  static const char* n[] = {"f64", "f32", "f16", "bf16", "i64", "i32", "i8", "u8"};
  return n[int(t)];
}

const char* dtype_safetensors_name(DType t) {
  static const char* n[] = {"F64", "F32", "F16", "BF16", "I64", "I32", "I8", "U8"};
  return n[int(t)];
}

DType dtype_from_safetensors(const std::string& s) {
  for (int i = 0; i <= int(DType::u8); ++i)
    if (s == dtype_safetensors_name(DType(i))) return DType(i);
  fail("dtype", "unknown or unsupported dtype '" + s + "' (supported: F64 F32 F16 BF16 I64 I32 I8 U8)");
}

bool dtype_is_float(DType t) { return t == DType::f64 || t == DType::f32 || t == DType::f16 || t == DType::bf16; }

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

void fail_no_cuda(const char* where) {
  fail(where, "this build of ssm has no CUDA backend (rebuild with nvcc installed)");
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000;
  int32_t exp = int32_t((u >> 23) & 0xff) - 127 + 15;
  uint32_t man = u & 0x7fffff;
  if (((u >> 23) & 0xff) == 0xff) return uint16_t(sign | 0x7c00 | (man ? 0x200 : 0));
  if (exp >= 31) return uint16_t(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return uint16_t(sign);
    man |= 0x800000;
    uint32_t shift = uint32_t(14 - exp);
    uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = sign | uint32_t(exp) << 10 | man >> 13, rem = man & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;  // may carry into the exponent: correct
  return uint16_t(half);
}

// ---- thread pool ---------------------------------------------------------------------------------
namespace {
int g_threads = 0;

int default_threads() {
  if (const char* e = std::getenv("SSM_THREADS")) {
    int n = std::atoi(e);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// A fixed set of workers that each run one slice of the current job; the caller runs slice 0.
// Workers spin briefly on the job counter before sleeping, so back-to-back small parallel regions
// (the decode path runs hundreds per token) do not pay a futex wake-up each.
class Pool {
 public:
  void run(int n_slices, const std::function<void(int)>& job) {
    ensure(n_slices - 1);
    job_ = &job;
    slices_ = n_slices;
    error_ = nullptr;
    pending_.store(int(workers_.size()), std::memory_order_relaxed);  // every worker acknowledges
    {
      std::lock_guard<std::mutex> g(m_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    run_slice(job, 0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins)
      if (spins > 1000) std::this_thread::yield();
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  void ensure(int n) {
    while (int(workers_.size()) < n) {
      int id = int(workers_.size()) + 1;
      uint64_t gen = generation_.load(std::memory_order_acquire);
      workers_.emplace_back([this, id, gen] { loop(id, gen); });
    }
  }
  void run_slice(const std::function<void(int)>& job, int id) {
    try {
      job(id);
    } catch (...) {
      std::lock_guard<std::mutex> g(err_m_);
      if (!error_) error_ = std::current_exception();
    }
  }
  void loop(int id, uint64_t seen) {
    for (;;) {
      uint64_t gen = generation_.load(std::memory_order_acquire);
      for (int spins = 0; gen == seen && spins < 20000; ++spins) {
        if (spins > 2000) std::this_thread::yield();
        gen = generation_.load(std::memory_order_acquire);
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        gen = generation_.load(std::memory_order_acquire);
      }
      seen = gen;
      if (stop_) return;
      if (id < slices_) run_slice(*job_, id);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
  std::vector<std::thread> workers_;
  std::mutex m_, err_m_;
  std::condition_variable cv_;
  const std::function<void(int)>* job_ = nullptr;
  int slices_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p;
  return p;
}
thread_local bool t_in_parallel = false;
std::mutex g_pool_mutex;  // one parallel region at a time; nested calls run inline
}  // namespace

int num_threads() {
  if (g_threads <= 0) g_threads = default_threads();
  return g_threads;
}

void set_num_threads(int n) {
  SSM_CHECK(n >= 1 && n <= 1024, "threads", "thread count must be in [1, 1024], got " + std::to_string(n));
  g_threads = n;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t slices = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (slices <= 1 || t_in_parallel) {
    fn(0, n);
    return;
  }
  std::unique_lock<std::mutex> busy(g_pool_mutex, std::try_to_lock);
  if (!busy.owns_lock()) {  // another thread is using the pool: run inline
    fn(0, n);
    return;
  }
  // The job captures one pointer so that std::function keeps it inline: a parallel region
  // allocates nothing (the decode step runs hundreds per token).
  struct Job {
    int64_t n, slices;
    const std::function<void(int64_t, int64_t)>* fn;
  } jd{n, slices, &fn};
  std::function<void(int)> job = [&jd](int s) {
    int64_t b = jd.n * s / jd.slices, e = jd.n * (s + 1) / jd.slices;
    t_in_parallel = true;
    try {
      if (b < e) (*jd.fn)(b, e);
    } catch (...) {
      t_in_parallel = false;
      throw;
    }
    t_in_parallel = false;
  };
  pool().run(int(slices), job);
}

int64_t peak_rss_bytes() {
  struct rusage u {};
  if (::getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return int64_t(u.ru_maxrss) * 1024;  // Linux reports KiB
}

}  // namespace ssm
