// ssm tokenize / ssm detokenize: text ↔ token ids with a model's tokenizer.json.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.h"
#include "ssm/base.h"
#include "ssm/tokenizer.h"

namespace {

using json = nlohmann::json;

struct Source {
  std::string model, tokenizer, jsonl;
};

void add_source_options(CLI::App& app, Source& s) {
  auto* m = app.add_option("-m,--model", s.model, "model directory holding tokenizer.json");
  auto* t = app.add_option("--tokenizer", s.tokenizer, "a Hugging Face tokenizer.json file");
  m->excludes(t);
  app.add_option("--jsonl", s.jsonl, "process a JSON-lines file ('-' for stdin) instead of one input");
}

ssm::Tokenizer load(const Source& s, const char* cmd) {
  if (!s.tokenizer.empty()) return ssm::Tokenizer::from_file(s.tokenizer);
  if (!s.model.empty()) return ssm::Tokenizer::from_model_dir(s.model);
  ssm::fail(cmd,
            "no tokenizer given: pass --tokenizer FILE or -m DIR (a model directory holding tokenizer.json). The "
            "Mamba checkpoints use the tokenizer.json of EleutherAI/gpt-neox-20b on the Hugging Face hub");
}

std::string read_stream(std::istream& in) { return std::string(std::istreambuf_iterator<char>(in), {}); }

// Calls fn(line_number, parsed_object) for each non-empty line of a JSON-lines file.
template <class Fn>
void for_each_jsonl(const std::string& path, const char* cmd, Fn&& fn) {
  std::ifstream file;
  if (path != "-") {
    file.open(path, std::ios::binary);
    SSM_CHECK(file.good(), cmd, "cannot open '" + path + "'");
  }
  std::istream& in = path == "-" ? std::cin : file;
  size_t lineno = 0;
  for (std::string line; std::getline(in, line);) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      ssm::fail(cmd, path + " line " + std::to_string(lineno) + ": not valid JSON: " + e.what());
    }
    SSM_CHECK(j.is_object(), cmd, path + " line " + std::to_string(lineno) + ": expected a JSON object");
    fn(lineno, j);
  }
}

void print_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ' ';
    s += std::to_string(ids[i]);
  }
  s += '\n';
  std::fwrite(s.data(), 1, s.size(), stdout);
}

// A token's text for display; a token holding only part of a UTF-8 character shows its non-ASCII
// bytes as <0xNN>.
std::string piece_text(const ssm::Tokenizer& tok, int32_t id) {
  std::string raw = tok.decode_token(id);
  if (tok.decode({id}) == raw) return raw;
  std::string out;
  for (unsigned char c : raw) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", c);
    out += c < 0x80 ? std::string(1, char(c)) : std::string(buf);
  }
  return out;
}

// ---- tokenize ------------------------------------------------------------------------------------

struct TokenizeOpts {
  Source src;
  std::string text;
  bool ids = false, pieces = false;
};

ssm::tools::Command tokenize_cmd{
    "tokenize", "Text to token ids with a tokenizer.json (GPT-NeoX-20B for the Mamba checkpoints)", [](CLI::App& app) {
      auto o = std::make_shared<TokenizeOpts>();
      add_source_options(app, o->src);
      app.add_option("text", o->text, "text to encode (default: all of stdin)");
      app.add_flag("--ids", o->ids, "print only the ids on one line (the default; overrides --pieces)");
      app.add_flag("--pieces", o->pieces, "print one token per line: id, tab, the token's text as a JSON string");
      app.footer(
          "Output: the ids on one line, space separated; with --jsonl FILE, read lines {\"text\": ...} and print\n"
          "lines {\"ids\": [...]}. No BOS/EOS is added; special tokens written in the text (<|endoftext|>) are\n"
          "recognised. The tokenizer.json of the Mamba checkpoints is the one of EleutherAI/gpt-neox-20b\n"
          "on the Hugging Face hub.\n\n"
          "Examples:\n"
          "  ssm tokenize -m models/mamba-130m \"Hello world\"\n"
          "  ssm tokenize --tokenizer tokenizer.json --pieces \"Mamba is a state space model\"\n"
          "  ssm tokenize --tokenizer tokenizer.json < book.txt > book.ids\n"
          "  ssm tokenize -m models/mamba-130m --jsonl prompts.jsonl > prompts.ids.jsonl\n");
      return [o, &app]() {
        ssm::Tokenizer tok = load(o->src, "tokenize");
        if (!o->src.jsonl.empty()) {
          SSM_CHECK(app.count("text") == 0, "tokenize", "give either TEXT or --jsonl, not both");
          for_each_jsonl(o->src.jsonl, "tokenize", [&](size_t lineno, const json& j) {
            auto it = j.find("text");
            SSM_CHECK(it != j.end() && it->is_string(), "tokenize",
                      o->src.jsonl + " line " + std::to_string(lineno) + ": expected a string field \"text\"");
            std::string line = json{{"ids", tok.encode(it->get<std::string>())}}.dump() + "\n";
            std::fwrite(line.data(), 1, line.size(), stdout);
          });
          return 0;
        }
        std::string text = app.count("text") ? o->text : read_stream(std::cin);
        std::vector<int32_t> ids = tok.encode(text);
        if (o->pieces && !o->ids) {
          for (int32_t id : ids) {
            std::printf("%d\t%s\n", id, json(piece_text(tok, id)).dump().c_str());
          }
          std::fflush(stdout);
          std::fprintf(stderr, "%zu tokens\n", ids.size());
        } else {
          print_ids(ids);
        }
        return 0;
      };
    }};

