#include "ssm/autograd.h"

#include <cmath>
#include <cstring>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "ssm/ops.h"

namespace ssm::autograd {

namespace {
thread_local bool t_grad_enabled = true;
}

bool grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool on) { t_grad_enabled = on; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const std::string& name, const std::vector<Tensor>& inputs, std::vector<Tensor*> outputs,
            BackwardFn backward, bool split_sums) {
  if (!needs_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->split_sums = split_sums;
  node->inputs = inputs;
  node->num_outputs = int(outputs.size());
  node->backward = std::move(backward);
  for (size_t i = 0; i < outputs.size(); ++i)
    if (outputs[i] && outputs[i]->defined()) outputs[i]->set_grad_fn(node, int(i));
}

namespace {
Tensor accumulate(const Tensor& acc, const Tensor& g) { return acc.defined() ? add(acc, g) : g; }

size_t grad_slots(const Node& n) { return size_t(n.num_outputs) * (n.split_sums ? 2 : 1); }

// Adds g to output k's gradient in `slot` (a node's gradients, grad_slots long).
void add_to_slot(const Node& n, std::vector<Tensor>& slot, int k, const Tensor& g) {
  slot.resize(grad_slots(n));
  Tensor& first = slot[size_t(k)];
  if (!n.split_sums || !first.defined()) {
    first = accumulate(first, g);
    return;
  }
  Tensor& second = slot[size_t(n.num_outputs + k)];
  second = accumulate(second, g);
}

void check_grad_shape(const Node& n, size_t i, const Tensor& g) {
  const Tensor& in = n.inputs[i];
  SSM_CHECK(g.shape() == in.shape(), "backward",
            "op '" + n.name + "' returned a gradient of shape " + shape_str(g.shape()) + " for input " +
                std::to_string(i) + " of shape " + shape_str(in.shape()));
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_output_in) {
  SSM_CHECK(root.defined(), "backward", "backward() of an undefined tensor");
  SSM_CHECK(root.requires_grad(), "backward", "tensor does not require grad (no input had requires_grad set)");
  Tensor grad_output = grad_output_in;
  if (!grad_output.defined()) {
    SSM_CHECK(root.numel() == 1, "backward",
              "backward() without a gradient needs a single-element tensor, got shape " + shape_str(root.shape()));
    grad_output = Tensor::full(root.shape(), 1.0, root.dtype()).to(root.device());
  }
  SSM_CHECK(grad_output.shape() == root.shape(), "backward",
            "gradient shape " + shape_str(grad_output.shape()) + " does not match " + shape_str(root.shape()));
  NoGradGuard ng;
  if (!root.grad_fn()) {  // a leaf
    Tensor r = root;
    r.set_grad(accumulate(r.grad(), grad_output));
    return;
  }
  // Reverse topological order by iterative DFS.
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack{{root.grad_fn().get(), 0}};
  seen.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      const Tensor& in = node->inputs[next++];
      if (in.defined() && in.grad_fn() && !seen.count(in.grad_fn().get())) {
        seen.insert(in.grad_fn().get());
        stack.push_back({in.grad_fn().get(), 0});
      }
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  std::unordered_map<Node*, std::vector<Tensor>> grads;
  add_to_slot(*root.grad_fn(), grads[root.grad_fn().get()], root.output_nr(), grad_output);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    auto found = grads.find(node);
    if (found == grads.end()) continue;
    std::vector<Tensor> gouts = std::move(found->second);
    grads.erase(found);
    gouts.resize(grad_slots(*node));
    std::vector<Tensor> gins = node->backward(gouts);
    SSM_CHECK(gins.size() == node->inputs.size(), "backward",
              "op '" + node->name + "' returned " + std::to_string(gins.size()) + " gradients for " +
                  std::to_string(node->inputs.size()) + " inputs");
    for (size_t i = 0; i < gins.size(); ++i) {
      Tensor in = node->inputs[i];
      if (!in.defined() || !in.requires_grad() || !gins[i].defined()) continue;
      check_grad_shape(*node, i, gins[i]);
      Tensor g = gins[i].dtype() == in.dtype() ? gins[i] : gins[i].to(in.dtype());
      if (in.grad_fn()) {
        add_to_slot(*in.grad_fn(), grads[in.grad_fn().get()], in.output_nr(), g);
      } else {
        in.set_grad(accumulate(in.grad(), g).contiguous());
      }
    }
  }
}

GradCheckResult grad_check(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                           double eps, double atol, double rtol) {
  GradCheckResult res;
  for (auto& t : inputs) {
    if (!t.defined()) continue;
    SSM_CHECK(t.dtype() == DType::f64 && t.is_contiguous() && !t.grad_fn(), "grad_check",
              "inputs must be contiguous f64 leaf tensors");
    t.zero_grad();
  }
  Tensor out = f(inputs);
  SSM_CHECK(out.requires_grad(), "grad_check", "output does not require grad");
  Tensor w = Tensor::randn(out.shape(), 1234, 0, 1, DType::f64);
  std::vector<double> wv = w.to_vector_f64();
  run_backward(out, w);
  auto objective = [&]() {
    NoGradGuard ng;
    std::vector<double> o = f(inputs).to_vector_f64();
    double s = 0;
    for (size_t i = 0; i < o.size(); ++i) s += o[i] * wv[i];
    return s;
  };
  double worst = -1;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& t = inputs[k];
    if (!t.defined() || !t.requires_grad()) continue;
    std::vector<double> ana =
        t.grad().defined() ? t.grad().to_vector_f64() : std::vector<double>(size_t(t.numel()), 0.0);
    double* p = t.data<double>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      double orig = p[i];
      p[i] = orig + eps;
      double fp = objective();
      p[i] = orig - eps;
      double fm = objective();
      p[i] = orig;
      double num = (fp - fm) / (2 * eps);
      double err = std::fabs(num - ana[size_t(i)]);
      double rel = err / std::max(std::fabs(num), 1e-12);
      res.max_abs_err = std::max(res.max_abs_err, err);
      if (std::fabs(num) > 1e-6) res.max_rel_err = std::max(res.max_rel_err, rel);
      double excess = err - (atol + rtol * std::fabs(num));
      if (!(excess <= 0) && excess > worst) {  // NaN counts as failure
        worst = std::isnan(excess) ? 1e300 : excess;
        res.ok = false;
        res.message = "input " + std::to_string(k) + " element " + std::to_string(i) + ": numeric " +
                      std::to_string(num) + " vs autograd " + std::to_string(ana[size_t(i)]);
      }
    }
  }
  return res;
}

}  // namespace ssm::autograd
