// `ssm generate`: stream a continuation of a prompt (also the default job of a bare `ssm`).
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include "command.h"
#include "ssm/embedded.h"
#include "ssm/generate.h"
#include "ssm/safetensors.h"

namespace {

using namespace ssm;

struct Opts {
  std::string model, prompt, file, tokenizer, dtype = "f32", device = "cpu", input_ids, output_ids;
  std::string n_predict = "128", seed = "-1";
  double temp = 0.8, top_p = 0.95, min_p = 0.05, repeat_penalty = 1.0;
  int64_t top_k = 40, repeat_last_n = 64, parallel = 1, ctx = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false, no_display_prompt = false;
  CLI::Option* prompt_opt = nullptr;  // to tell `-p ""` from no -p
};

constexpr int64_t kMaxPredict = 10'000'000;

// The job a bare `ssm` runs: the character-level Shakespeare Mamba embedded in the binary
// (recipes/shakespeare-char). A build without it falls back to random weights and says so.
struct DefaultModel {
  std::unique_ptr<Model> model;
  Tokenizer tokenizer;
  std::string prompt;
};
DefaultModel default_model() {
  if (has_embedded_model()) {
    EmbeddedModel e = load_embedded_model();
    std::fprintf(stderr,
                 "note: no model given (-m DIR): using the embedded %s model (%.2f M parameters, trained by "
                 "recipes/shakespeare-char). Pass -m DIR to run a real checkpoint.\n",
                 e.name.c_str(), double(e.model->num_parameters()) / 1e6);
    return {std::move(e.model), e.tokenizer, "ROMEO:\n"};
  }
  ModelConfig c;
  c.arch = Arch::mamba1;
  c.d_model = 128;
  c.n_layer = 2;
  c.vocab_size = c.vocab_size_real = 256;
  c.d_state = 16;
  c.d_conv = 4;
  c.expand = 2;
  c.d_inner = c.expand * c.d_model;
  c.dt_rank = (c.d_model + 15) / 16;
  std::fprintf(stderr,
               "note: no model given (-m DIR) and this build has no embedded model: using a small Mamba with "
               "RANDOM weights (d_model %" PRId64 ", %" PRId64
               " layers, byte-level tokenizer), so the text below "
               "is noise. Pass -m DIR to run a real checkpoint.\n",
               c.d_model, c.n_layer);
  return {Model::create(c, 1234), Tokenizer::byte_level(), "Once upon a time"};
}

int64_t parse_int(const std::string& s, const std::string& flag) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SSM_CHECK(used == s.size() && !s.empty(), "generate", flag + " expects an integer, got '" + s + "'");
  return v;
}

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  SSM_CHECK(f.good(), "generate", "cannot open prompt file '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void print_timings(double load_ms, const GenerateTimings& t, double total_ms) {
  auto rate = [](double ms, int64_t n) { return ms > 0 ? 1000.0 * double(n) / ms : 0.0; };
  auto per = [](double ms, int64_t n) { return n > 0 ? ms / double(n) : 0.0; };
  std::fprintf(stderr, "\n");
  std::fprintf(stderr, "ssm_perf:        load time = %10.2f ms\n", load_ms);
  std::fprintf(stderr,
               "ssm_perf: prompt eval time = %10.2f ms / %5" PRId64
               " tokens (%8.2f ms per token, %8.2f tokens per second)\n",
               t.prompt_ms, t.prompt_tokens, per(t.prompt_ms, t.prompt_tokens), rate(t.prompt_ms, t.prompt_tokens));
  std::fprintf(stderr,
               "ssm_perf:        eval time = %10.2f ms / %5" PRId64
               " runs   (%8.2f ms per token, %8.2f tokens per second)\n",
               t.eval_ms, t.eval_runs, per(t.eval_ms, t.eval_tokens), rate(t.eval_ms, t.eval_tokens));
  std::fprintf(stderr,
               "ssm_perf:    sampling time = %10.2f ms / %5" PRId64
               " runs   (%8.2f ms per token, %8.2f tokens per second)\n",
               t.sample_ms, t.sampled, per(t.sample_ms, t.sampled), rate(t.sample_ms, t.sampled));
  std::fprintf(stderr, "ssm_perf:       total time = %10.2f ms / %5" PRId64 " tokens\n", total_ms,
               t.prompt_tokens + t.sampled);
}

