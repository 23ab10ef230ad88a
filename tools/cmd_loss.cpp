// ssm loss: the language-model loss of given ids and (optionally) the gradient of every parameter.
#include <cstdio>

#include "command.h"
#include "ssm/generate.h"
#include "ssm/model.h"
#include "ssm/safetensors.h"
#include "ssm/train.h"

namespace {
struct Opts {
  std::string model, input_ids, grads, device = "cpu";
};

ssm::tools::Command cmd{
    "loss", "Loss of input ids (labels = ids) and optionally all parameter gradients", [](CLI::App& app) {
      auto o = std::make_shared<Opts>();
      app.add_option("-m,--model", o->model, "model directory")->required();
      app.add_option("--input-ids", o->input_ids, "safetensors file with tensor input_ids, int64 [B, L]")->required();
      app.add_option("--grads", o->grads, "write tensor 'loss' and one 'grad.<parameter>' per parameter here");
      app.add_option("--device", o->device, "cpu, or cuda (Mamba-1/Falcon-Mamba, f32)")->default_str("cpu");
      app.footer(
          "Examples:\n"
          "  ssm loss -m models/mamba-130m-hf --input-ids ids.safetensors\n"
          "  ssm loss -m models/mamba-130m-hf --input-ids ids.safetensors --grads grads.safetensors\n");
      return [o]() {
        ssm::LoadOptions lo;
        lo.device = ssm::parse_device(o->device, true);
        auto model = ssm::Model::load(o->model, lo);
        auto in = ssm::io::SafeTensors::open(o->input_ids);
        SSM_CHECK(in.has("input_ids"), "loss", o->input_ids + " has no tensor 'input_ids'");
        auto params = model->named_parameters();
        if (!o->grads.empty())
          for (auto& [n, p] : params) p.set_requires_grad(true);
        ssm::Tensor loss = ssm::train::lm_loss(*model, in.get("input_ids"));
        std::printf("loss = %.6f\n", loss.item());
        if (!o->grads.empty()) {
          loss.backward();
          std::vector<std::pair<std::string, ssm::Tensor>> out{{"loss", loss.detach().view({1}).to(ssm::Device::cpu)}};
          for (auto& [n, p] : params)
            out.push_back(
                {"grad." + n, p.grad().defined() ? p.grad().to(ssm::Device::cpu) : ssm::Tensor::zeros(p.shape())});
          ssm::io::save_safetensors(o->grads, out);
          std::printf("wrote %zu gradients to %s\n", params.size(), o->grads.c_str());
        }
        return 0;
      };
    }};
}  // namespace
