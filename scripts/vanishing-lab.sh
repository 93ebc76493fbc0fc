#!/usr/bin/env bash
# The vanishing-gradient lab (docs/vanishing-gradients.md), end to end: builds the two programs,
# measures gradient flow through time (CSV, decay table, gnuplot PNG/SVG), trains tanh RNN, LSTM
# (forget bias 1) and GRU on the adding problem (T = 100, 200, 400) and on the copy-memory task
# (T = 100, 200), and writes the tables, one learning-curve plot per task and T, and machine.txt
# (CPU, cores, OpenBLAS kernel, load before and after, wall time).
#
#   bash scripts/vanishing-lab.sh                  # everything, into docs/vanishing-gradients/
#   bash scripts/vanishing-lab.sh adding copy      # only some parts: flow adding copy report
#   bash scripts/vanishing-lab.sh --quick          # smoke test: tiny sizes, into $TMPDIR/lab-quick
#   OUT=/tmp/lab ADDING_T="100" bash scripts/vanishing-lab.sh adding
#
# Runs go one at a time (JOBS=1) so that wall times mean something on a quiet machine; the tanh RNN
# gets as many steps as the gated cells used at the same T. Every knob is an environment variable
# (defaults below). A part's runs are skipped when their JSON summary already exists and is
# complete (RERUN=1 runs them again), so an interrupted lab continues where it stopped.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lab-common.sh
source "$repo/scripts/lab-common.sh"
lab_parse_args "${BASH_SOURCE[0]}" "flow adding copy report" 2,16 "$@"

BUILD="${BUILD:-$repo/build}"
THREADS="${THREADS:-1}"
HIDDEN="${HIDDEN:-128}"
BATCH="${BATCH:-50}"
LSTM_FORGET_BIAS="${LSTM_FORGET_BIAS:-1}"
TEST_SIZE="${TEST_SIZE:-500}"
EVAL_EVERY="${EVAL_EVERY:-100}"
SEED="${SEED:-0}"
RERUN="${RERUN:-0}"
if [ "$quick" = 1 ]; then
    OUT="${OUT:-${TMPDIR:-/tmp}/lab-quick}"
    HIDDEN=16 TEST_SIZE=50 EVAL_EVERY=20
    FLOW_T="${FLOW_T:-40}" FLOW_SEEDS="${FLOW_SEEDS:-2}" FLOW_BATCH="${FLOW_BATCH:-8}"
    FLOW_TRAIN_STEPS="${FLOW_TRAIN_STEPS:-5}" FIT_FROM="${FIT_FROM:-5}" FIT_TO="${FIT_TO:-30}"
    ADDING_T="${ADDING_T:-10 20}" COPY_T="${COPY_T:-5 10}"
    STEPS="${STEPS:-60}" MAX_SECONDS="${MAX_SECONDS:-60}"
else
    OUT="${OUT:-$repo/docs/vanishing-gradients}"
fi
# Gradient flow: the classic models, then every variant cell (decay factors per step).
FLOW_T="${FLOW_T:-200}"
FLOW_SEEDS="${FLOW_SEEDS:-3}"
FLOW_BATCH="${FLOW_BATCH:-50}"
FLOW_TRAIN_STEPS="${FLOW_TRAIN_STEPS:-100}"
FLOW_TRAIN_BATCH="${FLOW_TRAIN_BATCH:-20}"
FIT_FROM="${FIT_FROM:-10}"
FIT_TO="${FIT_TO:-150}"
FLOW_MODELS="${FLOW_MODELS:-rnn,lstm_fb0,lstm_fb1,gru}"
FLOW_VARIANTS="${FLOW_VARIANTS:-lesson-lstm_fb1,lstm_fb1,peephole-lstm_fb1,concat-peephole-lstm_fb1,cifg-lstm_fb1,nfg-lstm,noaf-lstm_fb1,layernorm-lstm_fb1,gru,cho-gru,mgu,rnn}"
# Training: the lengths of each task, steps at most, wall-time cap per run (0: none); STEPS_T<T>
# and MAX_SECONDS_T<T> override per T (an hour per model at T = 400 by default).
ADDING_T="${ADDING_T:-100 200 400}"
COPY_T="${COPY_T:-100 200}"
STEPS="${STEPS:-30000}"
MAX_SECONDS="${MAX_SECONDS:-7200}"
MAX_SECONDS_T400="${MAX_SECONDS_T400:-3600}"
CELLS_GATED="${CELLS_GATED:-lstm gru}"

