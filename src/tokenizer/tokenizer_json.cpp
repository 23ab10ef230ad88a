// Loading a Hugging Face tokenizer.json (BPE model, ByteLevel pre-tokenizer and decoder).
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ssm/base.h"
#include "tokenizer/impl.h"

namespace ssm {

namespace {

using json = nlohmann::json;
constexpr int64_t kMaxId = (int64_t(1) << 24) - 1;  // keeps id tables bounded for hostile files

class Loader {
 public:
  explicit Loader(std::string source) : src_(std::move(source)) {}

  [[noreturn]] void bad(const std::string& what) const { fail("tokenizer.json", src_ + ": " + what); }

  const json* field(const json& obj, const char* key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  bool flag(const json& obj, const char* key, bool dflt, const std::string& path) const {
    const json* v = field(obj, key);
    if (!v) return dflt;
    if (!v->is_boolean()) bad(path + "." + key + " must be true or false, got " + std::string(v->type_name()));
    return v->get<bool>();
  }
  std::string str(const json& v, const std::string& path) const {
    if (!v.is_string()) bad(path + " must be a string, got " + std::string(v.type_name()));
    return v.get<std::string>();
  }
  int32_t id(const json& v, const std::string& path) const {
    if (!v.is_number_integer()) bad(path + " must be an integer id, got " + std::string(v.type_name()));
    int64_t x = v.get<int64_t>();
    if (x < 0 || x > kMaxId) bad(path + " = " + std::to_string(x) + " is outside [0, " + std::to_string(kMaxId) + "]");
    return int32_t(x);
  }
  std::string type_of(const json& obj, const std::string& path) const {
    if (!obj.is_object()) bad(path + " must be an object, got " + std::string(obj.type_name()));
    const json* t = field(obj, "type");
    if (!t) bad(path + ".type is missing");
    return str(*t, path + ".type");
  }

  tok::NormForm normalizer(const json* n, const std::string& path) const {
    if (!n) return tok::NormForm::none;
    std::string t = type_of(*n, path);
    if (t == "NFC") return tok::NormForm::nfc;
    if (t == "NFD") return tok::NormForm::nfd;
    if (t == "NFKC") return tok::NormForm::nfkc;
    if (t == "NFKD") return tok::NormForm::nfkd;
    if (t == "Sequence") {
      const json* list = field(*n, "normalizers");
      if (!list || !list->is_array()) bad(path + ".normalizers must be an array");
      // A chain of normalization forms equals one form: compatibility if any step is, composed iff
      // the last step composes.
      bool compat = false, compose = false, any = false;
      for (size_t i = 0; i < list->size(); ++i) {
        tok::NormForm f = normalizer(&(*list)[i], path + ".normalizers[" + std::to_string(i) + "]");
        if (f == tok::NormForm::none) continue;
        any = true;
        compat |= f == tok::NormForm::nfkc || f == tok::NormForm::nfkd;
        compose = f == tok::NormForm::nfc || f == tok::NormForm::nfkc;
      }
      if (!any) return tok::NormForm::none;
      return compose ? (compat ? tok::NormForm::nfkc : tok::NormForm::nfc)
                     : (compat ? tok::NormForm::nfkd : tok::NormForm::nfd);
    }
    bad(path + ".type '" + t + "' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence of these)");
  }

  // Fills add_prefix_space / use_regex from a ByteLevel pre-tokenizer.
  void pre_tokenizer(const json* p, Tokenizer::Impl& im) const {
    const std::string path = "pre_tokenizer";
    if (!p) bad("pre_tokenizer is missing; only byte-level BPE (pre_tokenizer ByteLevel) is supported");
    std::string t = type_of(*p, path);
    const json* bl = p;
    std::string blpath = path;
    if (t == "Sequence") {
      const json* list = field(*p, "pretokenizers");
      if (!list || !list->is_array() || list->size() != 1)
        bad(path + ": only a Sequence holding exactly one ByteLevel pre-tokenizer is supported");
      bl = &(*list)[0];
      blpath = path + ".pretokenizers[0]";
      t = type_of(*bl, blpath);
    }
    if (t != "ByteLevel")
      bad(blpath + ".type '" + t + "' is not supported; only byte-level BPE (ByteLevel) is implemented");
    im.add_prefix_space = flag(*bl, "add_prefix_space", true, blpath);
    im.use_regex = flag(*bl, "use_regex", true, blpath);
  }

  const std::string& source() const { return src_; }

 private:
  std::string src_;
};

// tokenizer.json spelling (GPT-2 byte→unicode characters) → raw bytes; tokens holding a character
// outside the table decode to their own UTF-8 bytes, as Hugging Face's ByteLevel decoder does.
bool unmap_bytes(const std::string& tok, std::string& out) {
  out.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(tok.data());
  for (size_t i = 0; i < tok.size();) {
    int len = 0;
    int b = tok::unicode_to_byte(tok::utf8_decode(p + i, &len));
    if (b < 0) {
      out = tok;
      return false;
    }
    out.push_back(char(b));
    i += size_t(len);
  }
  return true;
}

// Hugging Face does not take the "id" written for an added token: it re-adds the tokens in file
// order, giving each the id of the same content if already known (added or model vocab), else the
// next free id after the model vocab (its entry count) and the added ids so far; a token identical
// to one already added is skipped. For consistent files (all published ones) the ids agree; for the
// others we follow Hugging Face so the ids match what models were trained with.
void assign_added_ids(const std::vector<tok::AddedToken>& parsed, const std::unordered_map<std::string, int32_t>& vocab,
                      std::vector<tok::AddedToken>& out) {
  auto same = [](const tok::AddedToken& a, const tok::AddedToken& b) {
    return a.content == b.content && a.special == b.special && a.single_word == b.single_word && a.lstrip == b.lstrip &&
           a.rstrip == b.rstrip && a.normalized == b.normalized;
  };
  std::unordered_map<std::string, int32_t> by_content;
  std::unordered_map<int32_t, size_t> slot_of_id;  // id → index in out
  int64_t max_added = -1;
  const int64_t vocab_size = int64_t(vocab.size());
  for (const tok::AddedToken& t : parsed) {
    bool dup = false;
    for (const auto& o : out) dup |= same(o, t);
    if (dup) continue;
    int64_t id;
    if (auto a = by_content.find(t.content); a != by_content.end())
      id = a->second;
    else if (auto v = vocab.find(t.content); v != vocab.end())
      id = v->second;
    else if (max_added < 0)
      id = vocab_size;
    else
      id = (max_added >= vocab_size || vocab_size == 0) ? max_added + 1 : vocab_size;
    if (id > kMaxId) fail("tokenizer.json", "too many added tokens (id " + std::to_string(id) + ")");
    by_content[t.content] = int32_t(id);
    max_added = std::max(max_added, id);
    tok::AddedToken u = t;
    u.id = int32_t(id);
    if (auto s = slot_of_id.find(u.id); s != slot_of_id.end()) {
      out[s->second] = std::move(u);  // the later token takes over the id, as in Hugging Face's map
    } else {
      slot_of_id[u.id] = out.size();
      out.push_back(std::move(u));
    }
  }
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("tokenizer", "cannot open '" + path + "': " + std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail("tokenizer", "error reading '" + path + "'");
  return from_json(ss.str(), path);
}

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& source) {
  Loader L(source);
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    L.bad(std::string("not valid JSON: ") + e.what());
  }
  if (!root.is_object()) L.bad("the top level must be an object, got " + std::string(root.type_name()));
  auto im = std::make_shared<Impl>();
  im->kind = TokKind::bpe;

