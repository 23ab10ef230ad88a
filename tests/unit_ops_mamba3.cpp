// mamba3_siso_scan: the fast f32 kernel against the f64 reference loop at odd lengths, the reference
// loop against an independent unrolled ("attention") form of the trapezoidal recurrence, a
// hand-computed single step, state continuation (split sequence == whole sequence), argument errors
// and the backward (f64 finite differences, f32 vs f64).
#include <cmath>

#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "ssm/ops_mamba3.h"
#include "testing.h"

namespace ssm {
namespace {

using ssm::testing::AllClose;
using ssm::testing::OpFn;

struct Sizes {
  int64_t B, L, H, P, N, G, S;
};

// Random inputs shaped like a Mamba-3 layer's (q, k near unit RMS; adt <= 0; dt > 0).
Mamba3SisoArgs make_args(const Sizes& s, uint64_t seed, DType dt, bool with_state) {
  Mamba3SisoArgs a;
  a.q = Tensor::randn({s.B, s.L, s.G, s.N}, seed + 1, 0, 1, dt);
  a.k = Tensor::randn({s.B, s.L, s.G, s.N}, seed + 2, 0, 1, dt);
  a.v = Tensor::randn({s.B, s.L, s.H, s.P}, seed + 3, 0, 1, dt);
  a.dt = Tensor::rand({s.B, s.L, s.H}, seed + 4, 0.01, 0.5, dt);
  a.adt = mul(a.dt, Tensor::rand({s.B, s.L, s.H}, seed + 5, -2.0, -0.05, dt));
  a.trap = Tensor::randn({s.B, s.L, s.H}, seed + 6, 0, 2, dt);
  a.q_bias = Tensor::randn({s.H, s.N}, seed + 7, 1, 0.3, dt);
  a.k_bias = Tensor::randn({s.H, s.N}, seed + 8, 1, 0.3, dt);
  a.angles = Tensor::randn({s.B, s.L, s.S}, seed + 9, 0, 2, dt);
  a.D = Tensor::randn({s.H}, seed + 10, 1, 0.5, dt);
  a.z = Tensor::randn({s.B, s.L, s.H, s.P}, seed + 11, 0, 1, dt);
  if (with_state) {
    a.angle_state = Tensor::rand({s.B, s.H, s.S}, seed + 12, 0, 6.28, dt);
    a.ssm_state = Tensor::randn({s.B, s.H, s.P, s.N}, seed + 13, 0, 1, dt);
    a.k_state = Tensor::randn({s.B, s.H, s.N}, seed + 14, 0, 1, dt);
    a.v_state = Tensor::randn({s.B, s.H, s.P}, seed + 15, 0, 1, dt);
  }
  return a;
}

Mamba3SisoArgs cast(const Mamba3SisoArgs& a, DType dt) {
  auto c = [dt](const Tensor& t) { return t.defined() ? t.to(dt) : Tensor(); };
  return {c(a.q),      c(a.k), c(a.v), c(a.adt),         c(a.dt),        c(a.trap),    c(a.q_bias), c(a.k_bias),
          c(a.angles), c(a.D), c(a.z), c(a.angle_state), c(a.ssm_state), c(a.k_state), c(a.v_state)};
}

void expect_out_close(const Mamba3SisoOut& got, const Mamba3SisoOut& want, double rtol) {
  EXPECT_TRUE(AllClose(got.y, want.y, rtol)) << "y";
  EXPECT_TRUE(AllClose(got.ssm_state, want.ssm_state, rtol)) << "ssm_state";
  EXPECT_TRUE(AllClose(got.angle_state, want.angle_state, rtol)) << "angle_state";
  EXPECT_TRUE(AllClose(got.k_state, want.k_state, rtol)) << "k_state";
  EXPECT_TRUE(AllClose(got.v_state, want.v_state, rtol)) << "v_state";
}

// Fast f32 kernel vs the f64 reference loop. 1e-4 of the largest reference value: f32 rounding of
// a recurrence over <= 257 steps with decays <= 1 (observed ~1e-6).
TEST(Mamba3Scan, FastMatchesReferenceAtOddLengths) {
  for (int64_t L : {1, 7, 33, 257}) {
    for (bool st : {false, true}) {
      SCOPED_TRACE("L=" + std::to_string(L) + " state=" + std::to_string(st));
      // N = 20: two 8-lane blocks and a scalar tail; S = 5 < N/2 leaves unrotated pairs; G = 2.
      Sizes s{2, L, 4, 6, 20, 2, 5};
      Mamba3SisoArgs a = make_args(s, 100 + uint64_t(L), DType::f32, st);
      Mamba3SisoOut fast = mamba3_siso_scan(a);
      Mamba3SisoOut ref = mamba3_siso_scan(cast(a, DType::f64));
      expect_out_close(fast, ref, 1e-4);
      // The f32 reference loop (reference-kernels mode) agrees with the fast one too.
      ReferenceKernelsGuard g(true);
      expect_out_close(mamba3_siso_scan(a), ref, 1e-4);
    }
  }
}

// Independent oracle: the unrolled form of §4.5 (mamba3_siso_fwd_ref): token s reaches y_t (s < t)
// with weight (q̃_t·k̃_s)·(γ_s + (1-λ_{s+1})Δ_{s+1})·e^{Σ_{r=s+1..t} adt_r}, and y_t itself with
// γ_t (q̃_t·k̃_t); rotation angles are the cumulative sum of ω·Δ (no per-step mod). f64, so 1e-10.
TEST(Mamba3Scan, ReferenceMatchesUnrolledForm) {
  Sizes s{2, 19, 3, 4, 8, 1, 3};
  Mamba3SisoArgs a = make_args(s, 7, DType::f64, false);
  Mamba3SisoOut got = mamba3_siso_scan(a);
  auto q = a.q.to_vector_f64(), k = a.k.to_vector_f64(), v = a.v.to_vector_f64(), adt = a.adt.to_vector_f64(),
       dt = a.dt.to_vector_f64(), tr = a.trap.to_vector_f64(), qb = a.q_bias.to_vector_f64(),
       kb = a.k_bias.to_vector_f64(), an = a.angles.to_vector_f64(), D = a.D.to_vector_f64(), z = a.z.to_vector_f64();
  const int64_t B = s.B, L = s.L, H = s.H, P = s.P, N = s.N, S = s.S;
  std::vector<double> want(size_t(B * L * H * P));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      auto at = [&](int64_t t) { return (b * L + t) * H + h; };
      std::vector<double> Qr(size_t(L * N)), Kr(size_t(L * N)), theta(size_t(S), 0.0);
      for (int64_t t = 0; t < L; ++t) {
        for (int64_t i = 0; i < S; ++i)
          theta[size_t(i)] += M_PI * std::tanh(an[size_t((b * L + t) * S + i)]) * dt[size_t(at(t))];
        for (int64_t n = 0; n < N; ++n) {
          Qr[size_t(t * N + n)] = q[size_t((b * L + t) * N + n)] + qb[size_t(h * N + n)];
          Kr[size_t(t * N + n)] = k[size_t((b * L + t) * N + n)] + kb[size_t(h * N + n)];
        }
        for (int64_t i = 0; i < S; ++i) {
          double c = std::cos(theta[size_t(i)]), sn = std::sin(theta[size_t(i)]);
          for (auto* X : {&Qr, &Kr}) {
            double x0 = (*X)[size_t(t * N + 2 * i)], x1 = (*X)[size_t(t * N + 2 * i + 1)];
            (*X)[size_t(t * N + 2 * i)] = x0 * c - x1 * sn;
            (*X)[size_t(t * N + 2 * i + 1)] = x0 * sn + x1 * c;
          }
        }
      }
      auto lam = [&](int64_t t) { return 1.0 / (1.0 + std::exp(-tr[size_t(at(t))])); };
      for (int64_t t = 0; t < L; ++t) {
        for (int64_t p = 0; p < P; ++p) {
          double y = 0;
          for (int64_t sidx = 0; sidx <= t; ++sidx) {
            double qk = 0;
            for (int64_t n = 0; n < N; ++n) qk += Qr[size_t(t * N + n)] * Kr[size_t(sidx * N + n)];
            double w = lam(sidx) * dt[size_t(at(sidx))];
            if (sidx < t) {
              w += (1 - lam(sidx + 1)) * dt[size_t(at(sidx + 1))];
              double cs = 0;
              for (int64_t r = sidx + 1; r <= t; ++r) cs += adt[size_t(at(r))];
              w *= std::exp(cs);
            }
            y += qk * w * v[size_t(at(sidx) * P + p)];
          }
          y += D[size_t(h)] * v[size_t(at(t) * P + p)];
          double zz = z[size_t(at(t) * P + p)];
          want[size_t(at(t) * P + p)] = y * zz / (1 + std::exp(-zz));
        }
      }
    }
  }
  EXPECT_TRUE(AllClose(got.y, Tensor::from_vector(want, {B, L, H, P}), 1e-10));
}

