// ssm plot: the SVG loss curve of a train.jsonl log.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ssm/json_config.h"
#include "ssm/trainer.h"
#include "train/util.h"

namespace ssm::train {

using json = nlohmann::json;

void plot_loss(const std::string& log_jsonl, const std::string& svg_path) {
  std::ifstream in(log_jsonl);
  SSM_CHECK(bool(in), "plot", "cannot open '" + log_jsonl + "'");
  std::vector<std::pair<double, double>> tr, va;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    json j = io::parse_json_text(line, log_jsonl + ":" + std::to_string(lineno));
    if (!j.is_object() || !j.contains("step")) continue;
    double s = j["step"].get<double>();
    if (j.contains("loss")) tr.push_back({s, j["loss"].get<double>()});
    if (j.contains("val_loss")) va.push_back({s, j["val_loss"].get<double>()});
  }
  SSM_CHECK(!tr.empty() || !va.empty(), "plot", "'" + log_jsonl + "' has no loss entries");
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (auto* v : {&tr, &va})
    for (auto [x, y] : *v) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const double W = 800, H = 480, L = 70, R = 20, T = 30, B = 50;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return T + (y1 - y) / (y1 - y0) * (H - T - B); };
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='12'>\n"
    << "<rect width='100%' height='100%' fill='white'/>\n";
  for (int k = 0; k <= 5; ++k) {
    double y = y0 + (y1 - y0) * k / 5, x = x0 + (x1 - x0) * k / 5;
    o << "<line x1='" << L << "' x2='" << W - R << "' y1='" << py(y) << "' y2='" << py(y) << "' stroke='#ddd'/>"
      << "<text x='" << L - 6 << "' y='" << py(y) + 4 << "' text-anchor='end'>" << std::round(y * 1000) / 1000
      << "</text>\n"
      << "<text x='" << px(x) << "' y='" << H - B + 18 << "' text-anchor='middle'>" << std::llround(x) << "</text>\n";
  }
  auto poly = [&](const std::vector<std::pair<double, double>>& v, const char* color) {
    if (v.empty()) return;
    o << "<polyline fill='none' stroke='" << color << "' stroke-width='1.5' points='";
    for (auto [x, y] : v) o << px(x) << "," << py(y) << " ";
    o << "'/>\n";
  };
  poly(tr, "#1f77b4");
  poly(va, "#d62728");
  o << "<text x='" << W / 2 << "' y='" << H - 10 << "' text-anchor='middle'>step</text>"
    << "<text x='" << L
    << "' y='18'>loss (nats/token): <tspan fill='#1f77b4'>train</tspan> <tspan "
       "fill='#d62728'>validation</tspan></text>\n"
    << "</svg>\n";
  write_text_atomic(svg_path, o.str());
}

}  // namespace ssm::train
