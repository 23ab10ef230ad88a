// GPU selective scan (Mamba-1) at the shapes of docs ANCHORS.md (mamba_ssm on H100): bf16 (or f32)
// u, delta, z, B, C; f32 A, D, delta_bias; z gate, delta bias, softplus. Timed with CUDA events around
// the op call (forward) or the op call plus the backward through autograd (forward + backward);
// mean ± sd over repetitions:
//   build/ci/bench_cuda_scan --benchmark_repetitions=10 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <map>
#include <tuple>

#include "ssm/autograd.h"
#include "ssm/ops.h"

using namespace ssm;

namespace {

struct Events {
  cudaEvent_t start, stop;
  Events() {
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
  }
  ~Events() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  double ms() {
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    return t;
  }
};

// Inputs on the GPU, made once per shape (drawing them on the CPU takes seconds) and shared by the
// forward and forward + backward runs and the repetitions.
SelectiveScanArgs make_args(int64_t B, int64_t D, int64_t L, int64_t N, DType act, bool grad) {
  static std::map<std::tuple<int64_t, int64_t, int64_t, DType>, SelectiveScanArgs> cache;
  auto key = std::make_tuple(B, D, L, act);
  auto hit = cache.find(key);
  if (hit != cache.end()) {
    SelectiveScanArgs a = hit->second;
    for (Tensor* t : {&a.u, &a.delta, &a.A, &a.B, &a.C, &a.D, &a.z, &a.delta_bias}) t->set_requires_grad(grad);
    return a;
  }
  auto gpu = [&](Tensor t, bool is_act) {
    t = (is_act ? t.to(act) : t).to(Device::cuda);
    if (grad) t.set_requires_grad(true);
    return t;
  };
  SelectiveScanArgs a;
  a.u = gpu(Tensor::randn({B, L, D}, 1), true);
  a.delta = gpu(Tensor::randn({B, L, D}, 2, -2, 0.5), true);
  a.A = gpu(Tensor::rand({D, N}, 3, -2, -0.5), false);
  a.B = gpu(Tensor::randn({B, L, 1, N}, 4), true);
  a.C = gpu(Tensor::randn({B, L, 1, N}, 5), true);
  a.D = gpu(Tensor::randn({D}, 6), false);
  a.z = gpu(Tensor::randn({B, L, D}, 7), true);
  a.delta_bias = gpu(Tensor::randn({D}, 8, 0, 0.1), false);
  a.delta_softplus = true;
  cache[key] = a;
  return a;
}

// Args: B, D, L, bf16 (1) or f32 (0), backward (1) or not (0). N = 16.
void BM_cuda_selective_scan(benchmark::State& st) {
  const int64_t B = st.range(0), D = st.range(1), L = st.range(2);
  const DType act = st.range(3) ? DType::bf16 : DType::f32;
  const bool bwd = st.range(4) != 0;
  SelectiveScanArgs a = make_args(B, D, L, 16, act, bwd);
  static std::map<std::tuple<int64_t, int64_t, int64_t, DType>, Tensor> dys;
  Tensor& dy = dys[std::make_tuple(B, D, L, act)];
  if (!dy.defined()) dy = Tensor::randn({B, L, D}, 9).to(act).to(Device::cuda);
  auto once = [&] {
    if (!bwd) {
      autograd::NoGradGuard ng;
      benchmark::DoNotOptimize(selective_scan(a));
      return;
    }
    for (Tensor* t : {&a.u, &a.delta, &a.A, &a.B, &a.C, &a.D, &a.z, &a.delta_bias}) t->zero_grad();
    selective_scan(a).y.backward(dy);
  };
  for (int i = 0; i < 5; ++i) once();  // warm-up: module load, allocator cache
  Events ev;
  for (auto _ : st) {
    cudaEventRecord(ev.start);
    once();
    cudaEventRecord(ev.stop);
    st.SetIterationTime(ev.ms() / 1e3);
  }
  st.SetLabel(std::string(dtype_name(act)) + (bwd ? " fwd+bwd" : " fwd"));
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int bwd : {0, 1}) {
    b->Args({8, 1536, 2048, 1, bwd});
    b->Args({8, 1536, 2048, 0, bwd});
    b->Args({2, 1536, 8192, 1, bwd});
    b->Args({1, 5120, 2048, 1, bwd});
  }
}

}  // namespace

BENCHMARK(BM_cuda_selective_scan)->Apply(shapes)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);
BENCHMARK_MAIN();
