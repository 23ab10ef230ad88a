// JSON config helpers: file loading with positioned errors, the float spellings (numbers, "Infinity",
// {"__float__": ...}, Python's bare NaN/Infinity), typed getters and their error messages.
// Values are exact (integers, and doubles that are parsed, not computed): tolerance 0.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "ssm/json_config.h"
#include "testing.h"

using nlohmann::json;
using namespace ssm::io;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Runs fn, expects an ssm::Error containing every one of `words`.
template <typename F>
void expect_error(F&& fn, const std::vector<std::string>& words) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << words[0] << "'";
  } catch (const ssm::Error& e) {
    std::string m = e.what();
    for (const auto& w : words) EXPECT_NE(m.find(w), std::string::npos) << "missing '" << w << "' in: " << m;
  }
}

}  // namespace

TEST(JsonConfig, ReadsTheMamba2FixtureConfig) {
  SSM_REQUIRE_SHARED("fixtures/hf-mamba2-tiny/config.json");
  const std::string path = ssm::testing::shared_path("fixtures/hf-mamba2-tiny/config.json");
  json j = load_json_file(path);
  EXPECT_EQ(require_string(j, "model_type", path), "mamba2");
  EXPECT_EQ(require_int(j, "hidden_size", path), 64);
  EXPECT_EQ(get_int(j, "num_heads", 0, path), 8);
  EXPECT_EQ(get_float(j, "layer_norm_epsilon", 0, path), 1e-5);
  EXPECT_TRUE(require_bool(j, "tie_word_embeddings", path));
  EXPECT_FALSE(get_bool(j, "use_bias", true, path));
  // [0.0, {"__float__": "Infinity"}] as written by transformers 5.
  EXPECT_EQ(get_float_list(j, "time_step_limit", {}, path), (std::vector<double>{0.0, kInf}));
  EXPECT_EQ(get_int(j, "not_there", 42, path), 42);
  expect_error([&] { require_int(j, "d_model", path); }, {path, "'d_model'", "required but missing"});
}

TEST(JsonConfig, FloatSpellings) {
  EXPECT_EQ(json_float(json(2.5), "f", "k"), 2.5);
  EXPECT_EQ(json_float(json(-3), "f", "k"), -3.0);
  EXPECT_EQ(json_float(json("Infinity"), "f", "k"), kInf);
  EXPECT_EQ(json_float(json("+Infinity"), "f", "k"), kInf);
  EXPECT_EQ(json_float(json("inf"), "f", "k"), kInf);
  EXPECT_EQ(json_float(json("-Infinity"), "f", "k"), -kInf);
  EXPECT_TRUE(std::isnan(json_float(json("NaN"), "f", "k")));
  EXPECT_EQ(json_float(json{{"__float__", "Infinity"}}, "f", "k"), kInf);
  EXPECT_EQ(json_float(json{{"__float__", "-Infinity"}}, "f", "k"), -kInf);
  EXPECT_TRUE(std::isnan(json_float(json{{"__float__", "NaN"}}, "f", "k")));
  EXPECT_EQ(json_float(json{{"__float__", 1.5}}, "f", "k"), 1.5);
  for (const json& bad : {json("1.5"), json("infinity!"), json(true), json::array({1}), json{{"__float__", "x"}},
                          json{{"x", 1}}, json{{"__float__", "Infinity"}, {"extra", 1}}})
    expect_error([&] { json_float(bad, "cfg.json", "eps"); }, {"cfg.json", "'eps'", "must be a number"});
}

TEST(JsonConfig, PythonBareNonFiniteTokens) {
  json j = parse_json_text(R"({"a": NaN, "b": [Infinity, -Infinity], "s": "NaN \" Infinity", "NaNx": 1, "t": true})");
  EXPECT_TRUE(std::isnan(get_float(j, "a", 0)));
  EXPECT_EQ(get_float_list(j, "b", {}), (std::vector<double>{kInf, -kInf}));
  EXPECT_EQ(get_string(j, "s", ""), "NaN \" Infinity");  // strings are left alone
  EXPECT_EQ(get_int(j, "NaNx", 0), 1);
  EXPECT_TRUE(get_bool(j, "t", false));
  // Identifiers that merely start with a token are not rewritten (and stay invalid JSON).
  expect_error([] { parse_json_text("[NaNa]", "x.json"); }, {"x.json", "malformed JSON"});
  expect_error([] { parse_json_text("[Infinityy]", "x.json"); }, {"malformed JSON"});
}