  // ---- model ----
  const json* model = L.field(root, "model");
  if (!model) L.bad("'model' is missing");
  if (!model->is_object()) L.bad("'model' must be an object, got " + std::string(model->type_name()));
  if (const json* t = L.field(*model, "type"); t && L.str(*t, "model.type") != "BPE")
    L.bad("model.type '" + t->get<std::string>() + "' is not supported (only BPE)");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const json* v = L.field(*model, k); v && !L.str(*v, std::string("model.") + k).empty())
      L.bad(std::string("model.") + k + " is not supported by byte-level BPE (must be null)");
  const json* vocab = L.field(*model, "vocab");
  if (!vocab) L.bad("model.vocab is missing");
  if (!vocab->is_object()) L.bad("model.vocab must be an object {token: id}, got " + std::string(vocab->type_name()));
  const json* merges = L.field(*model, "merges");
  if (!merges) L.bad("model.merges is missing");
  if (!merges->is_array()) L.bad("model.merges must be an array, got " + std::string(merges->type_name()));

  std::unordered_map<std::string, int32_t> v2id;  // tokenizer.json spelling → id
  v2id.reserve(vocab->size());
  int64_t max_vocab_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const json& v = it.value();
    int64_t id = v.is_number_integer() ? v.get<int64_t>() : -1;
    if (id < 0 || id > kMaxId) L.id(v, "model.vocab[\"" + it.key() + "\"]");  // throws the precise error
    max_vocab_id = std::max(max_vocab_id, id);
    v2id.emplace(it.key(), int32_t(id));
  }
  // Real vocabularies number their tokens densely; a huge id with few tokens is a corrupt file (and
  // would make us allocate tables for ids that do not exist).
  if (max_vocab_id > 2 * int64_t(v2id.size()) + 1024)
    L.bad("model.vocab: the largest id, " + std::to_string(max_vocab_id) + ", is far beyond the number of tokens (" +
          std::to_string(v2id.size()) + "); ids must be numbered densely");
  std::vector<std::string> id2v(size_t(max_vocab_id + 1));  // [max id + 1] spelling of each vocab id
  std::vector<uint8_t> has(size_t(max_vocab_id + 1));       // [max id + 1]
  for (const auto& [tok, id] : v2id) {
    if (has[size_t(id)]) {
      const std::string &a = std::min(id2v[size_t(id)], tok), &b = std::max(id2v[size_t(id)], tok);
      L.bad("model.vocab: id " + std::to_string(id) + " is used by both \"" + a + "\" and \"" + b + "\"");
    }
    has[size_t(id)] = 1;
    id2v[size_t(id)] = tok;
  }

