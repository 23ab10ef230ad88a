// `ssm convert`: rewrite a model directory (HF safetensors, mamba_ssm pytorch_model.bin or
// safetensors, sharded or not) as config.json + one model.safetensors, in Hugging Face form
// (default) or mamba_ssm form, optionally with bf16/f16 matrices. The copy is loaded back and its
// logits compared with the source's.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "ssm/json_config.h"

#include "command.h"
#include "ssm/autograd.h"
#include "ssm/generate.h"
#include "ssm/safetensors.h"

namespace {

using namespace ssm;
namespace fs = std::filesystem;

struct Opts {
  std::string model, out, dtype = "f32", format = "hf";
  bool no_verify = false;
};

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  SSM_CHECK(f.good(), "convert", "cannot write '" + p.string() + "'");
}

// Max |a - b| of the two models' logits on a fixed token sequence.
double compare_logits(const Model& a, const Model& b) {
  autograd::NoGradGuard no_grad;
  const int64_t V = a.config().vocab_size_real, L = 17;
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < L; ++i) ids.push_back((i * 7919 + 13) % V);
  Tensor x = Tensor::from_vector(ids, {1, L});
  Tensor la = a.forward(x), lb = b.forward(x);
  SSM_CHECK(la.shape() == lb.shape(), "convert", "the copy's logits have another shape");
  auto va = la.to_vector_f64(), vb = lb.to_vector_f64();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(va[i] - vb[i]));
  return m;
}

int run(const Opts& o) {
  SSM_CHECK(!o.model.empty() && !o.out.empty(), "convert", "both -m DIR and -o OUTDIR are required");
  SSM_CHECK(o.format == "hf" || o.format == "mamba_ssm", "convert",
            "--format must be hf or mamba_ssm, got '" + o.format + "'");
  const auto t0 = std::chrono::steady_clock::now();
  LoadOptions lo;
  lo.weight_dtype = parse_weight_dtype(o.dtype);
  auto model = Model::load(o.model, lo);
  const ModelConfig& c = model->config();
  std::error_code ec;
  if (fs::exists(o.out, ec))
    SSM_CHECK(!fs::equivalent(o.model, o.out, ec), "convert", "-o must differ from the source directory");
  if (o.format == "hf" && c.arch == Arch::mamba2 && c.ngroups > 1)
    std::fprintf(stderr,
                 "note: n_groups = %lld: ssm reads this copy with mamba_ssm's per-group gated norm; Hugging Face "
                 "transformers' pure-PyTorch Mamba-2 path normalises over all groups at once\n",
                 (long long)c.ngroups);
  std::string cfg_text = o.format == "hf" ? c.to_hf_json(lo.weight_dtype) : c.to_mamba_ssm_json();

  const std::string emb_src = c.hf_format ? "backbone.embeddings.weight" : "backbone.embedding.weight";
  const std::string emb_dst = o.format == "hf" ? "backbone.embeddings.weight" : "backbone.embedding.weight";
  std::vector<std::pair<std::string, Tensor>> tensors;
  size_t bytes = 0;
  for (auto [name, t] : model->named_parameters()) {
    if (name == emb_src) name = emb_dst;
    bytes += t.nbytes();
    tensors.emplace_back(name, t);
  }
  fs::create_directories(o.out, ec);
  SSM_CHECK(fs::is_directory(o.out), "convert", "cannot create directory '" + o.out + "'");
  io::save_safetensors((fs::path(o.out) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_text(fs::path(o.out) / "config.json", cfg_text);
  int copied = 0;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})
    if (fs::exists(fs::path(o.model) / f, ec)) {
      fs::copy_file(fs::path(o.model) / f, fs::path(o.out) / f, fs::copy_options::overwrite_existing, ec);
      SSM_CHECK(!ec, "convert", std::string("cannot copy ") + f + ": " + ec.message());
      ++copied;
    }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr,
               "convert: wrote %zu tensors (%.2f MiB, %s matrices) as %s to %s (+%d tokenizer files) in %.0f ms\n",
               tensors.size(), double(bytes) / 1048576.0, dtype_name(lo.weight_dtype), o.format.c_str(), o.out.c_str(),
               copied, ms);
  if (!o.no_verify) {
    auto copy = Model::load(o.out, lo);
    double d = compare_logits(*model, *copy);
    SSM_CHECK(d == 0, "convert", "the copy's logits differ from the source's by up to " + std::to_string(d));
    std::fprintf(stderr, "convert: verified: the copy loads back and gives identical logits\n");
  }
  return 0;
}

tools::Command cmd{"convert", "Rewrite a model as config.json + model.safetensors (HF or mamba_ssm form)",
                   [](CLI::App& app) {
                     auto o = std::make_shared<Opts>();
                     app.add_option("-m,--model", o->model, "source model directory");
                     app.add_option("-o,--out", o->out, "output directory (created)");
                     app.add_option("--dtype", o->dtype,
                                    "storage of the large matrices: f32, bf16 or f16 (A, D, "
                                    "norms, conv, dt stay f32)")
                         ->default_str("f32");
                     app.add_option("--format", o->format, "hf (Hugging Face names) or mamba_ssm")->default_str("hf");
                     app.add_flag("--no-verify", o->no_verify, "skip loading the copy back and comparing logits");
                     app.footer(
                         "Examples:\n"
                         "  ssm convert -m state-spaces/mamba-130m -o mamba-130m-hf        # pytorch_model.bin -> HF\n"
                         "  ssm convert -m mamba-130m-hf -o mamba-130m-bf16 --dtype bf16\n"
                         "  ssm convert -m mamba-130m-hf -o mamba-130m-ssm --format mamba_ssm\n");
                     return [o] { return run(*o); };
                   }};

}  // namespace
