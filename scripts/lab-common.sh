#!/usr/bin/env bash
# Shared by the lab scripts (vanishing-lab.sh, variants-lab.sh); sourced, not run. Defines:
#   lab_parse_args SCRIPT "PART ..." HELP_LINES "$@"  sets quick (0/1) and parts (all when none given)
#   wants PART                                       true when PART is to run
#   run_complete FILE                                true when FILE is a complete JSON summary (RERUN=1: never)
#   lab_machine_section START "UPTIME" "LOAD" JSON...     one machine.txt section on stdout

# Parses --quick, -h/--help (prints lines HELP_LINES, e.g. 2,16, of SCRIPT's header) and part
# names; anything else stops the script with exit status 2 and the accepted arguments.
lab_parse_args() {
    local script="$1" known="$2" help_lines="$3"
    shift 3
    quick=0
    parts=()
    local arg
    for arg in "$@"; do
        if [ "$arg" = --quick ]; then
            quick=1
        elif [ "$arg" = -h ] || [ "$arg" = --help ]; then
            sed -n "${help_lines}p" "$script"
            exit 0
        elif [[ " $known " == *" $arg "* ]]; then
            parts+=("$arg")
        else
            echo "$(basename "$script"): unknown argument '$arg' (--quick, ${known// /, })" >&2
            exit 2
        fi
    done
    if [ ${#parts[@]} -eq 0 ]; then
        read -r -a parts <<<"$known"
    fi
}

# True when part $1 is among the parts to run.
wants() { [[ " ${parts[*]} " == *" $1 "* ]]; }

# True when $1 holds a complete JSON summary (the program prints it at the very end), unless
# RERUN=1: an interrupted lab continues where it stopped.
run_complete() {
    [ "${RERUN:-0}" != 1 ] && [ -s "$1" ] &&
        python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null
}

# The conditions of one invocation, for machine.txt: date, parts, commit, CPU, cores, OpenBLAS's
# kernel (from the runs' JSON summaries given), scheduling class, uptime and load before and after,
# threads per run ($THREADS) and wall time since START (seconds since the epoch).
lab_machine_section() {
    local start="$1" uptime_before="$2" load_before="$3"
    shift 3
    echo "---"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "parts: ${parts[*]}$([ "$quick" = 1 ] && echo ' (--quick)')"
    echo "commit: $(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
    echo "cores: $(nproc) (lscpu: $(lscpu 2>/dev/null | sed -n 's/^CPU(s): *//p' | head -1) CPUs)"
    echo "OPENBLAS_CORETYPE: ${OPENBLAS_CORETYPE:-unset, OpenBLAS picks the kernel}"
    echo "openblas core used: $(cat "$@" 2>/dev/null | python3 -c 'import json,sys
cores = set()
for line in sys.stdin:
    try: cores.add(json.loads(line).get("blas_core", "?"))
    except Exception: pass
print(", ".join(sorted(cores)) or "-")')"
    echo "scheduling class: $(chrt -p $$ 2>/dev/null | sed -n 's/.*scheduling policy: //p' | head -1)"
    echo "uptime before: $uptime_before"
    echo "uptime after:  $(uptime)"
    echo "load average before / after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "threads per run: $THREADS, one run at a time"
    echo "wall time: $(($(date +%s) - start)) s"
}
