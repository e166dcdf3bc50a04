"""How much of a difference between training recipes is the recipe, and how much the seed.

One training run is one draw: on the 605 kaggle853 test faces a different seed of the same
recipe moves accuracy by a few faces. This reads the ``metrics.json`` that ``python -m
train`` writes into each run folder and prints, per recipe, every run and the mean and
standard deviation over its runs, for the numbers that select (val) and those that report
(kaggle853 test, its faces under 32 px, fmd test).

    python bench/seed_study.py "96px=runs/ema/ema_96,runs/ema/ema_96_seed?" "128px=runs/ema128/seed?"

Each argument is ``LABEL=GLOB[,GLOB...]``; the folders it matches are that recipe's runs.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

# (column title, metrics.json set, value); per_class values are no_mask recall.
COLUMNS = (
    ("val loss", "val", "loss"),
    ("val AUC", "val", "auc"),
    ("k853 test acc", "test_kaggle853", "accuracy"),
    ("k853 errors", "test_kaggle853", "errors"),
    ("no-mask recall", "test_kaggle853", "no_mask_recall"),
    ("k853 AUC", "test_kaggle853", "auc"),
    ("< 32 px acc", "test_kaggle853_under32px", "accuracy"),
    ("fmd test acc", "test_fmd", "accuracy"),
)


def run_values(run_dir):
    """The COLUMNS values of one finished run (None for a set the run did not have)."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        raise SystemExit("%s: no metrics.json (is the run finished?)" % run_dir)
    with open(path) as f:
        metrics = json.load(f)
    values = []
    for _, name, key in COLUMNS:
        m = metrics.get(name)
        if m is None:
            values.append(None)
        elif key == "errors":
            values.append(m["n"] - int(np.trace(np.asarray(m["confusion"]))))
        elif key == "no_mask_recall":
            values.append(m["per_class"]["no_mask"]["recall"])
        else:
            values.append(m[key])
    return values


def parse_recipe(argument):
    """``LABEL=GLOB[,GLOB]`` -> (label, sorted run folders)."""
    label, sep, patterns = argument.partition("=")
    if not sep or not label or not patterns:
        raise SystemExit("expected LABEL=GLOB[,GLOB...], got %r" % argument)
    runs = sorted({p for pattern in patterns.split(",") for p in glob.glob(pattern) if os.path.isdir(p)})
    if not runs:
        raise SystemExit("%s: no run folder matches %s" % (label, patterns))
    return label, runs


def _cell(title, value):
    if np.isnan(value):
        return "n/a"
    if title == "k853 errors":
        return "%.1f" % value if value != int(value) else "%d" % value
    if "loss" in title or "AUC" in title:
        return "%.4f" % value
    return "%.2f %%" % (100 * value)


def table(recipes):
    """Markdown table: a row per run, then mean and sample sd per recipe.

    Columns of sets that no run has (e.g. kaggle853 for a run on fmd alone) are left out;
    a set that some runs of the comparison have and others lack is an error.
    """
    values = {run: run_values(run) for _, runs in recipes for run in runs}
    keep = []
    for i, (title, name, _) in enumerate(COLUMNS):
        present = [run for run, v in values.items() if v[i] is not None]
        if present and len(present) < len(values):
            missing = sorted(set(values) - set(present))
            raise SystemExit("%s: no %r set in %s; compare runs on the same data" % (title, name, ", ".join(missing)))
        if present:
            keep.append(i)
    titles = [COLUMNS[i][0] for i in keep]
    lines = ["| recipe | run | " + " | ".join(titles) + " |", "|" + "---|" * (len(keep) + 2)]
    for label, runs in recipes:
        rows = np.array([[values[r][i] for i in keep] for r in runs], dtype=float)
        for run, row in zip(runs, rows):
            lines.append("| %s | %s | %s |" % (label, run, " | ".join(_cell(t, v) for t, v in zip(titles, row))))
        mean = rows.mean(0)
        sd = rows.std(0, ddof=1) if len(rows) > 1 else np.full(len(keep), np.nan)
        cells = ["**%s** ± %s" % (_cell(t, m), _cell(t, d).replace(" %", "")) for t, m, d in zip(titles, mean, sd)]
        lines.append("| **%s** | mean ± sd of %d | %s |" % (label, len(runs), " | ".join(cells)))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipes", nargs="+", help="LABEL=GLOB[,GLOB...] of run folders")
    args = parser.parse_args(argv)
    print(table([parse_recipe(a) for a in args.recipes]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
