#!/usr/bin/env bash
# kill -9 at random points of a char_rnn training run, some of them inside a checkpoint save:
# after every kill the checkpoint must load, and resuming until the end must give the same final
# file, byte for byte, as one uninterrupted run. No temporary file may be left at the end.
# Usage: tests/kill_test.sh path/to/char_rnn [kills (default 8)] [seed]
set -euo pipefail
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
kills=${2:-8}
RANDOM=${3:-$$}
work=$(mktemp -d "${TMPDIR:-/tmp}/cellgrad-kill.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

for i in $(seq 1 600); do
    echo "Line $i: and the evening and the morning were the day $((i * 7 % 13))."
done >text.txt
# A checkpoint every step (and a validation before it), so that kills often land inside a save.
run=(--data text.txt --cell lstm --hidden 96 --layers 2 --embedding 16 --seq 24 --batch 8
     --dropout 0.1 --lr 0.003 --eval-every 1 --val-fraction 0.01 --threads 1)
total=120

# The step a checkpoint records (its safetensors header holds "step":"N").
step_of() {
    local length
    length=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    head -c $((8 + length)) "$1" | tail -c "$length" | grep -o '"step":"[0-9]*"' | grep -o '[0-9]\+'
}

"$bin" train "${run[@]}" --steps "$total" --checkpoint reference.safetensors >/dev/null 2>&1
"$bin" train "${run[@]}" --steps 0 --checkpoint run.safetensors >/dev/null 2>&1

killed=0
inside_save=0
attempts=0
while [ "$killed" -lt "$kills" ]; do
    attempts=$((attempts + 1))
    if [ "$attempts" -gt $((kills * 6)) ]; then
        echo "kill test: FAILED: the run finished before $kills kills" >&2
        exit 1
    fi
    step=$(step_of run.safetensors)
    [ "$step" -lt "$total" ] || break
    "$bin" train "${run[@]}" --steps $((total - step)) --checkpoint run.safetensors \
        --resume run.safetensors >/dev/null 2>&1 &
    pid=$!
    # 0.15 to 0.75 s: past start-up, somewhere in the steps and saves. Every other kill then
    # waits for the next save to begin (its temporary file to appear) and strikes inside it.
    sleep "0.$((15 + RANDOM % 60))"
    if [ $((attempts % 2)) -eq 0 ]; then
        for ((spin = 0; spin < 200000; spin++)); do
            compgen -G "run.safetensors.tmp.*" >/dev/null && break
        done
    fi
    if ! kill -9 "$pid" 2>/dev/null; then
        wait "$pid" || true
        continue # it finished first
    fi
    wait "$pid" 2>/dev/null || true
    killed=$((killed + 1))
    if ls run.safetensors.tmp.* >/dev/null 2>&1; then
        inside_save=$((inside_save + 1))
    fi
    if ! "$bin" eval --checkpoint run.safetensors --data text.txt >/dev/null 2>eval.err; then
        echo "kill test: FAILED: after kill $killed the checkpoint does not load:" >&2
        cat eval.err >&2
        exit 1
    fi
    echo "kill $killed: at step $(step_of run.safetensors) of $total$(ls run.safetensors.tmp.* >/dev/null 2>&1 && echo ', inside a save (temp file left)')"
done

step=$(step_of run.safetensors)
"$bin" train "${run[@]}" --steps $((total - step)) --checkpoint run.safetensors \
    --resume run.safetensors >/dev/null 2>&1
if ! cmp -s run.safetensors reference.safetensors; then
    echo "kill test: FAILED: the resumed run's final checkpoint differs from the uninterrupted one" >&2
    exit 1
fi
if ls ./*.tmp.* >/dev/null 2>&1; then
    echo "kill test: FAILED: temporary files left behind: $(ls ./*.tmp.*)" >&2
    exit 1
fi
if [ "$inside_save" -lt 1 ]; then
    echo "kill test: FAILED: none of the $killed kills landed inside a save" >&2
    exit 1
fi
echo "kill test: passed: $killed kills ($inside_save inside a save), every checkpoint loaded, the final file equals the uninterrupted run's"
