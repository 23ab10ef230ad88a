#!/bin/bash
# Induction heads (Mamba paper §4.1.2 / Table 2): a 2-layer Mamba trained at length 256, tested at
# 256 ... 16384. Usage: recipes/induction-heads/train.sh [OUT_DIR]   (SSM=path/to/ssm to override)
# Three stages on one thread; each resumes the previous one's checkpoint (bit-identical on resume).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SSM=${SSM:-$here/../../build/release/ssm}
OUT=${1:-runs/induction-heads}
common=(--task induction --model-config "$here/model.json" --weight-decay 0 --seq-len 256
        --eval-every 500 --eval-batches 8 --log-every 500 --ckpt-every 500 -o "$OUT")
# 1. short sequences first: length 64, batch 32
"$SSM" -t 1 train "${common[@]}" --task-len 64 -b 32 --lr 2e-3 --min-lr 2e-3 --warmup 100 --steps 600
# 2. the training length: 256, batch 16, lr 1e-3
"$SSM" -t 1 train "${common[@]}" --task-len 256 -b 16 --lr 1e-3 --min-lr 1e-3 --warmup 100 --steps 2100 --resume
# 3. batch 8 at a constant lr 3e-3 (no weight decay anywhere: it limits how selective Δ becomes,
#    and with it the extrapolation)
"$SSM" -t 1 train "${common[@]}" --task-len 256 -b 8 --lr 3e-3 --min-lr 3e-3 --warmup 100 --steps 12000 --resume
"$SSM" -t 2 eval-task -m "$OUT/model" --task induction --len 256 1024 4096 16384 --batches 16 -b 16 --seed 20240101
