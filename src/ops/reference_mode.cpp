#include <atomic>

#include "ssm/ops.h"

namespace ssm {
namespace {
std::atomic<bool> g_reference{false};
}
bool reference_kernels() { return g_reference.load(std::memory_order_relaxed); }
void set_reference_kernels(bool on) { g_reference.store(on, std::memory_order_relaxed); }
}  // namespace ssm
