// `ssm train --config FILE`: the TOML reader against Python's tomllib (the reference; its output is
// in tests/data/toml/*.json), its errors (each names the line), and config files end to end through
// the binary: values applied, flags override the file, typos and wrong types rejected.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ssm/json_config.h"
#include "ssm/toml.h"
#include "testing.h"
#include "train_testing.h"

using namespace ssm;
namespace fs = std::filesystem;
using json = nlohmann::json;
using ssm::testing::expect_error;
using ssm::testing::slurp;

namespace {

// Same structure, same types (integer vs float), same values. tomllib's ±inf arrive as the strings
// "Infinity" / "-Infinity" (Python's json module writes bare tokens; parse_json_text keeps them).
void expect_same(const json& got, const json& want, const std::string& path) {
  if (want.is_string() && (want == "Infinity" || want == "-Infinity")) {
    ASSERT_TRUE(got.is_number_float()) << path;
    EXPECT_EQ(got.get<double>(), io::json_float(want, "ref", path)) << path;
    return;
  }
  ASSERT_EQ(got.is_object(), want.is_object()) << path;
  ASSERT_EQ(got.is_array(), want.is_array()) << path;
  ASSERT_EQ(got.is_number_float(), want.is_number_float()) << path << ": " << got << " vs " << want;
  ASSERT_EQ(got.is_number_integer(), want.is_number_integer()) << path;
  if (got.is_object()) {
    ASSERT_EQ(got.size(), want.size()) << path << ": " << got.dump() << " vs " << want.dump();
    for (const auto& [k, v] : want.items()) {
      ASSERT_TRUE(got.contains(k)) << path << "." << k;
      expect_same(got[k], v, path + "." + k);
    }
  } else if (got.is_array()) {
    ASSERT_EQ(got.size(), want.size()) << path;
    for (size_t i = 0; i < got.size(); ++i) expect_same(got[i], want[i], path + "[" + std::to_string(i) + "]");
  } else {
    EXPECT_EQ(got, want) << path;
  }
}

TEST(Toml, MatchesPythonTomllib) {
  for (const char* name : {"subset", "crlf"}) {
    std::string dir = std::string(SSM_SOURCE_DIR) + "/tests/data/toml/";
    io::TomlDocument d = io::load_toml_file(dir + name + ".toml");
    expect_same(d.root, io::load_json_file(dir + name + ".json"), name);
  }
  io::TomlDocument d = io::load_toml_file(std::string(SSM_SOURCE_DIR) + "/tests/data/toml/subset.toml");
  EXPECT_EQ(d.line_of("numbers"), 8);
  EXPECT_EQ(d.line_of("numbers.f3"), 16);
  EXPECT_EQ(d.line_of("arrays.multiline"), 37);
  EXPECT_EQ(d.line_of("spaced.table.x"), 50);
}

TEST(Toml, ErrorsNameTheLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"a = 1\na = 2\n", "f.toml:2: duplicate key 'a' (first at line 1)"},
      {"[t]\nx = 1\n[t]\n", "f.toml:3: table [t] is defined twice (first at line 1)"},
      {"[a]\nb = 1\n[a.b]\n", "f.toml:3: [a.b]: 'a.b' is already a value (line 2)"},
      {"\nx =\n", "f.toml:2: missing value for 'x'"},
      {"x = 1 2\n", "f.toml:1: unexpected '2' (expected the end of the line)"},
      {"x = \"abc\ny = 1\n", "f.toml:1: unterminated string"},
      {"x = 'abc\n", "f.toml:1: unterminated string"},
      {"x = 0x1f\n", "hexadecimal, octal and binary integers are not supported ('x')"},
      {"x = 1979-05-27\n", "dates and times are not supported ('x')"},
      {"x = {a = 1}\n", "inline tables are not supported ('x')"},
      {"[[t]]\n", "arrays of tables ([[...]]) are not supported"},
      {"a.b = 1\n", "dotted keys ('a.…') are not supported"},
      {"x = 01\n", "'01' is not a valid value for 'x' (leading zeros)"},
      {"x = 9223372036854775808\n", "integer out of range for 'x'"},
      {"x = 1e400\n", "float out of range for 'x'"},
      {"x = \"\\q\"\n", "unknown escape sequence \\q"},
      {"x = \"\\uD800\"\n", "\\u escape is not a Unicode scalar value"},
      {"x = \"\\u12\"\n", "\\u needs 4 hexadecimal digits"},
      {"x = [1, 2\n\n", "f.toml:3: unterminated array 'x'"},
      {"x = [1 2]\n", "expected ',' or ']' in the array 'x'"},
      {"x = 1_\n", "'1_' is not a valid value for 'x'"},
      {"x = 1__0\n", "'1__0' is not a valid value"},
      {"x = 1.\n", "'1.' is not a valid value"},
      {"x = .5\n", "'.5' is not a valid value"},
      {"x = tru\n", "'tru' is not a valid value"},
      {"x = \"\"\"m\"\"\"\n", "multi-line strings are not supported ('x')"},
      {"\n\nx = \"\xff\"\n", "f.toml:3: not valid UTF-8"},
      {"x = 1\x01\n", "f.toml:1: control character 1"},
      {"x = 1\ry = 2\n", "f.toml:1: control character 13"},
      {"= 1\n", "f.toml:1: unexpected '=' (expected a key)"},
      {"x 1\n", "f.toml:1: expected '=' after the key 'x'"},
      {"[a\n", "f.toml:1: expected ']' to close the table header [a"},
      {"[]\n", "f.toml:1: unexpected ']' (expected a key)"},
  };
  for (const auto& [text, want] : cases) {
    SCOPED_TRACE(text);
    expect_error([&] { io::parse_toml(text, "f.toml"); }, want);
  }
  expect_error([&] { io::load_toml_file("/nonexistent/x.toml"); }, "cannot open '/nonexistent/x.toml'");
}

