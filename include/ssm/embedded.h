// ssm.cpp — the small model embedded in the binary (a character-level Mamba trained on Tiny
// Shakespeare by recipes/shakespeare-char), so `ssm` runs with no files at all.
#pragma once
#include <memory>
#include <string>

#include "ssm/model.h"
#include "ssm/tokenizer.h"

namespace ssm {

struct EmbeddedModel {
  std::unique_ptr<Model> model;
  Tokenizer tokenizer;
  std::string name;  // e.g. "shakespeare-char"
};

bool has_embedded_model();
EmbeddedModel load_embedded_model();  // throws if this build has none

}  // namespace ssm
