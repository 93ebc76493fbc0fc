#!/usr/bin/env bash
# Fuzzes the checkpoint loader for a bounded time, starting from real checkpoints made right now
# by the same build's char_rnn (three cells, one and two layers, four optimizers).
# Usage: fuzz/run-fuzz.sh BUILD_DIR [SECONDS]   (BUILD_DIR configured with clang, -DCELLGRAD_FUZZ=ON)
# Fails on any crash, sanitizer report, input slower than 1 s (-timeout=1) or leak.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "$1" && pwd)
seconds=${2:-120}
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target fuzz_checkpoint char_rnn
work=$(mktemp -d "${TMPDIR:-/tmp}/cellgrad-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus" "$work/found"
for i in $(seq 1 40); do echo "In the beginning was the word, and the word was $i."; done >"$work/text.txt"
seeds=0
for cell in lstm gru rnn; do
    for layers in 1 2; do
        for optimizer in adam sgd adagrad rmsprop; do
            "$build/examples/char_rnn/char_rnn" train --data "$work/text.txt" --cell "$cell" \
                --layers "$layers" --hidden 4 --embedding 3 --seq 4 --batch 2 --steps 3 \
                --eval-every 2 --optimizer "$optimizer" --dropout 0.1 --threads 1 \
                --checkpoint "$work/corpus/$cell-$layers-$optimizer.safetensors" >/dev/null 2>&1
            seeds=$((seeds + 1))
        done
    done
done
echo "fuzz: $seeds seed checkpoints ($(du -sh "$work/corpus" | cut -f1)), ${seconds} s"
# -max_len: the seeds are 1-3 KB; room to grow without making every input slow.
status=0
"$build/fuzz/fuzz_checkpoint" -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 \
    -max_len=16384 -dict="$root/fuzz/checkpoint.dict" -print_final_stats=1 \
    -artifact_prefix="$work/found/" "$work/corpus" >"$work/log" 2>&1 || status=$?
grep -E "INITED|DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::slowest_unit_time_sec|stat::peak_rss_mb|ERROR|SUMMARY|Test unit written" "$work/log" || true
if [ "$status" -ne 0 ] || ls "$work/found" | grep -q .; then
    echo "fuzz: FAILED (exit $status); the last lines of the log and the inputs:" >&2
    tail -n 60 "$work/log" >&2
    for input in "$work"/found/*; do
        [ -e "$input" ] && { echo "== $input" >&2; base64 "$input" >&2; }
    done
    exit 1
fi
echo "fuzz: passed"
