#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test with CTest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${CELLGRAD_BUILD_DIR:-"$root/build"}
# Open MPI: the data-parallel tests (tests/mpi/, run under mpirun -np 2) build when CMake finds it.
CELLGRAD_EXTRA_PACKAGES="libopenmpi-dev openmpi-bin ${CELLGRAD_EXTRA_PACKAGES:-}" \
    CELLGRAD_TARGETS="cellgrad_tests" "$root/scripts/setup.sh" "$build_dir" ${CELLGRAD_CMAKE_ARGS:-}
cd "$build_dir"
ctest --output-on-failure -j "$(nproc 2>/dev/null || echo 2)"
