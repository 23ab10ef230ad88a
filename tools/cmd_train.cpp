// ssm train / ssm plot.
#include <cstdio>
#include <fstream>
#include <iterator>

#include "command.h"
#include "dist/dist.h"
#include "settings.h"
#include "ssm/generate.h"
#include "ssm/json_config.h"
#include "ssm/trainer.h"

namespace {
using ssm::train::TrainConfig;

// This process's executable and arguments (for starting one copy per GPU).
std::vector<std::string> self_command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t i = 0; i < all.size();) {
    const size_t end = all.find('\0', i);
    args.push_back(all.substr(i, end == std::string::npos ? std::string::npos : end - i));
    if (end == std::string::npos) break;
    i = end + 1;
  }
  SSM_CHECK(!args.empty(), "train", "cannot read /proc/self/cmdline to start the GPU processes");
  args[0] = "/proc/self/exe";  // the same binary, whatever PATH or cwd say
  return args;
}

struct Opts {
  TrainConfig t;
  std::string arch = "mamba1", model_config, config, device = "cpu", dtype = "f32";
  int64_t d_model = 128, n_layer = 4, d_state = 16, expand = 2, headdim = 32, chunk = 64;
  bool lti = false;
  ssm::tools::Settings settings;
};

ssm::tools::Command train_cmd{
    "train", "Train a Mamba language model on a text file", [](CLI::App& app) {
      auto o = std::make_shared<Opts>();
      auto& t = o->t;
      auto& s = o->settings;
      app.add_option("--config", o->config, "settings file (.toml or .json, see below); flags override it");
      s.add(app, "data", "--data", t.data, "training text file (the last --val-fraction is held out)");
      s.add(app, "data", "--task", t.task, "train on a synthetic task instead: induction | selective_copying");
      s.add(app, "data", "--task-vocab", t.task_vocab, "task vocabulary size");
      s.add(app, "data", "--task-len", t.task_len, "task sequence length");
      s.add(app, "data", "--task-memorize", t.task_memorize, "selective copying: tokens to memorize");
      s.add(app, "data", "--tokenizer", t.tokenizer, "'byte' (256-symbol byte-level vocabulary) or a tokenizer.json");
      s.add(app, "data", "--val-fraction", t.val_fraction, "held-out fraction");
      s.add(app, "model", "--model-config", o->model_config,
            "model config.json (Hugging Face or mamba_ssm format) instead of the shape options below");
      s.add(app, "model", "--init", t.init_from,
            "fine-tune: start from this model directory (HF or mamba_ssm; its config, weights and tokenizer.json)");
      s.add(app, "model", "--arch", o->arch, "mamba1 | mamba2 | mamba3 (SISO)");
      s.add(app, "model", "--d-model", o->d_model, "model width");
      s.add(app, "model", "--n-layer", o->n_layer, "layers");
      s.add(app, "model", "--d-state", o->d_state, "SSM state size");
      s.add(app, "model", "--expand", o->expand, "inner expansion");
      s.add(app, "model", "--headdim", o->headdim, "Mamba-2/3 head dimension");
      s.add(app, "model", "--chunk", o->chunk, "Mamba-2/3 chunk size");
      app.add_flag("--lti", o->lti, "Mamba-1 without selection (the paper's LTI ablation): Δ, B, C input-independent");
      s.add(app, "training", "--steps", t.steps, "optimizer steps");
      s.add(app, "training", "-b,--batch", t.batch, "sequences per micro-batch");
      s.add(app, "training", "--seq-len", t.seq_len, "tokens per sequence");
      s.add(app, "training", "--grad-accum", t.grad_accum, "micro-batches per step");
      s.add(app, "training", "--lr", t.lr, "peak learning rate");
      s.add(app, "training", "--min-lr", t.min_lr, "final learning rate (cosine)");
      s.add(app, "training", "--warmup", t.warmup, "warmup steps");
      s.add(app, "training", "--weight-decay", t.weight_decay, "AdamW weight decay");
      s.add(app, "training", "--beta2", t.beta2, "AdamW beta2");
      s.add(app, "training", "--clip", t.clip, "gradient clipping norm (0 = off)");
      s.add(app, "training", "--seed", t.seed, "seed (initialisation, data order, samples)");
      s.add(app, "training", "--device", o->device,
            "cpu, or cuda (one GPU; Mamba-1/Falcon-Mamba; f32 master weights and AdamW state)");
      app.add_option("--gpus", o->t.gpus,
                     "data parallel over N GPUs of this host (one process each, NCCL; implies --device cuda; the "
                     "batch is split between them)")
          ->check(CLI::Range(1, 1024));
      s.add(app, "training", "--dtype", o->dtype,
            "activations on the GPU: f32, or bf16 (mixed precision: bf16 GEMMs with fp32 accumulation)");
      s.add(app, "eval", "--eval-every", t.eval_every, "validation every N steps");
      s.add(app, "eval", "--eval-batches", t.eval_batches, "validation batches");
      s.add(app, "eval", "--sample-every", t.sample_every, "print and log a text sample every N steps (0 = off)");
      s.add(app, "eval", "--sample-len", t.sample_len, "tokens per sample");
      s.add(app, "eval", "--sample-prompt", t.sample_prompt, "text each sample starts from");
      s.add(app, "eval", "--sample-temp", t.sample_temp, "sampling temperature (0 = greedy)");
      s.add(app, "output", "-o,--out", t.out, "output directory");
      s.add(app, "output", "--ckpt-every", t.ckpt_every, "checkpoint every N steps");
      s.add(app, "output", "--keep", t.keep_last, "checkpoints kept");
      s.add(app, "output", "--log-every", t.log_every, "print a step line every N steps");
      app.add_flag("--resume", t.resume, "continue from the newest checkpoint in --out");
      app.add_option("--stop-after", t.stop_after, "checkpoint and stop after N steps of this run (resume later)");
      app.footer(
          "Output: <out>/train.jsonl, <out>/checkpoint-*.safetensors, <out>/model/ (HF format), <out>/loss.svg.\n"
          "Ctrl-C saves a checkpoint; --resume continues bit-identically. The summary line gives tokens/s and\n"
          "the peak RSS.\n\n"
          "Config file (--config FILE.toml or FILE.json): the options above, grouped in tables; each key is the\n"
          "long flag with '_' for '-'. Unknown tables or keys and wrongly typed values are errors; paths are\n"
          "relative to the working directory; flags on the command line override the file. Tables and keys:\n" +
          s.describe() +
          "For example (recipes/shakespeare-char/train.toml):\n"
          "  [data]\n  data = \"../shared/data/text/tinyshakespeare.txt\"\n"
          "  [model]\n  d_model = 192\n  n_layer = 4\n"
          "  [training]\n  steps = 2500\n  batch = 16\n  lr = 3e-3\n"
          "  [eval]\n  sample_every = 250\n"
          "  [output]\n  out = \"runs/shakespeare\"\n"
          "JSON holds the same tables: {\"training\": {\"steps\": 2500}, ...}.\n\n"
          "Examples:\n"
          "  ssm train --data shakespeare.txt --steps 2000 -o runs/shakespeare\n"
          "  ssm train --data shakespeare.txt --device cuda --dtype bf16 -b 8 --seq-len 2048 -o runs/gpu\n"
          "  ssm train --config recipes/shakespeare-char/train.toml --steps 100 --sample-every 50\n"
          "  ssm train --data shakespeare.txt --arch mamba2 --d-model 256 --n-layer 6 -o runs/m2\n"
          "  ssm train --data shakespeare.txt --arch mamba3 --d-state 32 --headdim 16 -o runs/m3\n"
          "  ssm train --data shakespeare.txt -o runs/shakespeare --resume\n"
          "  ssm train --data my.txt --init models/shakespeare-char --lr 3e-4 --steps 200 -o runs/finetune\n"
          "  ssm train --task selective_copying --task-len 256 --n-layer 2 --d-model 64 --lti -o runs/sc-lti\n"
          "  (the synthetic-task recipes, with their full commands: recipes/induction-heads, "
          "recipes/selective-copying)\n"
          "  ssm generate -m runs/shakespeare/model -p 'ROMEO:'\n");
      return [o]() {
        if (!o->config.empty()) o->settings.apply_file(o->config);
        TrainConfig t = o->t;
        if (t.gpus > 0 && !ssm::dist::env_from_environment().distributed) {
          // The launcher: this same command line once per GPU, each process a rank (RANK etc. set).
          SSM_CHECK(ssm::cuda_device_count() >= t.gpus, "train",
                    "--gpus " + std::to_string(t.gpus) + ": only " + std::to_string(ssm::cuda_device_count()) +
                        " GPUs are visible");
          return ssm::dist::launch_local(t.gpus, self_command_line());
        }
        t.device = t.gpus > 0 ? ssm::Device::cuda : ssm::parse_device(o->device);
        SSM_CHECK(o->dtype == "f32" || o->dtype == "bf16" || o->dtype == "f16", "train",
                  "--dtype must be f32, bf16 or f16, got '" + o->dtype + "'");
        t.dtype = o->dtype == "f32" ? ssm::DType::f32 : o->dtype == "bf16" ? ssm::DType::bf16 : ssm::DType::f16;
        SSM_CHECK(t.data.empty() != t.task.empty(), "train", "give exactly one of --data FILE or --task NAME");
        SSM_CHECK(t.init_from.empty() || (o->model_config.empty() && !o->lti), "train",
                  "--init takes the model's configuration from its directory: drop --model-config / --lti");
        if (!o->model_config.empty()) {
          t.model = ssm::ModelConfig::from_json_file(o->model_config);
          if (o->lti) {  // the ablation of a given Mamba-1 configuration
            SSM_CHECK(t.model.arch == ssm::Arch::mamba1, "train", "--lti needs a Mamba-1 model configuration");
            t.model.selective = false;
          }
        } else {
          auto& m = t.model;
          SSM_CHECK(o->arch == "mamba1" || o->arch == "mamba2" || o->arch == "mamba3", "train",
                    "--arch must be mamba1, mamba2 or mamba3, got '" + o->arch + "'");
          m.arch = o->arch == "mamba1"   ? ssm::Arch::mamba1
                   : o->arch == "mamba2" ? ssm::Arch::mamba2
                                         : ssm::Arch::mamba3;
          m.hf_format = m.arch != ssm::Arch::mamba3;  // Mamba-3 exists only in mamba_ssm form (names and config)
          SSM_CHECK(!o->lti || m.arch == ssm::Arch::mamba1, "train", "--lti needs --arch mamba1");
          m.selective = !o->lti;
          m.d_model = o->d_model;
          m.n_layer = o->n_layer;
          m.d_state = o->d_state;
          m.expand = o->expand;
          m.d_inner = o->expand * o->d_model;
          m.dt_rank = (o->d_model + 15) / 16;
          m.headdim = o->headdim;
          m.nheads = m.d_inner / std::max<int64_t>(1, o->headdim);
          m.chunk_size = o->chunk;
          m.vocab_size = 1;  // raised to the tokenizer's size
          SSM_CHECK(m.d_model > 0 && m.n_layer > 0 && m.d_state > 0 && m.expand > 0, "train",
                    "model sizes must be positive");
          SSM_CHECK(m.arch == ssm::Arch::mamba1 || m.d_inner % m.headdim == 0, "train",
                    "d_model * expand must be divisible by --headdim");
        }
        double v = ssm::train::run_training(t);
        if (v == v) std::printf("final validation loss %.4f\n", v);
        return 0;
      };
    }};

