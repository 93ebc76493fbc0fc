#!/usr/bin/env python3
"""Table and plot of the variants lab (scripts/variants-lab.sh).

    python3 scripts/variants_report.py DIR

Reads DIR/adding/<cell>_s<seed>.json (adding_problem summaries), DIR/char/<cell>_s<seed>.json
(char_rnn train summaries) and DIR/flow/decay_table.csv (vanishing_gradients), and writes
DIR/variants_table.md, DIR/variants_points.csv (one row per cell and seed) and DIR/variants.gp
(two panels, Greff et al. 2017 style: every seed's result per cell).
"""
import csv
import json
import pathlib
import re
import statistics
import sys

LABELS = {
    "lesson-lstm": "lesson's LSTM",
    "lstm": "LSTM (PyTorch)",
    "peephole-lstm": "peephole LSTM",
    "concat-peephole-lstm": "lesson's peephole LSTM",
    "cifg-lstm": "CIFG (coupled gates)",
    "nfg-lstm": "no forget gate",
    "noaf-lstm": "no output activation",
    "layernorm-lstm": "layer-norm LSTM",
    "gru": "GRU",
    "cho-gru": "Cho's GRU",
    "mgu": "minimal gated unit",
    "rnn": "tanh RNN",
}
ORDER = list(LABELS)


def read_runs(directory):
    runs = {}
    for path in sorted(directory.glob("*.json")):
        match = re.fullmatch(r"([a-z0-9-]+)_s(\d+)\.json", path.name)
        text = path.read_text().strip()
        if match and text:
            runs.setdefault(match.group(1), {})[int(match.group(2))] = json.loads(
                text.splitlines()[-1])
    return runs


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values, spec):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], spec)
    return f"{format(statistics.median(values), spec)} ({format(min(values), spec)}-" \
           f"{format(max(values), spec)})"


def main():
    directory = pathlib.Path(sys.argv[1])
    adding = read_runs(directory / "adding")
    char = read_runs(directory / "char")
    decay = {}
    flow_csv = directory / "flow" / "decay_table.csv"
    if flow_csv.exists():
        with flow_csv.open() as handle:
            for row in csv.DictReader(handle):
                if row["quantity"] == "h" and row["factor_per_step"]:
                    decay[(row["cell"], row["phase"])] = float(row["factor_per_step"])
    cells = sorted(set(adding) | set(char) | {c for c, _ in decay},
                   key=lambda c: (ORDER.index(c) if c in ORDER else 99, c))
    rows = ["| cell | adding T = {T}: solved (test MSE < 0.01) | steps to < 0.01, median "
            "(range) | best test MSE, median (range) | tiny-shakespeare validation nats/char "
            "after {S} steps, median (range) | tokens/s (median) | decay factor per step of "
            "dL/dh, init / trained |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    any_adding = next((s for runs in adding.values() for s in runs.values()), None)
    any_char = next((s for runs in char.values() for s in runs.values()), None)
    rows[0] = rows[0].format(T=any_adding["T"] if any_adding else "?",
                             S=any_char["steps"] if any_char else "?")
    points = []
    for cell in cells:
        add_runs = adding.get(cell, {})
        char_runs = char.get(cell, {})
        solved = [s for s in add_runs.values() if s.get("steps_to_target") is not None]
        to_target = [s["steps_to_target"] for s in solved]
        best = [s.get("best_test_loss", s.get("best_test_mse")) for s in add_runs.values()]
        val = [s.get("val_nats") for s in char_runs.values()]
        diverged = sum(1 for s in char_runs.values() if s.get("diverged"))
        val_text = spread(val, '.3f') if diverged == 0 else \
            f"{spread(val, '.3f')}; {diverged} of {len(char_runs)} diverged"
        rate = [s.get("tokens_per_second") for s in char_runs.values()]
        init, trained = decay.get((cell, "init")), decay.get((cell, "trained"))
        budget = max((s["steps_requested"] for s in add_runs.values()), default=0)
        rows.append(
            f"| {LABELS.get(cell, cell)} | {len(solved)} of {len(add_runs)} "
            f"(budget {budget} steps) | {spread(to_target, '.0f')} | {spread(best, '.4f')} | "
            f"{val_text} | {spread(rate, '.0f')} | "
            f"{'-' if init is None else f'{init:.3f}'} / "
            f"{'-' if trained is None else f'{trained:.3f}'} |")
        for seed in sorted(set(add_runs) | set(char_runs)):
            a, c = add_runs.get(seed), char_runs.get(seed)
            points.append({
                "cell": cell, "index": cells.index(cell), "seed": seed,
                "adding_best_test_mse": "" if a is None else a.get("best_test_loss",
                                                                   a.get("best_test_mse")),
                "adding_steps_to_target": "" if a is None or a.get("steps_to_target") is None
                else int(a["steps_to_target"]),
                "char_val_nats": "" if c is None or c.get("val_nats") is None else c["val_nats"],
            })
    table = "\n".join(rows) + "\n"
    (directory / "variants_table.md").write_text(table)
    print(table)
    with (directory / "variants_points.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["cell", "index", "seed",
                                                    "adding_best_test_mse",
                                                    "adding_steps_to_target", "char_val_nats"])
        writer.writeheader()
        writer.writerows(points)
    # gnuplot's single-quoted strings write ' as '' ("lesson''s LSTM").
    xtics = ", ".join("'{}' {}".format(LABELS.get(c, c).replace("'", "''"), i)
                      for i, c in enumerate(cells))
    gp = f"""# The variants lab (generated by scripts/variants_report.py): gnuplot variants.gp
set datafile separator ','
set terminal pngcairo size 1300,560 font 'sans,10'
set output 'variants.png'
set grid ytics
set xtics ({xtics}) rotate by -35
set xrange [-0.6:{len(cells) - 0.4}]
set key off
set multiplot layout 1,2 title 'Variants on the same tasks: each point one seed'
set title 'adding problem: best test MSE (log scale; < 0.01 solved)'
set logscale y
plot 0.1667 with lines dt 2 lc rgb 'gray', 0.01 with lines dt 3 lc rgb 'black', \\
     'variants_points.csv' using ($2 + 0.08 * ($3 - 1)):4 with points pt 7 ps 1.2 lc rgb '#1f77b4'
unset logscale y
set title 'tiny-shakespeare: validation loss (nats/char)'
plot 'variants_points.csv' using ($2 + 0.08 * ($3 - 1)):6 with points pt 7 ps 1.2 lc rgb '#d62728'
unset multiplot
"""
    (directory / "variants.gp").write_text(gp)


if __name__ == "__main__":
    main()
