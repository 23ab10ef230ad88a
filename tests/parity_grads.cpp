// Gradient parity with Hugging Face transformers (f64 reference): the LM loss and the gradient of
// every parameter, for Mamba-1, Mamba-2 and Falcon-Mamba.
#include "ssm/model.h"
#include "ssm/safetensors.h"
#include "ssm/train.h"
#include "testing.h"

using namespace ssm;

namespace {
class GradParity : public ::testing::TestWithParam<const char*> {};

TEST_P(GradParity, LossAndAllGradients) {
  std::string rel = std::string("fixtures/") + GetParam();
  SSM_REQUIRE_SHARED(rel + "/golden.safetensors");
  auto model = Model::load(ssm::testing::shared_path(rel));
  auto golden = io::SafeTensors::open(ssm::testing::shared_path(rel + "/golden.safetensors"));
  auto params = model->named_parameters();
  for (auto& [n, p] : params) p.set_requires_grad(true);
  Tensor loss = train::lm_loss(*model, golden.get("input_ids"));
  // f32 compute against an f64 reference: relative 1e-4 of each tensor's largest magnitude.
  double ref = golden.get("loss").item();
  EXPECT_NEAR(loss.item(), ref, 1e-4 * std::fabs(ref));
  loss.backward();
  int checked = 0;
  for (auto& [n, p] : params) {
    ASSERT_TRUE(golden.has("grad." + n)) << "no golden gradient for " << n;
    ASSERT_TRUE(p.grad().defined()) << "no gradient reached " << n;
    EXPECT_TRUE(ssm::testing::AllClose(p.grad(), golden.get("grad." + n), 1e-4)) << n;
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GradParity,
                         ::testing::Values("hf-mamba1-tiny", "hf-mamba2-tiny", "hf-falcon-mamba-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });
}  // namespace
