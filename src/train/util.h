// ssm.cpp — helpers shared by the training sources.
#pragma once
#include <string>

namespace ssm::train {

// Writes `text` to `path` through a temporary file and a rename; a failed write leaves `path` as
// it was and throws ssm::Error.
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace ssm::train
