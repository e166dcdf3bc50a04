"""Plain-text tables for people: ``edge.measure.evaluate`` and ``edge-bench`` reports (JSON is for machines)."""
import os


def table(headers, rows):
    """A fixed-width text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out) + "\n"


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.3f" % value if abs(value) < 10 else "%.1f" % value
    return str(value)


def pct(value):
    """0.9123 -> '91.2%' (None -> '-')."""
    return "-" if value is None else "%.1f%%" % (100.0 * value)


def _target_value(key, value):
    """A target's number as people read it: recalls in per cent, APs and rates as decimals."""
    return pct(value) if key.startswith("recall") else _cell(value)


def _iou(result):
    """The matching thresholds as short text: ('.5', '.3')."""
    thresholds = result.get("iou") or {"main": 0.5, "loose": 0.3}
    return tuple(("%g" % thresholds[k]).lstrip("0") for k in ("main", "loose"))


def evaluation_text(result):
    """The report of one evaluation: recall by class and size, FP/image, AP, confusion, targets."""
    confidence = "%g" % result["detector_confidence"] if "detector_confidence" in result else "?"
    if result.get("detector_anchor_confidence"):
        confidence += ", " + result["detector_anchor_confidence"]
    out = ["%s (confidence %s) + %s on %s%s (%s): %d images, %d faces, %d detections, %.1f ms/image\n" % (
        result["detector"], confidence,
        os.path.basename(result["model"]), result["input"],
        " split %s" % result["split"] if result["split"] else "", result["mode"],
        result["n_images"], result["n_faces"], result["n_detections"], result["ms_per_image"])]
    rows = []
    for label, r in result["recall"].items():
        sizes = r["by_size"]
        rows.append([label, r["n"], pct(r["main"]), pct(r["loose"])] +
                    ["%s (%d)" % (pct(sizes[b]["main"]), sizes[b]["n"]) for b in sizes] +
                    [pct(r["ge32"]["main"])])
    sizes = list(next(iter(result["recall"].values()))["by_size"])
    iou, loose = _iou(result)
    out.append("\nface detection recall (any label), by true class and face size (longest side):\n")
    out.append(table(["class", "faces", "IoU" + iou, "IoU" + loose] + ["%s px @%s" % (s, iou) for s in sizes] +
                     [">=32 @" + iou], rows))
    out.append("\nfalse positives per image (IoU %s): %.3f\n" % (iou, result["fp_per_image"]))
    ap = ", ".join("%s %.3f" % (c, v) for c, v in result["ap"].items() if v is not None)
    out.append("AP@" + iou + " (score = detector x class probability): %s; mAP (mask, no_mask) %s; "
               "compliance AP (non-compliant = no_mask or incorrect) %s; face AP (detector alone, "
               "any label) %s\n" % (ap or "-", _cell(result["map"]), _cell(result.get("compliance_ap")),
                                     _cell(result["face_ap"])))
    columns = list(result["classes"]) + ["unclassified", "missed"]
    rows = [[label] + [counts.get(c, 0) for c in columns]
            for label, counts in result["confusion"].items()]
    out.append("\nconfusion on faces matched at IoU %s (rows: truth, columns: service label):\n" % iou)
    out.append(table(["truth \\ label"] + columns, rows))
    if result.get("ignore"):
        out.append("\nignore regions %s: %d in these scenes, %d detections not scored; targets not checked "
                   "(they are set on the data as annotated)\n" % (
                       result["ignore"]["file"], result["ignore"]["regions"], result["ignored_detections"]))
    else:
        out.append("\ntargets: " + "; ".join(
            "%s %s (goal %s %s) %s" % (k, _target_value(k, t["value"]), ">=" if t["kind"] == "min" else "<=",
                                       _target_value(k, t["goal"]), "met" if t["met"] else "NOT met")
            for k, t in result["targets"].items()) + "\n")
    if result.get("misses_png"):
        out.append("worst misses: %s\n" % result["misses_png"])
    return "".join(out)


