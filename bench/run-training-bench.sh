#!/usr/bin/env bash
# The training-step benchmark, cellgrad vs LibTorch (bench/README.md): builds bench_training in
# Release in its own build directory if needed, then runs it with OPENBLAS_CORETYPE unset (OpenBLAS
# picks its kernels for this CPU) and glibc's malloc tuned so that freed blocks stay in the process
# (LibTorch at its best), and writes the markdown report to stdout and to a file.
#
# Environment: CELLGRAD_BENCH_BUILD_DIR (default build-bench), CELLGRAD_BENCH_JOBS (default 2),
# CELLGRAD_BENCH_OUT (default <build dir>/training-bench.md). Extra arguments go to bench_training,
# e.g. --configs small,medium --cells lstm --threads 2 --steps 20.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${CELLGRAD_BENCH_BUILD_DIR:-"$root/build-bench"}
jobs=${CELLGRAD_BENCH_JOBS:-2}
out=${CELLGRAD_BENCH_OUT:-"$build_dir/training-bench.md"}

if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >&2
fi
cmake --build "$build_dir" -j"$jobs" --target bench_training >&2

mkdir -p "$(dirname "$out")"
env -u OPENBLAS_CORETYPE \
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=134217728:glibc.malloc.trim_threshold=1073741824 \
    "$build_dir/bench/bench_training" "$@" | tee "$out.tmp"
mv "$out.tmp" "$out"
echo "report written to $out" >&2
