// The `ssm` binary end to end: generate / logits / perplexity / info / convert on the fixtures
// (checked against the references' golden data or in-process library results), the default job,
// and bad inputs (exit code 1 with a clear message).
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unistd.h>

#include "ssm/autograd.h"
#include "ssm/generate.h"
#include "ssm/json_config.h"
#include "ssm/ops.h"
#include "ssm/safetensors.h"
#include "ssm/embedded.h"
#include "testing.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;
using testing::AllClose;
using testing::shared_path;
using testing::slurp;

struct CmdResult {
  int code = -1;
  std::string out, err;
};

// A scratch directory per test, removed afterwards.
class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ssm_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string tmp(const std::string& name) const { return (dir_ / name).string(); }

  // Runs `ssm ARGS` through the shell (ARGS is shell text), capturing stdout, stderr and the exit code.
  CmdResult ssm(const std::string& args) const {
    std::string cmd = std::string(SSM_BINARY_DIR) + "/ssm " + args + " > " + tmp("out.txt") + " 2> " + tmp("err.txt");
    int st = std::system(cmd.c_str());
    CmdResult r;
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(tmp("out.txt"));
    r.err = slurp(tmp("err.txt"));
    return r;
  }

  // A byte-level BPE tokenizer.json with 256 byte tokens (no merges) and <|endoftext|> = 257: it fits
  // the fixtures' 320-row vocabularies.
  std::string byte_tokenizer() const {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<int> cs = bs;
    for (int b = 0, n = 0; b < 256; ++b)
      if (std::find(bs.begin(), bs.end(), b) == bs.end()) bs.push_back(b), cs.push_back(256 + n++);
    nlohmann::json vocab = nlohmann::json::object();
    for (size_t i = 0; i < bs.size(); ++i) {
      std::string u;  // code point cs[i] (< 0x800) as UTF-8
      int c = cs[i];
      if (c < 0x80)
        u += char(c);
      else
        u += char(0xC0 | (c >> 6)), u += char(0x80 | (c & 0x3F));
      vocab[u] = bs[i];
    }
    nlohmann::json bl = {
        {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    nlohmann::json j = {{"version", "1.0"},
                        {"added_tokens",
                         {{{"id", 257},
                           {"content", "<|endoftext|>"},
                           {"single_word", false},
                           {"lstrip", false},
                           {"rstrip", false},
                           {"normalized", false},
                           {"special", true}}}},
                        {"normalizer", nullptr},
                        {"pre_tokenizer", bl},
                        {"post_processor", nullptr},
                        {"decoder", bl},
                        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
    std::string path = tmp("bytes-tokenizer.json");
    std::ofstream(path) << j.dump();
    return path;
  }

  fs::path dir_;
};

const char* kFixtures[] = {"hf-mamba1-tiny", "hf-mamba2-tiny", "hf-falcon-mamba-tiny", "ssm-mamba1-tiny",
                           "ssm-mamba2-tiny"};

TEST_F(Cli, HelpHasExamples) {
  for (const char* c : {"generate", "logits", "perplexity", "info", "convert"}) {
    CmdResult r = ssm(std::string(c) + " --help");
    EXPECT_EQ(r.code, 0) << c;
    EXPECT_NE(r.out.find("Examples:"), std::string::npos) << c;
  }
}

// -t works before and after the subcommand (the usage lines show `ssm generate ... -t 2`).
TEST_F(Cli, ThreadsOptionBeforeOrAfterSubcommand) {
  const std::string tok = byte_tokenizer();
  for (const std::string& args :
       {"-t 2 tokenize --tokenizer " + tok + " hi", "tokenize --tokenizer " + tok + " hi -t 2"}) {
    CmdResult r = ssm(args);
    EXPECT_EQ(r.code, 0) << args << ": " << r.err;
    EXPECT_EQ(r.out, "104 105\n") << args;
  }
  CmdResult bad = ssm("tokenize --tokenizer " + tok + " hi -t 0");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("threads"), std::string::npos) << bad.err;
}

TEST_F(Cli, GreedyGenerateMatchesGoldenIds) {
  for (const char* name : kFixtures) {
    const std::string fx = std::string("fixtures/") + name;
    if (testing::shared_dir().empty() || !fs::exists(shared_path(fx))) GTEST_SKIP() << "needs ../shared/" << fx;
    auto golden = io::SafeTensors::open(shared_path(fx + "/golden.safetensors"));
    io::save_safetensors(tmp("in.safetensors"), {{"input_ids", golden.get("gen.prompt")}});
    CmdResult r = ssm("generate -m " + shared_path(fx) + " --input-ids " + tmp("in.safetensors") + " --output-ids " +
                      tmp("out.safetensors") + " --temp 0 -n 16 --ignore-eos");
    ASSERT_EQ(r.code, 0) << name << ": " << r.err;
    Tensor got = io::SafeTensors::open(tmp("out.safetensors")).get("output_ids");
    EXPECT_EQ(got.to_vector_i64(), golden.get("gen.sequences").to_vector_i64()) << name;
    EXPECT_EQ(got.shape(), (Shape{1, 25}));
    for (const char* line : {"load time", "prompt eval time", "tokens per second", "eval time", "total time"})
      EXPECT_NE(r.err.find(line), std::string::npos) << line;
    // No tokenizer: the ids are printed (prompt, then the 16 generated).
    std::istringstream ids(r.out);
    std::vector<int64_t> printed;
    for (int64_t v; ids >> v;) printed.push_back(v);
    EXPECT_EQ(printed, golden.get("gen.sequences").to_vector_i64()) << name;
  }
}

TEST_F(Cli, LogitsMatchGolden) {
  SSM_REQUIRE_SHARED("fixtures/hf-mamba2-tiny/golden.safetensors");
  auto golden = io::SafeTensors::open(shared_path("fixtures/hf-mamba2-tiny/golden.safetensors"));
  io::save_safetensors(tmp("in.safetensors"), {{"input_ids", golden.get("input_ids")}});
  CmdResult r = ssm("logits -m " + shared_path("fixtures/hf-mamba2-tiny") + " --input-ids " + tmp("in.safetensors") +
                    " --out " + tmp("logits.safetensors"));
  ASSERT_EQ(r.code, 0) << r.err;
  Tensor got = io::SafeTensors::open(tmp("logits.safetensors")).get("logits");
  EXPECT_EQ(got.dtype(), DType::f32);
  // f32 engine against the f64 reference: 1e-4 of max |ref| (as the model parity tests).
  EXPECT_TRUE(AllClose(got, golden.get("logits"), 1e-4));
}

// --device: an unknown name, and cuda where no GPU is visible (or the build has no CUDA), fail clearly.
TEST_F(Cli, DeviceErrors) {
  CmdResult r = ssm("logits -m nowhere -p x --out " + tmp("l.safetensors") + " --device tpu");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown device 'tpu' (expected cpu or cuda)"), std::string::npos) << r.err;
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible (tests/cuda_models.cpp runs it)";
  // Benchmarks and training refuse: their figures or their speed would mislead on the CPU.
  for (const char* cmd : {"bench --random mamba-130m", "train --task induction --steps 1 -o runs-none"}) {
    r = ssm(std::string(cmd) + " --device cuda");
    EXPECT_EQ(r.code, 1) << cmd;
    EXPECT_NE(r.err.find("no CUDA device found; use --device cpu"), std::string::npos) << cmd << ": " << r.err;
  }
  // Inference falls back to the CPU and says so: the same text as on the CPU.
  const std::string gen =
      "generate -m " + std::string(SSM_SOURCE_DIR) + "/models/shakespeare-char -p JULIET: -n 8 --temp 0";
  CmdResult cpu = ssm(gen), fallback = ssm(gen + " --device cuda");
  EXPECT_EQ(fallback.code, 0) << fallback.err;
  EXPECT_NE(fallback.err.find("warning: --device cuda: no CUDA device found"), std::string::npos) << fallback.err;
  EXPECT_NE(fallback.err.find("running on the CPU"), std::string::npos) << fallback.err;
  EXPECT_EQ(fallback.out, cpu.out);
}

// Data parallel without GPUs: the launcher and a launched rank both say what is missing.
TEST_F(Cli, DataParallelNeedsGpus) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible (tests/cuda_data_parallel.cpp runs it)";
  const std::string args = "train --task induction --steps 1 -o " + tmp("run");
  CmdResult r = ssm(args + " --gpus 2");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--gpus 2: only 0 GPUs are visible"), std::string::npos) << r.err;
  r = ssm(args + " --gpus 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--gpus"), std::string::npos) << r.err;
  r = CmdResult();
  std::string env = "RANK=0 WORLD_SIZE=1 ";
  int st = std::system(
      (env + SSM_BINARY_DIR + "/ssm " + args + " --device cuda > " + tmp("o.txt") + " 2> " + tmp("e.txt")).c_str());
  EXPECT_EQ(WIFEXITED(st) ? WEXITSTATUS(st) : -1, 1);
  EXPECT_NE(slurp(tmp("e.txt")).find("no CUDA device"), std::string::npos) << slurp(tmp("e.txt"));
  EXPECT_FALSE(fs::exists(tmp("run") + "/train.jsonl")) << "nothing is written";
}

