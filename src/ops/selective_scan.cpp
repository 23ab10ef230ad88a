// Mamba-1 selective scan: argument checks, the fast CPU kernels (forward and a dedicated backward) and
// the autograd record. Layout is token-major, so channels are contiguous: the kernels give each work
// item a block of 8 channels (one SIMD vector), run sequentially over time and loop over the state
// size N with the state of the block in a small [N] array of vectors.
//
// Backward: the forward saves the state every `ck` steps (checkpoints [B, L/ck, D, N]); the backward
// walks the chunks in reverse, recomputes the chunk's states from its checkpoint, then runs the
// adjoint recurrence λ_{t-1} = exp(Δ_t A) λ_t with λ_t += C_t g_t. dB and dC are sums over channels,
// so each thread slot accumulates them in its own [B, L, G, N] buffer.
#include "ops/reference/selective_scan.h"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "ops/op_util.h"
#include "ops/scan_common.h"

namespace ssm {
namespace detail {
// The op on GPU tensors (selective_scan_cuda.cpp); arguments already checked.
ScanOut selective_scan_cuda(const SelectiveScanArgs& a);
}  // namespace detail
namespace {

using detail::scan::Lanes;
using detail::scan::v8f;
constexpr const char* kOp = "selective_scan";

template <typename S>
struct ScanParams {
  const S* u;      // [B, L, D]
  const S* delta;  // [B, L, D]
  const S* A;      // [D, N]
  const S* Bm;     // [B, L, G, N]
  const S* Cm;     // [B, L, G, N]
  const S* Dskip;  // [D] or null
  const S* z;      // [B, L, D] or null
  const S* dbias;  // [D] or null
  const S* h0;     // [B, D, N] or null
  int64_t B, L, D, N, G;
  bool softplus;
  int64_t ck, nck;  // checkpoint interval and count: ckpt [B, nck, D, N], ckpt[:, c] = state before step c*ck
};

// Checkpoint interval: keeps a chunk's recomputed states ([ck+1, N] vectors) around 32 KiB.
int64_t ckpt_interval(int64_t N) { return std::clamp<int64_t>(1024 / N, 8, 256); }

// Channel block [d0, d0 + nv) of one work item, with each lane's group.
template <typename V>
struct ChannelBlock {
  static constexpr int W = Lanes<V>::W;
  int64_t d0;
  int nv;
  int64_t g[W];
  bool uniform;  // all lanes in one group (B_t, C_t are then one broadcast scalar per n)
  ChannelBlock(const ScanParams<typename Lanes<V>::S>& p, int64_t blk) : d0(blk * W) {
    nv = int(std::min<int64_t>(W, p.D - d0));
    const int64_t per_group = p.D / p.G;
    for (int l = 0; l < W; ++l) g[l] = (d0 + std::min(l, nv - 1)) / per_group;
    uniform = g[0] == g[nv - 1];
  }
  // Lanes of x[d0 + l, n] for a [D, N] matrix.
  V gather_dn(const typename Lanes<V>::S* x, int64_t N, int64_t n) const {
    V v = Lanes<V>::zero();
    for (int l = 0; l < nv; ++l) Lanes<V>::set_lane(v, l, x[(d0 + l) * N + n]);
    return v;
  }
  void scatter_dn(typename Lanes<V>::S* x, int64_t N, int64_t n, V v) const {
    for (int l = 0; l < nv; ++l) x[(d0 + l) * N + n] = Lanes<V>::lane(v, l);
  }
  // Lanes of Bt[g(l) * N + n] (per-lane group) for one time step's [G, N] row.
  V gather_group(const typename Lanes<V>::S* Bt, int64_t N, int64_t n) const {
    V v = Lanes<V>::zero();
    for (int l = 0; l < nv; ++l) Lanes<V>::set_lane(v, l, Bt[g[l] * N + n]);
    return v;
  }
};

// Forward over one (batch, channel block). y, hT, ckpt may be null (not wanted).
template <typename V>
void scan_fwd_block(const ScanParams<typename Lanes<V>::S>& p, int64_t b, int64_t blk, typename Lanes<V>::S* y,
                    typename Lanes<V>::S* hT, typename Lanes<V>::S* ckpt) {
  using Ln = Lanes<V>;
  using S = typename Ln::S;
  const ChannelBlock<V> cb(p, blk);
  const int64_t N = p.N, D = p.D, d0 = cb.d0;
  const int nv = cb.nv;
  const size_t Nz = static_cast<size_t>(N);
  std::vector<V> At(Nz), h(Nz);  // [N] vectors each
  for (int64_t n = 0; n < N; ++n) {
    At[size_t(n)] = cb.gather_dn(p.A, N, n);
    h[size_t(n)] = p.h0 ? cb.gather_dn(p.h0 + b * D * N, N, n) : Ln::zero();
  }
  const V bias = p.dbias ? Ln::load(p.dbias + d0, nv) : Ln::zero();
  const V Dv = p.Dskip ? Ln::load(p.Dskip + d0, nv) : Ln::zero();
  for (int64_t t = 0; t < p.L; ++t) {
    if (ckpt && t % p.ck == 0)
      for (int64_t n = 0; n < N; ++n) cb.scatter_dn(ckpt + (b * p.nck + t / p.ck) * D * N, N, n, h[size_t(n)]);
    const int64_t i = (b * p.L + t) * D + d0;
    V dt = Ln::load(p.delta + i, nv) + bias;
    if (p.softplus) dt = Ln::softplus(dt);
    const V uu = Ln::load(p.u + i, nv);
    const V du = dt * uu;
    V acc = Dv * uu;
    const S* Bt = p.Bm + (b * p.L + t) * p.G * N;  // [G, N]
    const S* Ct = p.Cm + (b * p.L + t) * p.G * N;  // [G, N]
    if (cb.uniform) {
      const S* Bg = Bt + cb.g[0] * N;
      const S* Cg = Ct + cb.g[0] * N;
      for (int64_t n = 0; n < N; ++n) {
        const V a = Ln::exp(dt * At[size_t(n)]);
        h[size_t(n)] = a * h[size_t(n)] + du * Ln::set1(Bg[n]);
        acc += h[size_t(n)] * Ln::set1(Cg[n]);
      }
    } else {
      for (int64_t n = 0; n < N; ++n) {
        const V a = Ln::exp(dt * At[size_t(n)]);
        h[size_t(n)] = a * h[size_t(n)] + du * cb.gather_group(Bt, N, n);
        acc += h[size_t(n)] * cb.gather_group(Ct, N, n);
      }
    }
    if (p.z) {
      const V zz = Ln::load(p.z + i, nv);
      acc = acc * zz * Ln::sigmoid(zz);
    }
    if (y) Ln::store(y + i, acc, nv);
  }
  if (hT)
    for (int64_t n = 0; n < N; ++n) cb.scatter_dn(hT + b * D * N, N, n, h[size_t(n)]);
}

template <typename S>
struct ScanGrads {
  S *du, *ddelta, *dz;  // [B, L, D] (dz null without z)
  S* dA;                // [D, N]
  S *dD, *dbias;        // [D] (always computed)
  S* dh0;               // [B, D, N]
  S *dB, *dC;           // [slots, B, L, G, N] accumulators
};

// Backward over one channel block, all batches. dy [B, L, D] and dhT [B, D, N] may be null (zero).
template <typename V>
void scan_bwd_block(const ScanParams<typename Lanes<V>::S>& p, const typename Lanes<V>::S* ckpt,
                    const typename Lanes<V>::S* dy, const typename Lanes<V>::S* dhT,
                    const ScanGrads<typename Lanes<V>::S>& gr, int64_t slot, int64_t blk) {
  using Ln = Lanes<V>;
  using S = typename Ln::S;
  const ChannelBlock<V> cb(p, blk);
  const int64_t N = p.N, D = p.D, L = p.L, G = p.G, d0 = cb.d0, ck = p.ck;
  const int nv = cb.nv;
  S* dBs = gr.dB + slot * p.B * L * G * N;  // [B, L, G, N] of this slot
  S* dCs = gr.dC + slot * p.B * L * G * N;
  const size_t Nz = static_cast<size_t>(N), ckz = static_cast<size_t>(ck);
  std::vector<V> At(Nz), lam(Nz), dA(Nz, Ln::zero()), Bv(Nz), Cv(Nz);  // [N] vectors each
  std::vector<V> hs((ckz + 1) * Nz), as(ckz * Nz), dts(ckz);           // [ck+1, N], [ck, N], [ck]
  for (int64_t n = 0; n < N; ++n) At[size_t(n)] = cb.gather_dn(p.A, N, n);
  const V bias = p.dbias ? Ln::load(p.dbias + d0, nv) : Ln::zero();
  const V Dv = p.Dskip ? Ln::load(p.Dskip + d0, nv) : Ln::zero();
  V dDacc = Ln::zero(), dbacc = Ln::zero();
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t n = 0; n < N; ++n) lam[size_t(n)] = dhT ? cb.gather_dn(dhT + b * D * N, N, n) : Ln::zero();
    for (int64_t c = p.nck - 1; c >= 0; --c) {
      const int64_t t0 = c * ck, t1 = std::min(L, t0 + ck);
      // Recompute the chunk: hs[k] = state before step t0 + k.
      for (int64_t n = 0; n < N; ++n) hs[size_t(n)] = cb.gather_dn(ckpt + (b * p.nck + c) * D * N, N, n);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t k = t - t0, i = (b * L + t) * D + d0;
        V dt = Ln::load(p.delta + i, nv) + bias;
        if (p.softplus) dt = Ln::softplus(dt);
        dts[size_t(k)] = dt;
        const V du = dt * Ln::load(p.u + i, nv);
        const S* Bt = p.Bm + (b * L + t) * G * N;
        for (int64_t n = 0; n < N; ++n) {
          const V a = Ln::exp(dt * At[size_t(n)]);
          const V bn = cb.uniform ? Ln::set1(Bt[cb.g[0] * N + n]) : cb.gather_group(Bt, N, n);
          as[size_t(k * N + n)] = a;
          hs[size_t((k + 1) * N + n)] = a * hs[size_t(k * N + n)] + du * bn;
        }
      }
      // Adjoint, in reverse.
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const int64_t k = t - t0, i = (b * L + t) * D + d0;
        const S* Bt = p.Bm + (b * L + t) * G * N;
        const S* Ct = p.Cm + (b * L + t) * G * N;
        for (int64_t n = 0; n < N; ++n) {
          Bv[size_t(n)] = cb.uniform ? Ln::set1(Bt[cb.g[0] * N + n]) : cb.gather_group(Bt, N, n);
          Cv[size_t(n)] = cb.uniform ? Ln::set1(Ct[cb.g[0] * N + n]) : cb.gather_group(Ct, N, n);
        }
        const V dt = dts[size_t(k)];
        const V uu = Ln::load(p.u + i, nv);
        V g = dy ? Ln::load(dy + i, nv) : Ln::zero();
        if (p.z) {  // y = ypre · silu(z): dz = g · ypre · silu'(z), and g flows on scaled by silu(z)
          const V zz = Ln::load(p.z + i, nv);
          const V s = Ln::sigmoid(zz);
          V ypre = Dv * uu;
          for (int64_t n = 0; n < N; ++n) ypre += hs[size_t((k + 1) * N + n)] * Cv[size_t(n)];
          Ln::store(gr.dz + i, g * ypre * s * (Ln::set1(1) + zz * (Ln::set1(1) - s)), nv);
          g = g * zz * s;
        }
        dDacc += g * uu;
        V duv = Dv * g, ddt = Ln::zero();
        const V dtu = dt * uu;
        S* dBt = dBs + (b * L + t) * G * N;  // [G, N]
        S* dCt = dCs + (b * L + t) * G * N;
        for (int64_t n = 0; n < N; ++n) {
          const V lamn = lam[size_t(n)] + g * Cv[size_t(n)];  // λ_t = dL/dh_t
          const V a = as[size_t(k * N + n)];
          const V ah = a * hs[size_t(k * N + n)];
          const V lah = lamn * ah;
          dA[size_t(n)] += lah * dt;
          const V lb = lamn * Bv[size_t(n)];
          ddt += lah * At[size_t(n)] + lb * uu;
          duv += lb * dt;
          const V gB = lamn * dtu, gC = g * hs[size_t((k + 1) * N + n)];
          if (cb.uniform) {
            dBt[cb.g[0] * N + n] += Ln::sum(gB);
            dCt[cb.g[0] * N + n] += Ln::sum(gC);
          } else {
            for (int l = 0; l < nv; ++l) {
              dBt[cb.g[l] * N + n] += Ln::lane(gB, l);
              dCt[cb.g[l] * N + n] += Ln::lane(gC, l);
            }
          }
          lam[size_t(n)] = a * lamn;  // λ_{t-1} before its own output term
        }
        if (p.softplus) ddt = ddt * Ln::softplus_grad(Ln::load(p.delta + i, nv) + bias);
        dbacc += ddt;
        Ln::store(gr.du + i, duv, nv);
        Ln::store(gr.ddelta + i, ddt, nv);
      }
    }
    for (int64_t n = 0; n < N; ++n) cb.scatter_dn(gr.dh0 + b * D * N, N, n, lam[size_t(n)]);
  }
  for (int64_t n = 0; n < N; ++n) cb.scatter_dn(gr.dA, N, n, dA[size_t(n)]);
  Ln::store(gr.dD + d0, dDacc, nv);
  Ln::store(gr.dbias + d0, dbacc, nv);
}

