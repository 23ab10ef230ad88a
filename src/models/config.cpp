// config.json of Hugging Face (model_type mamba / mamba2 / falcon_mamba) and mamba_ssm
// (d_model + ssm_cfg.layer) checkpoints → ModelConfig.
#include <cmath>
#include <sstream>

#include "ssm/json_config.h"
#include "ssm/model.h"

namespace ssm {

using io::get_bool;
using io::get_float;
using io::get_int;
using io::has_key;
using io::require_int;

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::mamba1: return "mamba";
    case Arch::mamba2: return "mamba2";
    case Arch::mamba3: return "mamba3";
    case Arch::falcon_mamba: return "falcon_mamba";
  }
  return "?";
}

namespace {
int64_t pad_to(int64_t v, int64_t m) { return m > 1 && v % m ? v + m - v % m : v; }

void finish(ModelConfig& c, const std::string& where) {
  SSM_CHECK(c.d_model > 0 && c.n_layer > 0 && c.vocab_size > 0, "config",
            where + ": d_model, n_layer and vocab_size must be positive");
  SSM_CHECK(c.d_state > 0 && c.d_state <= 256, "config", where + ": d_state must be in [1, 256]");
  if (c.d_inner == 0) c.d_inner = c.expand * c.d_model;
  if (c.arch == Arch::mamba1 || c.arch == Arch::falcon_mamba) {
    if (c.dt_rank <= 0) c.dt_rank = (c.d_model + 15) / 16;
    SSM_CHECK(c.d_conv >= 2 && c.d_conv <= 8, "config", where + ": d_conv must be in [2, 8]");
  } else {
    SSM_CHECK(
        c.headdim > 0 && c.d_inner % c.headdim == 0, "config",
        where + ": d_inner " + std::to_string(c.d_inner) + " is not divisible by headdim " + std::to_string(c.headdim));
    c.nheads = c.d_inner / c.headdim;
    SSM_CHECK(
        c.ngroups > 0 && c.nheads % c.ngroups == 0, "config",
        where + ": nheads " + std::to_string(c.nheads) + " is not divisible by ngroups " + std::to_string(c.ngroups));
    SSM_CHECK(c.chunk_size > 0, "config", where + ": chunk_size must be positive");
  }
  SSM_CHECK(c.selective || c.arch == Arch::mamba1, "config",
            where + ": \"selective\": false (the LTI ablation) exists only for Mamba-1 (model_type mamba)");
  if (c.vocab_size_real <= 0 || c.vocab_size_real > c.vocab_size) c.vocab_size_real = c.vocab_size;
}

ModelConfig from_hf(const nlohmann::json& j, const std::string& model_type, const std::string& where) {
  ModelConfig c;
  c.hf_format = true;
  if (model_type == "mamba")
    c.arch = Arch::mamba1;
  else if (model_type == "falcon_mamba")
    c.arch = Arch::falcon_mamba;
  else if (model_type == "mamba2")
    c.arch = Arch::mamba2;
  else
    fail("config", where + ": unsupported model_type '" + model_type +
                       "' (supported: mamba, mamba2, falcon_mamba, and mamba_ssm configs)");
  c.d_model = require_int(j, "hidden_size", where);
  c.n_layer = require_int(j, "num_hidden_layers", where);
  c.vocab_size = require_int(j, "vocab_size", where);
  c.d_state = get_int(j, "state_size", c.arch == Arch::mamba2 ? 128 : 16, where);
  c.d_conv = get_int(j, "conv_kernel", 4, where);
  c.expand = get_int(j, "expand", 2, where);
  c.d_inner = get_int(j, "intermediate_size", 0, where);
  c.norm_eps = get_float(j, "layer_norm_epsilon", 1e-5, where);
  c.residual_in_fp32 = get_bool(j, "residual_in_fp32", true, where);
  c.tie_embeddings = get_bool(j, "tie_word_embeddings", true, where);
  c.conv_bias = get_bool(j, "use_conv_bias", true, where);
  c.proj_bias = get_bool(j, "use_bias", false, where);
  c.dt_min = get_float(j, "time_step_min", 0.001, where);
  c.dt_max = get_float(j, "time_step_max", 0.1, where);
  c.dt_init_floor = get_float(j, "time_step_floor", 1e-4, where);
  c.bos_id = get_int(j, "bos_token_id", 0, where);
  c.eos_id = get_int(j, "eos_token_id", 0, where);
  c.pad_id = get_int(j, "pad_token_id", 0, where);
  if (c.arch == Arch::mamba2) {
    c.headdim = get_int(j, "head_dim", 64, where);
    c.ngroups = get_int(j, "n_groups", 1, where);
    c.chunk_size = get_int(j, "chunk_size", 256, where);
    c.rms_norm = get_bool(j, "rms_norm", true, where);
    c.norm_before_gate = get_bool(j, "norm_before_gate", false, where);
    c.d_inner = c.expand * c.d_model;
    int64_t nh = get_int(j, "num_heads", 0, where);
    if (has_key(j, "time_step_limit")) {
      const auto& l = j.at("time_step_limit");
      SSM_CHECK(l.is_array() && l.size() == 2, "config", where + ": time_step_limit must be a list of two numbers");
      c.dt_limit_lo = io::json_float(l[0], where, "time_step_limit[0]");
      c.dt_limit_hi = io::json_float(l[1], where, "time_step_limit[1]");
    }
    finish(c, where);
    SSM_CHECK(
        nh == 0 || nh == c.nheads, "config",
        where + ": num_heads " + std::to_string(nh) + " != hidden_size*expand/head_dim = " + std::to_string(c.nheads));
    return c;
  }
  c.dt_rank = get_int(j, "time_step_rank", 0, where);
  c.selective = get_bool(j, "selective", true, where);
  if (c.arch == Arch::falcon_mamba) c.mixer_rms_eps = get_float(j, "mixer_rms_eps", 1e-6, where);
  finish(c, where);
  return c;
}

ModelConfig from_mamba_ssm(const nlohmann::json& j, const std::string& where) {
  ModelConfig c;
  c.hf_format = false;
  c.d_model = require_int(j, "d_model", where);
  c.n_layer = require_int(j, "n_layer", where);
  int64_t vocab = require_int(j, "vocab_size", where);
  c.vocab_size_real = vocab;
  c.vocab_size = pad_to(vocab, get_int(j, "pad_vocab_size_multiple", 8, where));
  c.rms_norm = get_bool(j, "rms_norm", true, where);
  c.residual_in_fp32 = get_bool(j, "residual_in_fp32", true, where);
  c.tie_embeddings = get_bool(j, "tie_embeddings", true, where);
  SSM_CHECK(get_int(j, "d_intermediate", 0, where) == 0, "config",
            where + ": d_intermediate > 0 (gated MLP blocks) is not supported yet");
  if (has_key(j, "attn_layer_idx"))
    SSM_CHECK(j.at("attn_layer_idx").is_array() && j.at("attn_layer_idx").empty(), "config",
              where + ": attention layers (attn_layer_idx) are not supported yet");
  nlohmann::json s = has_key(j, "ssm_cfg") ? j.at("ssm_cfg") : nlohmann::json::object();
  SSM_CHECK(s.is_object(), "config", where + ": ssm_cfg must be an object");
  std::string layer = io::get_string(s, "layer", "Mamba1", where);
  if (layer == "Mamba1")
    c.arch = Arch::mamba1;
  else if (layer == "Mamba2")
    c.arch = Arch::mamba2;
  else if (layer == "Mamba3")
    c.arch = Arch::mamba3;
  else
    fail("config", where + ": unsupported ssm_cfg.layer '" + layer + "' (Mamba1, Mamba2, Mamba3)");
  bool m1 = c.arch == Arch::mamba1;
  c.d_state = get_int(s, "d_state", m1 ? 16 : c.arch == Arch::mamba2 ? 128 : 128, where);
  c.d_conv = get_int(s, "d_conv", 4, where);
  c.expand = get_int(s, "expand", 2, where);
  c.conv_bias = get_bool(s, "conv_bias", true, where);
  c.proj_bias = get_bool(s, "bias", false, where);
  c.dt_min = get_float(s, "dt_min", 0.001, where);
  c.dt_max = get_float(s, "dt_max", 0.1, where);
  c.dt_init_floor = get_float(s, "dt_init_floor", 1e-4, where);
  if (m1) {
    if (has_key(s, "dt_rank") && !s.at("dt_rank").is_string()) c.dt_rank = get_int(s, "dt_rank", 0, where);
  } else {
    c.headdim = get_int(s, "headdim", 64, where);
    c.ngroups = get_int(s, "ngroups", 1, where);
    c.chunk_size = get_int(s, "chunk_size", c.arch == Arch::mamba2 ? 256 : 64, where);
    c.d_has_hdim = get_bool(s, "D_has_hdim", false, where);
    c.norm_before_gate = get_bool(s, "norm_before_gate", false, where);
    c.gated_norm = get_bool(s, "rmsnorm", true, where);
    if (has_key(s, "d_ssm")) SSM_CHECK(false, "config", where + ": ssm_cfg.d_ssm is not supported yet");
    if (has_key(s, "dt_limit")) {
      const auto& l = s.at("dt_limit");
      SSM_CHECK(l.is_array() && l.size() == 2, "config", where + ": dt_limit must be a list of two numbers");
      c.dt_limit_lo = io::json_float(l[0], where, "dt_limit[0]");
      c.dt_limit_hi = io::json_float(l[1], where, "dt_limit[1]");
    }
    if (c.arch == Arch::mamba3) {
      c.a_floor = get_float(s, "A_floor", 1e-4, where);
      c.is_mimo = get_bool(s, "is_mimo", false, where);
      c.mimo_rank = get_int(s, "mimo_rank", 1, where);
      c.rope_fraction = get_float(s, "rope_fraction", 0.5, where);
      SSM_CHECK(!c.is_mimo, "config", where + ": Mamba-3 MIMO is not supported yet (SISO only)");
      SSM_CHECK(!get_bool(s, "is_outproj_norm", false, where), "config",
                where + ": Mamba-3 with is_outproj_norm is not supported yet");
    }
  }
  finish(c, where);
  return c;
}
}  // namespace

