// selective_scan and ssd_scan against mamba_ssm's reference outputs and gradients
// (../shared/fixtures/ops, see its README). The fixtures use mamba_ssm's channel-major layouts
// (u, delta, z [B, D, L]; B, C [B, N, L] or [B, G, N, L]); they are permuted to our token-major ones.
// Tolerance: fp32 relative error 1e-4 of the largest reference magnitude (the reference ran in fp32
// with a different summation order and libm exp).
#include <string>
#include <vector>

#include "ssm/ops.h"
#include "ssm/safetensors.h"
#include "testing.h"

namespace ssm {
namespace {

using testing::AllClose;

const char* kScanFile = "fixtures/ops/selective_scan_golden.safetensors";
const char* kSSDFile = "fixtures/ops/ssd_golden.safetensors";
constexpr double kTol = 1e-4;

// [B, D, L] -> [B, L, D]
Tensor token_major(const Tensor& t) { return t.permute({0, 2, 1}).contiguous(); }
// B/C [B, N, L] -> [B, L, 1, N], or [B, G, N, L] -> [B, L, G, N]
Tensor bc_token_major(const Tensor& t) {
  if (t.dim() == 3) return t.permute({0, 2, 1}).contiguous().unsqueeze(2);
  return t.permute({0, 3, 1, 2}).contiguous();
}
// Our [B, L, 1, N] gradient back to the fixture's [B, N, L].
Tensor bc_channel_major(const Tensor& t) { return t.squeeze(2).permute({0, 2, 1}).contiguous(); }

class ScanParity : public ::testing::TestWithParam<bool> {};  // param: reference kernels

TEST_P(ScanParity, SelectiveScanWithGradients) {
  SSM_REQUIRE_SHARED(kScanFile);
  ReferenceKernelsGuard mode(GetParam());
  auto st = io::SafeTensors::open(testing::shared_path(kScanFile));
  SelectiveScanArgs a;
  a.u = token_major(st.get("u"));
  a.delta = token_major(st.get("delta"));
  a.A = st.get("A").contiguous();
  a.B = bc_token_major(st.get("B"));
  a.C = bc_token_major(st.get("C"));
  a.D = st.get("D").contiguous();
  a.z = token_major(st.get("z"));
  a.delta_bias = st.get("delta_bias").contiguous();
  a.delta_softplus = true;
  for (Tensor* t : {&a.u, &a.delta, &a.A, &a.B, &a.C, &a.D, &a.z, &a.delta_bias}) t->set_requires_grad(true);
  ScanOut o = selective_scan(a);
  EXPECT_TRUE(AllClose(o.y, token_major(st.get("y")), kTol)) << "y";
  EXPECT_TRUE(AllClose(o.final_state, st.get("last_state"), kTol)) << "last_state";
  o.y.backward(token_major(st.get("dy")));
  EXPECT_TRUE(AllClose(token_major(a.u.grad()), st.get("grad.u"), kTol)) << "grad.u";
  EXPECT_TRUE(AllClose(token_major(a.delta.grad()), st.get("grad.delta"), kTol)) << "grad.delta";
  EXPECT_TRUE(AllClose(token_major(a.z.grad()), st.get("grad.z"), kTol)) << "grad.z";
  EXPECT_TRUE(AllClose(a.A.grad(), st.get("grad.A"), kTol)) << "grad.A";
  EXPECT_TRUE(AllClose(bc_channel_major(a.B.grad()), st.get("grad.B"), kTol)) << "grad.B";
  EXPECT_TRUE(AllClose(bc_channel_major(a.C.grad()), st.get("grad.C"), kTol)) << "grad.C";
  EXPECT_TRUE(AllClose(a.D.grad(), st.get("grad.D"), kTol)) << "grad.D";
  EXPECT_TRUE(AllClose(a.delta_bias.grad(), st.get("grad.delta_bias"), kTol)) << "grad.delta_bias";
}

TEST_P(ScanParity, SelectiveScanGrouped) {
  SSM_REQUIRE_SHARED(kScanFile);
  ReferenceKernelsGuard mode(GetParam());
  auto st = io::SafeTensors::open(testing::shared_path(kScanFile));
  SelectiveScanArgs a;
  a.u = token_major(st.get("grouped.u"));
  a.delta = token_major(st.get("grouped.delta"));
  a.A = st.get("grouped.A").contiguous();
  a.B = bc_token_major(st.get("grouped.B"));
  a.C = bc_token_major(st.get("grouped.C"));
  a.D = st.get("grouped.D").contiguous();
  ASSERT_EQ(a.B.size(2), 3);
  ScanOut o = selective_scan(a);
  EXPECT_TRUE(AllClose(o.y, token_major(st.get("grouped.y")), kTol)) << "grouped.y";
}

TEST_P(ScanParity, SSD) {
  SSM_REQUIRE_SHARED(kSSDFile);
  ReferenceKernelsGuard mode(GetParam());
  auto st = io::SafeTensors::open(testing::shared_path(kSSDFile));
  // The fixture's B, C are per head ([B, L, H, N]): G = H. Its block_len is 16; other chunk sizes
  // must give the same result.
  for (int64_t chunk : {16, 5, 64}) {
    SSDArgs a{st.get("X").contiguous(),
              st.get("A").contiguous(),
              st.get("B").contiguous(),
              st.get("C").contiguous(),
              Tensor(),
              chunk};
    ScanOut o = ssd_scan(a);
    EXPECT_TRUE(AllClose(o.y, st.get("Y"), kTol)) << "Y, chunk " << chunk;
    EXPECT_TRUE(AllClose(o.final_state, st.get("final_state"), kTol)) << "final_state, chunk " << chunk;
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, ScanParity, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "reference" : "fast"; });

}  // namespace
}  // namespace ssm