// One step by hand: N = 2 (one rotated pair), P = 1, H = 1, no initial state.
// θ = π tanh(0.5)·0.2; k̃ = Rot(θ)(k + kb), q̃ = Rot(θ)(q + qb); S = γ v k̃ (α S_{-1} = 0, β term 0);
// y = (S·q̃ + D v) silu(z), γ = sigmoid(0.3)·0.2.
TEST(Mamba3Scan, HandComputedStep) {
  Mamba3SisoArgs a;
  a.q = Tensor::from_vector(std::vector<double>{0.5, -1.0}, {1, 1, 1, 2});
  a.k = Tensor::from_vector(std::vector<double>{2.0, 0.25}, {1, 1, 1, 2});
  a.v = Tensor::from_vector(std::vector<double>{1.5}, {1, 1, 1, 1});
  a.dt = Tensor::from_vector(std::vector<double>{0.2}, {1, 1, 1});
  a.adt = Tensor::from_vector(std::vector<double>{-0.1}, {1, 1, 1});
  a.trap = Tensor::from_vector(std::vector<double>{0.3}, {1, 1, 1});
  a.q_bias = Tensor::from_vector(std::vector<double>{1.0, 0.0}, {1, 2});
  a.k_bias = Tensor::from_vector(std::vector<double>{0.0, 1.0}, {1, 2});
  a.angles = Tensor::from_vector(std::vector<double>{0.5}, {1, 1, 1});
  a.D = Tensor::from_vector(std::vector<double>{0.7}, {1});
  a.z = Tensor::from_vector(std::vector<double>{0.4}, {1, 1, 1, 1});
  const double th = M_PI * std::tanh(0.5) * 0.2, c = std::cos(th), s = std::sin(th);
  const double k0 = 2.0, k1 = 1.25, q0 = 1.5, q1 = -1.0;
  const double kr0 = k0 * c - k1 * s, kr1 = k0 * s + k1 * c, qr0 = q0 * c - q1 * s, qr1 = q0 * s + q1 * c;
  const double gamma = 0.2 / (1 + std::exp(-0.3));
  const double y = (gamma * 1.5 * (kr0 * qr0 + kr1 * qr1) + 0.7 * 1.5) * 0.4 / (1 + std::exp(-0.4));
  Mamba3SisoOut o = mamba3_siso_scan(a);
  EXPECT_NEAR(o.y.item(), y, 1e-14);
  EXPECT_NEAR(o.angle_state.item(), th, 1e-14);
  auto kst = o.k_state.to_vector_f64();
  EXPECT_NEAR(kst[0], kr0, 1e-14);
  EXPECT_NEAR(kst[1], kr1, 1e-14);
  EXPECT_NEAR(o.v_state.item(), 1.5, 0);
  // f32 fast kernel on the same step (f32 rounding: 1e-6).
  Mamba3SisoOut of = mamba3_siso_scan(cast(a, DType::f32));
  EXPECT_NEAR(of.y.item(), y, 1e-6);
}