namespace {
ModelConfig from_json(const nlohmann::json& j, const std::string& path) {
  SSM_CHECK(j.is_object(), "config", path + ": expected a JSON object");
  if (has_key(j, "model_type")) return from_hf(j, io::get_string(j, "model_type", "", path), path);
  if (has_key(j, "d_model")) return from_mamba_ssm(j, path);
  fail("config", path + ": neither a Hugging Face config (model_type) nor a mamba_ssm config (d_model)");
}
}  // namespace

ModelConfig ModelConfig::from_json_file(const std::string& path) { return from_json(io::load_json_file(path), path); }

ModelConfig ModelConfig::from_json_text(const std::string& text, const std::string& where) {
  return from_json(io::parse_json_text(text, where), where);
}

namespace {
const char* torch_dtype(DType d) { return d == DType::bf16 ? "bfloat16" : d == DType::f16 ? "float16" : "float32"; }

nlohmann::json hf_config(const ModelConfig& c, DType wd) {
  SSM_CHECK(c.arch != Arch::mamba3, "config", "Hugging Face transformers has no Mamba-3 model: use --format mamba_ssm");
  SSM_CHECK(c.rms_norm, "config",
            "the Hugging Face Mamba models only have RMSNorm blocks; this model uses LayerNorm (--format mamba_ssm)");
  SSM_CHECK(!c.d_has_hdim, "config", "D per channel (D_has_hdim) has no Hugging Face form: use --format mamba_ssm");
  nlohmann::json j;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.d_model;
  j["num_hidden_layers"] = c.n_layer;
  j["state_size"] = c.d_state;
  j["conv_kernel"] = c.d_conv;
  j["expand"] = c.expand;
  j["use_bias"] = c.proj_bias;
  j["use_conv_bias"] = c.conv_bias;
  j["layer_norm_epsilon"] = c.norm_eps;
  j["residual_in_fp32"] = c.residual_in_fp32;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["bos_token_id"] = c.bos_id;
  j["eos_token_id"] = c.eos_id;
  j["pad_token_id"] = c.pad_id;
  j["time_step_min"] = c.dt_min;
  j["time_step_max"] = c.dt_max;
  j["time_step_floor"] = c.dt_init_floor;
  j["hidden_act"] = "silu";
  j["torch_dtype"] = torch_dtype(wd);
  if (c.arch == Arch::mamba2) {
    j["architectures"] = {"Mamba2ForCausalLM"};
    j["model_type"] = "mamba2";
    j["head_dim"] = c.headdim;
    j["num_heads"] = c.nheads;
    j["n_groups"] = c.ngroups;
    j["chunk_size"] = c.chunk_size;
    j["rms_norm"] = c.rms_norm;
    j["norm_before_gate"] = c.norm_before_gate;
    j["time_step_limit"] = {io::json_number(c.dt_limit_lo), io::json_number(c.dt_limit_hi)};
  } else {
    bool falcon = c.arch == Arch::falcon_mamba;
    j["architectures"] = {falcon ? "FalconMambaForCausalLM" : "MambaForCausalLM"};
    j["model_type"] = falcon ? "falcon_mamba" : "mamba";
    j["intermediate_size"] = c.d_inner;
    j["time_step_rank"] = c.dt_rank;
    if (!c.selective) j["selective"] = false;  // our key: transformers has no LTI Mamba
    if (falcon) j["mixer_rms_eps"] = c.mixer_rms_eps;
  }
  return j;
}

}  // namespace