TEST_F(Cli, InfoReportsSizes) {
  SSM_REQUIRE_SHARED("fixtures/ssm-mamba1-tiny/config.json");
  auto model = Model::load(shared_path("fixtures/ssm-mamba1-tiny"));
  CmdResult r = ssm("info -m " + shared_path("fixtures/ssm-mamba1-tiny") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["arch"], "mamba");
  EXPECT_EQ(j["n_params"].get<int64_t>(), model->num_parameters());
  // Mamba-1 state per sequence: n_layer × d_inner × ((d_conv - 1) + d_state) f32 = 3 × 128 × 19 × 4.
  EXPECT_EQ(j["state_bytes_per_sequence"].get<int64_t>(), 3 * 128 * 19 * 4);
  EXPECT_EQ(j["vocab_size_real"].get<int64_t>(), 317);
  r = ssm("info -m " + shared_path("fixtures/ssm-mamba1-tiny"));
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("parameters:      " + std::to_string(model->num_parameters())), std::string::npos) << r.out;
}

TEST_F(Cli, ConvertRoundTripsWithIdenticalLogits) {
  SSM_REQUIRE_SHARED("fixtures/ssm-mamba2-tiny/config.json");
  autograd::NoGradGuard no_grad;
  Tensor ids = Tensor::from_vector(std::vector<int64_t>{5, 17, 300, 42, 7, 99, 3}, {1, 7});
  for (const char* name : {"ssm-mamba2-tiny", "hf-mamba1-tiny", "hf-falcon-mamba-tiny"}) {
    const std::string src = shared_path(std::string("fixtures/") + name);
    Tensor want = Model::load(src)->forward(ids);
    for (const char* format : {"hf", "mamba_ssm"}) {
      const bool falcon = std::string(name) == "hf-falcon-mamba-tiny";
      const std::string out = tmp(std::string(name) + "-" + format);
      CmdResult r = ssm("convert -m " + src + " -o " + out + " --format " + format);
      if (falcon && std::string(format) == "mamba_ssm") {  // no such layer in mamba_ssm
        EXPECT_EQ(r.code, 1);
        EXPECT_NE(r.err.find("Falcon"), std::string::npos) << r.err;
        continue;
      }
      ASSERT_EQ(r.code, 0) << name << " " << format << ": " << r.err;
      EXPECT_NE(r.err.find("identical logits"), std::string::npos);
      auto copy = Model::load(out);
      EXPECT_TRUE(AllClose(copy->forward(ids), want, 0)) << name << " " << format;  // bit-identical
      auto cfg = io::load_json_file((fs::path(out) / "config.json").string());      // may hold Infinity
      EXPECT_EQ(cfg.contains("model_type"), std::string(format) == "hf");
      auto st = io::SafeTensors::open(out + "/model.safetensors");
      EXPECT_TRUE(st.has(std::string(format) == "hf" ? "backbone.embeddings.weight" : "backbone.embedding.weight"));
      EXPECT_EQ(st.shape("backbone.layers.0.mixer.conv1d.weight").size(), 3u);  // [C, 1, W] as checkpoints
    }
  }
  // bf16 matrices: stored as BF16, the small tensors stay F32, and the copy still loads.
  CmdResult r = ssm("convert -m " + shared_path("fixtures/hf-mamba1-tiny") + " -o " + tmp("bf16") + " --dtype bf16");
  ASSERT_EQ(r.code, 0) << r.err;
  auto st = io::SafeTensors::open(tmp("bf16") + "/model.safetensors");
  EXPECT_EQ(st.dtype("backbone.layers.0.mixer.in_proj.weight"), DType::bf16);
  EXPECT_EQ(st.dtype("backbone.layers.0.mixer.A_log"), DType::f32);
}

