#!/usr/bin/env bash
# The style checks CI runs (.ci/run) and developers run before pushing:
#   1. format: every tracked *.cpp / *.hpp matches .clang-format;
#   2. tidy: clang-tidy with the checks in .clang-tidy finds nothing in src/ (and in the headers of
#      src/ and include/cellgrad/ that src/ includes).
# Installs what is missing (clang-format, clang-tidy, the build dependencies) with apt-get through
# scripts/setup.sh, and configures a build directory only for its compile_commands.json (nothing
# is compiled).
#
# Usage: scripts/check-style.sh [--fix] [--format-only | --tidy-only] [--all] [FILE...]
#   --fix          reformat offending files in place instead of failing
#   --all          also check the files on the PENDING list below
#   FILE...        check these files only (e.g. the ones you are working on; pending ones included)
# Environment: CELLGRAD_TIDY_BUILD_DIR (default build-tidy), JOBS (default: nproc).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# Files being rewritten (checked only with --all or by name until that work lands); empty when
# nothing is in flight. Paths are matched as prefixes.
PENDING=()

fix=0 format=1 tidy=1 all=0
files=()
for arg in "$@"; do
    case "$arg" in
        --fix) fix=1 ;;
        --format-only) tidy=0 ;;
        --tidy-only) format=0 ;;
        --all) all=1 ;;
        -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "check-style: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) files+=("$arg") ;;
    esac
done
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
tools=()
[ "$format" = 1 ] && tools+=(clang-format)
# libopenmpi-dev: tidy reads src/distributed/mpi.cpp, which needs mpi.h (on a fresh machine the
# test command, which installs Open MPI, runs only after this).
[ "$tidy" = 1 ] && tools+=(clang-tidy libopenmpi-dev)
CELLGRAD_EXTRA_PACKAGES="${tools[*]} ${CELLGRAD_EXTRA_PACKAGES:-}" CELLGRAD_SETUP_INSTALL_ONLY=1 \
    bash "$root/scripts/setup.sh"

is_pending() {
    local path=$1 prefix
    for prefix in "${PENDING[@]}"; do
        [[ "$path" == "$prefix"* ]] && return 0
    done
    return 1
}

# selected=(the tracked files matching the git pathspecs "$@" that exist, minus pending ones unless
# --all; or the FILE arguments, filtered by the same pathspecs); skipped=(pending files left out).
select_files() {
    selected=()
    skipped=0
    local f
    while read -r f; do
        [ -f "$f" ] || continue
        if [ "$all" = 0 ] && [ "${#files[@]}" -eq 0 ] && is_pending "$f"; then
            skipped=$((skipped + 1))
            continue
        fi
        selected+=("$f")
    done < <(if [ "${#files[@]}" -gt 0 ]; then git ls-files --others --cached -- "${files[@]}" |
        grep -xF -f <(git ls-files --others --cached -- "$@"); else git ls-files -- "$@"; fi)
}

pending_note() {
    if [ "$skipped" -gt 0 ]; then
        echo " ($skipped pending files not checked; --all checks them)"
    fi
}

status=0
if [ "$format" = 1 ]; then
    start=$SECONDS
    select_files '*.cpp' '*.hpp'
    if [ "$fix" = 1 ]; then
        printf '%s\0' "${selected[@]}" | xargs -0 -r -n 16 -P "$jobs" clang-format -i
        echo "format: reformatted ${#selected[@]} files in place$(pending_note)"
    else
        # clang-format prints "file:line:col: error: code should be clang-formatted" per drift.
        mapfile -t drifted < <(printf '%s\0' "${selected[@]}" |
            { xargs -0 -r -n 16 -P "$jobs" clang-format --dry-run --Werror 2>&1 || true; } |
            sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: error: code should be clang-formatted.*/\1/p' |
            sort -u)
        if [ "${#drifted[@]}" -gt 0 ]; then
            echo "format: ${#drifted[@]} of ${#selected[@]} files differ from .clang-format$(pending_note):"
            printf '  %s\n' "${drifted[@]}"
            echo "  fix: bash scripts/check-style.sh --fix --format-only [FILE...]"
            status=1
        else
            echo "format: ${#selected[@]} files match .clang-format, $((SECONDS - start)) s$(pending_note)"
        fi
    fi
fi

if [ "$tidy" = 1 ]; then
    start=$SECONDS
    build_dir=${CELLGRAD_TIDY_BUILD_DIR:-"$root/build-tidy"}
    # Configure only (re-run each time, so that new source files get a compile command).
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
        -DCELLGRAD_BUILD_TESTS=OFF -DCELLGRAD_BUILD_EXAMPLES=OFF -DCELLGRAD_BUILD_BENCH=OFF >/dev/null
    select_files 'src/*.cpp'
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    # One clang-tidy per file, $jobs at a time.
    printf '%s\0' "${selected[@]}" |
        { xargs -0 -r -n 1 -P "$jobs" clang-tidy -p "$build_dir" --quiet 2>&1 || true; } >"$log"
    if grep -q "Error while processing" "$log"; then
        grep -E "error:|Error while processing" "$log" | sed "s|^$root/||" | sort -u | sed 's/^/  /'
        echo "tidy: clang-tidy could not process every file (above)"
        status=1
    fi
    # A header's findings repeat for each file that includes it: keep one of each.
    mapfile -t findings < <(grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error):' "$log" |
        sed "s|^$root/||" | sort -u)
    counted=()
    in_pending=0
    for finding in "${findings[@]}"; do
        if [ "$all" = 0 ] && [ "${#files[@]}" -eq 0 ] && is_pending "${finding%%:*}"; then
            in_pending=$((in_pending + 1))
        else
            counted+=("$finding")
        fi
    done
    note=$(pending_note)
    if [ "$in_pending" -gt 0 ]; then
        note="$note ($in_pending findings in pending headers not counted)"
    fi
    if [ "${#counted[@]}" -gt 0 ]; then
        echo "tidy: ${#counted[@]} findings in ${#selected[@]} files$note:"
        printf '  %s\n' "${counted[@]}"
        status=1
    else
        echo "tidy: no findings in ${#selected[@]} files, $((SECONDS - start)) s$note"
    fi
fi
exit "$status"
