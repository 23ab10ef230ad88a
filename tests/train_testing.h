// Helpers shared by the training tests: a tiny model configuration and a small text file.
#pragma once
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "ssm/trainer.h"
#include "testing.h"

namespace ssm::testing {

inline train::TrainConfig tiny_config(const std::string& out, const std::string& data) {
  train::TrainConfig t;
  t.data = data;
  t.model.arch = Arch::mamba1;
  t.model.d_model = 16;
  t.model.n_layer = 2;
  t.model.d_state = 4;
  t.model.d_inner = 32;
  t.model.dt_rank = 1;
  t.model.vocab_size = 1;
  t.steps = 6;
  t.batch = 2;
  t.seq_len = 16;
  t.warmup = 2;
  t.eval_every = 3;
  t.eval_batches = 1;
  t.ckpt_every = 0;
  t.log_every = 0;
  t.out = out;
  return t;
}

// A text file of 200 short lines in the test's temporary directory.
inline std::string write_text(const std::string& name) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream o(path);
  for (int i = 0; i < 200; ++i) o << "the quick brown fox " << i << " jumps over the lazy dog.\n";
  return path;
}

}  // namespace ssm::testing
