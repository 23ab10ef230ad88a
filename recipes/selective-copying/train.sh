#!/bin/bash
# Selective copying (Mamba paper §4.1.1 / Table 1) at a reduced length: 16 data tokens scattered in
# a region of 256, then 16 markers at which the model must output them in order. A 2-layer Mamba
# (S6) and the same model without selection (--lti). Usage:
#   recipes/selective-copying/train.sh [OUT_DIR] [--lti]      (SSM=path/to/ssm to override)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SSM=${SSM:-$here/../../build/release/ssm}
OUT=${1:-runs/selective-copying}
extra=("${@:2}")
common=(--task selective_copying --model-config "$here/model.json" "${extra[@]}" -b 16
        --eval-every 500 --eval-batches 8 --log-every 500 --ckpt-every 500 -o "$OUT")
# 1. region 64 (80 tokens per sequence), constant lr 2e-3
"$SSM" -t 1 train "${common[@]}" --task-len 64 --lr 2e-3 --min-lr 2e-3 --warmup 200 --steps 20000
# 2. region 256 (272 tokens), constant lr 1e-3
"$SSM" -t 1 train "${common[@]}" --task-len 256 --lr 1e-3 --min-lr 1e-3 --warmup 200 --steps 23241 --resume
"$SSM" -t 2 eval-task -m "$OUT/model" --task selective_copying --len 256 --batches 16 -b 16 --seed 20240101