  tok::BpeModel& bpe = im->bpe;
  bpe.merges.reserve(merges->size());
  for (size_t r = 0; r < merges->size(); ++r) {
    const json& m = (*merges)[r];
    const std::string path = "model.merges[" + std::to_string(r) + "]";
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        L.bad(path + " = \"" + s + "\" must be two tokens separated by one space");
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (m.is_array()) {
      if (m.size() != 2) L.bad(path + " must be a pair [left, right], got " + std::to_string(m.size()) + " items");
      a = L.str(m[0], path + "[0]"), b = L.str(m[1], path + "[1]");
    } else {
      L.bad(path + " must be a string \"left right\" or an array [left, right], got " + std::string(m.type_name()));
    }
    auto ia = v2id.find(a), ib = v2id.find(b), iab = v2id.find(a + b);
    if (ia == v2id.end()) L.bad(path + ": left token \"" + a + "\" is not in model.vocab");
    if (ib == v2id.end()) L.bad(path + ": right token \"" + b + "\" is not in model.vocab");
    if (iab == v2id.end()) L.bad(path + ": merged token \"" + a + b + "\" is not in model.vocab");
    bpe.merges.set(ia->second, ib->second, {int32_t(r), iab->second});
  }
  if (const json* u = L.field(*model, "unk_token")) {
    std::string unk = L.str(*u, "model.unk_token");
    auto it = v2id.find(unk);
    if (it == v2id.end()) L.bad("model.unk_token \"" + unk + "\" is not in model.vocab");
    bpe.unk_id = it->second;
  }
  bpe.fuse_unk = L.flag(*model, "fuse_unk", false, "model");
  bpe.ignore_merges = L.flag(*model, "ignore_merges", false, "model");
  const bool byte_fallback = L.flag(*model, "byte_fallback", false, "model");
  if (const json* d = L.field(*model, "dropout"); d && !d->is_number())
    L.bad("model.dropout must be null or a number");  // BPE-dropout is training-time only: ignored here

