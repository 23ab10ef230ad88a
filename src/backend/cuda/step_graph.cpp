// The frame of the fused GPU decode steps: see step_graph.h.
#include "backend/cuda/step_graph.h"

#include <cstdlib>
#include <cstring>

namespace ssm::cuda {
namespace {

bool graphs_enabled() {
  const char* v = std::getenv("SSM_CUDA_GRAPHS");
  return !(v && std::strcmp(v, "0") == 0);
}

// Makes the state's tensor `t` the step's buffer `own` (copying its contents in; undefined = zeros).
void adopt(Tensor& t, Tensor& own) {
  if (t.defined() && t.raw_data() == own.raw_data()) return;
  if (!t.defined()) {
    check_step(cudaMemset(own.raw_data(), 0, own.nbytes()), "cudaMemset");
  } else {
    SSM_CHECK(t.shape() == own.shape(), "step",
              "decode state has shape " + shape_str(t.shape()) + ", expected " + shape_str(own.shape()));
    own.copy_(t);
  }
  t = own;
}

}  // namespace

void check_step(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("step", std::string(what) + ": " + cudaGetErrorString(e));
}

StepGraph::StepGraph(int64_t batch) : B(batch) {
  check_step(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  check_step(cudaEventCreateWithFlags(&before, cudaEventDisableTiming), "cudaEventCreate");
  check_step(cudaEventCreateWithFlags(&after, cudaEventDisableTiming), "cudaEventCreate");
  ids = Tensor::empty({B}, DType::i64, Device::cuda);
}

StepGraph::~StepGraph() {  // errors are ignored: at process exit the driver may already be gone
  if (exec) cudaGraphExecDestroy(exec);
  if (before) cudaEventDestroy(before);
  if (after) cudaEventDestroy(after);
  if (stream) cudaStreamDestroy(stream);
}

const Tensor& StepGraph::run(InferenceState& state, std::span<const int64_t> token_ids,
                             const std::function<void(cudaStream_t)>& record) {
  for (size_t i = 0; i < conv.size(); ++i) {
    adopt(state.layers[i][0], conv[i]);
    adopt(state.layers[i][1], ssm[i]);
  }
  check_step(cudaEventRecord(before, nullptr), "cudaEventRecord");
  check_step(cudaStreamWaitEvent(stream, before, 0), "cudaStreamWaitEvent");
  check_step(
      cudaMemcpyAsync(ids.raw_data(), token_ids.data(), size_t(B) * sizeof(int64_t), cudaMemcpyHostToDevice, stream),
      "cudaMemcpyAsync");
  if (exec) {
    check_step(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
  } else {
    record(stream);          // the first step runs eagerly ...
    if (graphs_enabled()) {  // ... and is captured for the next ones
      cudaGraph_t graph = nullptr;
      check_step(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
      try {
        record(stream);
      } catch (...) {
        cudaStreamEndCapture(stream, &graph);
        if (graph) cudaGraphDestroy(graph);
        throw;
      }
      check_step(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
      const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      check_step(e, "cudaGraphInstantiate");
    }
  }
  check_step(cudaEventRecord(after, stream), "cudaEventRecord");
  check_step(cudaStreamWaitEvent(nullptr, after, 0), "cudaStreamWaitEvent");
  return logits;
}

}  // namespace ssm::cuda
