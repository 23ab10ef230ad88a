// Training on bad input stops with a message that names the problem and loses nothing: a loss that
// blows up (huge learning rate), a disk that fills up while a checkpoint is written (RLIMIT_FSIZE in
// a child process), empty and tiny data, resuming a checkpoint of another model, sample options.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ssm/safetensors.h"
#include "ssm/trainer.h"
#include "testing.h"
#include "train_testing.h"

using namespace ssm;
namespace fs = std::filesystem;
using ssm::testing::expect_error;
using ssm::testing::slurp;
using ssm::testing::tiny_config;
using ssm::testing::write_text;

namespace {

std::string fresh_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/" + name;
  fs::remove_all(d);
  return d;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> r;
  for (auto& e : fs::directory_iterator(dir)) r.push_back(e.path().filename().string());
  std::sort(r.begin(), r.end());
  return r;
}

TEST(TrainErrors, DivergingLossStopsAndKeepsTheLastGoodCheckpoint) {
  std::string data = write_text("err_nan.txt"), out = fresh_dir("err_nan");
  train::TrainConfig t = tiny_config(out, data);
  t.lr = t.min_lr = 1e30;  // the first update throws the weights to ~1e30: the next loss overflows
  t.warmup = 0;
  t.clip = 0;
  t.steps = 20;
  t.ckpt_every = 1;
  t.keep_last = 100;
  t.eval_every = 0;
  std::string msg;
  try {
    train::run_training(t);
    FAIL() << "training with lr 1e30 must stop";
  } catch (const Error& e) {
    msg = e.what();
  }
  // The step that went wrong is named, and so is the checkpoint that is kept.
  auto ckpts = files_in(out);
  ckpts.erase(
      std::remove_if(ckpts.begin(), ckpts.end(), [](const std::string& n) { return n.rfind("checkpoint-", 0) != 0; }),
      ckpts.end());
  ASSERT_FALSE(ckpts.empty()) << msg;
  int64_t bad_step = int64_t(ckpts.size()) + 1;  // checkpoints 1..k were written, step k+1 failed
  EXPECT_NE(msg.find("at step " + std::to_string(bad_step) + ";"), std::string::npos) << msg;
  EXPECT_TRUE(msg.find("the loss is ") != std::string::npos || msg.find("the gradient norm is ") != std::string::npos)
      << msg;
  EXPECT_NE(msg.find(ckpts.back() + " is kept"), std::string::npos) << msg;
  // The kept checkpoint is complete and its weights are finite (no update with a bad gradient).
  auto st = io::SafeTensors::open(out + "/" + ckpts.back());
  for (const auto& n : st.names())
    for (float x : st.get(n).to_vector_f32()) ASSERT_TRUE(std::isfinite(x)) << n;
  // The log ends with the error.
  std::istringstream log(slurp(out + "/train.jsonl"));
  std::string line, last;
  while (std::getline(log, line)) last = line;
  EXPECT_EQ(nlohmann::json::parse(last)["error"].get<std::string>(), msg.substr(msg.find("] ") + 2));
}

