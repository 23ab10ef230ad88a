#!/usr/bin/env bash
# Set-up command 2: install dependencies, build everything (warnings as errors; CUDA code too when
# nvcc is installed), run every test except the GPU ones, then the sanitizer build of the unit tests
# and a bounded fuzzing run of every parser. Environment:
#   SSM_SKIP_SANITIZE=1  skip the ASan/UBSan build      FUZZ_SECONDS=N  seconds per fuzz target (30)
#   SSM_TEST_LABELS=...  ctest label regex to exclude (default: cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)
start=$(date +%s)

echo "== format (clang-format, .clang-format) =="
if git rev-parse --git-dir >/dev/null 2>&1; then
  git ls-files '*.cpp' '*.h' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror
else
  echo "not a git checkout: format check skipped"
fi
echo "== release build (warnings as errors) =="
cmake --preset ci >/dev/null
cmake --build --preset ci -j "$jobs"
echo "== tests: all but '${SSM_TEST_LABELS:-cuda}' =="
ctest --test-dir build/ci -LE "${SSM_TEST_LABELS:-cuda}" --output-on-failure -j "$jobs" --timeout 1200

if [ "${SSM_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== sanitizer build (ASan + UBSan), unit tests =="
  cmake --preset sanitize >/dev/null
  # Only what the unit tests need (the parity suites already ran above on the same code).
  targets=(ssm $(cd tests && ls unit_*.cpp | sed 's/\.cpp$//'))
  cmake --build --preset sanitize -j "$jobs" --target "${targets[@]}"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build/sanitize -L unit --output-on-failure -j "$jobs" --timeout 1200
fi

if [ -x scripts/fuzz.sh ]; then
  echo "== fuzzing =="
  scripts/fuzz.sh
fi
echo "== all tests passed in $(( $(date +%s) - start )) s =="