TEST(JsonConfig, MalformedJsonReportsLineAndColumn) {
  // The error is at the ',' on line 3, column 8.
  expect_error([] { parse_json_text("{\n  \"a\": 1,\n  \"b\": ,\n}\n", "cfg.json"); },
               {"[config] cfg.json: malformed JSON at line 3, column 8"});
  // Columns refer to the original text even after a bare NaN was quoted earlier on the line.
  expect_error([] { parse_json_text(R"({"a": NaN, "b": })", "cfg.json"); }, {"line 1, column 17"});
  expect_error([] { parse_json_text("", "cfg.json"); }, {"malformed JSON at line 1"});
  expect_error([] { parse_json_text("{\"a\": 1} x", "cfg.json"); }, {"malformed JSON"});
}

TEST(JsonConfig, LoadFileErrors) {
  auto dir = std::filesystem::temp_directory_path() / ("ssm_io_cfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string missing = (dir / "missing.json").string();
  expect_error([&] { load_json_file(missing); }, {"cannot open", missing, "no such file"});
  expect_error([&] { load_json_file(dir.string()); }, {"not a regular file"});
  std::string bad = (dir / "bad.json").string();
  std::ofstream(bad) << "{\"a\": [1, 2}\n";
  expect_error([&] { load_json_file(bad); }, {bad, "malformed JSON at line 1, column 12"});
  std::string good = (dir / "good.json").string();
  std::ofstream(good) << "{\"limit\": [0.0, Infinity]}\n";
  EXPECT_EQ(get_float_list(load_json_file(good), "limit", {}), (std::vector<double>{0.0, kInf}));
  std::filesystem::remove_all(dir);
}

TEST(JsonConfig, TypedGetters) {
  json j = json::parse(R"({"i": 7, "neg": -3, "f4": 4.0, "f45": 4.5, "big": 1e30, "max": 9223372036854775807,
    "over": 9223372036854775808, "s": "x", "b": true, "n": null, "li": [1, 2, 3], "lb": [1, "2"],
    "lf": [0.5, "Infinity", {"__float__": "-Infinity"}]})");
  EXPECT_EQ(get_int(j, "i", 0), 7);
  EXPECT_EQ(get_int(j, "neg", 0), -3);
  EXPECT_EQ(get_int(j, "f4", 0), 4);  // an integral float is accepted
  EXPECT_EQ(get_int(j, "max", 0), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(get_int(j, "n", 5), 5);  // null is "absent"
  EXPECT_EQ(get_float(j, "i", 0), 7.0);
  EXPECT_EQ(get_float(j, "absent", 0.25), 0.25);
  EXPECT_EQ(get_string(j, "s", ""), "x");
  EXPECT_EQ(get_string(j, "absent", "d"), "d");
  EXPECT_TRUE(get_bool(j, "b", false));
  EXPECT_EQ(get_int_list(j, "li", {}), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(get_int_list(j, "absent", {9}), (std::vector<int64_t>{9}));
  EXPECT_EQ(get_float_list(j, "lf", {}), (std::vector<double>{0.5, kInf, -kInf}));
  EXPECT_TRUE(has_key(j, "i"));
  EXPECT_FALSE(has_key(j, "n"));
  EXPECT_FALSE(has_key(json::array(), "i"));

  expect_error([&] { get_int(j, "f45", 0, "c.json"); }, {"[config] c.json: key 'f45' must be an integer, got 4.5"});
  expect_error([&] { get_int(j, "big", 0, "c.json"); }, {"'big'", "must be an integer"});
  expect_error([&] { get_int(j, "over", 0, "c.json"); }, {"'over'", "out of range"});
  expect_error([&] { get_int(j, "s", 0, "c.json"); }, {"'s'", "must be an integer, got \"x\""});
  expect_error([&] { get_int(j, "b", 0, "c.json"); }, {"'b'", "must be an integer"});
  expect_error([&] { get_bool(j, "i", false, "c.json"); }, {"'i'", "must be true or false"});
  expect_error([&] { require_bool(j, "absent", "c.json"); }, {"'absent'", "required but missing"});
  expect_error([&] { get_string(j, "i", "", "c.json"); }, {"'i'", "must be a string"});
  expect_error([&] { require_string(j, "n", "c.json"); }, {"'n'", "required but missing"});
  expect_error([&] { require_float(j, "absent", "c.json"); }, {"c.json", "'absent'", "required but missing"});
  expect_error([&] { get_int_list(j, "lb", {}, "c.json"); }, {"'lb[1]'", "must be an integer"});
  expect_error([&] { get_int_list(j, "i", {}, "c.json"); }, {"'i'", "must be a list of integers"});
  expect_error([&] { get_float_list(j, "s", {}, "c.json"); }, {"'s'", "must be a list of numbers"});
  expect_error([&] { get_int(json::array(), "i", 0, "c.json"); }, {"c.json", "expected a JSON object"});
}