def comparison_table(results):
    """One row per (detector, model): the numbers a user chooses by."""
    rows = []
    for r in results:
        rec = r["recall"]["all"]
        sizes = rec["by_size"]
        rows.append(["%s + %s" % (r["detector"], os.path.basename(r["model"])),
                     pct(rec["main"]), pct(rec["loose"])] +
                    [pct(sizes[b]["main"]) for b in sizes] +
                    [pct(rec["ge32"]["main"]), r["fp_per_image"]] +
                    [r["ap"].get(c) for c in ("mask", "no_mask", "incorrect")] +
                    [r["map"], r.get("compliance_ap"), r["face_ap"], r["ms_per_image"]])
    sizes = list(results[0]["recall"]["all"]["by_size"])
    iou, loose = _iou(results[0])
    head = "%d images, %d faces (%s), matched at IoU %s\n" % (results[0]["n_images"], results[0]["n_faces"],
                                                             results[0]["input"], iou)
    if results[0].get("ignore"):
        head += "ignore regions %s (%d in these scenes): detections on them not scored (%s)\n" % (
            results[0]["ignore"]["file"], results[0]["ignore"]["regions"],
            ", ".join("%s + %s: %d" % (r["detector"], os.path.basename(r["model"]), r["ignored_detections"])
                      for r in results))
    return head + table(["detector + model", "rec@" + iou, "rec@" + loose] + ["%spx" % s for s in sizes] +
                        [">=32px", "FP/img", "AP mask", "AP no_mask", "AP incorr.", "mAP", "compl. AP",
                         "face AP", "ms/img"], rows)


def _stage_rows(stages):
    return [[name, s["p50_ms"], s["p95_ms"], s["p99_ms"], s["mean_ms"], s["count"]]
            for name, s in stages.items()]


def bench_text(report):
    """The edge-bench report: runs, stages, speed-up, sweep and the Nano estimate."""
    c = report["config"]
    out = ["edge-bench %s%s: %s (input %s) every %d frame(s), %s (%s) batch %s, classify every %d; "
           "%d warm-up frames\n" % (
               report["input"], " -> " + ", ".join(report["outputs"]) if report["outputs"] else "",
               c["detector"], c["detector_input"] or "default", c["detect_every"],
               os.path.basename(c["model"]), report["run"]["backend"], c["max_batch"],
               c["classify_every"], report["warmup"])]
    runs = [("default", report["run"])] + ([("baseline", report["baseline"])] if "baseline" in report else [])
    rows = [[name, r["frames"], r["fps"], r["faces_per_frame"], r["classified_per_frame"],
             r["classifications_per_s"], "%.0f%%" % r["cpu"]["cpu_percent"], r["peak_rss_mb"]]
            for name, r in runs]
    out.append("\n" + table(["run", "frames", "FPS", "faces/frame", "classified/frame",
                             "classif./s", "CPU", "peak MiB"], rows))
    if "speedup" in report:
        out.append("default / baseline (every face, every frame, one at a time): %sx\n"
                   % report["speedup"])
    for name, r in runs:
        out.append("\n%s run, latency per stage call (ms; capture = read + decode, write = encode):\n" % name)
        out.append(table(["stage", "p50", "p95", "p99", "mean", "calls"], _stage_rows(r["stages"])))
        if r["jetson"].get("available"):
            out.append(table(["jetson reading", "mean", "max"],
                             [[k, v["mean"], v["max"]] for k, v in r["jetson"].items() if k != "available"]))
    for entry in report.get("sweep", ()):
        out.append("\nclassifier sweep: %s (%dx%d, %s), %d crops x %d, preprocess %.3f ms/face, "
                   "%s MFLOPs/face\n" % (
                       os.path.basename(entry["model"]), entry["input_size"][0], entry["input_size"][1],
                       entry["backend"], entry["faces"], entry["repeat"], entry["preprocess_ms_per_face"],
                       "-" if not entry["flops_per_face"] else "%.0f" % (entry["flops_per_face"] / 1e6)))
        out.append(table(["batch", "faces/s", "ms/face", "+preproc", "call p50", "call p95"],
                         [[p["batch"], p["faces_per_s"], p["ms_per_face"], p["ms_per_face_with_preprocess"],
                           p["call_p50_ms"], p["call_p95_ms"]] for p in entry["points"]]))
    if "flops" in report:
        f = report["flops"]
        det = f["detector"] or {}
        out.append("\nFLOPs: classifier %s per face (input %s), detector %s per call (input %s)\n" % (
            _g(f["classifier_flops"]), f["classifier_input"], _g(det.get("flops")), det.get("input", "-")))
        out.append("Jetson Nano ESTIMATE (not measured; 472 GFLOPS FP16 peak x efficiency, GPU work only):\n")
        rows = []
        for run, key in (("default", "nano_estimate"), ("baseline", "nano_estimate_baseline")):
            rows += [[run, k, v["detector_ms"], v["classifier_ms_per_face"], v["ms_per_frame"],
                      v["fps_bound"]] for k, v in f.get(key, {}).items()]
        out.append(table(["run", "efficiency", "detector ms", "classifier ms/face", "ms/frame",
                          "FPS bound"], rows))
    return "".join(out)


def _g(flops):
    return "-" if not flops else "%.3f GFLOPs" % (flops / 1e9)
