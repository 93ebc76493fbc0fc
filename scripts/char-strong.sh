#!/usr/bin/env bash
# A strong character model on tiny-shakespeare against nanoGPT's character transformer
# (validation 1.4697 nats/char on a GPU): nanoGPT's split (first 90% train, last 10% validation),
# a 2 x 512 LSTM with dropout between the layers, at most MAX_SECONDS of wall time on this machine
# (validation and checkpoints included). Writes OUT/curve.csv (a row per validation: losses,
# seconds, tokens/s), OUT/curve.png, OUT/summary.json, OUT/sample.txt, OUT/best.safetensors and
# OUT/machine.txt (CPU, cores, OpenBLAS kernel, load before and after, wall time).
#
#   bash scripts/char-strong.sh            # the real run: 60 minutes, into out/char-strong/
#   bash scripts/char-strong.sh --quick    # smoke test: a tiny model for 30 s, into $TMPDIR
#
# Knobs are environment variables (defaults below). Run it on a quiet machine: the budget is wall
# time, so every other job on the cores costs the model steps.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quick=0
case "${1:-}" in
--quick) quick=1 ;;
"") ;;
-h | --help)
    sed -n '2,14p' "${BASH_SOURCE[0]}"
    exit 0
    ;;
*)
    echo "char-strong.sh: unknown argument '$1' (--quick)" >&2
    exit 2
    ;;
esac

BUILD="${BUILD:-$repo/build}"
DATA="${DATA:-$repo/../shared/data/tinyshakespeare.txt}"
THREADS="${THREADS:-2}"
if [ "$quick" = 1 ]; then
    OUT="${OUT:-${TMPDIR:-/tmp}/char-strong-quick}"
    HIDDEN=32 LAYERS=2 EMBEDDING=16 SEQ=32 BATCH=16 MAX_SECONDS=30 EVAL_EVERY=50
else
    OUT="${OUT:-$repo/out/char-strong}"
fi
CELL="${CELL:-lstm}"
HIDDEN="${HIDDEN:-512}"
LAYERS="${LAYERS:-2}"
EMBEDDING="${EMBEDDING:-64}"
DROPOUT="${DROPOUT:-0.3}"
FORGET_BIAS="${FORGET_BIAS:-1}"
SEQ="${SEQ:-100}"
BATCH="${BATCH:-64}"
LR="${LR:-2e-3}"
CLIP="${CLIP:-5}"
SEED="${SEED:-0}"
MAX_SECONDS="${MAX_SECONDS:-3600}"
EVAL_EVERY="${EVAL_EVERY:-2000}"

mkdir -p "$OUT"
uptime_before="$(uptime)"
cmake -S "$repo" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target char_rnn >/dev/null
char_rnn="$BUILD/examples/char_rnn/char_rnn"
command=("$char_rnn" train --data "$DATA" --val-fraction 0.1 --cell "$CELL" --layers "$LAYERS"
    --hidden "$HIDDEN" --embedding "$EMBEDDING" --dropout "$DROPOUT" --forget-bias "$FORGET_BIAS"
    --seq "$SEQ" --batch "$BATCH" --optimizer adam --lr "$LR" --clip "$CLIP" --seed "$SEED"
    --steps 100000000 --max-seconds "$MAX_SECONDS" --eval-every "$EVAL_EVERY" --threads "$THREADS"
    --checkpoint "$OUT/last.safetensors" --best "$OUT/best.safetensors" --curve "$OUT/curve.csv")
echo "${command[*]}" | sed "s|$repo/||g" >"$OUT/command.txt"
start=$(date +%s)
"${command[@]}" >"$OUT/summary.json" 2>"$OUT/train.log"
wall=$(($(date +%s) - start))
"$char_rnn" sample --checkpoint "$OUT/best.safetensors" --length 600 --temperature 0.8 \
    --seed 1 --prime "ROMEO:" >"$OUT/sample.txt"
best=$(python3 -c 'import csv,sys; print(min(float(r["val_nats"]) for r in csv.DictReader(open(sys.argv[1]))))' "$OUT/curve.csv")

cat >"$OUT/curve.gp" <<EOF
# Learning curve of scripts/char-strong.sh: gnuplot curve.gp (in this directory).
set datafile separator ','
set terminal pngcairo size 900,520 font 'sans,10'
set output 'curve.png'
set grid
set key top right
set xlabel 'wall time (minutes)'
set ylabel 'nats per character'
set title "tiny-shakespeare, $LAYERS x $HIDDEN $CELL, dropout $DROPOUT, nanoGPT's split"
plot 1.4697 with lines dt 2 lc rgb 'black' title "nanoGPT char transformer (validation, GPU)", \\
     'curve.csv' using (\$5/60):2 with lines lw 2 lc rgb '#1f77b4' title 'train (mean since last validation)', \\
     'curve.csv' using (\$5/60):3 with linespoints lw 2 pt 7 lc rgb '#d62728' title 'validation'
EOF
(cd "$OUT" && gnuplot curve.gp) || echo "gnuplot failed (apt-get install gnuplot-nox)"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)$([ "$quick" = 1 ] && echo ' (--quick)')"
    echo "commit: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
    echo "cores: $(nproc), threads: $THREADS"
    echo "OPENBLAS_CORETYPE: ${OPENBLAS_CORETYPE:-unset, OpenBLAS picks the kernel}"
    echo "openblas core used: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blas_core"])' "$OUT/summary.json")"
    echo "uptime before: $uptime_before"
    echo "uptime after:  $(uptime)"
    echo "wall time of the training command: $wall s (limit $MAX_SECONDS s)"
    echo "best validation loss: $best nats/char (nanoGPT's character transformer: 1.4697)"
} | tee "$OUT/machine.txt"
cat "$OUT/summary.json"
