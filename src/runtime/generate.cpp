// Generation loop: per-prompt prefill, batched recurrent decode, per-sequence sampling and stopping,
// streamed text. See include/ssm/generate.h.
#include "ssm/generate.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string_view>

#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "ssm/safetensors.h"

namespace ssm {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// The UTF-8 sequence at s[i]: returns its length with *ok = true when complete and valid, else the
// length of its maximal valid prefix (1 for a bad lead byte) with *ok = false, and *truncated = true
// when that prefix runs into the end of s (more bytes may still complete it).
size_t utf8_step(std::string_view s, size_t i, bool* ok, bool* truncated) {
  const auto c = static_cast<unsigned char>(s[i]);
  *ok = false;
  *truncated = false;
  if (c < 0x80) {
    *ok = true;
    return 1;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    need = 1;
  else if (c == 0xE0)
    need = 2, lo = 0xA0;
  else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
    need = 2;
  else if (c == 0xED)
    need = 2, hi = 0x9F;
  else if (c == 0xF0)
    need = 3, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3)
    need = 3;
  else if (c == 0xF4)
    need = 3, hi = 0x8F;
  else
    return 1;
  for (size_t j = 1; j <= need; ++j) {
    if (i + j >= s.size()) {
      *truncated = true;
      return j;
    }
    const auto b = static_cast<unsigned char>(s[i + j]);
    if (b < (j == 1 ? lo : 0x80) || b > (j == 1 ? hi : 0xBF)) return j;
  }
  *ok = true;
  return need + 1;
}

// Appends s[0, n) to out with each invalid sequence replaced by U+FFFD; stops before a truncated
// sequence at the end unless `final`. Returns the number of bytes consumed.
size_t append_utf8(std::string_view s, size_t n, bool final, std::string& out) {
  size_t i = 0;
  while (i < n) {
    bool ok, truncated;
    size_t len = utf8_step(s.substr(0, n), i, &ok, &truncated);
    if (ok) {
      out.append(s.data() + i, len);
    } else {
      if (truncated && !final) break;
      out += "\xEF\xBF\xBD";
    }
    i += len;
  }
  return i;
}

}  // namespace

std::string TextStream::push(const std::string& bytes) {
  if (stopped_) return {};
  pending_ += bytes;
  // A stop string can only start inside pending_: anything that could begin one is held back.
  size_t cut = std::string::npos;
  for (const auto& s : stop_) {
    size_t p = pending_.find(s);
    if (p != std::string::npos) cut = std::min(cut, p);
  }
  std::string out;
  if (cut != std::string::npos) {
    append_utf8(pending_, cut, true, out);
    pending_.clear();
    stopped_ = true;
    emitted_ += out;
    return out;
  }
  size_t hold = 0;  // the longest suffix of pending_ that is a proper prefix of a stop string
  for (const auto& s : stop_)
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  size_t used = append_utf8(pending_, pending_.size() - hold, false, out);
  pending_.erase(0, used);
  emitted_ += out;
  return out;
}

std::string TextStream::flush() {
  if (stopped_) return {};
  std::string out;
  append_utf8(pending_, pending_.size(), true, out);
  pending_.clear();
  emitted_ += out;
  return out;
}

Generator::Generator(const Model& model, const Tokenizer* tokenizer) : model_(model), tok_(tokenizer) {
  const ModelConfig& c = model.config();
  vocab_real_ = c.vocab_size_real > 0 ? std::min(c.vocab_size_real, c.vocab_size) : c.vocab_size;
  if (tok_) {
    SSM_CHECK(tok_->vocab_size() <= c.vocab_size, "generate",
              "the tokenizer has " + std::to_string(tok_->vocab_size()) + " tokens but the model's vocabulary has " +
                  std::to_string(c.vocab_size) + ": they do not belong together (pass the model's own tokenizer)");
    vocab_real_ = std::min<int64_t>(vocab_real_, tok_->vocab_size());
  }
}

