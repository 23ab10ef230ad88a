// NumPy broadcasting rules and their adjoint (sum_to), shared by every broadcasting op's backward.
#include <algorithm>

#include "ops/op_util.h"

namespace ssm::detail {

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  size_t nd = std::max(a.size(), b.size());
  Shape out(nd, 1);
  for (size_t k = 0; k < nd; ++k) {
    int64_t da = k < a.size() ? a[a.size() - 1 - k] : 1;
    int64_t db = k < b.size() ? b[b.size() - 1 - k] : 1;
    SSM_CHECK(da == db || da == 1 || db == 1, op,
              "cannot broadcast shapes " + shape_str(a) + " and " + shape_str(b) + " (dimension " +
                  std::to_string(int64_t(nd) - 1 - int64_t(k)) + ": " + std::to_string(da) + " vs " +
                  std::to_string(db) + ")");
    out[nd - 1 - k] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  check_defined("sum_to", g, "gradient");
  if (g.shape() == shape) return g;
  const Shape& gs = g.shape();
  SSM_CHECK(gs.size() >= shape.size(), "sum_to", "cannot sum " + shape_str(gs) + " down to " + shape_str(shape));
  size_t lead = gs.size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t k = 0; k < gs.size(); ++k) {
    if (k < lead) {
      dims.push_back(int64_t(k));
      continue;
    }
    int64_t want = shape[k - lead];
    SSM_CHECK(want == gs[k] || want == 1, "sum_to", "cannot sum " + shape_str(gs) + " down to " + shape_str(shape));
    if (want == 1 && gs[k] != 1) dims.push_back(int64_t(k));
  }
  if (dims.empty()) return g.reshape(shape);  // only leading size-1 dims differ
  return sum(g, dims, /*keepdim=*/true).reshape(shape);
}

}  // namespace ssm::detail