// ---- end to end through the binary ----
struct Cmd {
  int code = -1;
  std::string err, out;
};

class TrainConfigCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ssm_trainconfig_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_ = ssm::testing::write_text("trainconfig.txt");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }
  std::string write(const std::string& n, const std::string& text) const {
    std::ofstream(path(n)) << text;
    return path(n);
  }
  Cmd ssm(const std::string& args) const {
    std::string cmd =
        std::string(SSM_BINARY_DIR) + "/ssm -t 1 " + args + " > " + path("out.txt") + " 2> " + path("err.txt");
    int st = std::system(cmd.c_str());
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(path("err.txt")), slurp(path("out.txt"))};
  }
  // A valid config for a tiny run (2 steps), with `extra` appended.
  std::string tiny_toml(const std::string& extra = "") const {
    return "[data]\ndata = \"" + data_ + "\"\n[model]\nd_model = 24\nn_layer = 1\nd_state = 4\n" +
           "[training]\nsteps = 2\nbatch = 2\nseq_len = 16\nwarmup = 1\nseed = 7\n" +
           "[eval]\neval_every = 0\n[output]\nout = \"" + path("run") + "\"\nckpt_every = 0\nlog_every = 0\n" + extra;
  }
  fs::path dir_;
  std::string data_;
};

int count_steps(const std::string& jsonl) {
  std::istringstream in(slurp(jsonl));
  int n = 0;
  for (std::string line; std::getline(in, line);) n += json::parse(line).contains("loss");
  return n;
}

TEST_F(TrainConfigCli, TomlAndJsonFilesAreAppliedAndFlagsOverrideThem) {
  Cmd r = ssm("train --config " + write("c.toml", tiny_toml()));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count_steps(path("run/train.jsonl")), 2);
  json mc = io::load_json_file(path("run/model/config.json"));
  EXPECT_EQ(mc["hidden_size"], 24);
  EXPECT_EQ(mc["num_hidden_layers"], 1);
  // Flags win over the file: 3 steps, width 32, another output directory.
  r = ssm("train --config " + path("c.toml") + " --steps 3 --d-model 32 -o " + path("run2"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count_steps(path("run2/train.jsonl")), 3);
  EXPECT_EQ(io::load_json_file(path("run2/model/config.json"))["hidden_size"], 32);
  // The same settings as JSON.
  json j = {{"data", {{"data", data_}}},
            {"model", {{"d_model", 16}, {"n_layer", 1}, {"d_state", 4}}},
            {"training", {{"steps", 1}, {"batch", 2}, {"seq_len", 16}, {"lr", 0.001}}},
            {"eval", {{"eval_every", 0}}},
            {"output", {{"out", path("run3")}, {"ckpt_every", 0}}}};
  r = ssm("train --config " + write("c.json", j.dump()));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count_steps(path("run3/train.jsonl")), 1);
  EXPECT_EQ(io::load_json_file(path("run3/model/config.json"))["hidden_size"], 16);
}

