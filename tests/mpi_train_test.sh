#!/usr/bin/env bash
# char_rnn train on 2 MPI ranks (mpirun -np 2): two runs write bitwise-identical checkpoints; a
# 2-rank checkpoint resumed by 1 process and by 2 continues to the same losses (1e-5 relative);
# kill -9 of one rank ends the job with an error within 30 s, and the last checkpoint on disk
# loads and resumes.
# Usage: tests/mpi_train_test.sh path/to/char_rnn [mpirun (default: mpirun)]
set -euo pipefail
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
mpirun=${2:-mpirun}
mpi=("$mpirun" -np 2)
if "$mpirun" --version 2>/dev/null | grep -Eq "Open MPI|OpenRTE"; then
    mpi+=(--oversubscribe --allow-run-as-root) # CI: root, 2 cores
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/cellgrad-mpi.XXXXXX")
job=""
cleanup() {
    if [ -n "$job" ] && kill -0 "$job" 2>/dev/null; then
        kill -9 "$job" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

for i in $(seq 1 600); do
    echo "Line $i: and the evening and the morning were the day $((i * 7 % 13))."
done >text.txt
run=(--data text.txt --cell lstm --hidden 64 --layers 2 --embedding 16 --seq 24 --batch 8
     --lr 0.003 --val-fraction 0.05 --threads 1)

# The step a checkpoint records (its safetensors header holds "step":"N").
step_of() {
    local length
    length=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    head -c $((8 + length)) "$1" | tail -c "$length" | grep -o '"step":"[0-9]*"' | grep -o '[0-9]\+'
}
# A field of the summary line a run prints.
field() {
    grep -o "\"$2\":[^,}]*" "$1" | cut -d: -f2
}
fail() {
    echo "mpi train test: FAILED: $*" >&2
    exit 1
}

echo "== two runs on 2 ranks write the same checkpoint, byte for byte"
for name in a b; do
    timeout 120 "${mpi[@]}" "$bin" train "${run[@]}" --steps 30 --eval-every 10 \
        --checkpoint "$name.safetensors" >"$name.json" 2>"$name.err" ||
        { cat "$name.err" >&2; fail "the 2-rank run $name failed"; }
done
cmp a.safetensors b.safetensors || fail "two 2-rank runs wrote different checkpoints"
[ "$(wc -l <a.json)" = 1 ] || fail "expected one summary line (rank 0's), got: $(cat a.json)"
[ "$(field a.json ranks)" = 2 ] || fail "the summary does not say 2 ranks: $(cat a.json)"
[ "$(step_of a.safetensors)" = 30 ] || fail "the checkpoint is not at step 30"
echo "same $(wc -c <a.safetensors)-byte checkpoint at step 30 from both runs"

echo "== the 2-rank checkpoint resumed by 1 process and by 2: the same losses"
timeout 120 "$bin" train "${run[@]}" --resume a.safetensors --steps 10 --eval-every 0 \
    --checkpoint one.safetensors >one.json 2>one.err || { cat one.err >&2; fail "1-process resume"; }
timeout 120 "${mpi[@]}" "$bin" train "${run[@]}" --resume a.safetensors --steps 10 --eval-every 0 \
    --checkpoint two.safetensors >two.json 2>two.err || { cat two.err >&2; fail "2-rank resume"; }
for name in one two; do
    [ "$(step_of $name.safetensors)" = 40 ] || fail "the $name resume did not end at step 40"
done
for key in train_loss val_nats; do
    one=$(field one.json $key)
    two=$(field two.json $key)
    awk -v a="$one" -v b="$two" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * b) }' ||
        fail "$key after resuming: 1 process $one, 2 ranks $two (more than 1e-5 apart)"
    echo "$key at step 40: 1 process $one, 2 ranks $two"
done

echo "== kill -9 of rank 1: the job ends with an error within 30 s; the checkpoint is intact"
"${mpi[@]}" "$bin" train "${run[@]}" --steps 1000000 --eval-every 3 \
    --checkpoint kill.safetensors >kill.json 2>kill.err &
job=$!
for _ in $(seq 1 600); do
    [ -f kill.safetensors ] && [ "$(step_of kill.safetensors)" -ge 6 ] && break
    kill -0 "$job" 2>/dev/null || { cat kill.err >&2; fail "the run ended before the kill"; }
    sleep 0.1
done
rank1=""
for pid in $(pgrep -P "$job" || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then
        rank1=$pid
    fi
done
[ -n "$rank1" ] || fail "found no rank 1 among the children of mpirun ($job)"
rank0=$(pgrep -P "$job" | grep -vx "$rank1" | head -n1)
kill -9 "$rank1"
killed_at=$(date +%s%N)
status=0
alive() { # mpirun or rank 0 still runs
    kill -0 "$job" 2>/dev/null || { [ -n "$rank0" ] && kill -0 "$rank0" 2>/dev/null; }
}
for _ in $(seq 1 300); do
    alive || break
    sleep 0.1
done
alive && fail "mpirun or rank 0 still runs 30 s after rank 1 was killed"
elapsed_ms=$((($(date +%s%N) - killed_at) / 1000000))
wait "$job" || status=$?
job=""
[ "$status" -ne 0 ] || fail "the job exited with status 0 after rank 1 was killed"
grep -q "rank 1" kill.err || { cat kill.err >&2; fail "stderr does not name the failed rank"; }
echo "the job ended $elapsed_ms ms after the kill, exit status $status; stderr says:"
grep -v '^\[#\|^\[\.' kill.err | grep -v '^ *$' | sed 's/^/    /' | head -n 12
step=$(step_of kill.safetensors)
timeout 60 "$bin" eval --checkpoint kill.safetensors --data text.txt >/dev/null ||
    fail "the checkpoint of step $step left by the killed job does not load"
timeout 120 "$bin" train "${run[@]}" --resume kill.safetensors --steps 3 --eval-every 0 \
    --checkpoint kill.safetensors >/dev/null 2>resume.err || { cat resume.err >&2; fail "resume"; }
[ "$(step_of kill.safetensors)" = $((step + 3)) ] || fail "the resume did not continue from $step"
ls | grep -q '\.tmp\.' && fail "a temporary file was left: $(ls)"
echo "the checkpoint of step $step loads and resumes to step $((step + 3)) in one process"
echo "mpi train test: passed"