  // ---- added tokens ----
  std::vector<tok::AddedToken> parsed;
  if (const json* added = L.field(root, "added_tokens")) {
    if (!added->is_array()) L.bad("added_tokens must be an array, got " + std::string(added->type_name()));
    for (size_t i = 0; i < added->size(); ++i) {
      const json& a = (*added)[i];
      const std::string path = "added_tokens[" + std::to_string(i) + "]";
      if (!a.is_object()) L.bad(path + " must be an object, got " + std::string(a.type_name()));
      tok::AddedToken t;
      const json* id = L.field(a, "id");
      if (!id) L.bad(path + ".id is missing");
      t.id = L.id(*id, path + ".id");
      const json* content = L.field(a, "content");
      if (!content) L.bad(path + ".content is missing");
      t.content = L.str(*content, path + ".content");
      if (t.content.empty()) L.bad(path + ".content is empty");
      t.special = L.flag(a, "special", false, path);
      t.single_word = L.flag(a, "single_word", false, path);
      t.lstrip = L.flag(a, "lstrip", false, path);
      t.rstrip = L.flag(a, "rstrip", false, path);
      t.normalized = L.flag(a, "normalized", !t.special, path);
      parsed.push_back(std::move(t));
    }
  }
  assign_added_ids(parsed, v2id, im->added);

  im->norm = L.normalizer(L.field(root, "normalizer"), "normalizer");
  L.pre_tokenizer(L.field(root, "pre_tokenizer"), *im);
  if (const json* d = L.field(root, "decoder"); d && L.type_of(*d, "decoder") != "ByteLevel")
    L.bad("decoder.type '" + (*d)["type"].get<std::string>() + "' is not supported (only ByteLevel)");

  // ---- id tables ----
  size_t n = id2v.size();
  for (const auto& t : im->added) n = std::max(n, size_t(t.id) + 1);
  if (n == 0) L.bad("the vocabulary is empty");
  // Real vocabularies number their tokens densely; a huge id with few tokens is a corrupt file (and
  // would make us allocate tables for ids that do not exist).
  const size_t entries = v2id.size() + im->added.size();
  if (n > 2 * entries + 1024)
    L.bad("the largest id, " + std::to_string(n - 1) + ", is far beyond the number of tokens (" +
          std::to_string(entries) + "); ids must be numbered densely");
  im->id_bytes.assign(n, std::string());
  im->id_present.assign(n, 0);
  im->id_special.assign(n, 0);
  std::string bytes;
  for (size_t id = 0; id < id2v.size(); ++id) {
    if (!has[id]) continue;
    bool mapped = unmap_bytes(id2v[id], bytes);
    im->id_bytes[id] = bytes;
    im->id_present[id] = 1;
    im->token_to_id[id2v[id]] = int32_t(id);
    if (mapped && bpe.ignore_merges) bpe.whole_words[bytes] = int32_t(id);
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    tok::utf8_append(s, tok::byte_to_unicode()[size_t(b)]);
    auto it = v2id.find(s);
    if (it == v2id.end() && byte_fallback) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      it = v2id.find(buf);
    }
    if (it != v2id.end()) bpe.byte_id[size_t(b)] = it->second;
  }
  for (auto& t : im->added) {
    unmap_bytes(t.content, bytes);
    im->id_bytes[size_t(t.id)] = bytes;
    im->id_present[size_t(t.id)] = 1;
    im->id_special[size_t(t.id)] = t.special;
    im->token_to_id[t.content] = t.id;
  }
  // Matchers point into im->added, which no longer changes.
  for (const auto& t : im->added) {
    if (t.normalized)
      im->norm_added.add(tok::normalize(t.content, im->norm), &t);
    else
      im->raw_added.add(t.content, &t);
  }
  for (const char* e : {"<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"}) {
    auto it = im->token_to_id.find(e);
    if (it != im->token_to_id.end() && im->id_special[size_t(it->second)]) {
      im->eos = it->second;
      break;
    }
  }
  for (const char* e : {"<|endoftext|>", "<s>", "<|begin_of_text|>", "<bos>"}) {
    auto it = im->token_to_id.find(e);
    if (it != im->token_to_id.end() && im->id_special[size_t(it->second)]) {
      im->bos = it->second;
      break;
    }
  }
  return Tokenizer(std::move(im));
}

}  // namespace ssm
