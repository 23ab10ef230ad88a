#!/usr/bin/env bash
# Builds every fuzz target fuzz/fuzz_<name>.cpp with libFuzzer + AddressSanitizer + UBSan and runs
# each for a bounded time over its seed corpus fuzz/corpus/<name>/ (and dictionary fuzz/<name>.dict
# when present). Exits non-zero if any target fails to build or finds a crash.
#
#   scripts/fuzz.sh                 # all targets, 30 s each
#   scripts/fuzz.sh safetensors     # only fuzz/fuzz_safetensors.cpp
#   FUZZ_SECONDS=300 scripts/fuzz.sh
#
# Environment: FUZZ_SECONDS (30) time per target, FUZZ_CXX (clang++), FUZZ_BUILD_DIR (build/fuzz),
# FUZZ_MAX_LEN (16384) largest input, FUZZ_JOBS (2) parallel compiles.
# Adding a target: write fuzz/fuzz_<name>.cpp defining LLVMFuzzerTestOneInput, put a few small seed
# files in fuzz/corpus/<name>/. Targets may use the library folders in LIB_DIRS below.
# New inputs found go to $FUZZ_BUILD_DIR/corpus/<name> (the seeds in the repository are never
# modified); crashing inputs go to $FUZZ_BUILD_DIR/artifacts/<name>/ — reproduce one with
# $FUZZ_BUILD_DIR/fuzz_<name> <file>.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${FUZZ_BUILD_DIR:-$ROOT/build/fuzz}
CXX=${FUZZ_CXX:-clang++}
SECONDS_EACH=${FUZZ_SECONDS:-30}
MAX_LEN=${FUZZ_MAX_LEN:-16384}
JOBS=${FUZZ_JOBS:-2}
# Library code the targets link against (tensor needs autograd and the ops it dispatches to).
LIB_DIRS=(src/base src/tensor src/autograd src/ops src/backend/cpu src/io src/tokenizer)

command -v "$CXX" >/dev/null || { echo "fuzz.sh: $CXX not found (needs clang with libFuzzer)" >&2; exit 2; }

CXXFLAGS=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
          -I"$ROOT/include" -I"$ROOT/src" -Wall -Wextra -Wno-unused-parameter)
case "$(uname -m)" in x86_64) CXXFLAGS+=(-mavx2 -mfma -mf16c) ;; esac
LIBS=(-lpthread)
for pkg in openblas libutf8proc; do
  if pkg-config --exists "$pkg" 2>/dev/null; then read -r -a l <<<"$(pkg-config --libs "$pkg")"; LIBS+=("${l[@]}"); fi
done

# Targets: all fuzz/fuzz_*.cpp, or the names given on the command line.
targets=()
if [ $# -gt 0 ]; then
  for n in "$@"; do
    [ -f "$ROOT/fuzz/fuzz_$n.cpp" ] || { echo "fuzz.sh: no fuzz/fuzz_$n.cpp" >&2; exit 2; }
    targets+=("$n")
  done
else
  for f in "$ROOT"/fuzz/fuzz_*.cpp; do [ -e "$f" ] && targets+=("$(basename "$f" .cpp | sed 's/^fuzz_//')"); done
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets in fuzz/" >&2; exit 2; }

# ---- build the instrumented library objects (rebuilt when the source or any header is newer) ----
mkdir -p "$BUILD/obj"
newest_header=$(find "$ROOT/include" "$ROOT/src" -name '*.h' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
compile() {  # src obj
  local src=$1 obj=$2
  if [ -f "$obj" ] && [ "$obj" -nt "$src" ] && { [ -z "$newest_header" ] || [ "$obj" -nt "$newest_header" ]; }; then
    return 0
  fi
  local extra=()  # the AVX-512 kernels (called only on CPUs that have it), as CMakeLists.txt builds them
  case "$src" in *_avx512.cpp) extra=(-mavx512f -mavx512bw -mavx512vl -mavx512bf16) ;; esac
  echo "  CXX $src"
  "$CXX" "${CXXFLAGS[@]}" "${extra[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj.tmp" && mv "$obj.tmp" "$obj"
}
objs=()
srcs=()
for d in "${LIB_DIRS[@]}"; do
  for s in "$ROOT/$d"/*.cpp; do
    [ -e "$s" ] || continue
    srcs+=("$s")
    objs+=("$BUILD/obj/$(echo "${s#"$ROOT"/}" | tr / _).o")
  done
done
echo "fuzz.sh: building ${#srcs[@]} library sources with $CXX (ASan + UBSan + libFuzzer)"
fail_build=0
for i in "${!srcs[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || fail_build=1; done
  compile "${srcs[$i]}" "${objs[$i]}" &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || fail_build=1; done
wait || fail_build=1
[ $fail_build -eq 0 ] || { echo "fuzz.sh: library build failed" >&2; exit 1; }

# ---- build and run each target ----
status=0
summary=()
for name in "${targets[@]}"; do
  bin="$BUILD/fuzz_$name"
  echo "fuzz.sh: building fuzz_$name"
  if ! "$CXX" "${CXXFLAGS[@]}" -fsanitize=fuzzer "$ROOT/fuzz/fuzz_$name.cpp" "${objs[@]}" "${LIBS[@]}" -o "$bin"; then
    summary+=("fuzz_$name: BUILD FAILED")
    status=1
    continue
  fi
  work="$BUILD/corpus/$name"
  art="$BUILD/artifacts/$name"
  mkdir -p "$work" "$art"
  dirs=("$work")
  if [ -d "$ROOT/fuzz/corpus/$name" ]; then dirs+=("$ROOT/fuzz/corpus/$name"); else echo "fuzz.sh: note: no seed corpus fuzz/corpus/$name/"; fi
  args=(-max_total_time="$SECONDS_EACH" -max_len="$MAX_LEN" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
        -artifact_prefix="$art/")
  [ -f "$ROOT/fuzz/$name.dict" ] && args+=(-dict="$ROOT/fuzz/$name.dict")
  echo "fuzz.sh: running fuzz_$name for ${SECONDS_EACH}s"
  log="$BUILD/fuzz_$name.log"
  if "$bin" "${args[@]}" "${dirs[@]}" >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    summary+=("fuzz_$name: ok ($runs runs, corpus $(ls "$work" | wc -l) new inputs)")
  else
    tail -n 60 "$log" >&2
    summary+=("fuzz_$name: FAILED (see $log and $art/)")
    status=1
  fi
done
printf '%s\n' "${summary[@]}"
exit $status