template <typename S>
using VecOf = std::conditional_t<std::is_same_v<S, float>, v8f, S>;

template <typename S>
ScanParams<S> make_params(const std::vector<Tensor>& in, bool softplus) {
  // in: u, delta, A, B, C, D, z, delta_bias, initial_state (contiguous, dtype S; optional undefined)
  auto ptr = [](const Tensor& t) -> const S* { return t.defined() ? t.data<S>() : nullptr; };
  ScanParams<S> p{};
  p.u = ptr(in[0]);
  p.delta = ptr(in[1]);
  p.A = ptr(in[2]);
  p.Bm = ptr(in[3]);
  p.Cm = ptr(in[4]);
  p.Dskip = ptr(in[5]);
  p.z = ptr(in[6]);
  p.dbias = ptr(in[7]);
  p.h0 = ptr(in[8]);
  p.softplus = softplus;
  p.B = in[0].size(0);
  p.L = in[0].size(1);
  p.D = in[0].size(2);
  p.N = in[2].size(1);
  p.G = in[3].size(2);
  p.ck = ckpt_interval(p.N);
  p.nck = (p.L + p.ck - 1) / p.ck;
  return p;
}

template <typename S>
std::vector<Tensor> scan_backward(const std::vector<Tensor>& in, bool softplus, Tensor ckpt, const Tensor& dy_in,
                                  const Tensor& dhT_in) {
  using V = VecOf<S>;
  constexpr int64_t W = Lanes<V>::W;
  const ScanParams<S> p = make_params<S>(in, softplus);
  const DType dt = in[0].dtype();
  const int64_t nblk = (p.D + W - 1) / W;
  if (!ckpt.defined()) {  // the forward ran the reference loop: recompute the checkpoints
    ckpt = Tensor::empty({p.B, p.nck, p.D, p.N}, dt);
    S* ck = ckpt.data<S>();
    parallel_for(p.B * nblk, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) scan_fwd_block<V>(p, i / nblk, i % nblk, nullptr, nullptr, ck);
    });
  }
  Tensor dy = dy_in.defined() ? dy_in.contiguous() : Tensor();
  Tensor dhT = dhT_in.defined() ? dhT_in.contiguous() : Tensor();
  Tensor du = Tensor::empty(in[0].shape(), dt), ddelta = Tensor::empty(in[0].shape(), dt);  // [B, L, D]
  Tensor dz = p.z ? Tensor::empty(in[0].shape(), dt) : Tensor();                            // [B, L, D]
  Tensor dA = Tensor::empty({p.D, p.N}, dt);                                                // [D, N]
  Tensor dD = Tensor::empty({p.D}, dt), dbias = Tensor::empty({p.D}, dt);                   // [D]
  Tensor dh0 = Tensor::empty({p.B, p.D, p.N}, dt);                                          // [B, D, N]
  const int64_t slots = detail::scan::slot_count(nblk);
  const Shape bshape = in[3].shape();
  Tensor dBs = Tensor::zeros({slots, p.B, p.L, p.G, p.N}, dt), dCs = Tensor::zeros({slots, p.B, p.L, p.G, p.N}, dt);
  ScanGrads<S> gr{du.data<S>(),  ddelta.data<S>(), p.z ? dz.data<S>() : nullptr,
                  dA.data<S>(),  dD.data<S>(),     dbias.data<S>(),
                  dh0.data<S>(), dBs.data<S>(),    dCs.data<S>()};
  const S* ckp = ckpt.data<S>();
  const S* dyp = dy.defined() ? dy.data<S>() : nullptr;
  const S* dhp = dhT.defined() ? dhT.data<S>() : nullptr;
  detail::scan::run_slots(nblk, [&](int64_t slot, int64_t blk) { scan_bwd_block<V>(p, ckp, dyp, dhp, gr, slot, blk); });
  // Sum the slots: [slots, M] -> [M].
  auto reduce_slots = [&](const Tensor& acc) {
    Tensor out = Tensor::empty(bshape, dt);
    const int64_t m = out.numel();
    const S* a = acc.data<S>();
    S* o = out.data<S>();
    parallel_for(m, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        S s = 0;
        for (int64_t k = 0; k < slots; ++k) s += a[k * m + i];
        o[i] = s;
      }
    });
    return out;
  };
  Tensor dB = reduce_slots(dBs), dC = reduce_slots(dCs);
  return {du,
          ddelta,
          dA,
          dB,
          dC,
          in[5].defined() ? dD : Tensor(),
          dz,
          in[7].defined() ? dbias : Tensor(),
          in[8].defined() ? dh0 : Tensor()};
}

