#!/usr/bin/env python3
"""Median tokens/s and peak RSS per shape and implementation from compare_train.sh's output."""
import json
import statistics
import sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| shape | impl | runs | median tok/s (runs) | peak RSS MiB | load average (1 min) |")
print("|---|---|---:|---:|---:|---|")
ratio = {}
for shape in dict.fromkeys(r["shape"] for r in runs):
    for impl in ("ssm", "pytorch"):
        rs = [r for r in runs if r["shape"] == shape and r["impl"] == impl]
        if not rs:
            continue
        tok = [r["result"]["median_tok_s"] for r in rs]
        rss = [r["result"]["peak_rss_mib"] for r in rs]
        ratio.setdefault(shape, {})[impl] = statistics.median(tok)
        print("| %s | %s | %d | **%.0f** (%s) | %.0f | %s |" % (shape, impl, len(rs), statistics.median(tok),
              ", ".join("%.0f" % t for t in tok), statistics.median(rss), ", ".join("%.2f" % r["load1"] for r in rs)))
for shape, v in ratio.items():
    if "ssm" in v and "pytorch" in v:
        print("%s: ssm / pytorch = %.1fx" % (shape, v["ssm"] / v["pytorch"]))