int run(const Opts& o) {
  const auto t_start = std::chrono::steady_clock::now();
  // ---- validate the flags that need no model ----
  const int64_t n_predict = parse_int(o.n_predict, "-n/--n-predict");
  SSM_CHECK(n_predict == -1 || (n_predict >= 0 && n_predict <= kMaxPredict), "generate",
            "-n/--n-predict must be -1 (until end of text) or in [0, " + std::to_string(kMaxPredict) + "], got " +
                o.n_predict);
  const int64_t seed_flag = parse_int(o.seed, "-s/--seed");
  SSM_CHECK(seed_flag >= -1, "generate", "-s/--seed must be -1 (random) or >= 0, got " + o.seed);
  SSM_CHECK(o.parallel >= 1 && o.parallel <= 4096, "generate", "--parallel must be in [1, 4096]");
  const bool has_p = o.prompt_opt && o.prompt_opt->count() > 0;
  SSM_CHECK(!has_p || !o.prompt.empty(), "generate", "the prompt is empty (-p \"\")");
  const int sources = int(has_p) + int(!o.file.empty()) + int(!o.input_ids.empty());
  SSM_CHECK(sources <= 1, "generate", "give the prompt once: -p TEXT, -f FILE or --input-ids FILE");
  const DType wdtype = parse_weight_dtype(o.dtype);
  const Device device = parse_device(o.device, true);

  // ---- model and tokenizer ----
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  std::string prompt_text = o.prompt;
  if (o.model.empty()) {
    SSM_CHECK(o.tokenizer.empty(), "generate", "--tokenizer needs a model (-m DIR)");
    SSM_CHECK(device == Device::cpu, "generate", "--device cuda needs a model (-m DIR)");
    DefaultModel d = default_model();
    model = std::move(d.model);
    tok = std::make_unique<Tokenizer>(d.tokenizer);
    if (sources == 0) prompt_text = d.prompt;
  } else {
    SSM_CHECK(sources == 1, "generate", "no prompt: pass -p TEXT, -f FILE or --input-ids FILE");
    LoadOptions lo;
    lo.weight_dtype = wdtype;
    lo.device = device;
    model = Model::load(o.model, lo);
    // A text prompt needs a tokenizer; ids alone do not (the output is then ids).
    if (o.input_ids.empty() || tokenizer_available(o.model, o.tokenizer))
      tok = std::make_unique<Tokenizer>(load_tokenizer(o.model, o.tokenizer));
  }
  if (!o.file.empty()) {
    prompt_text = read_text_file(o.file);
    SSM_CHECK(!prompt_text.empty(), "generate", "the prompt file '" + o.file + "' is empty");
  }
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();

  // ---- prompt ids ----
  std::vector<std::vector<int32_t>> prompts;
  if (!o.input_ids.empty()) {
    prompts = read_ids_file(o.input_ids);
  } else {
    SSM_CHECK(!prompt_text.empty(), "generate", "the prompt is empty");
    SSM_CHECK(io::is_valid_utf8(prompt_text), "generate", "the prompt is not valid UTF-8 text");
    prompts.push_back(tok->encode(prompt_text));
    SSM_CHECK(!prompts[0].empty(), "generate", "the prompt encodes to no tokens");
  }
  if (o.parallel > 1) {
    SSM_CHECK(prompts.size() == 1, "generate", "--parallel needs a single prompt");
    prompts.assign(size_t(o.parallel), prompts[0]);
  }

  // ---- generate ----
  Generator gen(*model, tok.get());
  GenerateOptions go;
  go.max_new_tokens = n_predict;
  go.sampling.temperature = o.temp;
  go.sampling.top_k = o.top_k;
  go.sampling.top_p = o.top_p;
  go.sampling.min_p = o.min_p;
  go.sampling.repeat_penalty = o.repeat_penalty;
  go.sampling.repeat_last_n = o.repeat_last_n;
  go.sampling.seed = seed_flag >= 0 ? uint64_t(seed_flag) : std::random_device{}();
  go.eos_ids = default_eos_ids(model->config(), tok.get());
  go.ignore_eos = o.ignore_eos;
  go.stop = o.stop;

  const bool stream = prompts.size() == 1;
  if (stream && !o.no_display_prompt) {
    if (tok)
      std::fputs(tok->decode(prompts[0]).c_str(), stdout);
    else
      for (int32_t t : prompts[0]) std::printf("%d ", t);
    std::fflush(stdout);
  }
  auto on_token = [&](const TokenEvent& ev) {
    if (!stream) return;
    if (tok)
      std::fputs(ev.text.c_str(), stdout);
    else
      std::printf("%d%s", ev.token, ev.last ? "" : " ");
    std::fflush(stdout);
  };
  GenerateResult res = gen.generate(prompts, go, on_token);
  if (stream) {
    std::fputs("\n", stdout);
  } else {
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::printf("--- sequence %zu (%s) ---\n", i, res.finish[i].c_str());
      if (tok)
        std::printf("%s%s\n", o.no_display_prompt ? "" : tok->decode(prompts[i]).c_str(), res.text[i].c_str());
      else {
        for (int32_t t : res.tokens[i]) std::printf("%d ", t);
        std::printf("\n");
      }
    }
  }
  std::fflush(stdout);

  if (!o.output_ids.empty()) {
    std::vector<std::vector<int32_t>> rows = prompts;
    for (size_t i = 0; i < rows.size(); ++i) rows[i].insert(rows[i].end(), res.tokens[i].begin(), res.tokens[i].end());
    write_ids_file(o.output_ids, rows, model->config().pad_id);
  }
  const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();
  print_timings(load_ms, res.timings, total_ms);
  return 0;
}

