// ssm.cpp — safe unpickler for PyTorch state dicts. See pickle.h.
#include "io/pickle.h"

#include <cstring>

#include "ssm/base.h"

namespace ssm::io::pickle {

namespace {

// Opcodes (names as in CPython's pickletools).
enum Op : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  NONE = 'N',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  BINFLOAT = 'G',
  BINUNICODE = 'X',
  EMPTY_TUPLE = ')',
  TUPLE = 't',
  EMPTY_LIST = ']',
  APPEND = 'a',
  APPENDS = 'e',
  EMPTY_DICT = '}',
  DICT = 'd',
  SETITEM = 's',
  SETITEMS = 'u',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  BINGET = 'h',
  LONG_BINGET = 'j',
  GLOBAL = 'c',
  REDUCE = 'R',
  BINPERSID = 'Q',
  BUILD = 'b',
  PROTO = 0x80,
  LONG1 = 0x8a,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
};

uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

std::string hex_byte(uint8_t b) {
  static const char* d = "0123456789abcdef";
  return std::string("0x") + d[b >> 4] + d[b & 15];
}

}  // namespace

const char* kind_name(Kind k) {
  static const char* n[] = {"None", "bool", "int", "float", "str", "tuple", "list", "dict", "global", "object"};
  return n[int(k)];
}

void Unpickler::error(const std::string& what) const {
  fail(where_, context_ + ": pickle byte " + std::to_string(op_pos_) + ": " + what);
}

Value* Unpickler::make(Kind k) {
  arena_.push_back(std::make_unique<Value>());
  arena_.back()->kind = k;
  return arena_.back().get();
}

void Unpickler::dict_set(Value* dict, Value* key, Value* value) {
  if (dict->kind != Kind::dict) error(std::string("cannot set an item on a ") + kind_name(dict->kind));
  std::string k(1, 'n');  // a type tag, then the value
  switch (key->kind) {
    case Kind::string:
      k[0] = 's';
      k.append(key->s);
      break;
    case Kind::integer:
      k[0] = 'i';
      k.append(std::to_string(key->i));
      break;
    case Kind::boolean:
      k[0] = 'i';
      k.append(key->b ? "1" : "0");
      break;  // True == 1 as a key, as in Python
    case Kind::none: break;
    default: error(std::string("unsupported dict key of type ") + kind_name(key->kind));
  }
  auto [it, inserted] = dict->dict_index.emplace(std::move(k), dict->items.size());
  if (inserted) {
    dict->items.push_back(key);
    dict->items.push_back(value);
  } else {
    dict->items[it->second + 1] = value;
  }
}

Value* Unpickler::pop() {
  size_t fence = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= fence) error("stack underflow");
  Value* v = stack_.back();
  stack_.pop_back();
  return v;
}

Value* Unpickler::top() {
  size_t fence = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= fence) error("stack underflow");
  return stack_.back();
}

std::vector<Value*> Unpickler::pop_mark() {
  if (marks_.empty()) error("no MARK to pop to (stack underflow)");
  size_t m = marks_.back();
  marks_.pop_back();
  std::vector<Value*> items(stack_.begin() + ptrdiff_t(m), stack_.end());
  stack_.resize(m);
  return items;
}

const uint8_t* Unpickler::take(size_t n, const char* what) {
  if (n > size_ - pos_)
    error(std::string("truncated ") + what + " (needs " + std::to_string(n) + " bytes, " +
          std::to_string(size_ - pos_) + " left)");
  const uint8_t* p = data_ + pos_;
  pos_ += n;
  return p;
}

std::string Unpickler::read_line(const char* what) {
  const size_t max_len = 1024;
  for (size_t i = pos_; i < size_ && i - pos_ <= max_len; ++i) {
    if (data_[i] == '\n') {
      std::string s(reinterpret_cast<const char*>(data_ + pos_), i - pos_);
      pos_ = i + 1;
      return s;
    }
  }
  error(std::string("unterminated ") + what);
}