// --lti applies to a --model-config as well as to the shape flags (it was once ignored there);
// --init refuses both, since the model directory fixes the configuration.
TEST_F(TrainConfigCli, LtiAppliesToAModelConfigFile) {
  Cmd r = ssm("train --config " + write("c.toml", tiny_toml()));
  ASSERT_EQ(r.code, 0) << r.err;
  r = ssm("train --config " + path("c.toml") + " --model-config " + path("run/model/config.json") + " --lti -o " +
          path("lti"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(io::load_json_file(path("lti/model/config.json"))["selective"], false);
  EXPECT_EQ(io::load_json_file(path("lti/model/config.json"))["hidden_size"], 24);
  r = ssm("train --config " + path("c.toml") + " --init " + path("run/model") + " --lti -o " + path("x"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--init takes the model's configuration from its directory"), std::string::npos) << r.err;
}

TEST_F(TrainConfigCli, BadConfigsAreClearErrors) {
  const std::pair<std::string, std::string> cases[] = {
      {tiny_toml("[training]\n"), "c.toml:19: table [training] is defined twice (first at line 7)"},
      {tiny_toml() + "[eval]\n", "table [eval] is defined twice"},
      {"[training]\nlrr = 0.1\n", "c.toml:2: unknown key 'lrr' in [training] (known: steps batch seq_len"},
      {"[model]\nlr = 0.1\n", "c.toml:2: 'lr' belongs in the table [training], not [model]"},
      {"steps = 3\n", "c.toml:1: 'steps' must be inside the table [training]"},
      {"[optim]\nlr = 0.1\n", "c.toml:1: unknown table [optim] (known: [data], [eval], [model], [output], [training])"},
      {"[training]\nsteps = \"ten\"\n", "c.toml:2: 'steps' in [training] must be an integer, not \"ten\""},
      {"[training]\nsteps = 2.5\n", "'steps' in [training] must be an integer, not 2.5"},
      {"[training]\nlr = nan\n", "'lr' in [training] must be a number"},
      {"[training]\nseed = -1\n", "'seed' in [training] must be a non-negative integer, not -1"},
      {"[data]\ndata = 3\n", "'data' in [data] must be a string, not 3"},
      {"[training]\nsteps = 1 # ok\nbatch = [2]\n", "c.toml:3: 'batch' in [training] must be an integer, not [2]"},
      {"[training\n", "c.toml:1: expected ']' to close the table header [training"},
  };
  for (const auto& [text, want] : cases) {
    SCOPED_TRACE(text);
    Cmd r = ssm("train --config " + write("c.toml", text));
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
  }
  Cmd r = ssm("train --config " + write("c.json", "{\"training\": {\"stepz\": 1}}"));
  EXPECT_NE(r.err.find("c.json: unknown key 'stepz' in [training]"), std::string::npos) << r.err;
  r = ssm("train --config " + write("config.json", "{\"d_model\": 64, \"n_layer\": 2}"));
  EXPECT_NE(r.err.find("looks like a model config.json; pass it with --model-config"), std::string::npos) << r.err;
  r = ssm("train --config " + write("c.yaml", "steps: 1\n"));
  EXPECT_NE(r.err.find("a config file must end in .toml or .json"), std::string::npos) << r.err;
  r = ssm("train --config " + path("missing.toml"));
  EXPECT_NE(r.err.find("cannot open '" + path("missing.toml") + "'"), std::string::npos) << r.err;
}

TEST_F(TrainConfigCli, TheRecipeConfigIsValid) {
  // The example config parses and every key is known; --steps 0 is refused only after the file
  // was applied (so the error is about steps, not about the file).
  Cmd r = ssm("train --config " + std::string(SSM_SOURCE_DIR) +
              "/recipes/shakespeare-char/train.toml --steps 0 --data " + data_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("steps and grad_accum must be >= 1"), std::string::npos) << r.err;
  // --help lists every table and key (generated from the options) and shows the example.
  r = ssm("train --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("[model] model_config init arch d_model n_layer d_state expand headdim chunk\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("[eval] eval_every eval_batches sample_every sample_len sample_prompt sample_temp\n"),
            std::string::npos);
  EXPECT_NE(r.out.find("For example (recipes/shakespeare-char/train.toml)"), std::string::npos);
}

}  // namespace