template <typename S>
void scan_forward(const std::vector<Tensor>& in, bool softplus, bool fast, Tensor& y, Tensor& hT, Tensor& ckpt) {
  const ScanParams<S> p = make_params<S>(in, softplus);
  if (!fast) {
    ref::SelectiveScanRefArgs<S> r{p.u,         p.delta,      p.A, p.Bm, p.Cm, p.Dskip, p.z, p.dbias, p.h0,
                                   y.data<S>(), hT.data<S>(), p.B, p.L,  p.D,  p.N,     p.G, softplus};
    ref::selective_scan_ref(r);
    return;
  }
  using V = VecOf<S>;
  const int64_t nblk = (p.D + Lanes<V>::W - 1) / Lanes<V>::W;
  S* yp = y.data<S>();
  S* hp = hT.data<S>();
  S* cp = ckpt.defined() ? ckpt.data<S>() : nullptr;
  parallel_for(p.B * nblk, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) scan_fwd_block<V>(p, i / nblk, i % nblk, yp, hp, cp);
  });
}

void check_args(const SelectiveScanArgs& a) {
  using namespace detail;
  check_defined(kOp, a.u, "u");
  const bool gpu = a.u.device() == Device::cuda;
  if (gpu)
    SSM_CHECK(a.u.dtype() == DType::f32 || a.u.dtype() == DType::bf16 || a.u.dtype() == DType::f16, kOp,
              std::string("u on the GPU must be f32, bf16 or f16, got ") + dtype_name(a.u.dtype()));
  else
    check_float(kOp, a.u, "u");
  check_dim(kOp, a.u, 3, "u");
  const int64_t Bsz = a.u.size(0), L = a.u.size(1), D = a.u.size(2);
  SSM_CHECK(Bsz >= 1 && L >= 1 && D >= 1, kOp, "u must be non-empty, got shape " + shape_str(a.u.shape()));
  check_defined(kOp, a.delta, "delta");
  check_shape(kOp, a.delta, a.u.shape(), "delta");
  check_defined(kOp, a.A, "A");
  check_dim(kOp, a.A, 2, "A");
  SSM_CHECK(a.A.size(0) == D && a.A.size(1) >= 1, kOp,
            "A has shape " + shape_str(a.A.shape()) + ", expected [D=" + std::to_string(D) + ", N]");
  const int64_t N = a.A.size(1);
  check_defined(kOp, a.B, "B");
  check_defined(kOp, a.C, "C");
  check_dim(kOp, a.B, 4, "B");
  const int64_t G = a.B.size(2);
  SSM_CHECK(G >= 1 && D % G == 0, kOp,
            "B has " + std::to_string(G) + " groups but D=" + std::to_string(D) + " is not divisible by " +
                std::to_string(G));
  check_shape(kOp, a.B, {Bsz, L, G, N}, "B");
  check_shape(kOp, a.C, {Bsz, L, G, N}, "C");
  if (a.D.defined()) check_shape(kOp, a.D, {D}, "D");
  if (a.z.defined()) check_shape(kOp, a.z, a.u.shape(), "z");
  if (a.delta_bias.defined()) check_shape(kOp, a.delta_bias, {D}, "delta_bias");
  if (a.initial_state.defined()) check_shape(kOp, a.initial_state, {Bsz, D, N}, "initial_state");
  // On the CPU every tensor has u's dtype; on the GPU the activations (delta, B, C, z) have u's dtype
  // and the parameters and the state (A, D, delta_bias, initial_state) are f32.
  const std::tuple<const Tensor*, const char*, bool> all[] = {{&a.delta, "delta", true},
                                                              {&a.A, "A", false},
                                                              {&a.B, "B", true},
                                                              {&a.C, "C", true},
                                                              {&a.D, "D", false},
                                                              {&a.z, "z", true},
                                                              {&a.delta_bias, "delta_bias", false},
                                                              {&a.initial_state, "initial_state", false}};
  for (const auto& [t, name, act] : all) {
    if (!t->defined()) continue;
    SSM_CHECK(t->device() == a.u.device(), kOp,
              std::string(name) + " is on " + device_name(t->device()) + " but u is on " + device_name(a.u.device()));
    if (!gpu || act)
      check_same_dtype(kOp, a.u, "u", *t, name);
    else
      SSM_CHECK(t->dtype() == DType::f32, kOp,
                std::string(name) + " on the GPU must be f32, got " + dtype_name(t->dtype()));
  }
}

}  // namespace