start=$(date +%s)
mkdir -p "$OUT"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
uptime_before="$(uptime)"
cmake -S "$repo" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target adding_problem vanishing_gradients >/dev/null
adding="$BUILD/examples/adding_problem/adding_problem"
flow="$BUILD/examples/vanishing_gradients/vanishing_gradients"

# The per-T override of a knob: per_t STEPS 400 -> $STEPS_T400 if set, else $STEPS.
per_t() {
    local name="${1}_T${2}"
    echo "${!name:-${!1}}"
}

# One run: task, cell, T, steps, max seconds, extra flags; $OUT/<task>_<cell>_T<T>.{json,csv,log}.
run_task() {
    local task="$1" cell="$2" T="$3" steps="$4" seconds="$5"
    shift 5
    local name="${task}_${cell}_T${T}"
    if run_complete "$OUT/$name.json"; then
        echo "   $name: done already ($OUT/$name.json)"
        return
    fi
    local bias=()
    [ "$cell" = lstm ] && bias=(--forget-bias "$LSTM_FORGET_BIAS")
    echo "   $name: at most $steps steps / $seconds s ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg))"
    "$adding" --task "$task" --cell "$cell" --T "$T" --hidden "$HIDDEN" --batch "$BATCH" \
        --steps "$steps" --lr 1e-3 --alpha 0.9 --clip 1 --seed "$SEED" --threads "$THREADS" \
        --test-size "$TEST_SIZE" --eval-every "$EVAL_EVERY" --max-seconds "$seconds" \
        "${bias[@]}" --csv "$OUT/$name.csv" "$@" >"$OUT/$name.json.part" 2>"$OUT/$name.log"
    mv "$OUT/$name.json.part" "$OUT/$name.json"
}

# Most steps any of the given JSON summaries ran.
max_steps() {
    python3 -c 'import json,sys; print(max(int(json.load(open(f))["steps"]) for f in sys.argv[1:]))' "$@"
}

# Gated cells to the target (or the caps), then the tanh RNN for as many steps.
run_lengths() {
    local task="$1" lengths="$2"
    for T in $lengths; do
        local steps seconds
        steps="$(per_t STEPS "$T")"
        seconds="$(per_t MAX_SECONDS "$T")"
        local summaries=()
        for cell in $CELLS_GATED; do
            run_task "$task" "$cell" "$T" "$steps" "$seconds" --stop-at-target
            summaries+=("$OUT/${task}_${cell}_T${T}.json")
        done
        run_task "$task" rnn "$T" "$(max_steps "${summaries[@]}")" "$seconds"
    done
}

if wants flow; then
    echo "== gradient flow at T = $FLOW_T: $FLOW_MODELS; then the variants: $FLOW_VARIANTS"
    common=(--T "$FLOW_T" --hidden "$HIDDEN" --batch "$FLOW_BATCH" --seeds "$FLOW_SEEDS"
        --train-steps "$FLOW_TRAIN_STEPS" --train-batch "$FLOW_TRAIN_BATCH" --fit-from "$FIT_FROM"
        --fit-to "$FIT_TO" --threads "$THREADS")
    "$flow" "${common[@]}" --models "$FLOW_MODELS" --out-dir "$OUT" >"$OUT/flow.log" 2>&1
    mkdir -p "$OUT/variants"
    "$flow" "${common[@]}" --models "$FLOW_VARIANTS" --out-dir "$OUT/variants" \
        >"$OUT/variants/flow.log" 2>&1
fi
if wants adding; then
    echo "== adding problem, T = $ADDING_T"
    run_lengths adding "$ADDING_T"
fi
if wants copy; then
    echo "== copy-memory task, T = $COPY_T"
    run_lengths copy "$COPY_T"
fi

if wants report || wants adding || wants copy; then
    echo "== tables and learning-curve plots"
    python3 "$repo/scripts/lab_report.py" "$OUT" "$LSTM_FORGET_BIAS"
    for gp in "$OUT"/curves_*.gp; do
        [ -e "$gp" ] || continue
        (cd "$OUT" && gnuplot "$(basename "$gp")") || echo "gnuplot failed on $gp (apt-get install gnuplot-nox)"
    done
fi

# machine.txt keeps one section per invocation (a lab run in parts states each part's conditions).
lab_machine_section "$start" "$uptime_before" "$load_before" "$OUT"/*.json | tee -a "$OUT/machine.txt"