// ---- detokenize ----------------------------------------------------------------------------------

struct DetokenizeOpts {
  Source src;
  std::vector<std::string> ids;
  bool skip_special = false;
};

std::vector<int32_t> parse_ids(const std::vector<std::string>& words) {
  std::vector<int32_t> ids;
  for (const std::string& w : words) {
    std::string s = w;
    for (char& c : s)
      if (c == ',' || c == '[' || c == ']') c = ' ';
    std::istringstream in(s);
    for (std::string tokstr; in >> tokstr;) {
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(tokstr, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      SSM_CHECK(used == tokstr.size() && v >= 0 && v <= INT32_MAX, "detokenize",
                "'" + tokstr + "' is not a token id (a non-negative integer)");
      ids.push_back(int32_t(v));
    }
  }
  return ids;
}

ssm::tools::Command detokenize_cmd{
    "detokenize", "Token ids to text with a tokenizer.json", [](CLI::App& app) {
      auto o = std::make_shared<DetokenizeOpts>();
      add_source_options(app, o->src);
      app.add_option("ids", o->ids, "token ids, separated by spaces or commas (default: read them from stdin)");
      app.add_flag("--skip-special", o->skip_special, "leave out special tokens such as <|endoftext|>");
      app.footer(
          "Output: the text followed by a newline; with --jsonl FILE, read lines {\"ids\": [...]} and print\n"
          "lines {\"text\": ...}. Byte sequences that are not valid UTF-8 become U+FFFD, as in Hugging Face.\n\n"
          "Examples:\n"
          "  ssm detokenize -m models/mamba-130m 12092 1533\n"
          "  ssm tokenize --tokenizer tokenizer.json \"Hello world\" | ssm detokenize --tokenizer tokenizer.json\n"
          "  ssm detokenize -m models/mamba-130m --jsonl generations.ids.jsonl\n");
      return [o, &app]() {
        ssm::Tokenizer tok = load(o->src, "detokenize");
        if (!o->src.jsonl.empty()) {
          SSM_CHECK(o->ids.empty(), "detokenize", "give either IDS or --jsonl, not both");
          for_each_jsonl(o->src.jsonl, "detokenize", [&](size_t lineno, const json& j) {
            auto it = j.find("ids");
            const std::string where = o->src.jsonl + " line " + std::to_string(lineno);
            SSM_CHECK(it != j.end() && it->is_array(), "detokenize", where + ": expected an array field \"ids\"");
            std::vector<int32_t> ids;
            for (const auto& v : *it) {
              SSM_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX, "detokenize",
                        where + ": ids must be non-negative integers, got " + v.dump());
              ids.push_back(int32_t(v.get<int64_t>()));
            }
            std::string line = json{{"text", tok.decode(ids, o->skip_special)}}.dump() + "\n";
            std::fwrite(line.data(), 1, line.size(), stdout);
          });
          return 0;
        }
        std::vector<int32_t> ids = app.count("ids") ? parse_ids(o->ids) : parse_ids({read_stream(std::cin)});
        std::string text = tok.decode(ids, o->skip_special) + "\n";
        std::fwrite(text.data(), 1, text.size(), stdout);
        return 0;
      };
    }};

}  // namespace