// Running [0, t) then [t, L) from the returned state equals running [0, L) (t = 1 and 13 of 29,
// and L = 1 steps). f32 fast kernel: identical arithmetic on both paths except the initial-state
// loads, so 1e-6.
TEST(Mamba3Scan, StateContinuesTheSequence) {
  Sizes s{2, 29, 4, 8, 16, 1, 4};
  Mamba3SisoArgs a = make_args(s, 55, DType::f32, true);
  Mamba3SisoOut full = mamba3_siso_scan(a);
  for (int64_t t : {1, 13, 28}) {
    SCOPED_TRACE("split at " + std::to_string(t));
    auto part = [&](int64_t lo, int64_t hi, const Mamba3SisoOut* prev) {
      Mamba3SisoArgs p = a;
      for (Tensor* x : {&p.q, &p.k, &p.v, &p.adt, &p.dt, &p.trap, &p.angles, &p.z}) *x = x->slice(1, lo, hi);
      if (prev) {
        p.angle_state = prev->angle_state;
        p.ssm_state = prev->ssm_state;
        p.k_state = prev->k_state;
        p.v_state = prev->v_state;
      }
      return mamba3_siso_scan(p);
    };
    Mamba3SisoOut first = part(0, t, nullptr);
    Mamba3SisoOut second = part(t, s.L, &first);
    EXPECT_TRUE(AllClose(first.y, full.y.slice(1, 0, t), 1e-6));
    EXPECT_TRUE(AllClose(second.y, full.y.slice(1, t, s.L), 1e-6));
    EXPECT_TRUE(AllClose(second.ssm_state, full.ssm_state, 1e-6));
    EXPECT_TRUE(AllClose(second.angle_state, full.angle_state, 1e-6));
    EXPECT_TRUE(AllClose(second.k_state, full.k_state, 0));
    EXPECT_TRUE(AllClose(second.v_state, full.v_state, 0));
  }
}

