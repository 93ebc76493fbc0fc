#!/usr/bin/env bash
# Installs what is missing (Debian 12), then configures and builds cellgrad.
# Usage: scripts/setup.sh [build-dir] [extra cmake args...]
# Environment: CELLGRAD_EXTRA_PACKAGES adds Debian packages to install; CELLGRAD_TARGETS limits
# the build to these targets (default: everything); CELLGRAD_SETUP_INSTALL_ONLY=1 stops after
# installing (scripts/check-style.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${1:-"$root/build"}
shift || true

packages=(build-essential cmake libxtensor-dev libxtensor-blas-dev xtl-dev libfmt-dev doctest-dev
          libtbb-dev libopenblas-dev libcli11-dev nlohmann-json3-dev ${CELLGRAD_EXTRA_PACKAGES:-})
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ "${CELLGRAD_SETUP_INSTALL_ONLY:-0}" = 1 ]; then
    exit 0
fi

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
targets=()
for target in ${CELLGRAD_TARGETS:-}; do
    targets+=(--target "$target")
done
cmake --build "$build_dir" -j "$jobs" "${targets[@]}"
