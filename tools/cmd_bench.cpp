// ssm bench: prompt processing (pp) and token generation (tg) speed in the manner of llama-bench,
// with the decode memory-bandwidth bound and the peak resident memory.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "command.h"
#include "ssm/autograd.h"
#include "ssm/generate.h"
#include "ssm/model.h"
#include "ssm/ops.h"

namespace {
using Clock = std::chrono::steady_clock;

struct Opts {
  std::string model, random, dtype = "f32", output = "md", device = "cpu";
  int64_t n_prompt = 512, n_gen = 128, reps = 5, tg_batch = 1;
};

// The released shapes (state-spaces checkpoints' config.json).
ssm::ModelConfig released_shape(const std::string& name) {
  struct S {
    const char* name;
    int64_t d, n;
    bool m2;
  };
  static const S table[] = {{"mamba-130m", 768, 24, false},  {"mamba-370m", 1024, 48, false},
                            {"mamba-790m", 1536, 48, false}, {"mamba-1.4b", 2048, 48, false},
                            {"mamba-2.8b", 2560, 64, false}, {"mamba2-130m", 768, 24, true},
                            {"mamba2-370m", 1024, 48, true}, {"mamba2-780m", 1536, 48, true},
                            {"mamba2-1.3b", 2048, 48, true}, {"mamba2-2.7b", 2560, 64, true}};
  std::string names;
  for (const S& s : table) {
    names += std::string(" ") + s.name;
    if (name != s.name) continue;
    ssm::ModelConfig c;
    c.arch = s.m2 ? ssm::Arch::mamba2 : ssm::Arch::mamba1;
    c.d_model = s.d;
    c.n_layer = s.n;
    c.vocab_size = s.m2 ? 50288 : 50280;
    c.vocab_size_real = 50277;
    c.d_inner = 2 * s.d;
    c.d_state = s.m2 ? 128 : 16;
    c.dt_rank = (s.d + 15) / 16;
    c.headdim = 64;
    c.nheads = c.d_inner / 64;
    c.chunk_size = 256;
    return c;
  }
  ssm::fail("bench", "unknown shape '" + name + "'; known:" + names);
}

// Read bandwidth of this machine's memory (GB/s): sums a buffer far larger than the caches.
double measure_bandwidth_gbs() {
  const size_t n = size_t(256) << 20;  // 1 GiB of floats
  std::vector<float> buf(n, 1.0f);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    std::vector<double> partial(size_t(ssm::num_threads()), 0.0);
    ssm::parallel_for(int64_t(n), 1 << 20, [&](int64_t b, int64_t e) {
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = b;
      for (; i + 4 <= e; i += 4)
        s0 += buf[size_t(i)], s1 += buf[size_t(i + 1)], s2 += buf[size_t(i + 2)], s3 += buf[size_t(i + 3)];
      for (; i < e; ++i) s0 += buf[size_t(i)];
      partial[size_t(b * int64_t(partial.size()) / int64_t(n))] += s0 + s1 + s2 + s3;
    });
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    volatile double sink = partial[0];
    (void)sink;
    best = std::max(best, double(n * sizeof(float)) / s / 1e9);
  }
  return best;
}

struct Stat {
  double mean = 0, sd = 0;
  std::vector<double> samples;
};
Stat stats(std::vector<double> v) {
  Stat s;
  s.samples = v;
  for (double x : v) s.mean += x;
  s.mean /= double(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / double(v.size() - 1)) : 0;
  return s;
}