tools::Command cmd{
    "generate", "Generate text from a prompt (the default job)", [](CLI::App& app) {
      auto o = std::make_shared<Opts>();
      app.add_option("-m,--model", o->model,
                     "model directory (config.json + weights); none: a random-weight demo model");
      o->prompt_opt = app.add_option("-p,--prompt", o->prompt, "prompt text");
      app.add_option("-f,--file", o->file, "read the prompt from a file");
      app.add_option("--input-ids", o->input_ids, "prompt as token ids: safetensors with input_ids int64 [B, L]");
      app.add_option("--output-ids", o->output_ids, "write prompt + generated ids: output_ids int64 [B, L+N]");
      app.add_option("-n,--n-predict", o->n_predict, "tokens to generate; -1 = until end of text")->default_str("128");
      app.add_option("--temp", o->temp, "temperature; 0 = greedy")->default_str("0.8");
      app.add_option("--top-k", o->top_k, "keep the K most likely tokens; 0 = all, 1 = greedy")->default_str("40");
      app.add_option("--top-p", o->top_p, "nucleus: smallest set with this much probability; 1 = off")
          ->default_str("0.95");
      app.add_option("--min-p", o->min_p, "drop tokens below P x the top probability; 0 = off")->default_str("0.05");
      app.add_option("--repeat-penalty", o->repeat_penalty, "CTRL repetition penalty; 1 = off")->default_str("1.0");
      app.add_option("--repeat-last-n", o->repeat_last_n, "tokens of history penalised; -1 = all")->default_str("64");
      app.add_option("-s,--seed", o->seed, "random seed; -1 = random")->default_str("-1");
      app.add_option("--stop", o->stop, "stop when this text is generated (repeatable)");
      app.add_option("--parallel", o->parallel, "generate N continuations of the prompt as one batch")
          ->default_str("1");
      app.add_option("--tokenizer", o->tokenizer, "tokenizer.json (default: the one in the model directory)");
      app.add_option("--dtype", o->dtype, "weight storage: f32, bf16 or f16")->default_str("f32");
      app.add_option("--device", o->device, "cpu, or cuda (Mamba-1/2/3, Falcon-Mamba; activations in --dtype)")
          ->default_str("cpu");
      app.add_option("-c,--ctx-size", o->ctx, "accepted for llama.cpp compatibility; SSMs have no context limit");
      app.add_flag("--ignore-eos", o->ignore_eos, "keep generating past the end-of-text token");
      app.add_flag("--no-display-prompt", o->no_display_prompt, "print only the generated text");
      app.footer(
          "Text goes to stdout as it is generated; the timing summary goes to stderr.\n"
          "Without a tokenizer (--input-ids on a model directory with no tokenizer.json) ids are printed.\n\n"
          "Examples:\n"
          "  ssm generate -m mamba-130m -p \"The meaning of life is\" -n 64\n"
          "  ssm generate -m mamba-130m -f prompt.txt --temp 0 -n 200          # greedy\n"
          "  ssm generate -m mamba-130m -p \"Once\" --top-k 0 --top-p 0.9 --seed 42\n"
          "  ssm generate -m DIR --tokenizer gpt-neox-20b/tokenizer.json -p \"Hi\"\n"
          "  ssm generate -m DIR --input-ids in.safetensors --output-ids out.safetensors --temp 0 -n 16\n"
          "  ssm generate -m mamba-130m -p \"Once\" --parallel 4 -n 32              # 4 samples, one batch\n"
          "  ssm                                                           # demo: random-weight model\n");
      return [o] { return run(*o); };
    }};

}  // namespace