TEST_F(Cli, PerplexityEqualsExpCrossEntropy) {
  SSM_REQUIRE_SHARED("fixtures/hf-mamba1-tiny/config.json");
  const std::string tokf = byte_tokenizer(), model_dir = shared_path("fixtures/hf-mamba1-tiny");
  const std::string text = "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst.";
  std::ofstream(tmp("text.txt")) << text;
  CmdResult r = ssm("perplexity -m " + model_dir + " --tokenizer " + tokf + " -f " + tmp("text.txt") + " --ctx 4096");
  ASSERT_EQ(r.code, 0) << r.err;
  size_t at = r.out.find("Final estimate: PPL = ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double got = std::stod(r.out.substr(at + 22));
  // Reference: exp of the library's cross-entropy over the whole text in one pass.
  autograd::NoGradGuard no_grad;
  auto model = Model::load(model_dir);
  std::vector<int64_t> ids(text.begin(), text.end());  // byte tokenizer: id = byte
  const int64_t L = int64_t(ids.size());
  Tensor logits = model->forward(Tensor::from_vector(ids, {1, L}));  // [1, L, V]
  std::vector<int64_t> next(ids.begin() + 1, ids.end());
  Tensor ce =
      cross_entropy(logits.slice(1, 0, L - 1).contiguous().view({L - 1, -1}), Tensor::from_vector(next, {L - 1}));
  EXPECT_NEAR(got, std::exp(ce.item()), 1e-4 * std::exp(ce.item()));  // printed with 4 decimals
  EXPECT_NE(r.err.find("ETA"), std::string::npos);
}

TEST_F(Cli, LambadaAccuracyAndPerplexity) {
  SSM_REQUIRE_SHARED("fixtures/hf-mamba1-tiny/config.json");
  const std::string tokf = byte_tokenizer(), model_dir = shared_path("fixtures/hf-mamba1-tiny");
  const std::vector<std::string> docs = {"she said hello", "a b c ddd", "the cat sat on the mat"};
  {
    std::ofstream f(tmp("l.jsonl"));
    for (const auto& d : docs) f << nlohmann::json({{"text", d}}).dump() << "\n";
  }
  CmdResult r = ssm("perplexity -m " + model_dir + " --tokenizer " + tokf + " --lambada " + tmp("l.jsonl"));
  ASSERT_EQ(r.code, 0) << r.err;
  // Reference, by hand: the target is " " + last word; greedy over the 258 tokenizer ids.
  autograd::NoGradGuard no_grad;
  auto model = Model::load(model_dir);
  int correct = 0;
  double ll = 0;
  for (const auto& d : docs) {
    std::vector<int64_t> all(d.begin(), d.end());
    const int64_t L = int64_t(all.size()), T = L - int64_t(d.rfind(' '));
    Tensor lp = log_softmax(model->forward(Tensor::from_vector(all, {1, L})), -1);  // [1, L, V]
    auto v = lp.to_vector_f64();
    const int64_t V = lp.size(2);
    bool ok = true;
    for (int64_t t = L - T; t < L; ++t) {
      const double* row = v.data() + (t - 1) * V;
      ll += row[all[size_t(t)]];
      ok = ok && std::max_element(row, row + 258) - row == all[size_t(t)];
    }
    correct += ok;
  }
  char want[128];
  std::snprintf(want, sizeof want, "accuracy = %.2f%% (%d/3), perplexity = ", 100.0 * correct / 3, correct);
  const size_t at = r.out.find(want);
  ASSERT_NE(at, std::string::npos) << r.out << " vs " << want;
  // The tool sums log-probabilities in double from f32 logits, the reference takes f32 log_softmax:
  // 1e-5 relative on the exponential of the summed log-likelihoods.
  const double ppl = std::stod(r.out.substr(at + std::string(want).size()));
  EXPECT_NEAR(ppl, std::exp(-ll / 3), 1e-5 * std::exp(-ll / 3));
}

TEST_F(Cli, TextGenerationStopStringsAndSeeds) {
  SSM_REQUIRE_SHARED("fixtures/hf-mamba2-tiny/config.json");
  const std::string base = "generate -m " + shared_path("fixtures/hf-mamba2-tiny") + " --tokenizer " + byte_tokenizer();
  CmdResult r = ssm(base + " -p 'Hello' -n 12 --temp 0 --ignore-eos");
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(r.out.rfind("Hello", 0), 0u) << r.out;
  // Sampling is reproducible with a seed, and --parallel batches N samples of one prompt.
  CmdResult a = ssm(base + " -p 'Hello' -n 20 --temp 1 --top-k 0 --top-p 1 --min-p 0 --seed 3 --no-display-prompt");
  CmdResult b = ssm(base + " -p 'Hello' -n 20 --temp 1 --top-k 0 --top-p 1 --min-p 0 --seed 3 --no-display-prompt");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  CmdResult p = ssm(base + " -p 'Hello' -n 5 --parallel 3 --seed 1");
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_NE(p.out.find("--- sequence 2"), std::string::npos);
  // A stop string taken from the greedy text cuts the output just before its first occurrence.
  const std::string gen = r.out.substr(5, r.out.size() - 6);  // between "Hello" and the final newline
  ASSERT_GE(gen.size(), 6u);
  auto safe = [](unsigned char ch) { return ch > 0x20 && ch < 0x7f && ch != '\'' && ch != '\\'; };
  std::string stop;  // two printable bytes whose first occurrence is past the start
  for (size_t k = 1; k + 2 <= gen.size() && stop.empty(); ++k)
    if (safe(gen[k]) && safe(gen[k + 1]) && gen.find(gen.substr(k, 2)) == k) stop = gen.substr(k, 2);
  if (stop.empty()) GTEST_SKIP() << "the greedy text has no shell-safe stop string";
  CmdResult cut = ssm(base + " -p 'Hello' -n 12 --temp 0 --ignore-eos --stop '" + stop + "'");
  ASSERT_EQ(cut.code, 0) << cut.err;
  EXPECT_EQ(cut.out, "Hello" + gen.substr(0, gen.find(stop)) + "\n");
}

TEST_F(Cli, DefaultJobRunsTheDefaultModel) {
  CmdResult r = ssm("");
  ASSERT_EQ(r.code, 0) << r.err;
  if (ssm::has_embedded_model()) {
    EXPECT_NE(r.err.find("embedded shakespeare-char"), std::string::npos) << r.err;
    EXPECT_EQ(r.out.rfind("ROMEO:", 0), 0u);
  } else {
    EXPECT_NE(r.err.find("RANDOM weights"), std::string::npos);
    EXPECT_EQ(r.out.rfind("Once upon a time", 0), 0u);
  }
  EXPECT_NE(r.err.find("eval time"), std::string::npos);
}

TEST_F(Cli, BadInputExitsWithOne) {
  std::ofstream(tmp("bad.txt"), std::ios::binary) << "abc\xff\xfe";
  std::ofstream(tmp("empty.txt"));
  struct Case {
    std::string args, message;
  };
  std::vector<Case> cases = {
      {"generate -m /nonexistent/model -p hi", "not a directory"},
      {"generate -p \"$(printf 'a\\377b')\" -n 2", "not valid UTF-8"},
      {"generate -f " + tmp("bad.txt") + " -n 2", "not valid UTF-8"},
      {"generate -f " + tmp("empty.txt") + " -n 2", "empty"},
      {"generate -p '' -n 2", "empty"},
      {"generate -p hi -n 10000000000", "n-predict"},
      {"generate -p hi -n -5", "n-predict"},
      {"generate -p hi -n lots", "integer"},
      {"generate -p hi --seed -7", "seed"},
      {"generate -p hi --top-k -3", "top_k"},
      {"generate -p hi --dtype f8", "dtype"},
      {"logits -m /nonexistent", "required"},
      {"perplexity -m /nonexistent -f x", "not a directory"},
      {"info", "required"},
      {"convert -m /nonexistent -o " + tmp("x"), "not a directory"},
  };
  if (!testing::shared_dir().empty()) {
    const std::string fx = shared_path("fixtures/hf-mamba1-tiny");
    cases.push_back({"generate -m " + fx + " -p hi", "EleutherAI/gpt-neox-20b"});  // no tokenizer.json
    cases.push_back({"generate -m " + fx + " -p hi", "--tokenizer"});
    cases.push_back({"convert -m " + fx + " -o " + fx, "differ"});
    cases.push_back({"generate -m " + fx + " --input-ids " + tmp("missing.safetensors"), "missing.safetensors"});
    const std::string neox = shared_path("data/tokenizers/gpt-neox-20b/tokenizer.json");
    if (fs::exists(neox)) cases.push_back({"generate -m " + fx + " --tokenizer " + neox + " -p hi", "belong together"});
  }
  for (const auto& c : cases) {
    CmdResult r = ssm(c.args);
    EXPECT_EQ(r.code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << c.args;
  }
}

}  // namespace
}  // namespace ssm
