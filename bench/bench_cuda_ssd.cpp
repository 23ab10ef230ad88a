// GPU SSD scan (Mamba-2) at the shapes of docs ANCHORS.md (mamba_ssm's mamba_chunk_scan_combined on
// H100): x, B, C, dt, z in bf16 (or f32); A, D, dt_bias f32. Two rows per shape:
//  - "scan": the ssd_scan op alone (x already multiplied by Δ, A = Δ·A);
//  - "mixer": what mamba_chunk_scan_combined(x, dt, A, B, C, D, z, dt_bias, dt_softplus=True) computes,
//    as our Mamba-2 mixer runs it: Δ = softplus(dt + dt_bias) (f32), x·Δ, Δ·A, ssd_scan, + D x, · silu(z).
// Timed with CUDA events around the calls; mean ± sd over repetitions:
//   build/ci/bench_cuda_ssd --benchmark_repetitions=10 --benchmark_report_aggregates_only=true
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

struct Inputs {
  Tensor x, dt, A_log, B, C, D, z, dt_bias;
};

// Inputs on the GPU, made once per shape (drawing them on the CPU takes seconds).
const Inputs& inputs(int64_t Bsz, int64_t L, int64_t H, DType act) {
  static std::map<std::tuple<int64_t, int64_t, int64_t, DType>, Inputs> cache;
  auto key = std::make_tuple(Bsz, L, H, act);
  auto hit = cache.find(key);
  if (hit != cache.end()) return hit->second;
  const int64_t P = 64, N = 128, G = 1;
  auto gpu = [&](Tensor t, bool is_act) { return (is_act ? t.to(act) : t).to(Device::cuda); };
  Inputs in;
  in.x = gpu(Tensor::randn({Bsz, L, H, P}, 1), true);
  in.dt = gpu(Tensor::randn({Bsz, L, H}, 2, -2, 0.5), true);
  in.A_log = gpu(Tensor::rand({H}, 3, 0, 2.7), false);  // A = -exp(A_log) in [-15, -1]
  in.B = gpu(Tensor::randn({Bsz, L, G, N}, 4), true);
  in.C = gpu(Tensor::randn({Bsz, L, G, N}, 5), true);
  in.D = gpu(Tensor::randn({H}, 6), false);
  in.z = gpu(Tensor::randn({Bsz, L, H, P}, 7), true);
  in.dt_bias = gpu(Tensor::randn({H}, 8, 0, 0.1), false);
  return cache[key] = in;
}

// Args: B, L, H, bf16 (1) or f32 (0), mixer (1) or scan (0).
void BM_cuda_ssd(benchmark::State& st) {
  const int64_t Bsz = st.range(0), L = st.range(1), H = st.range(2);
  const DType act = st.range(3) ? DType::bf16 : DType::f32;
  const bool mixer = st.range(4) != 0;
  autograd::NoGradGuard ng;
  const Inputs& in = inputs(Bsz, L, H, act);
  Tensor delta = softplus(add(in.dt.to(DType::f32), in.dt_bias)), A = neg(exp(in.A_log));
  SSDArgs pre;  // the scan's own inputs, precomputed for the "scan" row
  pre.x = mul(in.x, delta.to(act).unsqueeze(3));
  pre.A = mul(delta, A);
  pre.B = in.B;
  pre.C = in.C;
  auto once = [&] {
    if (!mixer) {
      benchmark::DoNotOptimize(ssd_scan(pre));
      return;
    }
    Tensor d = softplus(add(in.dt.to(DType::f32), in.dt_bias));
    SSDArgs a;
    a.x = mul(in.x, d.to(act).unsqueeze(3));
    a.A = mul(d, neg(exp(in.A_log)));
    a.B = in.B;
    a.C = in.C;
    ScanOut s = ssd_scan(a);
    benchmark::DoNotOptimize(mul(add(s.y, mul(in.x, in.D.view({H, 1}).to(act))), silu(in.z)));
  };
  for (int i = 0; i < 5; ++i) once();  // warm-up: module load, allocator cache
  Events ev;
  for (auto _ : st) {
    cudaEventRecord(ev.start);
    once();
    cudaEventRecord(ev.stop);
    st.SetIterationTime(ev.ms() / 1e3);
  }
  st.SetLabel(std::string(dtype_name(act)) + (mixer ? " mixer" : " scan"));
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int mixer : {0, 1}) {
    b->Args({8, 2048, 24, 1, mixer});
    b->Args({2, 8192, 24, 1, mixer});
    b->Args({1, 2048, 80, 1, mixer});
  }
  b->Args({8, 2048, 24, 0, 0});
}

}  // namespace

BENCHMARK(BM_cuda_ssd)->Apply(shapes)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);
BENCHMARK_MAIN();
