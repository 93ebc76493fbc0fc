#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test with CTest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${CELLGRAD_BUILD_DIR:-"$root/build"}
CELLGRAD_TARGETS="cellgrad_tests" "$root/scripts/setup.sh" "$build_dir" ${CELLGRAD_CMAKE_ARGS:-}
cd "$build_dir"
ctest --output-on-failure -j "$(nproc 2>/dev/null || echo 2)"
