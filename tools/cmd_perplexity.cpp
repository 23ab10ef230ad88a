// `ssm perplexity`: perplexity of a text file (llama.cpp style output), or LAMBADA last-word
// accuracy and perplexity (the Mamba paper's zero-shot metric, as lm-eval's lambada_openai).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.h"
#include "ssm/autograd.h"
#include "ssm/generate.h"
#include "ssm/safetensors.h"

namespace {

using namespace ssm;
using Clock = std::chrono::steady_clock;

struct Opts {
  std::string model, file, lambada, tokenizer, dtype = "f32", device = "cpu";
  int64_t ctx = 512, limit = 0;
  bool carry_state = false;
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// "\r<what> i/n, X s each, ETA 1m02s" on stderr.
void progress(const char* what, int64_t done, int64_t total, Clock::time_point t0) {
  double per = seconds_since(t0) / double(std::max<int64_t>(done, 1));
  long eta = long(per * double(total - done) + 0.5);
  std::fprintf(stderr, "\r%s %lld/%lld, %.3f s each, ETA %ldm%02lds   ", what, (long long)done, (long long)total, per,
               eta / 60, eta % 60);
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

// log p(target) under the softmax of row[0, n) (double precision).
double log_prob(const float* row, int64_t n, int32_t target) {
  float mx = row[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, row[i]);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(double(row[i]) - double(mx));
  return double(row[target]) - double(mx) - std::log(s);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  SSM_CHECK(f.good(), "perplexity", "cannot open '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int run_text(const Opts& o, const Model& model, const Tokenizer& tok) {
  std::string text = read_file(o.file);
  SSM_CHECK(!text.empty(), "perplexity", "'" + o.file + "' is empty");
  SSM_CHECK(io::is_valid_utf8(text), "perplexity", "'" + o.file + "' is not valid UTF-8 text");
  std::vector<int32_t> ids = tok.encode(text);
  const int64_t n_tok = int64_t(ids.size()), ctx = o.ctx, V = model.config().vocab_size;
  SSM_CHECK(n_tok >= 2, "perplexity", "the text has fewer than 2 tokens");
  int64_t n_chunks = (n_tok + ctx - 1) / ctx;
  if (n_tok - (n_chunks - 1) * ctx < 2 && !o.carry_state) --n_chunks;  // a 1-token tail scores nothing
  if (o.limit > 0) n_chunks = std::min(n_chunks, o.limit);
  std::fprintf(stderr, "perplexity: %lld tokens, %lld chunks of %lld%s\n", (long long)n_tok, (long long)n_chunks,
               (long long)ctx, o.carry_state ? " (state carried across chunks)" : "");

  autograd::NoGradGuard no_grad;
  InferenceState state = model.new_state(1);
  std::vector<float> prev_last;  // [V] logits of the previous chunk's last position (carry_state)
  double sum = 0, sum2 = 0;      // of the per-token negative log-likelihoods
  int64_t count = 0;
  const auto t0 = Clock::now();
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t b = c * ctx, e = std::min(n_tok, b + ctx), L = e - b;
    std::vector<int64_t> chunk(ids.begin() + b, ids.begin() + e);
    if (!o.carry_state) state = model.new_state(1);
    Tensor lg =
        model.forward(Tensor::from_vector(chunk, {1, L}), &state, 0).to(Device::cpu).contiguous();  // [1, L, V] f32
    const float* p = lg.data<float>();
    auto score = [&](const float* row, int32_t target) {
      double nll = -log_prob(row, V, target);
      sum += nll;
      sum2 += nll * nll;
      ++count;
    };
    if (o.carry_state && c > 0) score(prev_last.data(), int32_t(chunk[0]));
    for (int64_t t = 0; t + 1 < L; ++t) score(p + t * V, int32_t(chunk[size_t(t + 1)]));
    if (o.carry_state) prev_last.assign(p + (L - 1) * V, p + L * V);
    std::printf("[%lld]%.4f,", (long long)(c + 1), std::exp(sum / double(count)));
    std::fflush(stdout);
    progress("perplexity: chunk", c + 1, n_chunks, t0);
  }
  const double mean = sum / double(count), ppl = std::exp(mean);
  // Standard error of the mean NLL, carried to PPL (llama.cpp's "+/-").
  const double var = count > 1 ? std::max(0.0, sum2 / double(count) - mean * mean) / double(count - 1) : 0.0;
  std::printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl, ppl * std::sqrt(var));
  std::fprintf(stderr, "perplexity: %lld tokens scored in %.2f s\n", (long long)count, seconds_since(t0));
  return 0;
}

int run_lambada(const Opts& o, const Model& model, const Tokenizer& tok, int64_t vocab_real) {
  std::ifstream f(o.lambada);
  SSM_CHECK(f.good(), "perplexity", "cannot open '" + o.lambada + "'");
  std::vector<std::string> texts;
  std::string line;
  for (int64_t ln = 1; std::getline(f, line); ++ln) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      fail("perplexity", o.lambada + ":" + std::to_string(ln) + ": not JSON (" + e.what() + ")");
    }
    SSM_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), "perplexity",
              o.lambada + ":" + std::to_string(ln) + ": expected an object with a string \"text\"");
    texts.push_back(j["text"].get<std::string>());
  }
  if (o.limit > 0 && int64_t(texts.size()) > o.limit) texts.resize(size_t(o.limit));
  SSM_CHECK(!texts.empty(), "perplexity", o.lambada + ": no documents");

  autograd::NoGradGuard no_grad;
  const int64_t V = model.config().vocab_size;
  int64_t n = 0, correct = 0, skipped = 0;
  double loglik_sum = 0;
  const auto t0 = Clock::now();
  for (size_t d = 0; d < texts.size(); ++d) {
    const std::string& text = texts[d];
    size_t sp = text.find_last_of(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == text.size()) {
      ++skipped;  // no context or no last word
      continue;
    }
    // lm-eval: context = text up to the last space, target = " " + last word; the target's ids are
    // the tail of the whole text's ids after the context's.
    std::vector<int32_t> ctx = tok.encode(text.substr(0, sp)), whole = tok.encode(text), cont;
    if (whole.size() > ctx.size() && std::equal(ctx.begin(), ctx.end(), whole.begin()))
      cont.assign(whole.begin() + ptrdiff_t(ctx.size()), whole.end());
    else
      cont = tok.encode(text.substr(sp));
    std::vector<int64_t> in(ctx.begin(), ctx.end());
    in.insert(in.end(), cont.begin(), cont.end() - 1);
    const int64_t L = int64_t(in.size()), T = int64_t(cont.size());
    Tensor lg =
        model.forward(Tensor::from_vector(in, {1, L}), nullptr, T).to(Device::cpu).contiguous();  // [1, T, V] f32
    const float* p = lg.data<float>();
    bool greedy_ok = true;
    for (int64_t j = 0; j < T; ++j) {
      const float* row = p + j * V;
      loglik_sum += log_prob(row, V, cont[size_t(j)]);
      int64_t best = 0;
      for (int64_t i = 1; i < vocab_real; ++i)
        if (row[i] > row[best]) best = i;
      greedy_ok = greedy_ok && best == cont[size_t(j)];
    }
    correct += greedy_ok;
    ++n;
    if ((d + 1) % 10 == 0 || d + 1 == texts.size())
      progress("lambada: document", int64_t(d + 1), int64_t(texts.size()), t0);
  }
  SSM_CHECK(n > 0, "perplexity", o.lambada + ": no document has a context and a last word");
  if (skipped) std::fprintf(stderr, "lambada: skipped %lld documents without a last word\n", (long long)skipped);
  std::printf("LAMBADA: %lld documents, accuracy = %.2f%% (%lld/%lld), perplexity = %.4f\n", (long long)n,
              100.0 * double(correct) / double(n), (long long)correct, (long long)n, std::exp(-loglik_sum / double(n)));
  return 0;
}

