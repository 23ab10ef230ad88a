#include "ssm/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ssm/autograd.h"
#include "ssm/data.h"
#include "ssm/json_config.h"
#include "ssm/ops.h"
#include "ssm/safetensors.h"
#include "ssm/tokenizer.h"
#include "ssm/train.h"
#include "ssm/generate.h"
#include "train/data_parallel.h"
#include "train/util.h"

namespace ssm::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

void write_text_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream o(tmp, std::ios::trunc);
    o << text;
    o.close();
    if (!o) {
      std::remove(tmp.c_str());
      fail("train", "cannot write '" + path + "' (disk full?)");
    }
  }
  fs::rename(tmp, path);
}

namespace {
volatile std::sig_atomic_t g_stop = 0;
void on_sigint(int) { g_stop = 1; }
// Installs the Ctrl-C handler for the lifetime of the training loop (restored on every exit path).
struct SigintGuard {
  void (*prev)(int);
  SigintGuard() : prev(std::signal(SIGINT, on_sigint)) { g_stop = 0; }
  ~SigintGuard() { std::signal(SIGINT, prev); }
};

// The GPT-2 byte-to-symbol map used by byte-level BPE vocabularies.
std::string byte_symbol(int b) {
  int cp = b;
  bool direct = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  if (!direct) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80)
    s += char(cp);
  else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// A tokenizer.json for the 256-symbol byte-level vocabulary (loads in our tokenizer and in HF's).
std::string byte_tokenizer_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = b;
  json j = {
      {"version", "1.0"},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
  return j.dump();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SSM_CHECK(bool(in), "train", "cannot open data file '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double eval_loss(const Model& m, data::BatchLoader& val, int64_t batches) {
  autograd::NoGradGuard ng;
  val.seek(0);  // the same validation windows every time
  double s = 0;
  for (int64_t i = 0; i < batches; ++i) s += lm_loss(m, val.next()).item();
  return s / double(batches);
}

std::string ckpt_name(int64_t step) {
  char b[64];
  std::snprintf(b, sizeof b, "checkpoint-%08lld.safetensors", static_cast<long long>(step));
  return b;
}

std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, fs::path>> r;
  if (!fs::is_directory(dir)) return r;
  for (auto& e : fs::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    if (n.rfind("checkpoint-", 0) == 0 && n.size() > 11 + 12 && n.substr(n.size() - 12) == ".safetensors")
      r.push_back({std::stoll(n.substr(11, n.size() - 23)), e.path()});
  }
  std::sort(r.begin(), r.end());
  return r;
}

std::string fmt_time(double s) {
  char b[32];
  if (s < 3600)
    std::snprintf(b, sizeof b, "%dm%02ds", int(s) / 60, int(s) % 60);
  else
    std::snprintf(b, sizeof b, "%dh%02dm", int(s) / 3600, int(s) / 60 % 60);
  return b;
}
}  // namespace

