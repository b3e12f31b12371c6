#!/usr/bin/env bash
# Installs lvit's build dependencies from Debian packages (Debian 12 or newer).
# The CUDA toolkit is optional: with nvcc on PATH the GPU backend is built too.
set -euo pipefail
pkgs=(cmake g++ make libeigen3-dev doctest-dev libstb-dev libcli11-dev nlohmann-json3-dev libfmt-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