int run(const Opts& o) {
  SSM_CHECK(!o.model.empty(), "perplexity", "-m/--model DIR is required");
  SSM_CHECK(o.file.empty() != o.lambada.empty(), "perplexity",
            "give exactly one of -f TEXT_FILE or --lambada FILE.jsonl");
  SSM_CHECK(o.ctx >= 2 && o.ctx <= (int64_t(1) << 24), "perplexity", "--ctx must be in [2, 16777216]");
  SSM_CHECK(o.limit >= 0, "perplexity", "--limit must be >= 0 (0 = no limit)");
  LoadOptions lo;
  lo.weight_dtype = parse_weight_dtype(o.dtype);
  lo.device = parse_device(o.device, true);
  auto model = Model::load(o.model, lo);
  Tokenizer tok = load_tokenizer(o.model, o.tokenizer);
  Generator gen(*model, &tok);  // checks that the tokenizer fits the model
  if (!o.lambada.empty()) return run_lambada(o, *model, tok, gen.vocab_real());
  return run_text(o, *model, tok);
}

tools::Command cmd{
    "perplexity", "Perplexity of a text file, or LAMBADA accuracy", [](CLI::App& app) {
      auto o = std::make_shared<Opts>();
      app.add_option("-m,--model", o->model, "model directory");
      app.add_option("-f,--file", o->file, "text file to score");
      app.add_option("--lambada", o->lambada,
                     "LAMBADA .jsonl ({\"text\": ...} per line): last-word accuracy and perplexity");
      app.add_option("-c,--ctx", o->ctx, "tokens per chunk; each chunk starts from an empty state")->default_str("512");
      app.add_flag("--carry-state", o->carry_state, "carry the recurrent state across chunks (whole-text context)");
      app.add_option("--limit", o->limit, "score only the first N chunks / documents (0 = all)")->default_str("0");
      app.add_option("--tokenizer", o->tokenizer, "tokenizer.json (default: the model directory's)");
      app.add_option("--dtype", o->dtype, "weight storage: f32, bf16 or f16")->default_str("f32");
      app.add_option("--device", o->device, "cpu, or cuda (Mamba-1/2/3, Falcon-Mamba; activations in --dtype)")
          ->default_str("cpu");
      app.footer(
          "Text mode prints the running perplexity after each chunk ([1]x,[2]y,...) and\n"
          "'Final estimate: PPL = X +/- Y'. Every token of a chunk but the first is scored.\n"
          "LAMBADA mode scores the last word of each text: accuracy = greedy decoding of all its tokens is\n"
          "exactly right; perplexity = exp(-mean log-likelihood of the word), as lm-eval's lambada_openai.\n\n"
          "Examples:\n"
          "  ssm perplexity -m mamba-130m -f wiki.test.raw --ctx 1024\n"
          "  ssm perplexity -m mamba-130m -f tinyshakespeare.txt --carry-state --ctx 2048\n"
          "  ssm perplexity -m mamba-130m --lambada lambada_test.jsonl --limit 500\n");
      return [o] { return run(*o); };
    }};

}  // namespace
