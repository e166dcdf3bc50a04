"""Leave one source out: how the classifier holds on faces from a source it has never seen.

    .venv/bin/python bench/source_study.py --out runs/loso [--data ../shared/data]
        [--synthetic runs/maskwear] [--sources kaggle853,fmd,moxa3k,bijoy_webcam]
        [--start train/configs/default.yaml] -- TRAIN FLAGS

For each source S it trains ``python -m train`` (with the flags after ``--``) on every other
source, then scores the best checkpoint on S with ``python -m train.evaluate``: S's test
split where it has one (kaggle853, moxa3k), else all of it (fmd, bijoy_webcam). bijoy_webcam
(one person on a webcam) and the synthesized set are train-only, as in the shipped recipe;
synthesized images whose target face or mask texture came from S are left out of S's run, so
nothing of S is trained on. ``--with-all`` adds the run on every source, whose in-source test
scores stand beside the held-out ones. Finished runs are reused; the table (markdown) goes
to stdout and OUT/table.md.
"""
import argparse
import csv
import json
import os
import subprocess
import sys

import yaml

SOURCES = ("kaggle853", "fmd", "moxa3k", "bijoy_webcam")
TRAIN_ONLY = ("bijoy_webcam",)
SPLIT = {"kaggle853": "test", "moxa3k": "test"}  # the others are scored whole


def filtered_synthetic(synthetic, held_out, out):
    """A copy of the synthesized set's manifest (and links to its images) without ``held_out``'s faces."""
    folder = os.path.join(out, "synthetic_without_%s" % held_out)
    if os.path.isfile(os.path.join(folder, "manifest.csv")):
        return folder
    with open(os.path.join(synthetic, "manifest.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if held_out not in (r.get("target_source"), r.get("texture_source"))]
    for label in sorted({r["label"] for r in kept}):
        os.makedirs(os.path.join(folder, label), exist_ok=True)
    for r in kept:
        link = os.path.join(folder, r["file"])
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(synthetic, r["file"])), link)
    with open(os.path.join(folder, "manifest.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    print("%s: %d of %d synthesized images kept" % (folder, len(kept), len(rows)), flush=True)
    return folder


def run(cmd, log):
    """Run a command, its output appended to ``log``; raise when it fails."""
    print("+ %s" % " ".join(cmd), flush=True)
    with open(log, "a") as f:
        if subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT) != 0:
            raise SystemExit("failed: %s (see %s)" % (" ".join(cmd), log))


def trained_start(config, held_out, args):
    """The first step of a two-step recipe trained without ``held_out``; its best checkpoint."""
    with open(config) as f:
        sources = [os.path.basename(os.path.normpath(d)) for d in (yaml.safe_load(f) or {}).get("data") or []]
    kept = [s for s in sources if s != held_out]
    if not kept:
        raise SystemExit("%s trains on %s alone: nothing is left without it" % (config, held_out))
    out = os.path.join(args.out, "start_all" if len(kept) == len(sources) else "start_without_%s" % held_out)
    if not os.path.isfile(os.path.join(out, "metrics.json")):
        cmd = [sys.executable, "-m", "train", "--config", config, "--out", out, "--no-export"]
        for source in kept:
            cmd += ["--data", os.path.join(args.data, source)]
        run(cmd, out + ".log")
    return os.path.join(out, "best.pt")


def train_and_score(name, sources, held_out, args, train_flags):
    """Train on ``sources`` (minus train-only ones handled apart), score on ``held_out``; the scores."""
    out = os.path.join(args.out, name)
    log = os.path.join(args.out, name + ".log")
    cmd = [sys.executable, "-m", "train", "--out", out, "--no-export"]
    for source in sources:
        flag = "--train-data" if source in TRAIN_ONLY else "--data"
        cmd += [flag, os.path.join(args.data, source)]
    if args.start:
        cmd += ["--weights", trained_start(args.start, held_out, args)]
    if args.synthetic:
        synthetic = args.synthetic if held_out is None else filtered_synthetic(args.synthetic, held_out, args.out)
        cmd += ["--train-data", synthetic]
    if not os.path.isfile(os.path.join(out, "metrics.json")):
        run(cmd + train_flags, log)
    scores = {}
    for target in ([held_out] if held_out else [s for s in SOURCES if s not in TRAIN_ONLY]):
        result = os.path.join(out, "eval_%s.json" % target)
        if not os.path.isfile(result):
            evaluate = [sys.executable, "-m", "train.evaluate", os.path.join(args.data, target), "--model",
                        os.path.join(out, "best.pt"), "--split", SPLIT.get(target, "all"), "--json"]
            with open(result + ".tmp", "w") as f:
                if subprocess.call(evaluate, stdout=f, stderr=open(log, "a")) != 0:
                    raise SystemExit("evaluation failed: %s" % " ".join(evaluate))
            os.replace(result + ".tmp", result)
        with open(result) as f:
            scores[target] = json.load(f)
    if held_out is None:  # fmd has no fixed split: its in-source score is the run's own test split
        with open(os.path.join(out, "metrics.json")) as f:
            scores["fmd"] = json.load(f).get("test_fmd", scores.get("fmd"))
    return scores


def _cell(m):
    """accuracy / non-compliant recall / masks called non-compliant (n) of one evaluation."""
    if not m:
        return "-"
    view = m.get("compliance") or {}
    masks = (view.get("by_label") or {}).get("mask") or {}
    flagged = "%d of %d" % (masks["called_non_compliant"], masks["n"]) if masks.get("n") else "-"
    return "%.2f %% / %.2f %% / %s (n %d)" % (100 * m["accuracy"], 100 * view.get("recall", float("nan")),
                                              flagged, m["n"])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--synthetic", help="a synthesized set (python -m train.maskwear), train-only")
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--with-all", action="store_true", help="also train on every source (in-source scores)")
    parser.add_argument("--start", metavar="CONFIG", help="a first step (train config) trained per fold without "
                        "the held-out source; its checkpoint is the second step's --weights")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    sources = [s for s in args.sources.split(",") if s]
    rows = ["| held-out source | scored on | held out: accuracy / non-compliant recall / masks called non-compliant "
            "| in-source (all sources) |",
            "|---|---|---|---|"]
    everything = train_and_score("all", SOURCES, None, args, train_flags) if args.with_all else {}
    for held_out in sources:
        scores = train_and_score("without_%s" % held_out, [s for s in SOURCES if s != held_out], held_out,
                                 args, train_flags)
        rows.append("| %s | %s | %s | %s |" % (held_out, SPLIT.get(held_out, "all"), _cell(scores[held_out]),
                                               _cell(everything.get(held_out))))
    table = "\n".join(rows) + "\n"
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table)
    sys.stdout.write(table)


if __name__ == "__main__":
    main()