struct EvalOpts {
  std::string model, task = "induction";
  std::vector<int64_t> lens{256};
  int64_t vocab = 16, memorize = 16, batches = 4, batch = 8;
  uint64_t seed = 999;
};

ssm::tools::Command eval_task_cmd{
    "eval-task", "Accuracy of a trained model on a synthetic task at given lengths", [](CLI::App& app) {
      auto o = std::make_shared<EvalOpts>();
      app.add_option("-m,--model", o->model, "model directory (the model/ folder written by ssm train)")->required();
      app.add_option("--task", o->task, "induction | selective_copying")->capture_default_str();
      app.add_option("--len", o->lens,
                     "sequence lengths (several allowed; selective copying: the region before the markers)")
          ->capture_default_str();
      app.add_option("--task-vocab", o->vocab, "task vocabulary size")->capture_default_str();
      app.add_option("--task-memorize", o->memorize, "selective copying: tokens to memorize")->capture_default_str();
      app.add_option("--batches", o->batches, "batches per length")->capture_default_str();
      app.add_option("-b,--batch", o->batch, "sequences per batch")->capture_default_str();
      app.add_option("--seed", o->seed, "seed of the test batches")->capture_default_str();
      app.footer(
          "Prints accuracy on batches x batch fresh sequences per length (induction: the answer after the final\n"
          "special token; selective copying: the outputs at the marker positions).\n\n"
          "Examples (the models trained by recipes/induction-heads and recipes/selective-copying):\n"
          "  ssm eval-task -m models/induction-heads --task induction --len 256 1024 4096 16384 --batches 16 -b 16\n"
          "  ssm eval-task -m models/selective-copying --task selective_copying --len 256 --batches 16 -b 16\n"
          "  ssm eval-task -m models/selective-copying-lti --task selective_copying --len 256 --batches 16 -b 16\n");
      return [o]() {
        auto m = ssm::Model::load(o->model);
        std::printf("| task | length | accuracy |\n|---|---|---|\n");
        for (int64_t len : o->lens) {
          double acc = ssm::train::eval_task(*m, o->task, len, o->vocab, o->memorize, o->batches, o->batch, o->seed);
          std::printf("| %s | %lld | %.2f%% |\n", o->task.c_str(), static_cast<long long>(len), 100 * acc);
          std::fflush(stdout);
        }
        return 0;
      };
    }};

ssm::tools::Command plot_cmd{"plot", "Plot train/validation loss from a train.jsonl log to SVG", [](CLI::App& app) {
                               auto in = std::make_shared<std::string>();
                               auto out = std::make_shared<std::string>("loss.svg");
                               app.add_option("log", *in, "train.jsonl written by ssm train")->required();
                               app.add_option("-o,--out", *out, "SVG file")->capture_default_str();
                               app.footer("Examples:\n  ssm plot runs/shakespeare/train.jsonl -o loss.svg\n");
                               return [in, out]() {
                                 ssm::train::plot_loss(*in, *out);
                                 std::printf("wrote %s\n", out->c_str());
                                 return 0;
                               };
                             }};
}  // namespace
