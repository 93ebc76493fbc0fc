#!/usr/bin/env bash
# The inspect page in a real browser: trains a small char_rnn model (its checkpoint carries the
# training history), writes the page and the JSON export, opens the page in headless Chromium,
# picks a unit through the page's controls and checks the rendered colours of the first
# characters against the JSON export; then a 2 x 256 LSTM over 3,000 characters must give a page
# under 5 MB that renders in under 2 s. Screenshots go to $INSPECT_SHOTS (default: the scratch
# directory, removed at the end).
# Usage: tests/inspect_browser_test.sh path/to/char_rnn [--install]
#   --install: apt-get install chromium (and python3) when missing (root or sudo), as CI does.
# Exit status 77 (skipped) when Chromium is missing and --install was not given.
set -euo pipefail
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if ! command -v chromium >/dev/null || ! command -v python3 >/dev/null; then
    if [ "${2:-}" != "--install" ]; then
        echo "inspect browser test: SKIPPED (no chromium/python3; run with --install)"
        exit 77
    fi
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
        chromium python3 fonts-dejavu-core >/dev/null
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/cellgrad-inspect.XXXXXX")
trap 'rm -rf "$work"' EXIT
shots=${INSPECT_SHOTS:-$work}
mkdir -p "$shots"
cd "$work"

# A text with quotes, brackets and numbered lines of varying length.
for i in $(seq 1 400); do
    echo "$((i % 31 + 1)):$((i % 17 + 1)) And he said, \"Go $((i * 7 % 13)) ways\" (and $((i % 5)) more) unto the day."
done >text.txt

echo "== a small LSTM trained for 60 steps, inspected over 800 characters"
"$bin" train --data text.txt --cell lstm --hidden 32 --layers 2 --embedding 16 --seq 32 \
    --batch 16 --steps 60 --eval-every 20 --val-fraction 0.05 --threads 2 \
    --checkpoint small.safetensors >/dev/null 2>&1
"$bin" inspect --checkpoint small.safetensors --text text.txt --length 800 --out small.html \
    --json small.json
python3 "$here/inspect_browser.py" small.html small.json "$shots/inspect-small.png" \
    --layer 1 --series c --unit 5
python3 "$here/inspect_browser.py" small.html small.json "$shots/inspect-small-forget.png" \
    --layer 0 --series forget --unit 7

echo "== a GRU: its own gates (reset, update, candidate)"
"$bin" train --data text.txt --cell gru --hidden 24 --layers 2 --embedding 16 --seq 32 \
    --batch 16 --steps 20 --eval-every 10 --val-fraction 0.05 --threads 2 \
    --checkpoint gru.safetensors >/dev/null 2>&1
"$bin" inspect --checkpoint gru.safetensors --text text.txt --length 500 --out gru.html \
    --json gru.json
python3 "$here/inspect_browser.py" gru.html gru.json "$shots/inspect-gru.png" \
    --layer 1 --series update --unit 2

echo "== a 2 x 256 LSTM over 3,000 characters: under 5 MB, rendered in under 2 s"
"$bin" train --data text.txt --cell lstm --hidden 256 --layers 2 --embedding 64 --seq 32 \
    --batch 8 --steps 5 --eval-every 5 --val-fraction 0.05 --threads 2 \
    --checkpoint large.safetensors >/dev/null 2>&1
"$bin" inspect --checkpoint large.safetensors --text text.txt --length 3000 --out large.html \
    --json large.json
python3 "$here/inspect_browser.py" large.html large.json "$shots/inspect-large.png" \
    --layer 1 --series c --unit 100 --max-render-ms 2000 --max-bytes 5000000
echo "inspect browser test: passed"
