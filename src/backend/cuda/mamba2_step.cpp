// The Mamba-2 decode step on the GPU: buffers, state adoption, the kernel sequence and its CUDA graph
// (the same scheme as mamba1_step.cpp). See mamba2_step.h.
#include "backend/cuda/mamba2_step.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/decode.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/step_graph.h"
#include "backend/cuda/ssd.h"
#include "models/decode.h"
#include "ops/cuda_ops.h"

namespace ssm::cuda {
namespace {

// Everything the captured graph reads or writes, at fixed addresses.
struct GpuStep2 : StepGraph {
  using StepGraph::StepGraph;
  Tensor resid, normed, zx, xbc, y, yn, out;
};

std::shared_ptr<GpuStep2> make_step(const ModelConfig& c, DType act, int64_t B) {
  auto g = std::make_shared<GpuStep2>(B);
  const Device dev = Device::cuda;
  const int64_t dm = c.d_model, Di = c.d_inner, GN = c.ngroups * c.d_state, conv_dim = Di + 2 * GN;
  const int64_t E = 2 * Di + 2 * GN + c.nheads;
  g->resid = Tensor::empty({B, dm}, DType::f32, dev);
  g->normed = Tensor::empty({B, dm}, act, dev);
  g->zx = Tensor::empty({B, E}, act, dev);
  g->xbc = Tensor::empty({B, conv_dim}, act, dev);
  g->y = Tensor::empty({B, Di}, act, dev);
  g->yn = Tensor::empty({B, Di}, act, dev);
  g->out = Tensor::empty({B, dm}, act, dev);
  g->logits = Tensor::empty({B, c.vocab_size}, DType::f32, dev);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    g->conv.push_back(Tensor::zeros({B, c.d_conv - 1, conv_dim}, act, dev));
    g->ssm.push_back(Tensor::zeros({B, c.nheads, c.headdim, c.d_state}, DType::f32, dev));
  }
  return g;
}

const float* fp(const Tensor& t) { return t.defined() ? static_cast<const float*>(t.raw_data()) : nullptr; }

void record(const ModelConfig& c, const Mamba2StepWeights& w, GpuStep2& g, cudaStream_t s) {
  using namespace decode;
  const DType act = w.embedding.dtype();
  const int64_t B = g.B, dm = c.d_model, Di = c.d_inner, N = c.d_state, G = c.ngroups, H = c.nheads, GN = G * N;
  const int64_t conv_dim = Di + 2 * GN, E = 2 * Di + 2 * GN + H, V = c.vocab_size;
  const size_t es = dtype_size(act);
  const float eps = float(c.norm_eps);
  const bool small = B <= kGemvMaxBatch, tf32 = detail::cuda_tf32();
  char* zx = static_cast<char*>(g.zx.raw_data());
  embed(act, w.embedding.raw_data(), g.ids.data<int64_t>(), g.resid.data<float>(), B, dm, s);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const Mamba2StepLayer& l = w.layers[size_t(i)];
    add_rms_norm(act, g.resid.data<float>(), small || i == 0 ? nullptr : g.out.raw_data(), fp(l.norm_w),
                 g.normed.raw_data(), B, dm, eps, s);
    if (small) {
      GemvArgs a;
      a.act = act, a.w = l.in_proj.raw_data(), a.O = E, a.I = dm, a.B = B, a.bias = fp(l.in_proj_b);
      a.x = g.normed.raw_data(), a.ldx = dm, a.epi = Epilogue::store, a.y = zx, a.ldy = E;
      gemv(a, s);
    } else {
      gemm(act, act, g.normed.raw_data(), l.in_proj.raw_data(), zx, B, dm, E, tf32, s);
      if (l.in_proj_b.defined()) add_bias(act, zx, E, fp(l.in_proj_b), B, E, s);
    }
    conv_step(act, zx + Di * es, E, g.conv[size_t(i)].raw_data(), fp(l.conv_w), fp(l.conv_b), g.xbc.raw_data(), B,
              conv_dim, c.d_conv, s);
    SSDStepArgs sa;
    sa.act = act, sa.B = B, sa.H = H, sa.P = c.headdim, sa.N = N, sa.G = G;
    sa.xbc = g.xbc.raw_data(), sa.ld_xbc = conv_dim, sa.dtr = zx + (2 * Di + 2 * GN) * es, sa.ld_dt = E;
    sa.dt_bias = fp(l.dt_bias), sa.A_log = fp(l.A_log), sa.D = fp(l.D), sa.d_per_channel = c.d_has_hdim;
    sa.dt_lo = float(c.dt_limit_lo), sa.dt_hi = float(c.dt_limit_hi);
    sa.state = g.ssm[size_t(i)].data<float>(), sa.y = g.y.raw_data();
    ssd_step(sa, s);
    gated_rms_norm(act, g.y.raw_data(), zx, E, fp(l.gate_norm_w), g.yn.raw_data(), B, Di, Di / G, 1e-5f,
                   c.norm_before_gate, s);
    if (small) {  // out_proj + residual add
      GemvArgs o;
      o.act = act, o.w = l.out_proj.raw_data(), o.O = dm, o.I = Di, o.B = B, o.bias = fp(l.out_proj_b);
      o.x = g.yn.raw_data(), o.ldx = Di, o.epi = Epilogue::residual, o.resid_out = g.resid.data<float>();
      gemv(o, s);
    } else {
      gemm(act, act, g.yn.raw_data(), l.out_proj.raw_data(), g.out.raw_data(), B, Di, dm, tf32, s);
      if (l.out_proj_b.defined()) add_bias(act, g.out.raw_data(), dm, fp(l.out_proj_b), B, dm, s);
    }
  }
  add_rms_norm(act, g.resid.data<float>(), small ? nullptr : g.out.raw_data(), fp(w.norm_f), g.normed.raw_data(), B, dm,
               eps, s);
  if (small) {
    GemvArgs h;
    h.act = act, h.w = w.lm_head.raw_data(), h.O = V, h.I = dm, h.B = B, h.x = g.normed.raw_data(), h.ldx = dm;
    h.epi = Epilogue::store, h.y = g.logits.raw_data(), h.ldy = V, h.y_f32 = true;
    gemv(h, s);
  } else {
    gemm(act, DType::f32, g.normed.raw_data(), w.lm_head.raw_data(), g.logits.raw_data(), B, dm, V, tf32, s);
  }
}

}  // namespace

const Tensor& mamba2_step(const ModelConfig& c, const Mamba2StepWeights& w, std::span<const int64_t> ids,
                          InferenceState& state) {
  SSM_CHECK(c.gated_norm, "step", "the GPU decode step of Mamba-2 needs the gated RMSNorm (rmsnorm=True)");
  const int64_t B = state.batch;
  if (!state.scratch || state.scratch->batch != B || !state.scratch->cuda) {
    auto ws = std::make_shared<DecodeScratch>();
    ws->batch = B;
    ws->cuda = make_step(c, w.embedding.dtype(), B);
    state.scratch = ws;
  }
  GpuStep2& g = *std::static_pointer_cast<GpuStep2>(state.scratch->cuda);
  return g.run(state, ids, [&](cudaStream_t s) { record(c, w, g, s); });
}

}  // namespace ssm::cuda
