// `ssm info`: what a model directory holds (architecture, sizes, dtypes, memory of weights and state).
#include <cinttypes>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "command.h"
#include "ssm/generate.h"

namespace {

using namespace ssm;

struct Opts {
  std::string model, tokenizer, dtype = "f32";
  bool json = false;
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

int run(const Opts& o) {
  SSM_CHECK(!o.model.empty(), "info", "-m/--model DIR is required");
  LoadOptions lo;
  lo.weight_dtype = parse_weight_dtype(o.dtype);
  auto model = Model::load(o.model, lo);
  const ModelConfig& c = model->config();
  std::map<std::string, std::pair<int64_t, size_t>> by_dtype;  // dtype -> (tensors, bytes)
  for (const auto& [name, t] : model->named_parameters()) {
    auto& e = by_dtype[dtype_name(t.dtype())];
    e.first += 1;
    e.second += t.nbytes();
  }
  std::unique_ptr<Tokenizer> tok;
  if (tokenizer_available(o.model, o.tokenizer))
    tok = std::make_unique<Tokenizer>(load_tokenizer(o.model, o.tokenizer));
  const int64_t params = model->num_parameters();
  const size_t wbytes = model->weight_bytes(), sbytes = model->state_bytes_per_sequence();

  if (o.json) {
    nlohmann::json j;
    j["model"] = o.model;
    j["arch"] = arch_name(c.arch);
    j["format"] = c.hf_format ? "hf" : "mamba_ssm";
    j["d_model"] = c.d_model;
    j["n_layer"] = c.n_layer;
    j["d_inner"] = c.d_inner;
    j["d_state"] = c.d_state;
    j["vocab_size"] = c.vocab_size;
    j["vocab_size_real"] = c.vocab_size_real;
    j["n_params"] = params;
    j["weight_bytes"] = wbytes;
    j["state_bytes_per_sequence"] = sbytes;
    for (const auto& [d, e] : by_dtype) j["dtypes"][d] = {{"tensors", e.first}, {"bytes", e.second}};
    if (tok) j["tokenizer"] = {{"kind", tok->kind()}, {"vocab_size", tok->vocab_size()}, {"eos_id", tok->eos_id()}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model:           %s\n", o.model.c_str());
  std::printf("architecture:    %s (%s checkpoint)\n", arch_name(c.arch), c.hf_format ? "Hugging Face" : "mamba_ssm");
  std::printf("config:          %s\n", c.summary().c_str());
  std::printf("vocabulary:      %" PRId64 " rows, %" PRId64 " real tokens\n", c.vocab_size, c.vocab_size_real);
  std::printf("parameters:      %" PRId64 " (%.2f M)\n", params, double(params) / 1e6);
  std::printf("weights:         %zu bytes (%s)\n", wbytes, human_bytes(double(wbytes)).c_str());
  for (const auto& [d, e] : by_dtype)
    std::printf("  %-5s          %" PRId64 " tensors, %s\n", d.c_str(), e.first, human_bytes(double(e.second)).c_str());
  std::printf("state/sequence:  %zu bytes (%s), independent of the sequence length\n", sbytes,
              human_bytes(double(sbytes)).c_str());
  if (tok)
    std::printf("tokenizer:       %s, %d tokens, eos id %d\n", tok->kind().c_str(), tok->vocab_size(), tok->eos_id());
  else
    std::printf("tokenizer:       none (no tokenizer.json; pass --tokenizer FILE to use text)\n");
  return 0;
}

tools::Command cmd{
    "info", "Describe a model: architecture, parameters, dtypes, weight and state memory", [](CLI::App& app) {
      auto o = std::make_shared<Opts>();
      app.add_option("-m,--model", o->model, "model directory");
      app.add_option("--tokenizer", o->tokenizer, "tokenizer.json (default: the model directory's)");
      app.add_option("--dtype", o->dtype, "weight storage to load as: f32, bf16 or f16")->default_str("f32");
      app.add_flag("--json", o->json, "print one JSON object");
      app.footer(
          "Examples:\n"
          "  ssm info -m mamba-130m\n"
          "  ssm info -m mamba-130m --dtype bf16     # memory with bf16 matrices\n"
          "  ssm info -m mamba-130m --json\n");
      return [o] { return run(*o); };
    }};

}  // namespace
