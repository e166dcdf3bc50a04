"""Metrics and the training report: numbers as JSON/markdown, pictures as PNG."""
import json
import os

import numpy as np

from edge.infer.faces import NON_COMPLIANT, called_non_compliant


def compute_metrics(labels, probs, classes):
    """Accuracy, per-class precision/recall/F1, ROC AUC and the confusion matrix.

    ``labels``: int array (N,); ``probs``: float array (N, C). AUC is the binary AUC of
    the second class for two classes (no_mask vs mask), else the macro one-vs-rest AUC over
    the classes present.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    preds = probs.argmax(1)
    idx = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=idx, zero_division=0)
    present = np.unique(labels)
    if len(classes) == 2:
        auc = float(roc_auc_score(labels, probs[:, 1])) if len(present) == 2 else None
    else:  # macro one-vs-rest over the classes this set has (a test set may lack one)
        per_class = [roc_auc_score(labels == k, probs[:, k]) for k in present if 0 < (labels == k).sum() < len(labels)]
        auc = float(np.mean(per_class)) if per_class else None
    return {
        "n": int(len(labels)),
        "accuracy": float((preds == labels).mean()) if len(labels) else None,
        "auc": auc,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion": confusion_matrix(labels, preds, labels=idx).tolist(),
        "classes": list(classes),
    }


def compliance_metrics(names, probs, classes, threshold=None):
    """The compliance view: non-compliant (no_mask or incorrect) as the positive class.

    ``names``: the true label of each row (any of the three, also one the model lacks:
    a two-class model's answer on a worn-wrong mask counts here); ``probs``: (N, C) in
    ``classes`` order. A face is called non-compliant as the service calls it
    (``edge.infer.faces.called_non_compliant``: its top class is not mask, or with
    ``threshold`` once 1 - P(mask) reaches it); the score for the ROC is 1 - P(mask).
    None when the model has no mask class.
    """
    from sklearn.metrics import roc_auc_score
    if "mask" not in classes or not len(names):
        return None
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.array([n in NON_COMPLIANT for n in names])
    mask = list(classes).index("mask")
    called = called_non_compliant(probs, classes, threshold)
    tp, fp, fn = int((called & truth).sum()), int((called & ~truth).sum()), int((~called & truth).sum())
    precision = tp / float(tp + fp) if tp + fp else 0.0
    recall = tp / float(tp + fn) if tp + fn else 0.0
    auc = float(roc_auc_score(truth, 1 - probs[:, mask])) if 0 < truth.sum() < len(truth) else None
    by_label = {}
    for label in sorted(set(names)):
        rows = np.array([n == label for n in names])
        by_label[label] = {"n": int(rows.sum()), "called_non_compliant": int(called[rows].sum())}
    return {"n": int(len(names)), "positives": int(truth.sum()), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0, "auc": auc,
            "by_label": by_label, "threshold": threshold}


OPERATING_POINTS = (None, 0.5, 0.4, 0.3, 0.2, 0.1)


def operating_points(names, probs, classes, thresholds=OPERATING_POINTS):
    """What each setting of ``non_compliant_threshold`` would call: a list of {threshold,
    non_compliant_caught, non_compliant, masks_called, masks} (empty without a mask class),
    so that a site can choose its point on its own val faces."""
    if "mask" not in classes or not len(names):
        return []
    truth = np.array([n in NON_COMPLIANT for n in names])
    masks = np.array([n == "mask" for n in names])
    points = []
    for threshold in thresholds:
        called = called_non_compliant(probs, classes, threshold)
        points.append({"threshold": threshold, "non_compliant_caught": int((called & truth).sum()),
                       "non_compliant": int(truth.sum()), "masks_called": int((called & masks).sum()),
                       "masks": int(masks.sum())})
    return points


# Face sizes (longest side of the annotated box, px) a scene set's scores are broken down by:
# faces under 16 px are where street scenes lose most (docs/model-card.md).
SIZE_BINS = ((0, 16, "under 16 px"), (16, 32, "16-31 px"), (32, None, "32 px and over"))


def by_face_size(names, probs, classes, sides, threshold=None):
    """Per size bin of ``sides`` (one per face; None for a folder crop, left out): n, accuracy
    over the ``scored`` faces (those of the model's classes), and the compliance decision's
    accuracy over all n (as the service calls it)."""
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.array([n in NON_COMPLIANT for n in names])
    called = called_non_compliant(probs, classes, threshold) if "mask" in classes else None
    predicted = [classes[k] for k in probs.argmax(1)]
    bins = []
    for low, high, name in SIZE_BINS:
        rows = [i for i, side in enumerate(sides)
                if side is not None and side >= low and (high is None or side < high)]
        if not rows:
            continue
        known = [i for i in rows if names[i] in classes]
        bins.append({"bin": name, "n": len(rows), "scored": len(known),
                     "accuracy": (sum(predicted[i] == names[i] for i in known) / float(len(known))
                                  if known else None),
                     "compliance_accuracy": (float((called[rows] == truth[rows]).mean())
                                             if called is not None else None)})
    return bins


def _number(value):
    """A metric for the text report: four decimals, or n/a where it is undefined."""
    return "n/a" if value is None else "%.4f" % value


def format_metrics(m, title=""):
    """A short human-readable block: accuracy, AUC, per-class table, confusion matrix."""
    lines = ["%s n=%d accuracy=%.4f auc=%s" % (title, m["n"], m["accuracy"], _number(m["auc"])),
             "  %-10s %9s %9s %9s %8s" % ("class", "precision", "recall", "f1", "support")]
    for c, v in m["per_class"].items():
        lines.append("  %-10s %9.4f %9.4f %9.4f %8d" % (c, v["precision"], v["recall"], v["f1"], v["support"]))
    lines.append("  confusion (rows: truth, columns: predicted) %s" % m["classes"])
    for c, row in zip(m["classes"], m["confusion"]):
        lines.append("  %-10s %s" % (c, " ".join("%6d" % v for v in row)))
    view = m.get("compliance")
    if view:
        point = "" if view.get("threshold") is None else " at 1 - P(mask) >= %g" % view["threshold"]
        lines.append("  compliance (non-compliant = no_mask or incorrect%s): n=%d positives=%d precision=%.4f "
                     "recall=%.4f f1=%.4f auc=%s" % (point, view["n"], view["positives"], view["precision"],
                                                     view["recall"], view["f1"],
                                                     _number(view["auc"])))
        lines.append("  called non-compliant, by true label: %s" % ", ".join(
            "%s %d/%d" % (label, v["called_non_compliant"], v["n"]) for label, v in sorted(view["by_label"].items())))
    if m.get("by_face_size"):
        lines.append("  by face size (longest side): %s" % ", ".join(
            "%s n=%d accuracy=%s compliance=%s" % (b["bin"], b["n"], _number(b["accuracy"]),
                                                   _number(b["compliance_accuracy"]))
            for b in m["by_face_size"]))
    if m.get("operating_points"):
        lines.append("  non_compliant_threshold: non-compliant caught, masks called non-compliant")
        lines.extend("    %-9s %d/%d, %d/%d" % ("top class" if p["threshold"] is None else p["threshold"],
                                               p["non_compliant_caught"], p["non_compliant"], p["masks_called"],
                                               p["masks"]) for p in m["operating_points"])
    return "\n".join(lines)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(m, path, title="confusion matrix"):
    """Confusion matrix as a PNG, counts and row-normalized shading."""
    plt = _plt()
    cm = np.asarray(m["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(3.2 + len(cm) * 0.6, 2.8 + len(cm) * 0.6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(j, i, "%d" % cm[i, j], ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cm)), m["classes"])
    ax.set_yticks(range(len(cm)), m["classes"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_roc(labels, probs, classes, path, title="ROC"):
    """One-vs-rest ROC curve per class (one curve for two classes) as a PNG."""
    from sklearn.metrics import roc_curve
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    targets = [1] if len(classes) == 2 else range(len(classes))
    for k in targets:
        y = (np.asarray(labels) == k).astype(int)
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, np.asarray(probs)[:, k])
            ax.plot(fpr, tpr, label=classes[k])
    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if ax.get_legend_handles_labels()[1]:
        ax.set_title(title)
        ax.legend(loc="lower right")
    else:  # a set with one class has no ROC curve
        ax.set_title(title + " (one class only: no curve)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(history, path):
    """Learning curves: train/val loss and val accuracy per epoch, as a PNG."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="val")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    b.plot(epochs, [h["val_accuracy"] for h in history], label="val")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_errors(labels, probs, classes, crop_of, path, title="errors", limit=24):
    """The misclassified crops, most confident mistakes first, as a PNG; False if none.

    ``crop_of(i)`` gives sample ``i``'s RGB uint8 crop as the model saw it. Looking at the
    mistakes is how label noise and unreadable faces are told apart from model errors.
    """
    predicted = probs.argmax(1)
    wrong = np.where(predicted != labels)[0]
    if not len(wrong):
        return False
    n_wrong = len(wrong)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:limit]
    plt = _plt()
    cols = min(6, len(wrong))
    rows = (len(wrong) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.4 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(crop_of(int(i)), interpolation="nearest")
        ax.set_title("#%d %s\n-> %s %.2f" % (i, classes[labels[i]], classes[predicted[i]],
                                            probs[i, predicted[i]]), fontsize=8)
    fig.suptitle("%s: %d of %d wrong%s" % (title, n_wrong, len(labels),
                                           " (the %d most confident)" % limit if n_wrong > limit else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(out_dir, results, history, extra_md="", crops=None):
    """Write metrics.json, report.md and the pictures for every evaluated set.

    ``results``: {set name: (metrics, labels, probs)}; ``crops``: {set name: crop_of(i)}
    for the sets whose mistakes are drawn (``plot_errors``).
    """
    os.makedirs(out_dir, exist_ok=True)
    md = ["# Training report", ""]
    crops = crops or {}
    for name, (m, labels, probs) in results.items():
        plot_confusion(m, os.path.join(out_dir, "confusion_%s.png" % name), "confusion: %s" % name)
        plot_roc(labels, probs, m["classes"], os.path.join(out_dir, "roc_%s.png" % name), "ROC: %s" % name)
        md += ["## %s" % name, "", "```", format_metrics(m, name), "```", "",
               "![confusion](confusion_%s.png) ![roc](roc_%s.png)" % (name, name), ""]
        errors = "errors_%s.png" % name
        if name in crops and plot_errors(labels, probs, m["classes"], crops[name],
                                         os.path.join(out_dir, errors), "mistakes: %s" % name):
            md += ["![mistakes](%s)" % errors, ""]
    if history:
        plot_curves(history, os.path.join(out_dir, "learning_curves.png"))
        md += ["## Learning curves", "", "![curves](learning_curves.png)", ""]
    md.append(extra_md)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump({name: m for name, (m, _, _) in results.items()}, f, indent=2)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")
