// ssm.cpp — the training loop behind `ssm train`.
#pragma once
#include <string>

#include "ssm/model.h"

namespace ssm::train {

struct TrainConfig {
  // data
  std::string data;                // text file
  std::string tokenizer = "byte";  // "byte" or a tokenizer.json path
  double val_fraction = 0.1;       // the last part of the text is held out
  // or a synthetic task instead of text: "induction" or "selective_copying"
  std::string task;
  int64_t task_vocab = 16, task_len = 256, task_memorize = 16;
  // model (used when not resuming): a fresh one of this configuration, or, when init_from names a
  // model directory (HF or mamba_ssm format), that model's configuration and weights (fine-tuning)
  ModelConfig model;
  std::string init_from;
  // optimisation
  int64_t steps = 1000, batch = 16, seq_len = 256, grad_accum = 1, warmup = 100;
  double lr = 3e-3, min_lr = 3e-4, weight_decay = 0.1, clip = 1.0, beta2 = 0.95;
  uint64_t seed = 1234;
  // evaluation, samples, checkpoints
  int64_t eval_every = 100, eval_batches = 8, ckpt_every = 200, keep_last = 2, log_every = 1;
  // text samples (text data only): every sample_every steps (0 = never) generate sample_len tokens
  // after sample_prompt at temperature sample_temp (seeded by `seed`), print them and log them
  int64_t sample_every = 0, sample_len = 200;
  std::string sample_prompt = "\n";
  double sample_temp = 0.8;
  std::string out = "runs/train";
  // where the model trains: the CPU (f32), or one GPU (Device::cuda, Mamba-1 / Falcon-Mamba) with f32
  // master weights and optimizer state and activations in `dtype` (bf16: mixed precision; f32).
  // Checkpoints and the export are the same files either way (f32 tensors on the host).
  Device device = Device::cpu;
  DType dtype = DType::f32;
  // > 0: the number of GPUs of a data-parallel run (one process each, started by `ssm train --gpus N`
  // or by torchrun / mpirun with RANK and WORLD_SIZE set); the batch is the global batch.
  int gpus = 0;
  bool resume = false;
  int64_t stop_after = 0;  // > 0: checkpoint and stop after this many steps of this invocation
};

// Runs training; returns the final validation loss. Writes into cfg.out: train.jsonl (one line per
// step, eval and sample, and a closing summary with tokens/s and peak RSS),
// checkpoint-<step>.safetensors (weights + AdamW state + position, atomic; the summary also gives the
// peak GPU memory when training on the GPU),
// model/ (Hugging Face-format export: config.json, model.safetensors, tokenizer.json) and loss.svg.
// A non-finite loss or gradient norm stops the run before the optimizer step (the checkpoints on
// disk stay as they were); so does a checkpoint that cannot be written (the previous one is kept).
double run_training(const TrainConfig& cfg);

// Accuracy of a model on a synthetic task at a given length (fresh random batches, seeded).
double eval_task(const Model& model, const std::string& task, int64_t len, int64_t vocab, int64_t memorize,
                 int64_t batches, int64_t batch, uint64_t seed);

// Writes an SVG line plot of train and validation loss from a train.jsonl log.
void plot_loss(const std::string& log_jsonl, const std::string& svg_path);

}  // namespace ssm::train