namespace {
nlohmann::json mamba_ssm_config(const ModelConfig& c) {
  SSM_CHECK(c.arch != Arch::falcon_mamba, "config", "mamba_ssm has no Falcon-Mamba layer: use the Hugging Face form");
  SSM_CHECK(c.selective, "config", "mamba_ssm has no non-selective (LTI) Mamba layer: use the Hugging Face form");
  SSM_CHECK(c.d_inner == c.expand * c.d_model, "config", "d_inner != expand * d_model has no mamba_ssm form");
  SSM_CHECK(c.norm_eps == 1e-5, "config",
            "mamba_ssm configs fix the norm epsilon at 1e-5; this model uses " + std::to_string(c.norm_eps) +
                " (use the Hugging Face form)");
  // The padding multiple that turns the real vocabulary into the embedding's rows.
  int64_t mult = c.vocab_size;
  for (int64_t m = 1; m <= c.vocab_size; m *= 2)
    if ((c.vocab_size_real + m - 1) / m * m == c.vocab_size) {
      mult = m;
      break;
    }
  nlohmann::json s;
  s["layer"] = c.arch == Arch::mamba1 ? "Mamba1" : c.arch == Arch::mamba2 ? "Mamba2" : "Mamba3";
  s["d_state"] = c.d_state;
  s["expand"] = c.expand;
  if (c.arch != Arch::mamba3) s["bias"] = c.proj_bias;
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
  }
  if (c.arch == Arch::mamba2) {  // Mamba3's constructor has none of these
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
  nlohmann::json j;
  j["d_model"] = c.d_model;
  j["d_intermediate"] = 0;
  j["n_layer"] = c.n_layer;
  j["vocab_size"] = c.vocab_size_real;
  j["ssm_cfg"] = s;
  j["attn_layer_idx"] = nlohmann::json::array();
  j["attn_cfg"] = nlohmann::json::object();
  j["rms_norm"] = c.rms_norm;
  j["residual_in_fp32"] = c.residual_in_fp32;
  j["fused_add_norm"] = true;
  j["pad_vocab_size_multiple"] = mult;
  j["tie_embeddings"] = c.tie_embeddings;
  return j;
}

}  // namespace

std::string ModelConfig::to_mamba_ssm_json() const { return io::dump_json(mamba_ssm_config(*this)) + "\n"; }

std::string ModelConfig::to_json() const { return arch == Arch::mamba3 ? to_mamba_ssm_json() : to_hf_json(); }

std::string ModelConfig::to_hf_json(DType weight_dtype) const {
  return io::dump_json(hf_config(*this, weight_dtype)) + "\n";
}

std::string ModelConfig::summary() const {
  std::ostringstream o;
  o << arch_name(arch) << " d_model=" << d_model << " n_layer=" << n_layer << " vocab=" << vocab_size
    << " d_inner=" << d_inner << " d_state=" << d_state;
  if (arch == Arch::mamba1 || arch == Arch::falcon_mamba) o << " dt_rank=" << dt_rank << " d_conv=" << d_conv;
  if (!selective)
    o << " LTI (non-selective)";
  else
    o << " heads=" << nheads << "x" << headdim << " groups=" << ngroups << " chunk=" << chunk_size;
  return o.str();
}

}  // namespace ssm