double run_training(const TrainConfig& cfg) {
  SSM_CHECK(cfg.steps >= 1 && cfg.grad_accum >= 1, "train", "steps and grad_accum must be >= 1");
  SSM_CHECK(cfg.batch >= 1 && cfg.seq_len >= 1, "train", "batch and seq_len must be >= 1");
  const bool gpu = cfg.device == Device::cuda;
  SSM_CHECK(gpu || cfg.dtype == DType::f32, "train", "--dtype bf16/f16 needs --device cuda (the CPU trains in f32)");
  SSM_CHECK(!gpu || cuda_device_count() > 0, "train", "--device cuda: no CUDA device is visible");
  // Data parallel when a launcher (ssm train --gpus N, torchrun, mpirun) started this process as one rank.
  const auto dp = DataParallel::from_environment(cfg.gpus);
  SSM_CHECK(!dp || gpu, "train",
            "data-parallel training (--gpus, or RANK/WORLD_SIZE set) runs on GPUs: use --device cuda");
  if (dp) dist::shard(cfg.batch, dp->rank(), dp->world());  // fails now if the batch does not split evenly
  const bool main = !dp || dp->main();                      // rank 0 logs, evaluates, samples and writes files
  const bool is_task = !cfg.task.empty();
  SSM_CHECK(cfg.sample_every <= 0 || !is_task, "train",
            "text samples (--sample-every) need text data (--data), not a synthetic task");
  SSM_CHECK(cfg.sample_every <= 0 || cfg.sample_len >= 1, "train", "--sample-len must be >= 1");
  fs::create_directories(cfg.out);
  const auto ckpts = list_checkpoints(cfg.out);
  // A fresh run would truncate the log and, keeping the last K, delete these.
  SSM_CHECK(cfg.resume || ckpts.empty(), "train",
            "'" + cfg.out + "' already holds training checkpoints (newest: " + ckpts.back().second.filename().string() +
                "); pass --resume to continue that run, or choose another --out");
  // ---- data: text windows, or a synthetic task ----
  SSM_CHECK(!is_task || cfg.task == "induction" || cfg.task == "selective_copying", "train",
            "unknown task '" + cfg.task + "' (induction | selective_copying)");
  // Fine-tuning a model that ships its own tokenizer.json uses it unless another one is named.
  std::string tok_file = cfg.tokenizer;
  if (!cfg.init_from.empty() && !is_task && tok_file == "byte" &&
      fs::exists(fs::path(cfg.init_from) / "tokenizer.json"))
    tok_file = (fs::path(cfg.init_from) / "tokenizer.json").string();
  Tokenizer tok = is_task || tok_file == "byte" ? Tokenizer::byte_level() : Tokenizer::from_file(tok_file);
  std::vector<int32_t> ids, val_ids;
  if (!is_task) {
    std::string text = read_text(cfg.data);
    SSM_CHECK(!text.empty(), "train", "data file '" + cfg.data + "' is empty");
    ids = tok.encode(text);
    size_t n_val = size_t(double(ids.size()) * cfg.val_fraction);
    SSM_CHECK(n_val > size_t(cfg.seq_len + 1) && ids.size() - n_val > size_t(cfg.seq_len + 1), "train",
              "data file '" + cfg.data + "' has " + std::to_string(ids.size()) +
                  " tokens: too few for a train/validation split with sequence length " + std::to_string(cfg.seq_len));
    val_ids.assign(ids.end() - std::ptrdiff_t(n_val), ids.end());
    ids.resize(ids.size() - n_val);
  } else {  // placeholders: the loaders are unused for tasks
    ids.assign(size_t(cfg.seq_len + 2), 0);
    val_ids = ids;
  }
  data::BatchLoader train_loader(std::move(ids), cfg.batch, cfg.seq_len, cfg.seed);
  data::BatchLoader val_loader(std::move(val_ids), cfg.batch, cfg.seq_len, cfg.seed + 1);
  // Task batches are drawn from a generator seeded by (seed, step, micro-batch): resumable without state.
  auto task_batch = [&](uint64_t salt, int64_t len) {
    std::mt19937_64 r(cfg.seed * 1000003ull + salt);
    return cfg.task == "induction" ? data::induction_heads(cfg.batch, len, cfg.task_vocab, r)
                                   : data::selective_copying(cfg.batch, len, cfg.task_memorize, cfg.task_vocab, r);
  };

  // ---- model and optimiser ----
  std::vector<int32_t> sample_prompt;
  if (cfg.sample_every > 0) {
    sample_prompt = tok.encode(cfg.sample_prompt);
    SSM_CHECK(!sample_prompt.empty(), "train", "--sample-prompt must not be empty (it is the start of each sample)");
  }
  std::unique_ptr<Model> model;
  ModelConfig mc;
  if (!cfg.init_from.empty()) {  // fine-tuning: the model directory's configuration and weights
    LoadOptions lo;
    lo.writable = true;
    lo.device = cfg.device;
    model = Model::load(cfg.init_from, lo);
    mc = model->config();
    const int64_t need = is_task ? cfg.task_vocab : tok.vocab_size();
    SSM_CHECK(is_task ? mc.vocab_size_real == need : mc.vocab_size >= need, "train",
              "--init " + cfg.init_from + ": its vocabulary has " + std::to_string(mc.vocab_size_real) +
                  " tokens, the " + (is_task ? "task" : "tokenizer") + " needs " + std::to_string(need));
  } else {
    mc = cfg.model;
    mc.vocab_size = is_task ? cfg.task_vocab : std::max<int64_t>(mc.vocab_size, tok.vocab_size());
    mc.vocab_size_real = is_task ? cfg.task_vocab : tok.vocab_size();
    model = Model::create(mc, cfg.seed, DType::f32, cfg.device);
  }
  if (gpu) {
    model->set_activation_dtype(cfg.dtype);
    cuda_reset_peak();
  }
  auto params = model->named_parameters();
  for (auto& [n, p] : params) p.set_requires_grad(true);
  AdamWConfig ac;
  ac.beta2 = cfg.beta2;
  ac.weight_decay = cfg.weight_decay;
  AdamW opt(params, ac);
  int64_t start = 0;
  if (cfg.resume) {
    SSM_CHECK(!ckpts.empty(), "train", "--resume: no checkpoint-*.safetensors in '" + cfg.out + "'");
    auto st = io::SafeTensors::open(ckpts.back().second.string());
    const auto& meta = st.metadata();
    SSM_CHECK(meta.count("config") && meta.count("step") && meta.count("data_position"), "train",
              ckpts.back().second.string() + " is not a training checkpoint (metadata missing)");
    SSM_CHECK(
        meta.at("config") == mc.to_json(), "train",
        "checkpoint " + ckpts.back().second.string() + " is for another model configuration:\n" + meta.at("config"));
    std::vector<std::pair<std::string, Tensor>> opt_state;
    for (auto& [n, p] : params) {
      SSM_CHECK(st.has("param." + n), "train", "checkpoint lacks parameter '" + n + "'");
      Tensor src = st.get("param." + n);
      SSM_CHECK(src.shape() == p.shape(), "train",
                "checkpoint parameter '" + n + "' has shape " + shape_str(src.shape()));
      p.copy_(src);
      opt_state.push_back({"m." + n, st.get("opt.m." + n)});
      opt_state.push_back({"v." + n, st.get("opt.v." + n)});
    }
    opt.load_state(opt_state);
    start = std::stoll(meta.at("step"));
    opt.set_steps(start);
    train_loader.seek(std::stoull(meta.at("data_position")));
    if (main)
      std::fprintf(stderr, "resumed from %s at step %lld\n", ckpts.back().second.c_str(),
                   static_cast<long long>(start));
  }
  if (dp) dp->broadcast(params);  // every rank starts from rank 0's weights

  // ---- start-up table ----
  const int64_t seq_tokens = !is_task                  ? cfg.seq_len
                             : cfg.task == "induction" ? cfg.task_len
                                                       : cfg.task_len + cfg.task_memorize;
  if (main)
    std::fprintf(
        stderr,
        "+----------------------+----------------------------------------------+\n"
        "| model                | %-44s |\n| parameters           | %-44lld |\n"
        "| data                 | %-44s |\n| tokens train / val   | %-44s |\n"
        "| batch x seq x accum  | %-44s |\n| steps / warmup       | %-44s |\n"
        "| lr max / min         | %-44s |\n| device               | %-44s |\n"
        "| output               | %-44s |\n"
        "+----------------------+----------------------------------------------+\n",
        mc.summary().substr(0, 44).c_str(), static_cast<long long>(model->num_parameters()),
        (is_task ? "task " + cfg.task + " length " + std::to_string(cfg.task_len) : cfg.data).substr(0, 44).c_str(),
        (is_task ? std::string("generated per step")
                 : std::to_string(train_loader.size()) + " / " + std::to_string(val_loader.size()))
            .c_str(),
        (std::to_string(cfg.batch) + " x " + std::to_string(seq_tokens) + " x " + std::to_string(cfg.grad_accum))
            .c_str(),
        (std::to_string(cfg.steps) + " / " + std::to_string(cfg.warmup)).c_str(),
        (std::to_string(cfg.lr) + " / " + std::to_string(cfg.min_lr)).c_str(),
        (gpu ? (dp ? std::to_string(dp->world()) + " GPUs (data parallel), " : std::string("cuda, ")) +
                   dtype_name(cfg.dtype) + " activations, f32 weights"
             : "cpu, " + std::to_string(num_threads()) + " threads")
            .c_str(),
        cfg.out.c_str());

  std::ofstream log;  // rank 0's only: writes to a closed stream do nothing
  if (main) log.open(fs::path(cfg.out) / "train.jsonl", cfg.resume ? std::ios::app : std::ios::trunc);
  auto save_ckpt = [&](int64_t step) {
    if (!main) return;
    std::vector<std::pair<std::string, Tensor>> ts;  // on the host: the same file from CPU and GPU runs
    for (auto& [n, p] : params) ts.push_back({"param." + n, p.detach().to(Device::cpu)});
    for (auto& [n, t] : opt.state()) ts.push_back({"opt." + n, t.to(Device::cpu)});
    std::map<std::string, std::string> meta{{"config", mc.to_json()},
                                            {"step", std::to_string(step)},
                                            {"data_position", std::to_string(train_loader.position())},
                                            {"format", "ssm.cpp training checkpoint v1"}};
    try {
      io::save_safetensors((fs::path(cfg.out) / ckpt_name(step)).string(), ts, meta);
    } catch (const Error& e) {
      auto have = list_checkpoints(cfg.out);
      fail("train", "cannot save the checkpoint of step " + std::to_string(step) + " (disk full?): " + e.what() +
                        (have.empty() ? std::string("; no earlier checkpoint exists")
                                      : "; the previous checkpoint " + have.back().second.string() + " is intact"));
    }
    auto all = list_checkpoints(cfg.out);
    for (size_t i = 0; i + size_t(std::max<int64_t>(cfg.keep_last, 1)) < all.size(); ++i) fs::remove(all[i].second);
  };

  // Stops the run before the optimizer step: the weights and the checkpoints stay as they were.
  auto stop_bad = [&](const std::string& what, double v, int64_t step) {
    auto have = list_checkpoints(cfg.out);
    std::string msg = what + " is " + std::to_string(v) + " at step " + std::to_string(step + 1) + "; stopping (" +
                      (have.empty() ? std::string("no checkpoint was written yet")
                                    : "the last good checkpoint " + have.back().second.string() + " is kept") +
                      "; try a lower --lr or --clip)";
    log << json{{"step", step}, {"error", msg}}.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    log.flush();
    fail("train", msg);
  };
  auto sample = [&](int64_t step) {
    autograd::NoGradGuard ng;
    GenerateOptions go;
    go.max_new_tokens = cfg.sample_len;
    go.sampling.temperature = cfg.sample_temp;
    go.sampling.seed = cfg.seed;
    go.ignore_eos = true;
    GenerateResult r = Generator(*model, &tok).generate({sample_prompt}, go);
    std::string text = cfg.sample_prompt + r.text[0];
    log << json{{"step", step}, {"sample", text}}.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    std::fprintf(stderr, "---- sample at step %lld ----\n%s\n----\n", static_cast<long long>(step + 1), text.c_str());
  };

  SigintGuard sigint;
  std::vector<double> step_ms;
  auto t0 = std::chrono::steady_clock::now();
  double val = std::nan("");
  int64_t step = start;
  auto stop_early = [&] { return cfg.stop_after > 0 && step - start >= cfg.stop_after && step < cfg.steps; };
  // Ctrl-C: with several ranks, all stop after the same step (the flag travels with the loss).
  bool stop_agreed = false;
  auto interrupted = [&] { return dp ? stop_agreed : bool(g_stop); };
  const double loss_scale = 1.0 / double(cfg.grad_accum * (dp ? dp->world() : 1));
  auto mine = [&](const Tensor& batch) { return dp ? dp->shard(batch) : batch; };  // this rank's rows
  for (; step < cfg.steps && !interrupted() && !stop_early(); ++step) {
    auto ts = std::chrono::steady_clock::now();
    double lr = cosine_lr(step, cfg.warmup, cfg.steps, cfg.lr, cfg.min_lr);
    opt.zero_grad();
    double loss_sum = 0;
    for (int64_t a = 0; a < cfg.grad_accum; ++a) {
      Tensor loss;
      if (is_task) {
        data::TaskBatch tb = task_batch(uint64_t(step) * 1024 + uint64_t(a), cfg.task_len);
        loss = masked_lm_loss(*model, mine(tb.inputs), mine(tb.targets));
      } else {
        loss = lm_loss(*model, mine(train_loader.next()));
      }
      loss_sum += loss.item();
      (loss_scale != 1.0 ? mul_scalar(loss, loss_scale) : loss).backward();
    }
    if (dp) {  // the gradient of the global batch's mean loss on every rank
      dp->all_reduce_grads(params);
      const std::vector<double> r = dp->all_reduce_sum({loss_sum, double(g_stop)});
      loss_sum = r[0] / double(dp->world());
      stop_agreed = r[1] > 0;
    }
    double loss = loss_sum / double(cfg.grad_accum);
    if (!std::isfinite(loss)) stop_bad("the loss", loss, step);
    double norm = clip_grad_norm(params, cfg.clip);
    if (!std::isfinite(norm)) stop_bad("the gradient norm", norm, step);
    opt.step(lr);
    if (gpu) cuda_synchronize();  // the step's time includes its GPU work
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - ts).count();
    step_ms.push_back(ms);
    double tok_s = double(cfg.batch * seq_tokens * cfg.grad_accum) / (ms / 1000);
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double eta = elapsed / double(step - start + 1) * double(cfg.steps - step - 1);
    log << json{{"step", step}, {"loss", loss}, {"grad_norm", norm}, {"lr", lr}, {"ms", ms}, {"tok_s", tok_s}}.dump()
        << "\n";
    if (main && cfg.log_every > 0 && (step % cfg.log_every == 0 || step + 1 == cfg.steps))
      std::fprintf(stderr, "step %5lld/%lld | loss %.4f | norm %.3f | lr %.2e | %.0f ms | %.0f tok/s | ETA %s\n",
                   static_cast<long long>(step + 1), static_cast<long long>(cfg.steps), loss, norm, lr, ms, tok_s,
                   fmt_time(eta).c_str());
    bool last = step + 1 == cfg.steps;
    if (main && cfg.eval_every > 0 && ((step + 1) % cfg.eval_every == 0 || last)) {
      if (is_task) {
        double acc = 0, vl = 0;
        autograd::NoGradGuard ng;
        for (int64_t k = 0; k < cfg.eval_batches; ++k) {
          data::TaskBatch tb = task_batch((uint64_t(1) << 62) + uint64_t(k), cfg.task_len);  // fixed eval set
          acc += masked_accuracy(*model, tb.inputs, tb.targets);
          vl += masked_lm_loss(*model, tb.inputs, tb.targets).item();
        }
        val = vl / double(cfg.eval_batches);
        acc /= double(cfg.eval_batches);
        log << json{{"step", step}, {"val_loss", val}, {"val_acc", acc}}.dump() << "\n";
        std::fprintf(stderr, "step %5lld | val loss %.4f | accuracy %.2f%%\n", static_cast<long long>(step + 1), val,
                     100 * acc);
      } else {
        val = eval_loss(*model, val_loader, cfg.eval_batches);
        log << json{{"step", step}, {"val_loss", val}}.dump() << "\n";
        std::fprintf(stderr, "step %5lld | val loss %.4f\n", static_cast<long long>(step + 1), val);
      }
    }
    if (main && cfg.sample_every > 0 && (step + 1) % cfg.sample_every == 0) sample(step);
    log.flush();
    if (cfg.ckpt_every > 0 && ((step + 1) % cfg.ckpt_every == 0 || last)) save_ckpt(step + 1);
  }
  // ---- summary: step time (median over this invocation's steps), peak memory ----
  if (main && !step_ms.empty()) {
    std::vector<double> sorted = step_ms;
    std::sort(sorted.begin(), sorted.end());
    double med = sorted[sorted.size() / 2];
    if (sorted.size() % 2 == 0) med = (med + sorted[sorted.size() / 2 - 1]) / 2;
    double total_s = 0;
    for (double m : step_ms) total_s += m / 1000;
    double tok_step = double(cfg.batch * seq_tokens * cfg.grad_accum);
    double rss_mib = double(peak_rss_bytes()) / (1 << 20);
    json summary{{"summary", true},
                 {"steps", int64_t(step_ms.size())},
                 {"step_seconds", total_s},
                 {"median_ms", med},
                 {"median_tok_s", tok_step / (med / 1000)},
                 {"tok_s", tok_step * double(step_ms.size()) / total_s},
                 {"peak_rss_mib", rss_mib}};
    std::string gpu_mem;
    if (gpu) {  // tensors' peak, and what the block cache holds from the driver
      const double peak = double(cuda_peak_bytes()) / (1 << 20), held = double(cuda_reserved_bytes()) / (1 << 20);
      summary["device"] = "cuda";
      summary["dtype"] = dtype_name(cfg.dtype);
      summary["peak_gpu_mib"] = peak;
      summary["reserved_gpu_mib"] = held;
      char b[128];
      std::snprintf(b, sizeof b, "; peak GPU memory %.0f MiB in tensors (%.0f MiB held)", peak, held);
      gpu_mem = b;
    }
    log << summary.dump() << "\n";
    log.flush();
    std::fprintf(stderr, "%lld steps in %s of step time: median %.1f ms/step, %.0f tok/s; peak RSS %.0f MiB%s\n",
                 static_cast<long long>(step_ms.size()), fmt_time(total_s).c_str(), med, tok_step / (med / 1000),
                 rss_mib, gpu_mem.c_str());
  }
  if (interrupted() || stop_early()) {
    save_ckpt(step);
    if (main)
      std::fprintf(stderr, "%s: saved %s; continue with --resume\n", interrupted() ? "interrupted" : "stopped",
                   ckpt_name(step).c_str());
    return val;
  }
  if (!main) return val;
  // ---- export ----
  fs::path mdir = fs::path(cfg.out) / "model";
  fs::create_directories(mdir);
  std::vector<std::pair<std::string, Tensor>> ws;
  for (auto& [n, p] : params) ws.push_back({n, p.detach().to(Device::cpu)});
  io::save_safetensors((mdir / "model.safetensors").string(), ws);
  write_text_atomic((mdir / "config.json").string(), mc.to_json());
  if (is_task) {
    // task models have no text vocabulary
  } else if (tok_file == "byte")
    write_text_atomic((mdir / "tokenizer.json").string(), byte_tokenizer_json());
  else if (!fs::equivalent(tok_file, mdir / "tokenizer.json"))
    fs::copy_file(tok_file, mdir / "tokenizer.json", fs::copy_options::overwrite_existing);
  log.close();
  plot_loss((fs::path(cfg.out) / "train.jsonl").string(), (fs::path(cfg.out) / "loss.svg").string());
  std::fprintf(stderr, "exported %s; loss plot %s\n", mdir.c_str(), (fs::path(cfg.out) / "loss.svg").c_str());
  return val;
}

double eval_task(const Model& model, const std::string& task, int64_t len, int64_t vocab, int64_t memorize,
                 int64_t batches, int64_t batch, uint64_t seed) {
  SSM_CHECK(task == "induction" || task == "selective_copying", "eval-task",
            "unknown task '" + task + "' (induction | selective_copying)");
  SSM_CHECK(batches >= 1 && batch >= 1 && len >= 4, "eval-task", "need batches, batch >= 1 and length >= 4");
  double acc = 0;
  for (int64_t k = 0; k < batches; ++k) {
    std::mt19937_64 r(seed + uint64_t(k));
    data::TaskBatch tb = task == "induction" ? data::induction_heads(batch, len, vocab, r)
                                             : data::selective_copying(batch, len, memorize, vocab, r);
    acc += masked_accuracy(model, tb.inputs, tb.targets);
  }
  return acc / double(batches);
}

}  // namespace ssm::train