TEST(TrainErrors, DiskFullWhileSavingKeepsThePreviousCheckpoint) {
  std::string data = write_text("err_disk.txt"), out = fresh_dir("err_disk"), ref = fresh_dir("err_disk_ref");
  train::TrainConfig t = tiny_config(out, data);
  t.stop_after = 2;
  train::run_training(t);  // checkpoint-00000002
  const std::string ck2 = out + "/checkpoint-00000002.safetensors";
  const std::string before = slurp(ck2);
  ASSERT_GT(before.size(), 4096u);

  // A child process whose files cannot grow beyond half a checkpoint: write() then fails with
  // EFBIG (SIGXFSZ ignored), as it fails with ENOSPC on a full disk.
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    set_num_threads(1);  // the pool's worker threads do not exist in the child
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl {
      rlim_t(before.size() / 2), rlim_t(before.size() / 2)
    };
    ::setrlimit(RLIMIT_FSIZE, &rl);
    train::TrainConfig r = tiny_config(out, data);
    r.resume = true;
    r.ckpt_every = 1;
    int code = 0;
    std::string msg = "no error";
    try {
      train::run_training(r);
    } catch (const Error& e) {
      msg = e.what();
      code = 3;
    }
    (void)!::write(pipefd[1], msg.data(), msg.size());
    ::_exit(code);
  }
  ::close(pipefd[1]);
  std::string msg;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
  ::close(pipefd[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died: " << msg;
  EXPECT_EQ(WEXITSTATUS(status), 3) << msg;
  EXPECT_NE(msg.find("cannot save the checkpoint of step 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("File too large"), std::string::npos) << msg;
  EXPECT_NE(msg.find(ck2 + " is intact"), std::string::npos) << msg;

  // Nothing lost: the previous checkpoint is byte for byte what it was, no partial file is left,
  // and resuming from it reaches exactly the weights of an uninterrupted run.
  EXPECT_EQ(slurp(ck2), before);
  for (const auto& n : files_in(out)) EXPECT_EQ(n.find(".tmp"), std::string::npos) << n;
  EXPECT_FALSE(fs::exists(out + "/checkpoint-00000003.safetensors"));
  train::TrainConfig again = tiny_config(out, data);
  again.resume = true;
  train::run_training(again);
  train::run_training(tiny_config(ref, data));
  auto wa = io::SafeTensors::open(out + "/model/model.safetensors");
  auto wb = io::SafeTensors::open(ref + "/model/model.safetensors");
  for (const auto& n : wb.names()) EXPECT_EQ(wa.get(n).to_vector_f32(), wb.get(n).to_vector_f32()) << n;
}

TEST(TrainErrors, EmptyTinyAndMissingDataAreClearErrors) {
  std::string empty = ::testing::TempDir() + "/empty.txt", tiny = ::testing::TempDir() + "/tiny.txt";
  { std::ofstream o(empty); }
  std::ofstream(tiny) << "abc";
  std::string out = fresh_dir("err_data");
  expect_error([&] { train::run_training(tiny_config(out, empty)); }, "data file '" + empty + "' is empty");
  expect_error([&] { train::run_training(tiny_config(out, tiny)); },
               "has 3 tokens: too few for a train/validation split with sequence length 16");
  expect_error([&] { train::run_training(tiny_config(out, "/nonexistent/data.txt")); },
               "cannot open data file '/nonexistent/data.txt'");
}

TEST(TrainErrors, ResumeFromAnotherModelFailsAndKeepsTheCheckpoint) {
  std::string data = write_text("err_arch.txt"), out = fresh_dir("err_arch");
  train::TrainConfig t = tiny_config(out, data);
  t.stop_after = 1;
  train::run_training(t);
  const std::string ck = out + "/checkpoint-00000001.safetensors";
  const std::string before = slurp(ck);
  train::TrainConfig wider = tiny_config(out, data);
  wider.model.d_model = 24;
  wider.model.d_inner = 48;
  wider.resume = true;
  expect_error([&] { train::run_training(wider); }, "is for another model configuration");
  train::TrainConfig m2 = tiny_config(out, data);
  m2.model.arch = Arch::mamba2;
  m2.model.headdim = 8;
  m2.model.nheads = 4;
  m2.model.chunk_size = 8;
  m2.resume = true;
  expect_error([&] { train::run_training(m2); }, "checkpoint " + ck + " is for another model configuration");
  EXPECT_EQ(slurp(ck), before);
  train::TrainConfig none = tiny_config(fresh_dir("err_arch_empty"), data);
  none.resume = true;
  expect_error([&] { train::run_training(none); }, "--resume: no checkpoint-*.safetensors in");
}

// A run without --resume into a directory that holds checkpoints would truncate its log and, once
// it saved K checkpoints of its own, delete the earlier run's: refused, and nothing is touched.
TEST(TrainErrors, FreshRunOverExistingCheckpointsIsRefused) {
  std::string data = write_text("err_fresh.txt"), out = fresh_dir("err_fresh");
  train::TrainConfig t = tiny_config(out, data);
  t.stop_after = 2;
  train::run_training(t);
  const std::string ck = out + "/checkpoint-00000002.safetensors";
  const std::string before = slurp(ck), log = slurp(out + "/train.jsonl");
  expect_error([&] { train::run_training(tiny_config(out, data)); },
               "already holds training checkpoints (newest: checkpoint-00000002.safetensors); pass --resume");
  EXPECT_EQ(slurp(ck), before);
  EXPECT_EQ(slurp(out + "/train.jsonl"), log);
}

TEST(TrainErrors, SampleOptions) {
  std::string data = write_text("err_sample.txt"), out = fresh_dir("err_sample");
  train::TrainConfig t = tiny_config(out, data);
  t.sample_every = 1;
  t.sample_prompt = "";
  expect_error([&] { train::run_training(t); }, "--sample-prompt must not be empty");
  t.sample_prompt = "x";
  t.sample_len = 0;
  expect_error([&] { train::run_training(t); }, "--sample-len must be >= 1");
  train::TrainConfig task = tiny_config(out, "");
  task.task = "induction";
  task.sample_every = 5;
  expect_error([&] { train::run_training(task); }, "text samples (--sample-every) need text data");
}

}  // namespace
