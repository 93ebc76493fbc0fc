#!/usr/bin/env bash
# Data-parallel scaling on this machine: `char_rnn train` with the main job's model
# (scripts/run-main.sh: 2 x 256 LSTM, embedding 64, batch 32, seq 64) and the training benchmark's
# `medium` and `large` shapes (bench/bench_training.cpp: one LSTM layer; medium = batch 32, seq 64,
# input 128, hidden 512; large = batch 64, seq 100, input 256, hidden 1024), on tiny-shakespeare
# (vocabulary 65), as 1 rank x 2 threads against 2 ranks x 1 thread (mpirun -np 2). Same global
# batch, Adam, clip 5.
# Each pair runs `rounds` times, alternating; the table gives every round's tokens/s (from the
# runs' summaries: global tokens over rank 0's training time, allreduce waits included), the
# gradient buffer each step allreduces, and the load before each run.
# Usage: bench/run-scaling.sh path/to/char_rnn [corpus] [rounds (default 2)]
# Environment: STEPS_MAIN, STEPS_MEDIUM (default 40), STEPS_LARGE (default 12), MPIRUN (default
# mpirun).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
corpus=${2:-"$root/../shared/data/tinyshakespeare.txt"}
rounds=${3:-2}
mpirun=${MPIRUN:-mpirun}
mpi=("$mpirun" -np 2 --bind-to none)
if "$mpirun" --version 2>/dev/null | grep -Eq "Open MPI|OpenRTE"; then
    mpi+=(--oversubscribe --allow-run-as-root)
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/cellgrad-scaling.XXXXXX")
trap 'rm -rf "$work"' EXIT

field() {
    grep -o "\"$2\":[^,}]*" "$1" | cut -d: -f2
}
load() {
    cut -d' ' -f1 /proc/loadavg
}

echo "| config | parameters | gradient buffer | round | 1 rank x 2 threads tok/s | 2 ranks x 1 thread tok/s | 2 ranks / 1 rank | load before (1r / 2r) |"
echo "|---|---|---|---|---|---|---|---|"
for config in main medium large; do
    if [ "$config" = main ]; then # scripts/run-main.sh's model (on this corpus's vocabulary)
        shape=(--layers 2 --embedding 64 --hidden 256 --seq 64 --batch 32)
        steps=${STEPS_MAIN:-40}
    elif [ "$config" = medium ]; then
        shape=(--layers 1 --embedding 128 --hidden 512 --seq 64 --batch 32)
        steps=${STEPS_MEDIUM:-40}
    else
        shape=(--layers 1 --embedding 256 --hidden 1024 --seq 100 --batch 64)
        steps=${STEPS_LARGE:-12}
    fi
    run=(train --data "$corpus" --cell lstm "${shape[@]}" --lr 2e-3 --clip 5 --val-fraction 0
         --eval-every 0 --steps "$steps")
    parameters=$("$bin" train --data "$corpus" --cell lstm "${shape[@]}" --steps 0 \
        --val-fraction 0 2>&1 >/dev/null | grep -o '[0-9]* parameters' | cut -d' ' -f1)
    bytes=$(((parameters + 1) * 4)) # float gradients + the loss, one flat buffer
    for round in $(seq 1 "$rounds"); do
        load1=$(load)
        "$bin" "${run[@]}" --threads 2 >"$work/one.json" 2>/dev/null
        load2=$(load)
        "${mpi[@]}" "$bin" "${run[@]}" --threads 1 >"$work/two.json" 2>/dev/null
        one=$(field "$work/one.json" tokens_per_second)
        two=$(field "$work/two.json" tokens_per_second)
        awk -v c="$config" -v p="$parameters" -v b="$bytes" -v r="$round" -v one="$one" \
            -v two="$two" -v l1="$load1" -v l2="$load2" 'BEGIN {
            printf "| %s | %d | %.2f MB | %d | %.0f | %.0f | %.2f | %s / %s |\n",
                   c, p, b / 1e6, r, one, two, two / one, l1, l2 }'
    done
done
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(uptime | sed 's/^ *//')"
