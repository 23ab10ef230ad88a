#!/usr/bin/env bash
# The GPU half of the test suite, reproducible from one script: every `cuda_` test and the
# whole-model GPU benchmark lines, on a machine with an NVIDIA GPU (Hopper: the kernels are sm_90a).
#
#   scripts/gpu-check.sh [BUILD_DIR]          run in place (default build/release; fixtures from
#                                             ../shared or $SSM_SHARED); logs in $OUT (default gpu-check/);
#                                             SSM_GPU_CHECK=tests or =bench runs only that half
#   scripts/gpu-check.sh --stage DIR [BUILD]  copy what the run needs (stripped binaries, the CUDA
#                                             runtime, the Mamba-1/2/3 fixtures, the training benchmark's
#                                             text and model config, this script) into DIR,
#                                             for a GPU machine with only the driver; then run
#                                             `DIR/gpu-check.sh --staged` there
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tests=(cuda_device cuda_ops_forward cuda_selective_scan cuda_models cuda_step cuda_ssd cuda_mamba2 cuda_mamba3 cuda_nccl cuda_train_ops cuda_train cuda_data_parallel)

if [ "${1:-}" = --stage ]; then
  dir=${2:?--stage needs a directory}
  build=${3:-$root/build/release}
  shared=${SSM_SHARED:-$root/../shared}
  mkdir -p "$dir/shared/fixtures"
  for b in "${tests[@]}" ssm; do strip -o "$dir/$b" "$build/$b"; done
  # Shared libraries beyond glibc/libstdc++ and the machine's cuBLAS, xz-packed (OpenBLAS is large).
  libs=$(mktemp -d)
  mkdir "$libs/lib"
  ldd "$build/ssm" | awk '$3 ~ /^\// {print $3}' | grep -Ev '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*|libcublas[^/]*)\.so' |
    while read -r l; do cp -L "$l" "$libs/lib/"; done
  tar cJf "$dir/lib.tar.xz" -C "$libs" lib
  rm -rf "$libs"
  for f in hf-mamba1-tiny ssm-mamba1-tiny hf-falcon-mamba-tiny hf-mamba2-tiny ssm-mamba2-tiny ssm-mamba3-tiny ssm-mamba3-tiny-bf16; do cp -r "$shared/fixtures/$f" "$dir/shared/fixtures/"; done
  mkdir -p "$dir/shared/data/text" "$dir/bench"
  cp "$shared/data/text/tinyshakespeare.txt" "$dir/shared/data/text/"
  cp "$root/bench/mamba-130m.json" "$dir/bench/"
  cp "$0" "$dir/gpu-check.sh"
  echo "staged into $dir ($(du -sh "$dir" | cut -f1)); on the GPU machine: $dir/gpu-check.sh --staged"
  exit 0
fi

if [ "${1:-}" = --staged ]; then
  here=$(cd "$(dirname "$0")" && pwd)
  bin=$here
  data=$here
  export SSM_SHARED=$here/shared
  libs=$(mktemp -d)
  tar xJf "$here/lib.tar.xz" -C "$libs"
  # cuBLAS/cuBLASLt come from the machine's CUDA installation; the other libraries from lib.tar.xz.
  cublas=$(find /usr/local/cuda* /usr/lib -name 'libcublasLt.so.13*' 2>/dev/null | head -1 || true)
  export LD_LIBRARY_PATH=$libs/lib${cublas:+:$(dirname "$cublas")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  bin=${1:-$root/build/release}
  data=$root
  export SSM_SHARED=${SSM_SHARED:-$root/../shared}
fi
export SSM_BIN=$bin/ssm
out=${OUT:-gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
status=0
part=${SSM_GPU_CHECK:-all}  # tests | bench | all (one device call may be too short for both)
[ "$part" = bench ] && tests=()
for t in "${tests[@]}"; do
  rc=0
  timeout 300 "$bin/$t" > "$out/$t.txt" 2>&1 || rc=$?
  echo "$t: exit $rc, $(grep -E '^\[  (PASSED|FAILED) ' "$out/$t.txt" | tr '\n' ' ')"
  [ $rc = 0 ] || status=1
done
[ "$part" = tests ] && exit $status
for m in mamba-130m mamba-1.4b mamba2-130m; do  # random weights of the released shapes, bf16
  timeout 300 "$bin/ssm" bench --device cuda --dtype bf16 --random $m -p 2048 -n 256 -r 5 2>&1 | tee -a "$out/bench.txt"
  timeout 300 "$bin/ssm" bench --device cuda --dtype bf16 --random $m -p 128 -n 128 -r 5 --tg-batch 64 2>&1 |
    tee -a "$out/bench.txt"
done
# Training throughput, mamba-130m shape (vocab 50280), B=8, L=2048, AdamW, clip 1.0: bf16 (mixed precision) and f32.
for dt in bf16 f32; do
  timeout 300 "$bin/ssm" train --device cuda --dtype $dt --model-config "$data/bench/mamba-130m.json" \
    --data "$SSM_SHARED/data/text/tinyshakespeare.txt" -b 8 --seq-len 2048 --steps 12 --warmup 2 --lr 6e-4 \
    --eval-every 0 --ckpt-every 0 --log-every 4 -o "${TMPDIR:-/tmp}/ssm-train-$dt" 2>&1 | tee -a "$out/bench-train.txt"
  cp "${TMPDIR:-/tmp}/ssm-train-$dt/train.jsonl" "$out/train-$dt.jsonl" || status=1
  rm -rf "${TMPDIR:-/tmp}/ssm-train-$dt"  # the 0.5 GB export
done
exit $status
