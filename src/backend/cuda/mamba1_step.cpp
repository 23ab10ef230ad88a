// The Mamba-1 / Falcon-Mamba decode step on the GPU: buffers, state adoption, the kernel sequence and
// its CUDA graph. See mamba1_step.h.
#include "backend/cuda/mamba1_step.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "backend/cuda/decode.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/step_graph.h"
#include "models/decode.h"
#include "ops/cuda_ops.h"

namespace ssm::cuda {
namespace {

// The GPU side of a DecodeScratch: everything the captured graph reads or writes, at fixed addresses.
struct GpuStep : StepGraph {
  using StepGraph::StepGraph;
  Tensor resid, normed, xz, xs, xdbl, y, out;
};

std::shared_ptr<GpuStep> make_step(const ModelConfig& c, DType act, int64_t B) {
  auto g = std::make_shared<GpuStep>(B);
  const Device dev = Device::cuda;
  const int64_t dm = c.d_model, Di = c.d_inner, E = c.dt_rank + 2 * c.d_state;
  g->resid = Tensor::empty({B, dm}, DType::f32, dev);
  g->normed = Tensor::empty({B, dm}, act, dev);
  g->xz = Tensor::empty({B, 2 * Di}, act, dev);
  g->xs = Tensor::empty({B, Di}, act, dev);
  g->xdbl = Tensor::empty({B, E}, DType::f32, dev);
  g->y = Tensor::empty({B, Di}, act, dev);
  g->out = Tensor::empty({B, dm}, act, dev);
  g->logits = Tensor::empty({B, c.vocab_size}, DType::f32, dev);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    g->conv.push_back(Tensor::zeros({B, c.d_conv - 1, Di}, act, dev));
    g->ssm.push_back(Tensor::zeros({B, Di, c.d_state}, DType::f32, dev));
  }
  return g;
}

const float* fp(const Tensor& t) { return t.defined() ? static_cast<const float*>(t.raw_data()) : nullptr; }

// The whole step's kernels on `s`.
void record(const ModelConfig& c, const Mamba1StepWeights& w, GpuStep& g, cudaStream_t s) {
  using namespace decode;
  const DType act = w.embedding.dtype();
  const int64_t B = g.B, dm = c.d_model, Di = c.d_inner, N = c.d_state, R = c.dt_rank, E = R + 2 * N, V = c.vocab_size;
  const float eps = float(c.norm_eps);
  const bool small = B <= kGemvMaxBatch, tf32 = detail::cuda_tf32();
  char* xz = static_cast<char*>(g.xz.raw_data());
  embed(act, w.embedding.raw_data(), g.ids.data<int64_t>(), g.resid.data<float>(), B, dm, s);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const Mamba1StepLayer& l = w.layers[size_t(i)];
    if (small) {  // norm, then in_proj + conv window + SiLU in one kernel
      add_rms_norm(act, g.resid.data<float>(), nullptr, fp(l.norm_w), g.normed.raw_data(), B, dm, eps, s);
      GemvArgs a;
      a.act = act, a.w = l.in_proj.raw_data(), a.O = 2 * Di, a.I = dm, a.B = B, a.bias = fp(l.in_proj_b);
      a.x = g.normed.raw_data(), a.ldx = dm, a.epi = Epilogue::conv, a.y = xz, a.ldy = 2 * Di;
      a.conv_state = g.conv[size_t(i)].raw_data(), a.conv_w = fp(l.conv_w), a.conv_b = fp(l.conv_b);
      a.conv_C = Di, a.W = c.d_conv, a.xs = g.xs.raw_data();
      gemv(a, s);
    } else {
      add_rms_norm(act, g.resid.data<float>(), i == 0 ? nullptr : g.out.raw_data(), fp(l.norm_w), g.normed.raw_data(),
                   B, dm, eps, s);
      gemm(act, act, g.normed.raw_data(), l.in_proj.raw_data(), xz, B, dm, 2 * Di, tf32, s);
      if (l.in_proj_b.defined()) add_bias(act, xz, 2 * Di, fp(l.in_proj_b), B, 2 * Di, s);
      conv_step(act, xz, 2 * Di, g.conv[size_t(i)].raw_data(), fp(l.conv_w), fp(l.conv_b), g.xs.raw_data(), B, Di,
                c.d_conv, s);
    }
    if (small) {  // x_proj
      GemvArgs x;
      x.act = act, x.w = l.x_proj.raw_data(), x.O = E, x.I = Di, x.B = B, x.x = g.xs.raw_data(), x.ldx = Di;
      x.epi = Epilogue::store, x.y = g.xdbl.raw_data(), x.ldy = E, x.y_f32 = true;
      gemv(x, s);
    } else {
      gemm(act, DType::f32, g.xs.raw_data(), l.x_proj.raw_data(), g.xdbl.raw_data(), B, Di, E, tf32, s);
    }
    ScanStepArgs sc;
    sc.act = act, sc.B = B, sc.Di = Di, sc.N = N, sc.R = R;
    sc.xs = g.xs.raw_data(), sc.z = xz + Di * int64_t(dtype_size(act)), sc.ldz = 2 * Di, sc.xdbl = g.xdbl.data<float>();
    sc.dt_proj = fp(l.dt_proj), sc.dt_bias = fp(l.dt_proj_b), sc.A_log = fp(l.A_log), sc.D = fp(l.D);
    sc.h = g.ssm[size_t(i)].data<float>(), sc.y = g.y.raw_data();
    sc.falcon = c.arch == Arch::falcon_mamba, sc.mixer_eps = float(c.mixer_rms_eps);
    scan_step(sc, s);
    if (small) {  // out_proj + residual add
      GemvArgs o;
      o.act = act, o.w = l.out_proj.raw_data(), o.O = dm, o.I = Di, o.B = B, o.bias = fp(l.out_proj_b);
      o.x = g.y.raw_data(), o.ldx = Di, o.epi = Epilogue::residual, o.resid_out = g.resid.data<float>();
      gemv(o, s);
    } else {
      gemm(act, act, g.y.raw_data(), l.out_proj.raw_data(), g.out.raw_data(), B, Di, dm, tf32, s);
      if (l.out_proj_b.defined()) add_bias(act, g.out.raw_data(), dm, fp(l.out_proj_b), B, dm, s);
    }
  }
  if (small) {  // final norm + head
    add_rms_norm(act, g.resid.data<float>(), nullptr, fp(w.norm_f), g.normed.raw_data(), B, dm, eps, s);
    GemvArgs h;
    h.act = act, h.w = w.lm_head.raw_data(), h.O = V, h.I = dm, h.B = B, h.x = g.normed.raw_data(), h.ldx = dm;
    h.epi = Epilogue::store, h.y = g.logits.raw_data(), h.ldy = V, h.y_f32 = true;
    gemv(h, s);
  } else {
    add_rms_norm(act, g.resid.data<float>(), g.out.raw_data(), fp(w.norm_f), g.normed.raw_data(), B, dm, eps, s);
    gemm(act, DType::f32, g.normed.raw_data(), w.lm_head.raw_data(), g.logits.raw_data(), B, dm, V, tf32, s);
  }
}

}  // namespace

const Tensor& mamba1_step(const ModelConfig& c, const Mamba1StepWeights& w, std::span<const int64_t> ids,
                          InferenceState& state) {
  const int64_t B = state.batch;
  if (!state.scratch || state.scratch->batch != B || !state.scratch->cuda) {
    auto ws = std::make_shared<DecodeScratch>();
    ws->batch = B;
    ws->cuda = make_step(c, w.embedding.dtype(), B);
    state.scratch = ws;
  }
  GpuStep& g = *std::static_pointer_cast<GpuStep>(state.scratch->cuda);
  return g.run(state, ids, [&](cudaStream_t s) { record(c, w, g, s); });
}

}  // namespace ssm::cuda
