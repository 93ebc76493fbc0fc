#!/usr/bin/env bash
# The LSTM variants on the same tasks, in the style of Greff et al. 2017 ("LSTM: A Search Space
# Odyssey"): every cell on the adding problem (T = 100) and on tiny-shakespeare (2 x 128, a fixed
# budget of steps), 3 seeds each; a table (docs/variants/variants_table.md, with the decay factor
# per step from the gradient-flow lab) and a plot of every seed's result per cell.
#
#   bash scripts/variants-lab.sh               # everything, into docs/variants/
#   bash scripts/variants-lab.sh adding        # parts: flow adding char report
#   bash scripts/variants-lab.sh --quick       # smoke test: tiny sizes, into $TMPDIR/variants-quick
#
# Runs go one at a time with THREADS threads; a run whose JSON summary exists is skipped (RERUN=1
# runs it again), so an interrupted lab continues where it stopped. machine.txt gets one section
# per invocation (CPU, cores, OpenBLAS kernel, load before and after, wall time).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lab-common.sh
source "$repo/scripts/lab-common.sh"
lab_parse_args "${BASH_SOURCE[0]}" "flow adding char report" 2,13 "$@"

BUILD="${BUILD:-$repo/build}"
DATA="${DATA:-$repo/../shared/data/tinyshakespeare.txt}"
CELLS="${CELLS:-lesson-lstm lstm peephole-lstm cifg-lstm nfg-lstm noaf-lstm layernorm-lstm gru mgu rnn}"
SEEDS="${SEEDS:-0 1 2}"
THREADS="${THREADS:-1}"
FORGET_BIAS="${FORGET_BIAS:-1}" # for the cells with a forget gate
RERUN="${RERUN:-0}"
if [ "$quick" = 1 ]; then
    OUT="${OUT:-${TMPDIR:-/tmp}/variants-quick}"
    CELLS="${QUICK_CELLS:-lstm cifg-lstm nfg-lstm rnn}"
    SEEDS="${QUICK_SEEDS:-0 1}"
    ADDING_T=12 ADDING_HIDDEN=16 ADDING_STEPS=60 ADDING_EVAL=20 ADDING_TEST=50
    CHAR_HIDDEN=16 CHAR_STEPS=30 CHAR_EVAL=15 CHAR_SEQ=16 CHAR_BATCH=8 CHAR_EMBEDDING=8
    FLOW_T=30 FLOW_SEEDS=1 FLOW_BATCH=8 FLOW_TRAIN_STEPS=3 FIT_FROM=3 FIT_TO=20 FLOW_HIDDEN=16
else
    OUT="${OUT:-$repo/docs/variants}"
fi
# Adding problem (the lab's set-up; a run stops at test MSE < 0.01 or after ADDING_STEPS).
ADDING_T="${ADDING_T:-100}"
ADDING_HIDDEN="${ADDING_HIDDEN:-128}"
ADDING_STEPS="${ADDING_STEPS:-8000}"
ADDING_EVAL="${ADDING_EVAL:-100}"
ADDING_TEST="${ADDING_TEST:-500}"
ADDING_MAX_SECONDS="${ADDING_MAX_SECONDS:-0}"
# tiny-shakespeare: 2 x 128, Adam 2e-3, clip 5, nanoGPT's split (last 10% validation).
CHAR_HIDDEN="${CHAR_HIDDEN:-128}"
CHAR_LAYERS="${CHAR_LAYERS:-2}"
CHAR_EMBEDDING="${CHAR_EMBEDDING:-64}"
CHAR_SEQ="${CHAR_SEQ:-50}"
CHAR_BATCH="${CHAR_BATCH:-50}"
CHAR_STEPS="${CHAR_STEPS:-2000}"
CHAR_EVAL="${CHAR_EVAL:-250}"
# Gradient flow of every cell (decay factor per step), as in scripts/vanishing-lab.sh.
FLOW_T="${FLOW_T:-200}"
FLOW_HIDDEN="${FLOW_HIDDEN:-128}"
FLOW_SEEDS="${FLOW_SEEDS:-3}"
FLOW_BATCH="${FLOW_BATCH:-50}"
FLOW_TRAIN_STEPS="${FLOW_TRAIN_STEPS:-100}"
FIT_FROM="${FIT_FROM:-10}"
FIT_TO="${FIT_TO:-150}"