GenerateResult Generator::generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& opts,
                                   const TokenCallback& on_token) const {
  autograd::NoGradGuard no_grad;
  const auto t_start = Clock::now();
  const int64_t V = model_.config().vocab_size;
  const int64_t n = int64_t(prompts.size());
  SSM_CHECK(n >= 1, "generate", "no prompt given");
  SSM_CHECK(opts.max_new_tokens >= -1, "generate",
            "max_new_tokens must be >= 0, or -1 for no limit; got " + std::to_string(opts.max_new_tokens));
  SSM_CHECK(opts.stop.empty() || tok_, "generate", "stop strings need a tokenizer");
  for (const auto& s : opts.stop) SSM_CHECK(!s.empty(), "generate", "empty stop string");
  for (int64_t i = 0; i < n; ++i) {
    SSM_CHECK(!prompts[size_t(i)].empty(), "generate", "prompt " + std::to_string(i) + " is empty (no tokens)");
    for (int32_t t : prompts[size_t(i)])
      SSM_CHECK(t >= 0 && t < V, "generate",
                "prompt " + std::to_string(i) + " has token id " + std::to_string(t) + " outside the vocabulary [0, " +
                    std::to_string(V) + ")");
  }

  GenerateResult res;
  res.tokens.resize(size_t(n));
  res.text.resize(size_t(n));
  res.finish.assign(size_t(n), "length");
  if (opts.keep_scores) res.scores.resize(size_t(n));
  if (opts.max_new_tokens == 0) return res;

  std::vector<Sampler> samplers;
  std::vector<TextStream> streams;
  for (int64_t i = 0; i < n; ++i) {
    SamplerParams sp = opts.sampling;
    sp.seed += uint64_t(i);
    samplers.emplace_back(sp, vocab_real_);
    for (int32_t t : prompts[size_t(i)]) samplers.back().accept(t);
    streams.emplace_back(opts.stop);
  }
  std::vector<int32_t> eos;
  if (!opts.ignore_eos)
    for (int32_t e : opts.eos_ids)
      if (e >= 0 && e < V) eos.push_back(e);

  // ---- prefill: each prompt alone (lengths differ), then the states stacked into one batch ----
  auto t0 = Clock::now();
  std::vector<float> logits(static_cast<size_t>(n * V));  // [live, V] logits that choose the next token
  std::vector<InferenceState> single(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto& p = prompts[size_t(i)];
    Tensor ids = Tensor::from_vector(std::vector<int64_t>(p.begin(), p.end()), {1, int64_t(p.size())});  // [1, L]
    single[size_t(i)] = model_.new_state(1);
    Tensor lg = model_.forward(ids, &single[size_t(i)], 1).to(Device::cpu).contiguous();  // [1, 1, V] f32
    std::copy_n(lg.data<float>(), V, logits.begin() + i * V);
    res.timings.prompt_tokens += int64_t(p.size());
  }
  InferenceState state = model_.new_state(n);
  for (size_t l = 0; l < state.layers.size(); ++l)
    for (size_t k = 0; k < state.layers[l].size(); ++k) {
      std::vector<Tensor> parts;
      for (const auto& s : single) parts.push_back(s.layers[l][k]);
      if (parts[0].defined()) state.layers[l][k] = n == 1 ? parts[0] : concat(parts, 0);
    }
  single.clear();
  res.timings.prompt_ms = ms_since(t0);

  // ---- decode: sample every live row, drop finished rows, advance the rest one step ----
  std::vector<int64_t> live(static_cast<size_t>(n));  // row r of the batch holds sequence live[r]
  for (int64_t i = 0; i < n; ++i) live[size_t(i)] = i;
  std::vector<int64_t> next_ids;  // [live] tokens fed to the next step
  std::vector<int64_t> keep_rows, next_live;
  while (true) {
    t0 = Clock::now();
    next_ids.clear();
    keep_rows.clear();
    next_live.clear();
    for (size_t r = 0; r < live.size(); ++r) {
      const int64_t s = live[r];
      const float* row = logits.data() + r * size_t(V);
      if (opts.keep_scores) res.scores[size_t(s)].emplace_back(row, row + V);
      const int32_t tok = samplers[size_t(s)].sample(row, V);
      samplers[size_t(s)].accept(tok);
      res.tokens[size_t(s)].push_back(tok);
      ++res.timings.sampled;
      TokenEvent ev;
      ev.seq = s;
      ev.token = tok;
      const bool is_eos = std::find(eos.begin(), eos.end(), tok) != eos.end();
      if (tok_ && !is_eos) ev.text = streams[size_t(s)].push(tok_->decode_token(tok));
      if (is_eos)
        res.finish[size_t(s)] = "eos";
      else if (streams[size_t(s)].stopped())
        res.finish[size_t(s)] = "stop";
      ev.last = is_eos || streams[size_t(s)].stopped() ||
                (opts.max_new_tokens > 0 && int64_t(res.tokens[size_t(s)].size()) >= opts.max_new_tokens);
      if (ev.last) {
        if (tok_) ev.text += streams[size_t(s)].flush();
        res.text[size_t(s)] = streams[size_t(s)].text();
      } else {
        keep_rows.push_back(int64_t(r));
        next_live.push_back(s);
        next_ids.push_back(tok);
      }
      if (on_token) on_token(ev);
    }
    res.timings.sample_ms += ms_since(t0);
    if (next_live.empty()) break;

    t0 = Clock::now();
    if (next_live.size() != live.size()) {  // drop the rows of finished sequences
      for (auto& layer : state.layers)
        for (auto& t : layer) {
          if (!t.defined()) continue;
          std::vector<Tensor> rows;
          for (int64_t r : keep_rows) rows.push_back(t.slice(0, r, r + 1));
          t = rows.size() == 1 ? rows[0].contiguous() : concat(rows, 0);
        }
      state.batch = int64_t(next_live.size());
    }
    live.swap(next_live);
    const int64_t B = int64_t(live.size());
    const Tensor& lg = model_.step(next_ids, state);  // [B, V], allocation-free after the first step
    if (lg.device() == Device::cpu) {
      std::copy_n(lg.data<float>(), B * V, logits.begin());
    } else {  // GPU logits (a replayed CUDA graph) come back to sample here
      Tensor host = lg.to(Device::cpu);
      std::copy_n(host.data<float>(), B * V, logits.begin());
    }
    res.timings.eval_ms += ms_since(t0);
    ++res.timings.eval_runs;
    res.timings.eval_tokens += B;
  }
  res.timings.total_ms = ms_since(t_start);
  return res;
}

