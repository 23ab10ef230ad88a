#!/usr/bin/env bash
# Set-up command 1: install dependencies, build, and run the main job (`ssm` with no arguments).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target ssm
exec build/release/ssm "$@"