start=$(date +%s)
mkdir -p "$OUT/adding" "$OUT/char" "$OUT/flow"
uptime_before="$(uptime)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
cmake -S "$repo" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target adding_problem char_rnn vanishing_gradients >/dev/null
adding="$BUILD/examples/adding_problem/adding_problem"
char_rnn="$BUILD/examples/char_rnn/char_rnn"
flow="$BUILD/examples/vanishing_gradients/vanishing_gradients"

# The cells with a forget gate get --forget-bias (the others ignore it; it is recorded anyway).
bias_of() {
    case "$1" in
    lstm | lesson-lstm | peephole-lstm | concat-peephole-lstm | cifg-lstm | layernorm-lstm) echo "$FORGET_BIAS" ;;
    *) echo 0 ;;
    esac
}

if wants flow; then
    models=""
    for cell in $CELLS; do
        id="$cell"
        [ "$(bias_of "$cell")" != 0 ] && id="${cell}_fb$(bias_of "$cell")"
        models="${models:+$models,}$id"
    done
    echo "== gradient flow at T = $FLOW_T: $models"
    "$flow" --T "$FLOW_T" --hidden "$FLOW_HIDDEN" --batch "$FLOW_BATCH" --seeds "$FLOW_SEEDS" \
        --train-steps "$FLOW_TRAIN_STEPS" --fit-from "$FIT_FROM" --fit-to "$FIT_TO" \
        --threads "$THREADS" --models "$models" --out-dir "$OUT/flow" >"$OUT/flow/flow.log" 2>&1
fi
if wants adding; then
    echo "== adding problem T = $ADDING_T, hidden $ADDING_HIDDEN, at most $ADDING_STEPS steps"
    for seed in $SEEDS; do
        for cell in $CELLS; do
            name="$OUT/adding/${cell}_s${seed}"
            if run_complete "$name.json"; then continue; fi
            echo "   $cell seed $seed ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg))"
            "$adding" --cell "$cell" --forget-bias "$(bias_of "$cell")" --T "$ADDING_T" \
                --hidden "$ADDING_HIDDEN" --batch 50 --steps "$ADDING_STEPS" --lr 1e-3 --alpha 0.9 \
                --clip 1 --seed "$seed" --threads "$THREADS" --test-size "$ADDING_TEST" \
                --eval-every "$ADDING_EVAL" --max-seconds "$ADDING_MAX_SECONDS" --stop-at-target \
                --csv "$name.csv" >"$name.json.part" 2>"$name.log"
            mv "$name.json.part" "$name.json"
        done
    done
fi
if wants char; then
    echo "== tiny-shakespeare, $CHAR_LAYERS x $CHAR_HIDDEN, $CHAR_STEPS steps"
    for seed in $SEEDS; do
        for cell in $CELLS; do
            name="$OUT/char/${cell}_s${seed}"
            if run_complete "$name.json"; then continue; fi
            echo "   $cell seed $seed ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg))"
            # A run that diverges is a result (char_rnn stops it with an error): recorded as
            # {"diverged": true, ...} with the error line, not retried with other settings.
            if "$char_rnn" train --data "$DATA" --val-fraction 0.1 --cell "$cell" \
                --forget-bias "$(bias_of "$cell")" --layers "$CHAR_LAYERS" --hidden "$CHAR_HIDDEN" \
                --embedding "$CHAR_EMBEDDING" --seq "$CHAR_SEQ" --batch "$CHAR_BATCH" \
                --optimizer adam --lr 2e-3 --clip 5 --steps "$CHAR_STEPS" --eval-every "$CHAR_EVAL" \
                --seed "$seed" --threads "$THREADS" --curve "$name.csv" \
                >"$name.json.part" 2>"$name.log"; then
                mv "$name.json.part" "$name.json"
            elif grep -q "diverged" "$name.log"; then
                python3 -c 'import json,sys; print(json.dumps({"cell": sys.argv[1], "seed": int(sys.argv[2]), "steps": int(sys.argv[3]), "diverged": True, "error": sys.argv[4]}))' \
                    "$cell" "$seed" "$CHAR_STEPS" "$(grep diverged "$name.log" | tail -1)" >"$name.json"
                rm -f "$name.json.part"
            else
                echo "variants-lab.sh: $cell seed $seed failed; see $name.log" >&2
                exit 1
            fi
        done
    done
fi
if wants report || wants adding || wants char; then
    echo "== table and plot"
    python3 "$repo/scripts/variants_report.py" "$OUT"
    (cd "$OUT" && gnuplot variants.gp) || echo "gnuplot failed (apt-get install gnuplot-nox)"
fi

lab_machine_section "$start" "$uptime_before" "$load_before" "$OUT"/*/*.json | tee -a "$OUT/machine.txt"