// ---- helpers for the tools ----

Tokenizer load_tokenizer(const std::string& model_dir, const std::string& tokenizer_file) {
  if (!tokenizer_file.empty()) {
    SSM_CHECK(std::filesystem::is_regular_file(tokenizer_file), "tokenizer",
              "no such file '" + tokenizer_file + "' (--tokenizer expects a Hugging Face tokenizer.json)");
    return Tokenizer::from_file(tokenizer_file);
  }
  return Tokenizer::from_model_dir(model_dir);
}

bool tokenizer_available(const std::string& model_dir, const std::string& tokenizer_file) {
  if (!tokenizer_file.empty()) return true;  // load_tokenizer reports a bad path
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::path(model_dir) / "tokenizer.json", ec);
}

std::vector<int32_t> default_eos_ids(const ModelConfig& cfg, const Tokenizer* tok) {
  if (tok) {
    int32_t e = tok->eos_id();
    return e >= 0 ? std::vector<int32_t>{e} : std::vector<int32_t>{};
  }
  if (cfg.hf_format && cfg.eos_id >= 0 && cfg.eos_id < cfg.vocab_size) return {int32_t(cfg.eos_id)};
  return {};
}

DType parse_weight_dtype(const std::string& s) {
  if (s == "f32" || s == "float32" || s == "fp32") return DType::f32;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  if (s == "f16" || s == "float16" || s == "fp16") return DType::f16;
  fail("dtype", "unknown weight dtype '" + s + "' (expected f32, bf16 or f16)");
}

Device parse_device(const std::string& s, bool cpu_fallback) {
  if (s == "cpu") return Device::cpu;
  SSM_CHECK(s == "cuda", "device", "unknown device '" + s + "' (expected cpu or cuda)");
  if (cuda_device_count() > 0) return Device::cuda;
  SSM_CHECK(cpu_fallback, "device", "no CUDA device found; use --device cpu");
  std::fprintf(stderr,
               "warning: --device cuda: no CUDA device found (or this build has no CUDA backend); "
               "running on the CPU\n");
  return Device::cpu;
}

std::vector<std::vector<int32_t>> read_ids_file(const std::string& path, const std::string& name) {
  io::SafeTensors f = io::SafeTensors::open(path);
  SSM_CHECK(f.has(name), "ids", path + ": no tensor '" + name + "' (expected " + name + " int64 [batch, length])");
  Tensor t = f.get(name);
  SSM_CHECK(t.dim() == 2 && t.size(0) >= 1 && t.size(1) >= 1 && (t.dtype() == DType::i64 || t.dtype() == DType::i32),
            "ids", path + ": '" + name + "' must be int64 [batch, length] with batch, length >= 1; got " + t.str(0));
  std::vector<int64_t> v = t.to_vector_i64();
  std::vector<std::vector<int32_t>> rows(size_t(t.size(0)));
  for (int64_t b = 0; b < t.size(0); ++b)
    for (int64_t i = 0; i < t.size(1); ++i) {
      int64_t id = v[size_t(b * t.size(1) + i)];
      SSM_CHECK(id >= 0 && id < (int64_t(1) << 31), "ids",
                path + ": '" + name + "' holds the invalid token id " + std::to_string(id));
      rows[size_t(b)].push_back(int32_t(id));
    }
  return rows;
}

void write_ids_file(const std::string& path, const std::vector<std::vector<int32_t>>& rows, int64_t pad,
                    const std::string& name) {
  SSM_CHECK(!rows.empty(), "ids", "nothing to write to " + path);
  size_t len = 0;
  for (const auto& r : rows) len = std::max(len, r.size());
  std::vector<int64_t> flat(rows.size() * len, pad);  // [B, L]
  for (size_t b = 0; b < rows.size(); ++b) std::copy(rows[b].begin(), rows[b].end(), flat.begin() + ptrdiff_t(b * len));
  io::save_safetensors(path, {{name, Tensor::from_vector(flat, {int64_t(rows.size()), int64_t(len)})}});
}

}  // namespace ssm
