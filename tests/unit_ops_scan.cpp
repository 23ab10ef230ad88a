// selective_scan (Mamba-1) and ssd_scan (Mamba-2): fast kernels against the reference loops at odd
// sizes, initial/final state chaining, the f32 backward against the f64 one, finite-difference
// gradient checks in f64 for every input, and argument errors.
#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "ops/scan_common.h"
#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "testing.h"

namespace ssm {
namespace {

using testing::AllClose;

// The kernels' vector exp / softplus / sigmoid against libm in double: relative error within a few
// fp32 ulp (measured: exp 7.7e-8, softplus 3.1e-7, sigmoid 1.5e-7), which keeps the fast kernels within
// 1e-5 of the reference loops.
TEST(ScanMath, VectorFunctionsAccuracy) {
  using namespace detail::scan;
  double worst_exp = 0, worst_sp = 0, worst_sig = 0;
  for (int i = 0; i < 200000; ++i) {
    v8f x, s;
    for (int l = 0; l < 8; ++l) {
      x[l] = -87.0f + 175.0f * float(i * 8 + l) / 1.6e6f;  // [-87, 88)
      s[l] = -40.0f + 80.0f * float(i * 8 + l) / 1.6e6f;   // [-40, 40)
    }
    v8f e = vexp(x), sp = vsoftplus(s), sg = vsigmoid(s);
    for (int l = 0; l < 8; ++l) {
      const double xe = std::exp(double(x[l])), xs = double(s[l]);
      const double spe = xs > 20 ? xs : std::log1p(std::exp(xs)), sge = 1 / (1 + std::exp(-xs));
      worst_exp = std::max(worst_exp, std::fabs(e[l] - xe) / xe);
      worst_sp = std::max(worst_sp, std::fabs(sp[l] - spe) / spe);
      worst_sig = std::max(worst_sig, std::fabs(sg[l] - sge) / sge);
    }
  }
  EXPECT_LT(worst_exp, 2e-7);
  EXPECT_LT(worst_sp, 6e-7);
  EXPECT_LT(worst_sig, 4e-7);
  v8f edge = vexp(v8f{-1000.0f, -87.5f, 0.0f, 1.0f, -0.0f, 88.0f, 1e-8f, -1e-8f});
  EXPECT_LE(edge[0], 1.2e-38f);  // underflow stops at the smallest normal float
  EXPECT_GE(edge[0], 0.0f);
  EXPECT_EQ(edge[2], 1.0f);
  EXPECT_EQ(edge[4], 1.0f);
}

struct ScanCase {
  int64_t B, L, D, N, G;
  bool z, Dskip, bias, softplus, h0;
};

// Random inputs in the ranges a Mamba layer sees: A < 0, delta around softplus's knee.
SelectiveScanArgs make_scan(const ScanCase& c, DType dt, uint64_t seed) {
  SelectiveScanArgs a;
  a.u = Tensor::randn({c.B, c.L, c.D}, seed + 1, 0, 1, dt);
  a.delta = Tensor::rand({c.B, c.L, c.D}, seed + 2, -2.5, 0.5, dt);
  a.A = Tensor::rand({c.D, c.N}, seed + 3, -2.0, -0.1, dt);
  a.B = Tensor::randn({c.B, c.L, c.G, c.N}, seed + 4, 0, 1, dt);
  a.C = Tensor::randn({c.B, c.L, c.G, c.N}, seed + 5, 0, 1, dt);
  if (c.Dskip) a.D = Tensor::randn({c.D}, seed + 6, 0, 1, dt);
  if (c.z) a.z = Tensor::randn({c.B, c.L, c.D}, seed + 7, 0, 1, dt);
  if (c.bias) a.delta_bias = Tensor::rand({c.D}, seed + 8, -0.5, 0.5, dt);
  if (c.h0) a.initial_state = Tensor::randn({c.B, c.D, c.N}, seed + 9, 0, 1, dt);
  a.delta_softplus = c.softplus;
  if (!c.softplus) a.delta = Tensor::rand({c.B, c.L, c.D}, seed + 2, 0.01, 1.0, dt);  // Δ must be > 0 then
  return a;
}

std::vector<Tensor*> scan_inputs(SelectiveScanArgs& a) {
  return {&a.u, &a.delta, &a.A, &a.B, &a.C, &a.D, &a.z, &a.delta_bias, &a.initial_state};
}

const ScanCase kCases[] = {
    {2, 1, 13, 5, 1, true, true, true, true, true},      // one step, partial channel block
    {1, 7, 24, 8, 3, true, true, true, true, false},     // groups aligned with the 8-lane blocks
    {2, 33, 12, 4, 3, false, true, false, false, true},  // 4 channels per group: blocks straddle groups
    {1, 257, 19, 16, 1, true, false, true, true, true},  // crosses checkpoint boundaries
    {1, 2049, 9, 3, 1, true, true, true, true, true},    // long, N=3
};

// Fast f32 vs the f32 reference loop: 1e-5 relative to max |ref| (fast exp/log1p are within a few
// ulp; the recurrence adds ~L roundings of 6e-8 each).
TEST(SelectiveScan, FastMatchesReference) {
  for (const ScanCase& c : kCases) {
    SelectiveScanArgs a = make_scan(c, DType::f32, 100 + uint64_t(c.L));
    ScanOut fast = selective_scan(a);
    ReferenceKernelsGuard ref(true);
    ScanOut want = selective_scan(a);
    EXPECT_TRUE(AllClose(fast.y, want.y, 1e-5)) << "L=" << c.L << " D=" << c.D;
    EXPECT_TRUE(AllClose(fast.final_state, want.final_state, 1e-5)) << "L=" << c.L << " D=" << c.D;
  }
}

// f32 reference loop vs the f64 one: 1e-5 (fp32 rounding over the recurrence).
TEST(SelectiveScan, F32MatchesF64) {
  const ScanCase c = kCases[3];
  SelectiveScanArgs a = make_scan(c, DType::f64, 7), af = a;
  for (Tensor* t : scan_inputs(af))
    if (t->defined()) *t = t->to(DType::f32);
  ScanOut d = selective_scan(a), f = selective_scan(af);
  EXPECT_TRUE(AllClose(f.y, d.y.to(DType::f32), 1e-5));
  EXPECT_TRUE(AllClose(f.final_state, d.final_state.to(DType::f32), 1e-5));
}

// Running [0, L1) then [L1, L) from the first part's final state equals one run over [0, L).
TEST(SelectiveScan, InitialStateChains) {
  const ScanCase c{2, 70, 11, 6, 1, true, true, true, true, true};
  for (bool reference : {false, true}) {
    ReferenceKernelsGuard mode(reference);
    SelectiveScanArgs a = make_scan(c, DType::f32, 21);
    ScanOut full = selective_scan(a);
    const int64_t L1 = 29;
    SelectiveScanArgs p1 = a, p2 = a;
    using Triple = std::array<Tensor*, 3>;  // first part, second part, whole
    for (auto [t1, t2, src] : std::vector<Triple>{{&p1.u, &p2.u, &a.u},
                                                  {&p1.delta, &p2.delta, &a.delta},
                                                  {&p1.B, &p2.B, &a.B},
                                                  {&p1.C, &p2.C, &a.C},
                                                  {&p1.z, &p2.z, &a.z}}) {
      *t1 = src->narrow(1, 0, L1);
      *t2 = src->narrow(1, L1, c.L - L1);
    }
    ScanOut o1 = selective_scan(p1);
    p2.initial_state = o1.final_state;
    ScanOut o2 = selective_scan(p2);
    // 1e-6: same operations in the same order, only the state's round trip through memory differs.
    EXPECT_TRUE(AllClose(o1.y, full.y.narrow(1, 0, L1), 1e-6));
    EXPECT_TRUE(AllClose(o2.y, full.y.narrow(1, L1, c.L - L1), 1e-6));
    EXPECT_TRUE(AllClose(o2.final_state, full.final_state, 1e-6));
  }
}

// sum(y * wy) + sum(final_state * wh): both outputs' gradients flow at once.
Tensor scan_objective(const ScanOut& o, uint64_t seed) {
  Tensor wy = Tensor::randn(o.y.shape(), seed, 0, 1, o.y.dtype());
  Tensor wh = Tensor::randn(o.final_state.shape(), seed + 1, 0, 1, o.y.dtype());
  return add(sum(mul(o.y, wy)), sum(mul(o.final_state, wh)));
}

// f64 finite differences for every input (gradients through y and final_state together).
TEST(SelectiveScan, GradCheckF64) {
  const ScanCase cases[] = {{2, 5, 3, 2, 1, true, true, true, true, true},
                            {1, 6, 4, 3, 2, false, true, false, false, true},
                            {1, 4, 6, 2, 3, true, false, true, true, false}};
  for (const ScanCase& c : cases) {
    SelectiveScanArgs a = make_scan(c, DType::f64, 300 + uint64_t(c.D));
    std::vector<Tensor> inputs;
    for (Tensor* t : scan_inputs(a)) {
      if (t->defined()) t->set_requires_grad(true);
      inputs.push_back(*t);
    }
    const bool softplus = c.softplus;
    auto f = [softplus](const std::vector<Tensor>& x) {
      SelectiveScanArgs s{x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], softplus};
      return scan_objective(selective_scan(s), 5);
    };
    // eps 1e-6 central differences: truncation ~1e-12 relative, rounding ~1e-10 absolute.
    auto r = autograd::grad_check(f, inputs, 1e-6, 1e-7, 1e-5);
    EXPECT_TRUE(r.ok) << r.message << " (D=" << c.D << ")";
  }
}

// The f32 backward kernel (vector lanes, fast exp) against the f64 backward (scalar lanes, libm),
// 1e-4 of each gradient's max: fp32 rounding accumulated along the reverse recurrence.
TEST(SelectiveScan, BackwardF32MatchesF64) {
  for (const ScanCase& c : {kCases[1], kCases[2], kCases[3]}) {
    SelectiveScanArgs a = make_scan(c, DType::f64, 500), af = a;
    for (Tensor* t : scan_inputs(af))
      if (t->defined()) *t = t->to(DType::f32);
    std::vector<Tensor*> in64 = scan_inputs(a), in32 = scan_inputs(af);
    for (size_t i = 0; i < in64.size(); ++i)
      if (in64[i]->defined()) {
        in64[i]->set_requires_grad(true);
        in32[i]->set_requires_grad(true);
      }
    scan_objective(selective_scan(a), 9).backward();
    scan_objective(selective_scan(af), 9).backward();
    for (size_t i = 0; i < in64.size(); ++i) {
      if (!in64[i]->defined()) continue;
      ASSERT_TRUE(in32[i]->grad().defined()) << "input " << i;
      EXPECT_TRUE(AllClose(in32[i]->grad(), in64[i]->grad().to(DType::f32), 1e-4)) << "input " << i << " L=" << c.L;
    }
  }
}

TEST(SelectiveScan, Errors) {
  SelectiveScanArgs good = make_scan({1, 4, 6, 2, 3, true, true, true, true, true}, DType::f32, 1);
  auto expect_error = [](SelectiveScanArgs a, const std::string& what) {
    try {
      selective_scan(a);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[selective_scan]"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  SelectiveScanArgs a = good;
  a.B = Tensor::randn({1, 4, 4, 2}, 2);
  a.C = Tensor::randn({1, 4, 4, 2}, 3);
  expect_error(a, "not divisible by 4");
  a = good;
  a.delta = Tensor::randn({1, 5, 6}, 2);
  expect_error(a, "delta has shape");
  a = good;
  a.A = Tensor::randn({5, 2}, 2);
  expect_error(a, "A has shape");
  a = good;
  a.C = Tensor::randn({1, 4, 3, 3}, 2);
  expect_error(a, "C has shape");
  a = good;
  a.initial_state = Tensor::randn({1, 6, 3}, 2);
  expect_error(a, "initial_state has shape");
  a = good;
  a.z = Tensor::randn({1, 4, 6}, 2, 0, 1, DType::f64);
  expect_error(a, "z is f64");
  a = good;
  a.u = Tensor::randn({4, 6}, 2);
  expect_error(a, "u must have 3 dims");
  a = good;
  a.u = Tensor::zeros({1, 4, 6}, DType::i64);
  expect_error(a, "u must be f32 or f64");
  a = good;
  a.B = Tensor();
  expect_error(a, "B is undefined");
}

// ---- SSD -------------------------------------------------------------------------------------------

struct SSDCase {
  int64_t B, L, H, P, N, G, chunk;
  bool h0;
};

SSDArgs make_ssd(const SSDCase& c, DType dt, uint64_t seed) {
  SSDArgs a;
  a.x = Tensor::randn({c.B, c.L, c.H, c.P}, seed + 1, 0, 1, dt);
  a.A = Tensor::rand({c.B, c.L, c.H}, seed + 2, -0.6, -0.01, dt);
  a.B = Tensor::randn({c.B, c.L, c.G, c.N}, seed + 3, 0, 0.5, dt);
  a.C = Tensor::randn({c.B, c.L, c.G, c.N}, seed + 4, 0, 0.5, dt);
  if (c.h0) a.initial_state = Tensor::randn({c.B, c.H, c.P, c.N}, seed + 5, 0, 1, dt);
  a.chunk_size = c.chunk;
  return a;
}

const SSDCase kSSDCases[] = {
    {2, 1, 2, 3, 4, 1, 8, true},       // one step
    {1, 7, 4, 5, 3, 2, 3, true},       // chunk 3 does not divide 7
    {2, 33, 4, 8, 16, 4, 8, false},    // G = H
    {1, 257, 3, 4, 9, 1, 64, true},    // partial last chunk
    {1, 2049, 2, 8, 8, 1, 256, true},  // long: 9 chunks, the last of length 1
    {1, 40, 2, 4, 5, 1, 100, true},    // chunk longer than the sequence
    {1, 100, 2, 32, 16, 1, 37, true},  // P, N multiples of 16 (vector GEMM paths), 37-step chunks
};

// Chunked f32 vs the sequential f32 reference: 1e-5 of max |ref| (the chunked form regroups sums
// and computes decays as exp of differences of cumulative sums).
TEST(SSD, ChunkedMatchesSequential) {
  for (const SSDCase& c : kSSDCases) {
    SSDArgs a = make_ssd(c, DType::f32, 40 + uint64_t(c.L));
    ScanOut fast = ssd_scan(a);
    ReferenceKernelsGuard ref(true);
    ScanOut want = ssd_scan(a);
    EXPECT_TRUE(AllClose(fast.y, want.y, 1e-5)) << "L=" << c.L << " chunk=" << c.chunk;
    EXPECT_TRUE(AllClose(fast.final_state, want.final_state, 1e-5)) << "L=" << c.L << " chunk=" << c.chunk;
  }
}

// The chunk size changes only rounding.
TEST(SSD, ChunkSizeInvariant) {
  SSDArgs a = make_ssd({2, 50, 4, 6, 7, 2, 1, true}, DType::f32, 3);
  ScanOut one = ssd_scan(a);
  for (int64_t q : {2, 7, 16, 50, 64}) {
    a.chunk_size = q;
    ScanOut o = ssd_scan(a);
    EXPECT_TRUE(AllClose(o.y, one.y, 1e-5)) << "chunk " << q;  // fp32 regrouping, as above
    EXPECT_TRUE(AllClose(o.final_state, one.final_state, 1e-5)) << "chunk " << q;
  }
}

TEST(SSD, InitialStateChains) {
  const SSDCase c{2, 45, 4, 3, 5, 2, 8, true};
  for (bool reference : {false, true}) {
    ReferenceKernelsGuard mode(reference);
    SSDArgs a = make_ssd(c, DType::f32, 17);
    ScanOut full = ssd_scan(a);
    const int64_t L1 = 21;
    SSDArgs p1 = a, p2 = a;
    using Triple = std::array<Tensor*, 3>;  // first part, second part, whole
    for (auto [t1, t2, src] :
         std::vector<Triple>{{&p1.x, &p2.x, &a.x}, {&p1.A, &p2.A, &a.A}, {&p1.B, &p2.B, &a.B}, {&p1.C, &p2.C, &a.C}}) {
      *t1 = src->narrow(1, 0, L1);
      *t2 = src->narrow(1, L1, c.L - L1);
    }
    ScanOut o1 = ssd_scan(p1);
    p2.initial_state = o1.final_state;
    ScanOut o2 = ssd_scan(p2);
    // 1e-5: the split moves chunk boundaries, which regroups the fp32 sums.
    EXPECT_TRUE(AllClose(o1.y, full.y.narrow(1, 0, L1), 1e-5));
    EXPECT_TRUE(AllClose(o2.y, full.y.narrow(1, L1, c.L - L1), 1e-5));
    EXPECT_TRUE(AllClose(o2.final_state, full.final_state, 1e-5));
  }
}

// f64 finite differences for x, A, B, C, initial_state through y and final_state together.
TEST(SSD, GradCheckF64) {
  for (const SSDCase& c :
       {SSDCase{2, 5, 2, 3, 2, 1, 2, true}, SSDCase{1, 9, 4, 2, 3, 2, 4, true}, SSDCase{1, 6, 2, 2, 3, 2, 8, false}}) {
    SSDArgs a = make_ssd(c, DType::f64, 70);
    std::vector<Tensor> inputs = {a.x, a.A, a.B, a.C, a.initial_state};
    for (Tensor& t : inputs)
      if (t.defined()) t.set_requires_grad(true);
    const int64_t chunk = c.chunk;
    auto f = [chunk](const std::vector<Tensor>& x) {
      return scan_objective(ssd_scan(SSDArgs{x[0], x[1], x[2], x[3], x[4], chunk}), 11);
    };
    // As for the selective scan: central differences, truncation ~1e-12 relative.
    auto r = autograd::grad_check(f, inputs, 1e-6, 1e-7, 1e-5);
    EXPECT_TRUE(r.ok) << r.message << " (L=" << c.L << ")";
  }
}

// The f32 backward against the f64 one, 1e-4 of each gradient's max (fp32 reverse recurrence).
TEST(SSD, BackwardF32MatchesF64) {
  SSDArgs a = make_ssd({2, 130, 4, 8, 16, 2, 32, true}, DType::f64, 90);
  SSDArgs af{
      a.x.to(DType::f32), a.A.to(DType::f32), a.B.to(DType::f32), a.C.to(DType::f32), a.initial_state.to(DType::f32),
      a.chunk_size};
  std::vector<Tensor*> in64 = {&a.x, &a.A, &a.B, &a.C, &a.initial_state};
  std::vector<Tensor*> in32 = {&af.x, &af.A, &af.B, &af.C, &af.initial_state};
  for (size_t i = 0; i < in64.size(); ++i) {
    in64[i]->set_requires_grad(true);
    in32[i]->set_requires_grad(true);
  }
  scan_objective(ssd_scan(a), 3).backward();
  scan_objective(ssd_scan(af), 3).backward();
  for (size_t i = 0; i < in64.size(); ++i)
    EXPECT_TRUE(AllClose(in32[i]->grad(), in64[i]->grad().to(DType::f32), 1e-4)) << "input " << i;
}

TEST(SSD, Errors) {
  const SSDArgs good = make_ssd({1, 4, 4, 2, 3, 2, 2, true}, DType::f32, 1);
  auto expect_error = [](SSDArgs a, const std::string& what) {
    try {
      ssd_scan(a);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[ssd_scan]"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  SSDArgs a = good;
  a.B = Tensor::randn({1, 4, 3, 3}, 2);
  a.C = Tensor::randn({1, 4, 3, 3}, 3);
  expect_error(a, "not divisible by 3");
  a = good;
  a.A = Tensor::randn({1, 4, 3}, 2);
  expect_error(a, "A has shape");
  a = good;
  a.C = Tensor::randn({1, 4, 2, 4}, 2);
  expect_error(a, "C has shape");
  a = good;
  a.initial_state = Tensor::randn({1, 4, 3, 2}, 2);
  expect_error(a, "initial_state has shape");
  a = good;
  a.chunk_size = 0;
  expect_error(a, "chunk_size must be >= 1");
  a = good;
  a.x = Tensor::randn({4, 4, 2}, 2);
  expect_error(a, "x must have 4 dims");
  a = good;
  a.B = a.B.to(DType::f64);
  expect_error(a, "B is f64");
}

}  // namespace
}  // namespace ssm
