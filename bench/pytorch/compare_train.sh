#!/usr/bin/env bash
# Training speed, ssm train vs the plain-PyTorch Mamba-1 (mamba_train_ref.py), alternating runs on
# the same machine, 2 threads each. One JSON line per run (with the 1-minute load average before it)
# goes to stdout; summarise with bench/pytorch/summarise.py.
#
#   bench/pytorch/compare_train.sh [SSM_BINARY] [DATA_TEXT] [REPS] > results.jsonl
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SSM=${1:-$ROOT/build/release/ssm}
DATA=${2:-$ROOT/../shared/data/text/tinyshakespeare.txt}
REPS=${3:-3}
PY=${PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# mamba-130m's shape (mamba_ssm config format): vocab 50280, tied head.
cat >"$WORK/m130.json" <<'JSON'
{"d_model": 768, "n_layer": 24, "vocab_size": 50280, "ssm_cfg": {}, "rms_norm": true, "residual_in_fp32": true,
 "fused_add_norm": true, "pad_vocab_size_multiple": 8, "tie_embeddings": true}
JSON
load() { cut -d' ' -f1 /proc/loadavg; }
ours() {  # name steps args...
  local name=$1 steps=$2
  shift 2
  local l
  l=$(load)
  rm -rf "$WORK/run"
  "$SSM" -t 2 train --data "$DATA" --steps "$steps" --warmup 1 --eval-every 0 --ckpt-every 0 --log-every 0 \
    -o "$WORK/run" "$@" >/dev/null 2>&1
  echo "{\"shape\": \"$name\", \"impl\": \"ssm\", \"load1\": $l, \"result\": $(grep '"summary"' "$WORK/run/train.jsonl")}"
}
theirs() {  # name steps args...
  local name=$1 steps=$2
  shift 2
  local l
  l=$(load)
  echo "{\"shape\": \"$name\", \"impl\": \"pytorch\", \"load1\": $l, \"result\": $("$PY" "$ROOT/bench/pytorch/mamba_train_ref.py" --steps "$steps" --warmup 1 -t 2 "$@")}"
}
for r in $(seq "$REPS"); do
  ours small 8 --d-model 256 --n-layer 4 --d-state 16 --expand 2 -b 8 --seq-len 256
  theirs small 4 --d-model 256 --n-layer 4 --d-state 16 --expand 2 --vocab 256 -b 8 -l 256
  ours mamba-130m 6 --model-config "$WORK/m130.json" -b 1 --seq-len 256
  theirs mamba-130m 3 --d-model 768 --n-layer 24 --d-state 16 --expand 2 --vocab 50280 -b 1 -l 256
done