ScanOut selective_scan(const SelectiveScanArgs& a) {
  check_args(a);
  if (a.u.device() == Device::cuda) return detail::selective_scan_cuda(a);
  auto cont = [](const Tensor& t) {  // contiguous copy recording no history (this op records its own)
    autograd::NoGradGuard ng;
    return t.defined() ? t.contiguous() : Tensor();
  };
  std::vector<Tensor> in = {cont(a.u), cont(a.delta),      cont(a.A),
                            cont(a.B), cont(a.C),          cont(a.D),
                            cont(a.z), cont(a.delta_bias), cont(a.initial_state)};  // contiguous copies for the kernels
  const std::vector<Tensor> orig = {a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, a.initial_state};
  const DType dt = a.u.dtype();
  const int64_t Bsz = a.u.size(0), L = a.u.size(1), D = a.u.size(2), N = a.A.size(1);
  const bool grad = autograd::needs_grad(orig);
  const bool fast = detail::use_fast(dt);
  Tensor y = Tensor::empty({Bsz, L, D}, dt);   // [B, L, D]
  Tensor hT = Tensor::empty({Bsz, D, N}, dt);  // [B, D, N]
  Tensor ckpt;                                 // [B, nck, D, N] when the fast forward can save it
  if (grad && fast) {
    const int64_t ck = ckpt_interval(N);
    ckpt = Tensor::empty({Bsz, (L + ck - 1) / ck, D, N}, dt);
  }
  detail::dispatch_float(kOp, dt, [&]<typename S>() { scan_forward<S>(in, a.delta_softplus, fast, y, hT, ckpt); });
  if (grad) {
    const bool softplus = a.delta_softplus;
    autograd::record(kOp, orig, {&y, &hT}, [in, softplus, ckpt, dt](const std::vector<Tensor>& g) {
      return detail::dispatch_float(kOp, dt,
                                    [&]<typename S>() { return scan_backward<S>(in, softplus, ckpt, g[0], g[1]); });
    });
  }
  return {y, hT};
}

}  // namespace ssm