TEST(Mamba3Scan, OptionalDAndZ) {
  // Without D and z the output is the bare read-out S q̃; times silu(z) it must equal the output
  // with D = 0 and the gate z (f64: 1e-12).
  Sizes s{1, 9, 2, 4, 8, 1, 2};
  Mamba3SisoArgs a = make_args(s, 3, DType::f64, false);
  Mamba3SisoArgs bare = a;
  bare.D = Tensor();
  bare.z = Tensor();
  Mamba3SisoArgs zeroD = a;
  zeroD.D = Tensor::zeros({s.H}, DType::f64);
  Tensor gate = mul(a.z, sigmoid(a.z));
  EXPECT_TRUE(AllClose(mul(mamba3_siso_scan(bare).y, gate), mamba3_siso_scan(zeroD).y, 1e-12));
}

TEST(Mamba3Scan, BadArgumentsThrow) {
  Sizes s{1, 5, 2, 4, 8, 1, 2};
  auto expect_err = [](const Mamba3SisoArgs& a, const std::string& what) {
    try {
      mamba3_siso_scan(a);
      ADD_FAILURE() << "no error, expected: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[mamba3_siso_scan]"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  Mamba3SisoArgs a = make_args(s, 1, DType::f32, false);
  Mamba3SisoArgs b = a;
  b.k = Tensor::zeros({1, 5, 1, 6});
  expect_err(b, "k has shape");
  b = a;
  b.angles = Tensor::zeros({1, 5, 5});
  expect_err(b, "rotary angles");
  b = a;
  b.q = Tensor::zeros({1, 5, 3, 8});
  expect_err(b, "not divisible");
  b = a;
  b.ssm_state = Tensor::zeros({1, 2, 8, 4});
  expect_err(b, "ssm_state has shape");
  b = a;
  b.dt = a.dt.to(DType::f64);
  expect_err(b, "dt is f64");
  b = a;
  b.trap = Tensor();
  expect_err(b, "trap is undefined");
}

// Every output as one flat vector, so a gradient check covers the gradients of y and of the four
// final states.
Tensor all_outputs(const Mamba3SisoOut& o) {
  std::vector<Tensor> parts;
  for (const Tensor* t : {&o.y, &o.angle_state, &o.ssm_state, &o.k_state, &o.v_state})
    parts.push_back(t->view({t->numel()}));
  return concat(parts, 0);
}

OpFn scan_fn() {
  return [](const std::vector<Tensor>& x) {
    return all_outputs(mamba3_siso_scan(
        {x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9], x[10], x[11], x[12], x[13], x[14]}));
  };
}

std::vector<Tensor> as_inputs(const Mamba3SisoArgs& a) {
  return {a.q,      a.k, a.v, a.adt,         a.dt,        a.trap,    a.q_bias, a.k_bias,
          a.angles, a.D, a.z, a.angle_state, a.ssm_state, a.k_state, a.v_state};
}

// f64 finite differences against the backward, for every input including the initial state, with
// the gradients of y and of all four final states. L = 37 spans two recomputed segments (32 tokens
// each); G = 2 groups of 2 heads each share q and k; S = 3 < N/2 leaves unrotated pairs.
TEST(Mamba3Scan, GradientsMatchFiniteDifferences) {
  for (bool st : {false, true}) {
    SCOPED_TRACE("initial state " + std::to_string(st));
    Sizes s{2, 37, 4, 3, 8, 2, 3};
    Mamba3SisoArgs a = make_args(s, 21, DType::f64, st);
    ssm::testing::expect_grad(scan_fn(), as_inputs(a));
  }
  // Without D and z (their gradients stay undefined).
  Sizes s{1, 5, 2, 2, 4, 1, 2};
  Mamba3SisoArgs a = make_args(s, 22, DType::f64, false);
  a.D = Tensor();
  a.z = Tensor();
  ssm::testing::expect_grad(scan_fn(), as_inputs(a));
}

// The f32 backward (same loop as f64 in float) agrees with the f64 one: 1e-4 of the largest gradient.
TEST(Mamba3Scan, F32GradientsMatchF64) {
  Sizes s{2, 70, 4, 6, 20, 2, 5};
  Mamba3SisoArgs a = make_args(s, 23, DType::f32, true);
  ssm::testing::RunResult f = ssm::testing::run(scan_fn(), as_inputs(a));
  ssm::testing::RunResult d = ssm::testing::run(scan_fn(), as_inputs(cast(a, DType::f64)));
  EXPECT_TRUE(AllClose(f.out, d.out, 1e-4)) << "forward";
  for (size_t i = 0; i < f.grads.size(); ++i) EXPECT_TRUE(AllClose(f.grads[i], d.grads[i], 1e-4)) << "input " << i;
}

}  // namespace
}  // namespace ssm