ssm::tools::Command cmd{
    "bench", "Benchmark prompt processing and generation speed (llama-bench style)", [](CLI::App& app) {
      auto o = std::make_shared<Opts>();
      app.add_option("-m,--model", o->model, "model directory");
      app.add_option("--random", o->random,
                     "random weights in a released shape: mamba-130m mamba-370m mamba-790m mamba-1.4b mamba-2.8b "
                     "mamba2-130m mamba2-370m mamba2-780m mamba2-1.3b mamba2-2.7b");
      app.add_option("-p,--n-prompt", o->n_prompt, "prompt tokens (pp test; 0 = skip)")->capture_default_str();
      app.add_option("-n,--n-gen", o->n_gen, "generated tokens (tg test; 0 = skip)")->capture_default_str();
      app.add_option("--tg-batch", o->tg_batch,
                     "sequences decoded together in the tg test (t/s counts all of them; the prompt is prefilled once "
                     "and its state copied to every sequence)")
          ->capture_default_str()
          ->check(CLI::Range(1, 4096));
      app.add_option("-r,--repetitions", o->reps, "repetitions")->capture_default_str()->check(CLI::Range(1, 1000));
      app.add_option("--dtype", o->dtype, "weight dtype: f32 | bf16 | f16")->capture_default_str();
      app.add_option("-o,--output", o->output, "md | json")->capture_default_str();
      app.add_option("--device", o->device,
                     "cpu | cuda (Mamba-1/2/3, Falcon-Mamba; tg waits for the GPU after every step, logits left there)")
          ->capture_default_str();
      app.footer(
          "Examples:\n"
          "  ssm bench --random mamba-130m -p 512 -n 128 -r 5 -t 2\n"
          "  ssm bench --random mamba-1.4b --dtype bf16 -o json\n"
          "  ssm bench -m models/mamba-130m-hf\n"
          "  ssm bench --random mamba-130m --device cuda --dtype bf16 -p 2048 -n 64\n"
          "  ssm bench --random mamba-1.4b --device cuda --dtype bf16 -p 128 -n 256 --tg-batch 64\n");
      return [o]() {
        SSM_CHECK(o->model.empty() != o->random.empty(), "bench", "give exactly one of -m DIR or --random NAME");
        SSM_CHECK(o->n_prompt >= 0 && o->n_gen >= 0 && o->n_prompt <= 1 << 20 && o->n_gen <= 1 << 20, "bench",
                  "-p and -n must be in [0, 1048576]");
        const ssm::DType wd = ssm::parse_weight_dtype(o->dtype);
        const ssm::Device dev = ssm::parse_device(o->device);
        const bool gpu = dev == ssm::Device::cuda;
        ssm::autograd::NoGradGuard ng;
        std::unique_ptr<ssm::Model> model;
        std::string name;
        if (!o->random.empty()) {
          model = ssm::Model::create(released_shape(o->random), 42, wd, dev);
          name = o->random + " (random)";
        } else {
          ssm::LoadOptions lo;
          lo.weight_dtype = wd;
          lo.device = dev;
          model = ssm::Model::load(o->model, lo);
          name = o->model;
        }
        const auto& c = model->config();
        std::vector<double> pp, tg;
        std::vector<int64_t> prompt(size_t(std::max<int64_t>(o->n_prompt, 1)));
        for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int64_t((i * 7919 + 13) % size_t(c.vocab_size_real));
        ssm::Tensor ids = ssm::Tensor::from_vector(prompt, {1, int64_t(prompt.size())});
        const int64_t TB = o->tg_batch;
        const std::vector<int64_t> tg_ids(size_t(TB), 1);
        for (int64_t r = -1; r < o->reps; ++r) {  // r = -1 is a warm-up run
          ssm::InferenceState st = model->new_state(1);
          if (o->n_prompt > 0) {
            auto t0 = Clock::now();
            model->forward(ids, &st, 1).to(ssm::Device::cpu);  // on the GPU: waits for the work
            double s = std::chrono::duration<double>(Clock::now() - t0).count();
            if (r >= 0) pp.push_back(double(o->n_prompt) / s);
          }
          if (o->n_gen > 0) {
            if (TB > 1) {  // every sequence starts from the prompt's state
              ssm::InferenceState many = model->new_state(TB);
              for (size_t l = 0; l < st.layers.size(); ++l)
                for (size_t k = 0; k < st.layers[l].size(); ++k)
                  if (st.layers[l][k].defined())
                    many.layers[l][k] = ssm::concat(std::vector<ssm::Tensor>(size_t(TB), st.layers[l][k]), 0);
              st = std::move(many);
            }
            model->step(tg_ids, st);  // the first step on a state sets it up (on the GPU: captures the graph)
            if (gpu) ssm::cuda_synchronize();
            auto t0 = Clock::now();
            for (int64_t k = 0; k < o->n_gen; ++k) {
              model->step(tg_ids, st);           // the fused decode step
              if (gpu) ssm::cuda_synchronize();  // each step waits for the GPU, as a sampler would
            }
            double s = std::chrono::duration<double>(Clock::now() - t0).count();
            if (r >= 0) tg.push_back(double(TB * o->n_gen) / s);
          }
        }
        // Before the bandwidth test, whose 1 GiB buffer would dominate it.
        double rss_mib = double(ssm::peak_rss_bytes()) / (1 << 20);
        double bw = gpu ? 0.0 : measure_bandwidth_gbs();  // host memory: no bound for the GPU
        // Decode reads every weight once per token except the embedding, of which it reads one row
        // (the tied head reads it whole).
        double bytes_tok = double(model->weight_bytes());
        double bound = bw * 1e9 / bytes_tok;
        if (o->output == "json") {
          nlohmann::json j;
          j["model"] = name;
          j["arch"] = ssm::arch_name(c.arch);
          j["n_params"] = model->num_parameters();
          j["weight_bytes"] = model->weight_bytes();
          j["weight_dtype"] = ssm::dtype_name(wd);
          j["threads"] = ssm::num_threads();
          j["bandwidth_gbs"] = bw;
          j["peak_rss_mib"] = rss_mib;
          j["decode_bound_ts"] = bound;
          if (!pp.empty())
            j["pp"] = {{"n", o->n_prompt}, {"avg_ts", stats(pp).mean}, {"stddev_ts", stats(pp).sd}, {"samples_ts", pp}};
          if (!tg.empty())
            j["tg"] = {{"n", o->n_gen},
                       {"batch", TB},
                       {"avg_ts", stats(tg).mean},
                       {"stddev_ts", stats(tg).sd},
                       {"samples_ts", tg}};
          std::printf("%s\n", j.dump(2).c_str());
          return 0;
        }
        std::printf("| model | size | params | dtype | threads | test | t/s |\n|---|---|---|---|---|---|---|\n");
        auto row = [&](const char* test, int64_t n, const std::vector<double>& v) {
          Stat s = stats(v);
          std::printf("| %s | %.1f MiB | %.1f M | %s | %d | %s%lld | %.2f ± %.2f |\n", name.c_str(),
                      double(model->weight_bytes()) / (1 << 20), double(model->num_parameters()) / 1e6,
                      (std::string(ssm::dtype_name(wd)) + (gpu ? " cuda" : "")).c_str(), ssm::num_threads(), test,
                      static_cast<long long>(n), s.mean, s.sd);
        };
        if (!pp.empty()) row("pp", o->n_prompt, pp);
        if (!tg.empty()) row(TB > 1 ? ("B=" + std::to_string(TB) + " tg").c_str() : "tg", o->n_gen, tg);
        if (gpu) {
          std::printf(
              "\non %s: weights and activations in %s; each decode step reads %.1f MiB of weights (the "
              "GPU's memory bandwidth divided by this bounds tg at batch 1)\n",
              ssm::device_name(dev), ssm::dtype_name(wd), bytes_tok / (1 << 20));
          return 0;
        }
        std::printf("\nmemory read bandwidth %.1f GB/s; decode bound %.1f t/s (%.1f MiB of weights per token)", bw,
                    bound, bytes_tok / (1 << 20));
        if (!tg.empty()) std::printf("; tg reaches %.0f%% of it", 100 * stats(tg).mean / bound);
        std::printf("\nrecurrent state per sequence: %.2f MiB\n",
                    double(model->state_bytes_per_sequence()) / (1 << 20));
        std::printf("peak RSS %.0f MiB (weights, pp and tg; with -p 0 it is decode alone)\n", rss_mib);
        return 0;
      };
    }};
}  // namespace
