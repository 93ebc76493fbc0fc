#!/usr/bin/env bash
# The main job: installs what is missing, builds, extracts the default corpus (the King James
# Bible from Debian's bible-kjv, verse text only, cached in data-cache/), trains a character-level
# LSTM on it for a few minutes on two cores and prints a sample.
# Extra arguments go to `char_rnn train` (e.g. --steps 200).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${CELLGRAD_BUILD_DIR:-"$root/build"}
CELLGRAD_EXTRA_PACKAGES="bible-kjv ${CELLGRAD_EXTRA_PACKAGES:-}" CELLGRAD_TARGETS="char_rnn" \
    "$root/scripts/setup.sh" "$build_dir"

cache="$root/data-cache"
corpus="$cache/kjv.txt"
if [ ! -s "$corpus" ]; then
    mkdir -p "$cache"
    # One verse per line; drop the book/chapter headings and the verse numbers.
    bible -l 100000 Gen1:1-Rev22:21 | sed -n 's/^ *[0-9][0-9]* //p' > "$corpus.tmp"
    mv "$corpus.tmp" "$corpus"
fi
echo "corpus: $corpus ($(wc -c < "$corpus") bytes)"

char_rnn="$build_dir/examples/char_rnn/char_rnn"
checkpoint="$cache/kjv-lstm.safetensors"
"$char_rnn" train --data "$corpus" --cell lstm --hidden 256 --layers 2 --embedding 64 --seq 64 \
    --batch 32 --optimizer adam --lr 2e-3 --clip 5 --steps 1500 --eval-every 500 \
    --val-fraction 0.02 --threads 2 --checkpoint "$checkpoint" "$@"
echo
echo "sample (temperature 0.8):"
"$char_rnn" sample --checkpoint "$checkpoint" --length 600 --temperature 0.8 \
    --prime "And God said" --seed 7
echo
