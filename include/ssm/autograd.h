// ssm.cpp — reverse-mode autodiff over ops. An op that has inputs requiring grad records one Node
// holding a backward closure; Tensor::backward() walks the graph in reverse topological order.
// Backward closures run with grad recording off (no double backward).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ssm/tensor.h"

namespace ssm::autograd {

bool grad_enabled();
void set_grad_enabled(bool on);

// RAII: inference mode, records nothing.
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// Receives the gradient of every output (undefined tensor = zero) and returns the gradient for
// every input (undefined where the input needs none). Shapes must match the inputs.
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

struct Node {
  std::string name;
  std::vector<Tensor> inputs;  // handles to the inputs (for routing gradients)
  int num_outputs = 0;
  BackwardFn backward;
  // When set, backward gets 2·num_outputs gradients: g[k] and g[num_outputs + k] are two parts (either
  // may be undefined) whose sum is output k's gradient, so a fused kernel can add them as it reads them
  // (a third and later contributions are added into the second part).
  bool split_sums = false;
};

// True if recording is on and any input requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Attaches a node to `outputs` if needs_grad(inputs). Call after computing the outputs.
// A backward closure that needs an output must capture output.detach(), never the output itself
// (the output owns the node: capturing it would make a reference cycle and leak the graph).
void record(const std::string& name, const std::vector<Tensor>& inputs, std::vector<Tensor*> outputs,
            BackwardFn backward, bool split_sums = false);

// Runs the backward pass from `root` (with d root = grad_output) accumulating into leaves' .grad.
void run_backward(const Tensor& root, const Tensor& grad_output);

// Finite-difference check in fp64. `f` maps the inputs (f64 tensors) to one output tensor; the
// check compares autograd's gradient of sum(f(x) * w) (w random, fixed) against central
// differences with step eps for every element of every input that requires grad.
struct GradCheckResult {
  bool ok = true;
  double max_abs_err = 0, max_rel_err = 0;
  std::string message;  // names the input and element of the worst error
};
GradCheckResult grad_check(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                           double eps = 1e-6, double atol = 1e-7, double rtol = 1e-5);

}  // namespace ssm::autograd
