#!/usr/bin/env bash
# The vanishing-gradient lab (docs/vanishing-gradients.md), end to end: builds the two programs,
# measures gradient flow through time (CSV, decay table, gnuplot PNG/SVG), trains tanh RNN, LSTM and
# GRU on the adding problem at T = 100 and T = 200, and writes the results table and the machine.
#
#   bash scripts/vanishing-lab.sh            # everything, into docs/vanishing-gradients/
#   OUT=/tmp/lab STEPS=2000 bash scripts/vanishing-lab.sh
#
# Every knob is an environment variable (defaults below). Runs are capped in wall time
# (MAX_SECONDS_T100 / MAX_SECONDS_T200) so the lab fits a shared 2-core machine; JOBS runs go side
# by side, each with THREADS threads. The tanh RNN gets as many steps as the gated cells used.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-$repo/build}"
OUT="${OUT:-$repo/docs/vanishing-gradients}"
THREADS="${THREADS:-1}"
HIDDEN="${HIDDEN:-128}"
# Gradient flow.
FLOW_T="${FLOW_T:-200}"
FLOW_SEEDS="${FLOW_SEEDS:-3}"
FLOW_BATCH="${FLOW_BATCH:-50}"
FLOW_TRAIN_STEPS="${FLOW_TRAIN_STEPS:-100}"
FLOW_TRAIN_BATCH="${FLOW_TRAIN_BATCH:-20}"
FIT_FROM="${FIT_FROM:-10}"
FIT_TO="${FIT_TO:-150}"
# Adding problem.
STEPS="${STEPS:-5000}"
BATCH="${BATCH:-50}"
LSTM_FORGET_BIAS="${LSTM_FORGET_BIAS:-1}"
TEST_SIZE="${TEST_SIZE:-500}"
EVAL_EVERY="${EVAL_EVERY:-100}"
MAX_SECONDS_T100="${MAX_SECONDS_T100:-600}"
MAX_SECONDS_T200="${MAX_SECONDS_T200:-360}"
# Longer LSTM and GRU runs at T = 100 (stop at the target), side by side; 0 skips them.
LONG_SECONDS="${LONG_SECONDS:-1200}"
LONG_STEPS="${LONG_STEPS:-8000}"
SEED="${SEED:-0}"

start=$(date +%s)
mkdir -p "$OUT"
cmake -S "$repo" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target adding_problem vanishing_gradients
adding="$BUILD/examples/adding_problem/adding_problem"
flow="$BUILD/examples/vanishing_gradients/vanishing_gradients"

# One adding-problem run: cell, T, steps, max seconds, extra flags; JSON to $OUT/adding_<cell>_T<T>.json.
run_adding() {
    local cell="$1" T="$2" steps="$3" seconds="$4"
    shift 4
    local name="adding_${cell}_T${T}${NAME_SUFFIX:-}"
    "$adding" --cell "$cell" --T "$T" --hidden "$HIDDEN" --batch "$BATCH" --steps "$steps" \
        --lr 1e-3 --alpha 0.9 --clip 1 --seed "$SEED" --threads "$THREADS" \
        --test-size "$TEST_SIZE" --eval-every "$EVAL_EVERY" --max-seconds "$seconds" \
        --csv "$OUT/$name.csv" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
}

# Steps the given JSON summaries ran, at most.
max_steps() {
    python3 -c 'import json,sys; print(max(json.load(open(f))["steps"] for f in sys.argv[1:]))' "$@"
}

echo "== gradient flow (T = $FLOW_T) and adding problem T = 100 (LSTM, GRU), side by side"
"$flow" --T "$FLOW_T" --hidden "$HIDDEN" --batch "$FLOW_BATCH" --seeds "$FLOW_SEEDS" \
    --train-steps "$FLOW_TRAIN_STEPS" --train-batch "$FLOW_TRAIN_BATCH" --fit-from "$FIT_FROM" \
    --fit-to "$FIT_TO" --threads "$THREADS" --out-dir "$OUT" >"$OUT/flow.log" 2>&1 &
flow_pid=$!
run_adding lstm 100 "$STEPS" "$MAX_SECONDS_T100" --forget-bias "$LSTM_FORGET_BIAS" --stop-at-target &
lstm_pid=$!
run_adding gru 100 "$STEPS" "$MAX_SECONDS_T100" --stop-at-target &
gru_pid=$!
wait "$lstm_pid" "$gru_pid"

echo "== adding problem T = 100 (tanh RNN, same steps) and T = 200 (LSTM, GRU)"
rnn_steps=$(max_steps "$OUT/adding_lstm_T100.json" "$OUT/adding_gru_T100.json")
run_adding rnn 100 "$rnn_steps" "$MAX_SECONDS_T100" &
rnn_pid=$!
run_adding lstm 200 "$STEPS" "$MAX_SECONDS_T200" --forget-bias "$LSTM_FORGET_BIAS" --stop-at-target &
lstm_pid=$!
wait "$flow_pid"
run_adding gru 200 "$STEPS" "$MAX_SECONDS_T200" --stop-at-target &
gru_pid=$!
wait "$rnn_pid" "$lstm_pid" "$gru_pid"

