"""The input-size study behind the shipped model: accuracy vs CPU latency per face.

Reads the runs that ``python -m train --config train/configs/default.yaml --input-size S
--out runs/study/res_S --tta-flip --no-export`` wrote, exports each best.pt to ONNX
(verified by ``export.onnx``), and times onnxruntime on this CPU per face at batch 1 and
16 after a warm-up. FLOPs are counted by torch's FlopCounterMode (multiply-adds x 2).

    python bench/resolution_study.py --runs runs/study [--json]
"""
import argparse
import glob
import json
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gflops(checkpoint_path):
    """GFLOPs of one forward pass of one face."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from train.checkpoint import load_model
    model, meta = load_model(checkpoint_path)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *meta["input_size"]))
    return counter.get_total_flops() / 1e9


def latency_ms(onnx_path, batch, repeats=30, threads=2):
    """Median milliseconds per face of onnxruntime (CPU) at ``batch``, after a warm-up."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    x = np.random.default_rng(0).standard_normal((batch, 3, 0, 0)[:2] + tuple(
        int(v) for v in shape[2:]), dtype=np.float32)
    for _ in range(5):
        session.run(None, {"input": x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)) / batch


def study(runs):
    from export.onnx import export_onnx
    from train.checkpoint import read
    rows = []
    folders = [p for p in glob.glob(os.path.join(runs, "res_*")) if os.path.isdir(p)]
    for run in sorted(folders, key=lambda p: int(re.findall(r"\d+", p)[-1])):
        best = os.path.join(run, "best.pt")
        if not os.path.isfile(best) or "metrics" not in read(best)["meta"]:
            print("skipping %s: no finished run" % run, file=sys.stderr)
            continue
        payload = read(best)
        metrics = payload["meta"]["metrics"]
        onnx_path = os.path.join(run, "model.onnx")
        if not os.path.isfile(onnx_path):
            export_onnx(best, onnx_path)
        row = {"input": payload["meta"]["input_size"][0], "epochs": payload["epoch"],
               "train_seconds": payload["meta"].get("train_seconds"), "gflops": gflops(best),
               "ms_per_face_b1": latency_ms(onnx_path, 1), "ms_per_face_b16": latency_ms(onnx_path, 16)}
        for name in ("val", "test_kaggle853", "test_kaggle853_under32px", "test_fmd"):
            for suffix in ("", "_flip"):
                m = metrics.get(name + suffix)
                if m:
                    row[name + suffix] = {"accuracy": m["accuracy"], "auc": m["auc"],
                                          "no_mask_recall": m["per_class"]["no_mask"]["recall"]}
        rows.append(row)
    return rows


def table(rows):
    head = ("| input | val acc | k853 test acc | no-mask recall | AUC | <32 px acc | fmd test acc "
            "| GFLOPs | ms/face b1 | ms/face b16 | train min |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        k = r["test_kaggle853"]
        lines.append("| %d | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.3f | %.2f | %.2f | %s |" % (
            r["input"], r["val"]["accuracy"], k["accuracy"], k["no_mask_recall"], k["auc"],
            r["test_kaggle853_under32px"]["accuracy"], r["test_fmd"]["accuracy"], r["gflops"],
            r["ms_per_face_b1"], r["ms_per_face_b16"],
            "%.0f" % (r["train_seconds"] / 60) if r.get("train_seconds") else "?"))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/study")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = study(args.runs)
    print(json.dumps(rows, indent=2) if args.json else table(rows))


if __name__ == "__main__":
    main()
