// CPU throughput of every op at one realistic shape (mamba-130m/790m-like layer sizes).
//   build/release/bench_ops --benchmark_min_time=0.5
// Items/s counts tokens (rows) processed; bytes/s counts the tensors read and written once.
#include <benchmark/benchmark.h>

#include "ops/matvec.h"
#include "ops/matvec_avx512.h"
#include "ssm/autograd.h"
#include "ssm/ops.h"

using namespace ssm;

namespace {
constexpr int64_t kL = 2048, kD = 1536, kN = 16, kModel = 768;

void finish(benchmark::State& st, int64_t tokens, double bytes) {
  st.SetItemsProcessed(int64_t(st.iterations()) * tokens);
  st.SetBytesProcessed(int64_t(double(st.iterations()) * bytes));
}

void BM_add(benchmark::State& st) {
  autograd::NoGradGuard ng;
  Tensor a = Tensor::randn({kL, kD}, 1), b = Tensor::randn({kL, kD}, 2);
  for (auto _ : st) benchmark::DoNotOptimize(add(a, b));
  finish(st, kL, 3.0 * kL * kD * 4);
}
void BM_silu(benchmark::State& st) {
  autograd::NoGradGuard ng;
  Tensor a = Tensor::randn({kL, kD}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(silu(a));
  finish(st, kL, 2.0 * kL * kD * 4);
}
void BM_softplus(benchmark::State& st) {
  autograd::NoGradGuard ng;
  Tensor a = Tensor::randn({kL, kD}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(softplus(a));
  finish(st, kL, 2.0 * kL * kD * 4);
}
void BM_sum(benchmark::State& st) {
  autograd::NoGradGuard ng;
  Tensor a = Tensor::randn({kL, kD}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(sum(a, {-1}));
  finish(st, kL, 1.0 * kL * kD * 4);
}
void BM_softmax(benchmark::State& st) {  // logits of 512 tokens over the NeoX vocabulary
  autograd::NoGradGuard ng;
  Tensor a = Tensor::randn({512, 50280}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(log_softmax(a));
  finish(st, 512, 2.0 * 512 * 50280 * 4);
}
void BM_cross_entropy(benchmark::State& st) {
  autograd::NoGradGuard ng;
  Tensor a = Tensor::randn({512, 50280}, 1);
  Tensor t = Tensor::arange(512, DType::i64);
  for (auto _ : st) benchmark::DoNotOptimize(cross_entropy(a, t));
  finish(st, 512, 1.0 * 512 * 50280 * 4);
}
// in_proj over 512 tokens: arg 0 = weight dtype (0 f32, 1 bf16), arg 1 = shape (0 mamba-130m
// [3072, 768], 1 mamba-1.4b [8192, 2048]).
void BM_linear_prefill(benchmark::State& st) {
  autograd::NoGradGuard ng;
  const int64_t dm = st.range(1) ? 2048 : kModel, O = st.range(1) ? 8192 : kD * 2;
  Tensor x = Tensor::randn({512, dm}, 1),
         w = Tensor::randn({O, dm}, 2, 0, 0.02).to(st.range(0) ? DType::bf16 : DType::f32);
  for (auto _ : st) benchmark::DoNotOptimize(linear(x, w));
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * 512 * dm * O * double(st.iterations()), benchmark::Counter::kIsRate);
  finish(st, 512, 4.0 * (512 * dm + 512 * O) + double(w.nbytes()));
}
void BM_linear_decode(benchmark::State& st) {  // one token through in_proj; weights f32 / bf16
  autograd::NoGradGuard ng;
  DType wd = st.range(0) ? DType::bf16 : DType::f32;
  Tensor x = Tensor::randn({1, kModel}, 1), w = Tensor::randn({kD * 2, kModel}, 2, 0, 0.02).to(wd);
  for (auto _ : st) benchmark::DoNotOptimize(linear(x, w));
  finish(st, 1, double(w.nbytes()));
}
// One thread, bf16 weights of mamba-1.4b's in_proj ([8192, 2048], 32 MiB: streamed from memory):
// arg 0 widens each weight to f32 (AVX-512 F), arg 1 rounds x to bf16 and uses VDPBF16PS.
void BM_matvec_bf16_kernels(benchmark::State& st) {
  if (!kernels::avx512::supported_bf16()) {
    st.SkipWithError("needs AVX-512 BF16");
    return;
  }
  constexpr int64_t O = 8192, I = 2048;
  Tensor x = Tensor::randn({1, I}, 1), w = Tensor::randn({O, I}, 2, 0, 0.02).to(DType::bf16);
  std::vector<float> y(O);
  for (auto _ : st) {
    if (st.range(0) == 0)
      kernels::avx512::matvec(x.data<float>(), 1, I, w.raw_data(), int(kernels::WeightKind::bf16), nullptr, y.data(), O,
                              0, O);
    else
      kernels::avx512::matvec_bf16_dp(x.data<float>(), 1, I, static_cast<const uint16_t*>(w.raw_data()), nullptr,
                                      y.data(), O, 0, O);
    benchmark::DoNotOptimize(y.data());
  }
  finish(st, 1, double(w.nbytes()));
}
void BM_embedding(benchmark::State& st) {
  autograd::NoGradGuard ng;
  Tensor w = Tensor::randn({50280, kModel}, 1);
  Tensor ids = Tensor::arange(kL, DType::i64);
  for (auto _ : st) benchmark::DoNotOptimize(embedding(w, ids));
  finish(st, kL, 2.0 * kL * kModel * 4);
}
void BM_rms_norm_add(benchmark::State& st) {
  autograd::NoGradGuard ng;
  Tensor x = Tensor::randn({kL, kModel}, 1), r = Tensor::randn({kL, kModel}, 2), w = Tensor::full({kModel}, 1.0);
  for (auto _ : st) benchmark::DoNotOptimize(rms_norm_add(x, r, w, 1e-5));
  finish(st, kL, 4.0 * kL * kModel * 4);
}
void BM_gated_rms_norm(benchmark::State& st) {
  autograd::NoGradGuard ng;
  Tensor x = Tensor::randn({kL, kD}, 1), z = Tensor::randn({kL, kD}, 2), w = Tensor::full({kD}, 1.0);
  for (auto _ : st) benchmark::DoNotOptimize(gated_rms_norm(x, z, w, kD, 1e-5));
  finish(st, kL, 3.0 * kL * kD * 4);
}
void BM_causal_conv1d(benchmark::State& st) {
  autograd::NoGradGuard ng;
  Tensor x = Tensor::randn({1, kL, kD}, 1), w = Tensor::randn({kD, 4}, 2), b = Tensor::randn({kD}, 3);
  for (auto _ : st) benchmark::DoNotOptimize(causal_conv1d(x, w, b, Tensor(), true));
  finish(st, kL, 2.0 * kL * kD * 4);
}
SelectiveScanArgs scan_args() {
  SelectiveScanArgs a;
  a.u = Tensor::randn({1, kL, kD}, 1);
  a.delta = Tensor::randn({1, kL, kD}, 2, -2, 0.5);
  a.A = Tensor::rand({kD, kN}, 3, -2, -0.5);
  a.B = Tensor::randn({1, kL, 1, kN}, 4);
  a.C = Tensor::randn({1, kL, 1, kN}, 5);
  a.D = Tensor::randn({kD}, 6);
  a.z = Tensor::randn({1, kL, kD}, 7);
  a.delta_bias = Tensor::randn({kD}, 8, 0, 0.1);
  a.delta_softplus = true;
  return a;
}
void BM_selective_scan_fwd(benchmark::State& st) {  // B=1, D=1536, L=2048, N=16
  autograd::NoGradGuard ng;
  SelectiveScanArgs a = scan_args();
  for (auto _ : st) benchmark::DoNotOptimize(selective_scan(a));
  finish(st, kL, 4.0 * kL * kD * 4);
}
void BM_selective_scan_fwd_bwd(benchmark::State& st) {
  SelectiveScanArgs a = scan_args();
  for (Tensor* t : {&a.u, &a.delta, &a.A, &a.B, &a.C, &a.D, &a.z, &a.delta_bias}) t->set_requires_grad(true);
  for (auto _ : st) {
    ScanOut o = selective_scan(a);
    sum(o.y).backward();
  }
  finish(st, kL, 8.0 * kL * kD * 4);
}
void BM_ssd_fwd(benchmark::State& st) {  // B=1, L=2048, H=24, P=64, N=128, chunk 256
  autograd::NoGradGuard ng;
  SSDArgs a;
  a.x = Tensor::randn({1, kL, 24, 64}, 1);
  a.A = Tensor::rand({1, kL, 24}, 2, -0.2, -0.01);
  a.B = Tensor::randn({1, kL, 1, 128}, 3);
  a.C = Tensor::randn({1, kL, 1, 128}, 4);
  a.chunk_size = 256;
  for (auto _ : st) benchmark::DoNotOptimize(ssd_scan(a));
  finish(st, kL, 2.0 * kL * 24 * 64 * 4);
}
}  // namespace

BENCHMARK(BM_add)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_silu)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_softplus)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_sum)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_softmax)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cross_entropy)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_linear_prefill)->ArgsProduct({{0, 1}, {0, 1}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_linear_decode)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_matvec_bf16_kernels)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_embedding)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rms_norm_add)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_gated_rms_norm)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_causal_conv1d)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_selective_scan_fwd)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_selective_scan_fwd_bwd)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ssd_fwd)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
