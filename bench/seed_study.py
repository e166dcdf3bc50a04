"""How much of a difference between training recipes is the recipe, and how much the seed.

One training run is one draw: on the 605 kaggle853 test faces a different seed of the same
recipe moves accuracy by a few faces. This reads the ``metrics.json`` that ``python -m
train`` writes into each run folder and prints, per recipe, every run and the mean and
standard deviation over its runs, for the numbers that select (val) and those that report
(kaggle853 test with its compliance view, its faces under 32 px, fmd and moxa3k test).

    python bench/seed_study.py "96px=runs/ema/ema_96,runs/ema/ema_96_seed?" "128px=runs/ema128/seed?"
    python bench/seed_study.py --flip "shipped=runs/three_class_warm10" \
        "without occluders=runs/ablate/without_occluders"

Each argument is ``LABEL=GLOB[,GLOB...]``; the folders it matches are that recipe's runs.
``--flip`` reads the test-time-flip scores (the ``*_flip`` sets a run with ``tta_flip``
writes), as the shipped model is used.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

# (column title, metrics.json set, value); no-mask recall is the per-class one; the
# compliance values (non-compliant = no_mask or incorrect) are n/a for a run without them.
COLUMNS = (
    ("val loss", "val", "loss"),
    ("val AUC", "val", "auc"),
    ("k853 test acc", "test_kaggle853", "accuracy"),
    ("k853 errors", "test_kaggle853", "errors"),
    ("no-mask recall", "test_kaggle853", "no_mask_recall"),
    ("non-compliant recall", "test_kaggle853", "non_compliant_recall"),
    ("masks flagged", "test_kaggle853", "masks_flagged"),
    ("worn-wrong caught", "test_kaggle853", "worn_wrong_caught"),
    ("k853 AUC", "test_kaggle853", "auc"),
    ("< 32 px acc", "test_kaggle853_under32px", "accuracy"),
    ("fmd test acc", "test_fmd", "accuracy"),
    ("moxa3k test acc", "test_moxa3k", "accuracy"),
)
COUNTS = ("k853 errors", "masks flagged", "worn-wrong caught")


def _value(m, key):
    if key == "errors":
        return m["n"] - int(np.trace(np.asarray(m["confusion"])))
    if key == "no_mask_recall":
        return m["per_class"]["no_mask"]["recall"]
    compliance = m.get("compliance") or {}
    if key == "non_compliant_recall":
        return compliance.get("recall", np.nan)
    if key in ("masks_flagged", "worn_wrong_caught"):
        label = "mask" if key == "masks_flagged" else "incorrect"
        return compliance.get("by_label", {}).get(label, {}).get("called_non_compliant", np.nan)
    return m[key]


def run_values(run_dir, flip=False):
    """The COLUMNS values of one finished run (None for a set the run did not have).

    With ``flip`` the sets are the test-time-flip ones (``val_flip``, ``test_fmd_flip``, ...).
    """
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        raise SystemExit("%s: no metrics.json (is the run finished?)" % run_dir)
    with open(path) as f:
        metrics = json.load(f)
    if flip and not any(name.endswith("_flip") for name in metrics):
        raise SystemExit("%s: no test-time-flip scores (trained with --no-tta-flip?); leave out --flip" % run_dir)
    values = []
    for _, name, key in COLUMNS:
        m = metrics.get(name + "_flip" if flip else name)
        values.append(None if m is None else _value(m, key))
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
    if title in COUNTS:
        return "%.1f" % value if value != int(value) else "%d" % value
    if "loss" in title or "AUC" in title:
        return "%.4f" % value
    return "%.2f %%" % (100 * value)


def table(recipes, flip=False):
    """Markdown table: a row per run, then mean and sample sd per recipe.

    Columns of sets that no run has (e.g. kaggle853 for a run on fmd alone) are left out;
    a set that some runs of the comparison have and others lack is an error.
    """
    values = {run: run_values(run, flip) for _, runs in recipes for run in runs}
    keep = []
    for i, (title, name, _) in enumerate(COLUMNS):
        present = [run for run, v in values.items() if v[i] is not None]
        if present and len(present) < len(values):
            missing = sorted(set(values) - set(present))
            raise SystemExit("%s: no %r set in %s; compare runs on the same data" % (
                title, name + "_flip" if flip else name, ", ".join(missing)))
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
    parser.add_argument("--flip", action="store_true", help="val and test sets scored with the test-time flip")
    args = parser.parse_args(argv)
    print(table([parse_recipe(a) for a in args.recipes], args.flip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