echo "== adding problem T = 200 (tanh RNN, same steps)"
rnn_steps=$(max_steps "$OUT/adding_lstm_T200.json" "$OUT/adding_gru_T200.json")
run_adding rnn 200 "$rnn_steps" "$MAX_SECONDS_T200"

if [ "$LONG_SECONDS" != 0 ]; then
    echo "== longer runs at T = 100 (LSTM, GRU; at most $LONG_SECONDS s each)"
    NAME_SUFFIX=_long run_adding lstm 100 "$LONG_STEPS" "$LONG_SECONDS" --forget-bias "$LSTM_FORGET_BIAS" --stop-at-target &
    lstm_pid=$!
    NAME_SUFFIX=_long run_adding gru 100 "$LONG_STEPS" "$LONG_SECONDS" --stop-at-target &
    gru_pid=$!
    wait "$lstm_pid" "$gru_pid"
    rnn_steps=$(max_steps "$OUT/adding_lstm_T100_long.json" "$OUT/adding_gru_T100_long.json")
    NAME_SUFFIX=_long run_adding rnn 100 "$rnn_steps" "$LONG_SECONDS"
fi

echo "== tables, learning-curve plot, machine"
python3 - "$OUT" <<'EOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = ["| model | T | steps run | stopped by | final test MSE | best test MSE | steps to test MSE < 0.01 | seconds to < 0.01 | wall s | threads |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
for T, suffix in ((100, ""), (100, "_long"), (200, "")):
    for cell in ("rnn", "lstm", "gru"):
        f = out / f"adding_{cell}_T{T}{suffix}.json"
        if not f.exists() or not f.read_text().strip():
            continue
        s = json.loads(f.read_text().strip().splitlines()[-1])
        name = {"rnn": "tanh RNN", "gru": "GRU"}.get(cell, f"LSTM (forget bias {s['forget_bias']:g})")
        name += " (longer run)" if suffix else ""
        hit = s["steps_to_target"] is not None
        to_steps = str(int(s["steps_to_target"])) if hit else "not reached"
        to_seconds = f"{s['seconds_to_target']:.0f}" if hit else "-"
        rows.append(f"| {name} | {T} | {s['steps']} | {s['stopped_by']} | {s['test_mse']:.4f} | "
                    f"{s['best_test_mse']:.4f} | {to_steps} | {to_seconds} | "
                    f"{s['wall_seconds']:.0f} | {s['threads']} |")
(out / "adding_table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
cat >"$OUT/adding_curves.gp" <<'EOF'
# Learning curves of the adding problem (test MSE against step); gnuplot adding_curves.gp.
set datafile separator ','
set terminal pngcairo size 1300,520 font 'sans,10'
set output 'adding_curves.png'
set logscale y
set grid
set xlabel 'training step (batch 50)'
set ylabel 'test MSE'
set key top right
set multiplot layout 1,2 title 'Adding problem, hidden 128, RMSprop lr 1e-3, clip 1'
# T = 100: the longer LSTM/GRU runs when present (same seed and flags, so they extend the short ones).
lstm100 = system('test -s adding_lstm_T100_long.csv && echo adding_lstm_T100_long.csv || echo adding_lstm_T100.csv')
gru100 = system('test -s adding_gru_T100_long.csv && echo adding_gru_T100_long.csv || echo adding_gru_T100.csv')
rnn100 = system('test -s adding_rnn_T100_long.csv && echo adding_rnn_T100_long.csv || echo adding_rnn_T100.csv')
set title 'T = 100'
plot 0.1667 with lines dt 2 lc rgb 'gray' title 'baseline 1/6', \
     0.01 with lines dt 3 lc rgb 'black' title 'solved (0.01)', \
     rnn100 using 6:8 with lines lw 2 lc rgb '#d62728' title 'tanh RNN', \
     lstm100 using 6:8 with lines lw 2 lc rgb '#2ca02c' title 'LSTM (forget bias 1)', \
     gru100 using 6:8 with lines lw 2 lc rgb '#9467bd' title 'GRU'
set title 'T = 200'
plot 0.1667 with lines dt 2 lc rgb 'gray' title 'baseline 1/6', \
     0.01 with lines dt 3 lc rgb 'black' title 'solved (0.01)', \
     'adding_rnn_T200.csv' using 6:8 with lines lw 2 lc rgb '#d62728' title 'tanh RNN', \
     'adding_lstm_T200.csv' using 6:8 with lines lw 2 lc rgb '#2ca02c' title 'LSTM (forget bias 1)', \
     'adding_gru_T200.csv' using 6:8 with lines lw 2 lc rgb '#9467bd' title 'GRU'
unset multiplot
EOF
(cd "$OUT" && gnuplot adding_curves.gp) || echo "gnuplot failed (apt-get install gnuplot-nox)"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "threads per run: $THREADS"
    echo "lab wall time: $(($(date +%s) - start)) s"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"