Value* Unpickler::load(const uint8_t* data, size_t size) {
  data_ = data;
  size_ = size;
  pos_ = 0;
  stack_.clear();
  marks_.clear();
  memo_.clear();
  auto push = [&](Value* v) { stack_.push_back(v); };
  auto push_int = [&](int64_t x) {
    Value* v = make(Kind::integer);
    v->i = x;
    push(v);
  };
  auto push_str = [&](uint64_t n) {
    if (n > size_ - pos_) error("truncated string (needs " + std::to_string(n) + " bytes)");
    Value* v = make(Kind::string);
    v->s.assign(reinterpret_cast<const char*>(take(size_t(n), "string")), size_t(n));
    push(v);
  };
  auto push_tuple = [&](std::vector<Value*> items) {
    Value* v = make(Kind::tuple);
    v->items = std::move(items);
    push(v);
  };
  auto memo_get = [&](uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end())
      error("memo index " + std::to_string(idx) + " was never set (" + std::to_string(memo_.size()) + " set)");
    push(it->second);
  };
  auto memo_put = [&](uint64_t idx) { memo_[idx] = top(); };
  auto global = [&](const std::string& module, const std::string& name) {
    hooks_.check_global(*this, module, name);
    Value* v = make(Kind::global);
    v->s = module;
    v->s2 = name;
    push(v);
  };

  while (true) {
    op_pos_ = pos_;
    if (pos_ >= size_) error("the pickle ends without STOP (truncated)");
    uint8_t op = data_[pos_++];
    switch (op) {
      case PROTO: {
        uint8_t proto = *take(1, "PROTO");
        if (proto > 5) error("unsupported pickle protocol " + std::to_string(proto));
        break;
      }
      case FRAME: take(8, "FRAME"); break;  // frames only group bytes; the data follows inline
      case STOP: {
        Value* v = pop();
        return v;
      }
      case MARK: marks_.push_back(stack_.size()); break;
      case POP: pop(); break;
      case POP_MARK: pop_mark(); break;
      case NONE: push(make(Kind::none)); break;
      case NEWTRUE:
      case NEWFALSE: {
        Value* v = make(Kind::boolean);
        v->b = op == NEWTRUE;
        push(v);
        break;
      }
      case BININT: push_int(int32_t(le32(take(4, "BININT")))); break;
      case BININT1: push_int(*take(1, "BININT1")); break;
      case BININT2: {
        const uint8_t* p = take(2, "BININT2");
        push_int(p[0] | p[1] << 8);
        break;
      }
      case LONG1: {
        uint8_t n = *take(1, "LONG1");
        if (n > 8) error("integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
        const uint8_t* p = take(n, "LONG1");
        uint64_t u = 0;
        for (int k = 0; k < n; ++k) u |= uint64_t(p[k]) << (8 * k);
        if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~uint64_t(0) << (8 * n);  // sign-extend
        int64_t x;
        std::memcpy(&x, &u, 8);
        push_int(x);
        break;
      }
      case BINFLOAT: {
        const uint8_t* p = take(8, "BINFLOAT");
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = u << 8 | p[k];  // big-endian
        Value* v = make(Kind::floating);
        std::memcpy(&v->f, &u, 8);
        push(v);
        break;
      }
      case BINUNICODE: push_str(le32(take(4, "BINUNICODE"))); break;
      case SHORT_BINUNICODE: push_str(*take(1, "SHORT_BINUNICODE")); break;
      case BINUNICODE8: push_str(le64(take(8, "BINUNICODE8"))); break;
      case EMPTY_TUPLE: push_tuple({}); break;
      case TUPLE: push_tuple(pop_mark()); break;
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        size_t n = size_t(op - TUPLE1 + 1);
        std::vector<Value*> items(n);
        for (size_t k = n; k-- > 0;) items[k] = pop();
        push_tuple(std::move(items));
        break;
      }
      case EMPTY_LIST: push(make(Kind::list)); break;
      case APPEND: {
        Value* v = pop();
        Value* list = top();
        if (list->kind != Kind::list) error(std::string("APPEND to a ") + kind_name(list->kind));
        list->items.push_back(v);
        break;
      }
      case APPENDS: {
        std::vector<Value*> items = pop_mark();
        Value* list = top();
        if (list->kind != Kind::list) error(std::string("APPENDS to a ") + kind_name(list->kind));
        list->items.insert(list->items.end(), items.begin(), items.end());
        break;
      }
      case EMPTY_DICT: push(make(Kind::dict)); break;
      case DICT:
      case SETITEMS: {
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2) error("odd number of items for a dict");
        Value* dict = op == DICT ? make(Kind::dict) : top();
        for (size_t k = 0; k < items.size(); k += 2) dict_set(dict, items[k], items[k + 1]);
        if (op == DICT) push(dict);
        break;
      }
      case SETITEM: {
        Value* v = pop();
        Value* k = pop();
        dict_set(top(), k, v);
        break;
      }
      case BINPUT: memo_put(*take(1, "BINPUT")); break;
      case LONG_BINPUT: memo_put(le32(take(4, "LONG_BINPUT"))); break;
      case MEMOIZE: memo_put(memo_.size()); break;
      case BINGET: memo_get(*take(1, "BINGET")); break;
      case LONG_BINGET: memo_get(le32(take(4, "LONG_BINGET"))); break;
      case GLOBAL: {
        std::string module = read_line("GLOBAL module name");
        std::string name = read_line("GLOBAL name");
        global(module, name);
        break;
      }
      case STACK_GLOBAL: {
        Value* name = pop();
        Value* module = pop();
        if (name->kind != Kind::string || module->kind != Kind::string) error("STACK_GLOBAL needs two strings");
        global(module->s, name->s);
        break;
      }
      case REDUCE: {
        Value* args = pop();
        Value* callable = pop();
        if (callable->kind != Kind::global) error(std::string("REDUCE calls a ") + kind_name(callable->kind));
        if (args->kind != Kind::tuple) error(std::string("REDUCE arguments are a ") + kind_name(args->kind));
        push(hooks_.call(*this, callable, args));
        break;
      }
      case BINPERSID: push(hooks_.persistent_load(*this, pop())); break;
      case BUILD: {
        Value* state = pop();
        hooks_.build(*this, top(), state);
        break;
      }
      default: error("unsupported pickle opcode " + hex_byte(op));
    }
  }
}

}  // namespace ssm::io::pickle
