// ssm.cpp — a small, safe unpickler: the opcodes of protocols 2-5 that a PyTorch state dict uses.
//
// It never imports or calls anything by itself: GLOBAL/STACK_GLOBAL, REDUCE, BINPERSID and BUILD go
// to a Hooks object, which allows what it knows (e.g. collections.OrderedDict, torch's tensor
// rebuilders) and throws for the rest. All reads are bounds-checked; popping below the current MARK
// is a stack underflow; memo gets of unset slots are errors. Values live in an arena owned by the
// Unpickler, so reference cycles built by a crafted pickle cannot leak.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace ssm::io::pickle {

enum class Kind : uint8_t { none, boolean, integer, floating, string, tuple, list, dict, global, external };
const char* kind_name(Kind k);

struct Value {
  Kind kind = Kind::none;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s, s2;          // string: s; global: module s, name s2
  std::vector<Value*> items;  // tuple, list; dict: key0, value0, key1, value1, ... in insertion order
  std::unordered_map<std::string, size_t> dict_index;  // dict: key -> index of the key in items
  int ext_type = 0;                                    // external (a hook's object): its type and index
  size_t ext_index = 0;
};

class Unpickler;

// What a pickle may import and call. Each hook throws (through Unpickler::error) to refuse.
class Hooks {
 public:
  virtual ~Hooks() = default;
  virtual void check_global(Unpickler& u, const std::string& module, const std::string& name) = 0;
  virtual Value* persistent_load(Unpickler& u, Value* pid) = 0;
  virtual Value* call(Unpickler& u, Value* callable, Value* args) = 0;  // callable is a global
  virtual void build(Unpickler& u, Value* obj, Value* state) = 0;
};

class Unpickler {
 public:
  // Errors read "[<where>] <context>: pickle byte <offset>: <what>".
  Unpickler(std::string where, std::string context, Hooks& hooks)
      : where_(std::move(where)), context_(std::move(context)), hooks_(hooks) {}

  // Runs the pickle in [data, data + size) up to its STOP and returns the object it built. The
  // returned value (and everything it references) lives as long as this Unpickler.
  Value* load(const uint8_t* data, size_t size);

  Value* make(Kind k);
  // Inserts or replaces key -> value in a dict; keys must be strings, integers, booleans or None.
  void dict_set(Value* dict, Value* key, Value* value);
  [[noreturn]] void error(const std::string& what) const;

 private:
  Value* pop();
  std::vector<Value*> pop_mark();
  Value* top();
  const uint8_t* take(size_t n, const char* what);
  std::string read_line(const char* what);

  std::string where_, context_;
  Hooks& hooks_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0, pos_ = 0, op_pos_ = 0;
  std::vector<std::unique_ptr<Value>> arena_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;  // stack sizes at each open MARK
  std::unordered_map<uint64_t, Value*> memo_;
};

}  // namespace ssm::io::pickle
