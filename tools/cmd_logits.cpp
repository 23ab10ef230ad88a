// `ssm logits`: the model's logits for a batch of token ids (or a text), written as safetensors.
#include <chrono>
#include <cstdio>
#include <memory>

#include "command.h"
#include "ssm/autograd.h"
#include "ssm/generate.h"
#include "ssm/safetensors.h"

namespace {

using namespace ssm;

struct Opts {
  std::string model, input_ids, prompt, out, tokenizer, dtype = "f32", device = "cpu";
  int64_t last_n = 0;
};

int run(const Opts& o) {
  SSM_CHECK(!o.model.empty(), "logits", "-m/--model DIR is required");
  SSM_CHECK(!o.out.empty(), "logits", "--out FILE is required");
  SSM_CHECK(o.input_ids.empty() != o.prompt.empty(), "logits", "give exactly one of --input-ids FILE or -p TEXT");
  SSM_CHECK(o.last_n >= 0, "logits", "--last-n must be >= 0 (0 = every position)");
  const auto t0 = std::chrono::steady_clock::now();
  LoadOptions lo;
  lo.weight_dtype = parse_weight_dtype(o.dtype);
  lo.device = parse_device(o.device, true);
  auto model = Model::load(o.model, lo);

  std::vector<std::vector<int32_t>> rows;
  if (!o.input_ids.empty()) {
    rows = read_ids_file(o.input_ids);
  } else {
    SSM_CHECK(io::is_valid_utf8(o.prompt), "logits", "the prompt is not valid UTF-8 text");
    Tokenizer tok = load_tokenizer(o.model, o.tokenizer);
    rows.push_back(tok.encode(o.prompt));
    SSM_CHECK(!rows[0].empty(), "logits", "the prompt encodes to no tokens");
  }
  const int64_t B = int64_t(rows.size()), L = int64_t(rows[0].size());
  std::vector<int64_t> flat;  // [B, L]
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  Tensor ids = Tensor::from_vector(flat, {B, L});

  autograd::NoGradGuard no_grad;
  Tensor logits = model->forward(ids, nullptr, o.last_n).to(Device::cpu);  // [B, L', V] f32
  io::save_safetensors(o.out, {{"logits", logits}, {"input_ids", ids}});
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "wrote logits f32 %s (and input_ids) to %s in %.1f ms\n", shape_str(logits.shape()).c_str(),
               o.out.c_str(), ms);
  return 0;
}

tools::Command cmd{
    "logits", "Write the logits of token ids or a text to a safetensors file", [](CLI::App& app) {
      auto o = std::make_shared<Opts>();
      app.add_option("-m,--model", o->model, "model directory");
      app.add_option("--input-ids", o->input_ids, "safetensors with input_ids int64 [B, L]");
      app.add_option("-p,--prompt", o->prompt, "text instead of ids (needs a tokenizer)");
      app.add_option("-o,--out", o->out, "output file: logits f32 [B, L, V] and input_ids int64 [B, L]");
      app.add_option("--last-n", o->last_n, "only the last N positions (0 = all)")->default_str("0");
      app.add_option("--tokenizer", o->tokenizer, "tokenizer.json (default: the one in the model directory)");
      app.add_option("--dtype", o->dtype, "weight storage: f32, bf16 or f16")->default_str("f32");
      app.add_option("--device", o->device, "cpu, or cuda (Mamba-1/2/3, Falcon-Mamba; activations in --dtype)")
          ->default_str("cpu");
      app.footer(
          "Examples:\n"
          "  ssm logits -m mamba-130m --input-ids ids.safetensors --out logits.safetensors\n"
          "  ssm logits -m mamba-130m -p \"Hello world\" --out logits.safetensors --last-n 1\n"
          "  python3 -c \"from safetensors.numpy import load_file; "
          "print(load_file('logits.safetensors')['logits'].shape)\"\n");
      return [o] { return run(*o); };
    }};

}  // namespace
