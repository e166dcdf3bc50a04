"""Plain-text tables for people: ``edge.evaluate`` and ``edge-bench`` reports (JSON is for machines)."""
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


def evaluation_text(result):
    """The report of one evaluation: recall by class and size, FP/image, AP, confusion, targets."""
    out = ["%s + %s on %s%s (%s): %d images, %d faces, %d detections, %.1f ms/image\n" % (
        result["detector"], os.path.basename(result["model"]), result["input"],
        " split %s" % result["split"] if result["split"] else "", result["mode"],
        result["n_images"], result["n_faces"], result["n_detections"], result["ms_per_image"])]
    rows = []
    for label, r in result["recall"].items():
        sizes = r["by_size"]
        rows.append([label, r["n"], pct(r["iou50"]), pct(r["iou30"])] +
                    ["%s (%d)" % (pct(sizes[b]["iou50"]), sizes[b]["n"]) for b in sizes] +
                    [pct(r["ge32"]["iou50"])])
    sizes = list(next(iter(result["recall"].values()))["by_size"])
    out.append("\nface detection recall (any label), by true class and face size (longest side):\n")
    out.append(table(["class", "faces", "IoU.5", "IoU.3"] + ["%s px @.5" % s for s in sizes] +
                     [">=32 @.5"], rows))
    out.append("\nfalse positives per image (IoU .5): %.3f\n" % result["fp_per_image"])
    ap = ", ".join("%s %.3f" % (c, v) for c, v in result["ap"].items() if v is not None)
    out.append("AP@.5 (score = detector x class probability): %s; mAP %s\n" % (
        ap or "-", "-" if result["map"] is None else "%.3f" % result["map"]))
    columns = list(result["classes"]) + ["unclassified", "missed"]
    rows = [[label] + [counts.get(c, 0) for c in columns]
            for label, counts in result["confusion"].items()]
    out.append("\nconfusion on faces matched at IoU .5 (rows: truth, columns: service label):\n")
    out.append(table(["truth \\ label"] + columns, rows))
    out.append("\ntargets: " + "; ".join(
        "%s %s (goal %s) %s" % (k, pct(t["value"]), pct(t["goal"]), "met" if t["met"] else "NOT met")
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
                     pct(rec["iou50"]), pct(rec["iou30"])] +
                    [pct(sizes[b]["iou50"]) for b in sizes] +
                    [pct(rec["ge32"]["iou50"]), r["fp_per_image"]] +
                    [r["ap"].get(c) for c in ("mask", "no_mask")] + [r["map"], r["ms_per_image"]])
    sizes = list(results[0]["recall"]["all"]["by_size"])
    head = "%d images, %d faces (%s)\n" % (results[0]["n_images"], results[0]["n_faces"],
                                           results[0]["input"])
    return head + table(["detector + model", "rec@.5", "rec@.3"] + ["%spx" % s for s in sizes] +
                        [">=32px", "FP/img", "AP mask", "AP no_mask", "mAP", "ms/img"], rows)
