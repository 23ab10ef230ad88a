#!/usr/bin/env bash
# Installs everything ssm.cpp needs to build and test, from Debian 12 packages. Idempotent and
# non-interactive: packages already present are skipped without touching the network.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config git
      libopenblas-dev nlohmann-json3-dev libcli11-dev libutf8proc-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      clang clang-format libclang-rt-14-dev gnuplot-nox)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
