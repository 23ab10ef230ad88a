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
#include <nlohmann/json.hpp>

#include "ssm/json_config.h"

#include "command.h"
#include "ssm/autograd.h"
#include "ssm/generate.h"
#include "ssm/safetensors.h"

namespace {

using namespace ssm;
namespace fs = std::filesystem;
using nlohmann::json;

struct Opts {
  std::string model, out, dtype = "f32", format = "hf";
  bool no_verify = false;
};

json mamba_ssm_config(const ModelConfig& c) {
  SSM_CHECK(c.arch != Arch::falcon_mamba, "convert", "mamba_ssm has no Falcon-Mamba layer: use --format hf");
  SSM_CHECK(c.selective, "convert", "mamba_ssm has no non-selective (LTI) Mamba layer: use --format hf");
  SSM_CHECK(c.d_inner == c.expand * c.d_model, "convert", "d_inner != expand * d_model has no mamba_ssm form");
  SSM_CHECK(c.norm_eps == 1e-5, "convert", "mamba_ssm configs fix the norm epsilon at 1e-5; this model uses " +
                                               std::to_string(c.norm_eps) + " (use --format hf)");
  // The padding multiple that turns the real vocabulary into the embedding's rows.
  int64_t mult = c.vocab_size;
  for (int64_t m = 1; m <= c.vocab_size; m *= 2)
    if ((c.vocab_size_real + m - 1) / m * m == c.vocab_size) {
      mult = m;
      break;
    }
  json s;
  s["layer"] = c.arch == Arch::mamba1 ? "Mamba1" : c.arch == Arch::mamba2 ? "Mamba2" : "Mamba3";
  s["d_state"] = c.d_state;
  s["expand"] = c.expand;
  s["bias"] = c.proj_bias;
  s["dt_min"] = c.dt_min;
  s["dt_max"] = c.dt_max;
  s["dt_init_floor"] = c.dt_init_floor;
  if (c.arch != Arch::mamba3) {
    s["d_conv"] = c.d_conv;
    s["conv_bias"] = c.conv_bias;
  }
  if (c.arch == Arch::mamba1) {
    s["dt_rank"] = c.dt_rank;
  } else {
    s["headdim"] = c.headdim;
    s["ngroups"] = c.ngroups;
    s["chunk_size"] = c.chunk_size;
    s["D_has_hdim"] = c.d_has_hdim;
    s["norm_before_gate"] = c.norm_before_gate;
    s["dt_limit"] = {io::json_number(c.dt_limit_lo), io::json_number(c.dt_limit_hi)};
  }
  if (c.arch == Arch::mamba3) {
    s["A_floor"] = c.a_floor;
    s["is_mimo"] = c.is_mimo;
    s["mimo_rank"] = c.mimo_rank;
    s["rope_fraction"] = c.rope_fraction;
  }
  json j;
  j["d_model"] = c.d_model;
  j["d_intermediate"] = 0;
  j["n_layer"] = c.n_layer;
  j["vocab_size"] = c.vocab_size_real;
  j["ssm_cfg"] = s;
  j["attn_layer_idx"] = json::array();
  j["attn_cfg"] = json::object();
  j["rms_norm"] = c.rms_norm;
  j["residual_in_fp32"] = c.residual_in_fp32;
  j["fused_add_norm"] = true;
  j["pad_vocab_size_multiple"] = mult;
  j["tie_embeddings"] = c.tie_embeddings;
  return j;
}

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
  std::string cfg_text = o.format == "hf" ? c.to_hf_json(lo.weight_dtype) : io::dump_json(mamba_ssm_config(c)) + "\n";

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
  std::fprintf(stderr, "convert: wrote %zu tensors (%.2f MiB, %s matrices) as %s to %s (+%d tokenizer files) in %.0f ms\n",
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
                     app.add_option("--dtype", o->dtype, "storage of the large matrices: f32, bf16 or f16 (A, D, "
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
