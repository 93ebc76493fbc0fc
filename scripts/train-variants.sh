#!/usr/bin/env bash
# Trains every cell of char_rnn (the built-in ones and the lesson's variants) for a few hundred
# steps on tiny-shakespeare, saves each checkpoint, loads it back to score the text, and prints one
# line per cell with the held-out loss (the last 5% of the file).
# Usage: scripts/train-variants.sh [steps] [out-dir]   (defaults: 300, build/variants)
# Environment: CELLGRAD_BUILD_DIR (default build), CELLGRAD_DATA (default ../shared/data/tinyshakespeare.txt).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${CELLGRAD_BUILD_DIR:-"$root/build"}
steps=${1:-300}
out=${2:-"$build_dir/variants"}
data=${CELLGRAD_DATA:-"$root/../shared/data/tinyshakespeare.txt"}
[ -f "$data" ] || { echo "train-variants: no corpus at $data (set CELLGRAD_DATA)" >&2; exit 1; }
CELLGRAD_TARGETS=char_rnn "$root/scripts/setup.sh" "$build_dir" >/dev/null
mkdir -p "$out"
cells=(lstm gru rnn lesson-lstm peephole-lstm concat-peephole-lstm cifg-lstm nfg-lstm noaf-lstm
       layernorm-lstm cho-gru mgu)
printf '| cell | steps | seconds | held-out loss (nats/char) |\n|---|---:|---:|---:|\n'
for cell in "${cells[@]}"; do
    start=$(date +%s.%N)
    "$build_dir/examples/char_rnn/char_rnn" train --data "$data" --cell "$cell" --hidden 128 \
        --layers 2 --seq 64 --batch 32 --steps "$steps" --eval-every 0 --forget-bias 1 \
        --checkpoint "$out/$cell.safetensors" >"$out/$cell.log" 2>&1
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
    loss=$(tail -n 1 "$out/$cell.log" | sed -n 's/.*"val_nats":\([0-9.]*\).*/\1/p')
    # The checkpoint loads back (the model is rebuilt from its own config) and scores the text.
    "$build_dir/examples/char_rnn/char_rnn" eval --checkpoint "$out/$cell.safetensors" \
        --data "$data" --json >"$out/$cell.eval.json"
    printf '| %s | %s | %.1f | %s |\n' "$cell" "$steps" "$seconds" "$loss"
done
