"""Training and validation steps, and the per-source preparation (box framing, ignore regions)."""
import math

import numpy as np
import torch
from tqdm import tqdm

from train.detector import boxstyle
from train.detector.augment import preprocess
from train.detector.evaluate import TorchRetinaFace, evaluate_scenes, source_adjustments
from train.detector.loss import build_targets


def prepare_sources(sets, models_dir, settings, cache_dir, box_style, train_sources, ignore_scores,
                    threads=1):
    """Measure each source with the original detector on its train scenes (cached) and set
    up training: returns (to_common {source: adjustment into the training framing},
    eval_adjust {source: adjustment applied to the model's boxes when scoring on it},
    report {source: {...}}). Fills ``scene.ignore`` of training sources asked for in
    ``ignore_scores`` ({source: min detector score}) with their unannotated faces.
    """
    fitted, report, dets = source_adjustments(sets, models_dir, settings, cache_dir, threads)
    for source, split in sets.items():
        threshold = ignore_scores.get(source)
        if threshold is not None and source in train_sources:
            n = 0
            for scene in split["train"]:
                boxes, scores = dets[source][scene.key]
                scene.ignore = boxstyle.unannotated(boxes, scores, scene.boxes, threshold)
                n += len(scene.ignore)
            report[source]["ignored_unannotated"] = {"min_score": threshold, "regions": n}
    if box_style == "common":
        to_common = {s: boxstyle.invert(a) for s, a in fitted.items()}
        eval_adjust = dict(fitted)
    else:  # native: outputs framed like the first training source
        first = fitted[train_sources[0]]
        to_common = {s: boxstyle.IDENTITY for s in fitted}
        eval_adjust = {s: boxstyle.compose(boxstyle.invert(first), a) for s, a in fitted.items()}
    return to_common, eval_adjust, report


def warmup_cosine(total_steps, warmup_steps, floor=0.01):
    """LR multiplier per step: linear warm-up, then cosine down to ``floor`` x the base LR."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / float(warmup_steps)
        t = (step - warmup_steps) / float(max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return factor


def train_one_epoch(net, loader, anchors, criterion, optimizer, scheduler, epoch, ema=None):
    """One pass over ``loader``; returns mean (loss, box term, class term, positives per image).

    ``ema``: a ``torch.optim.swa_utils.AveragedModel`` of ``net``, updated after every step."""
    net.train()
    sums, n = np.zeros(4), 0
    with tqdm(loader, desc="epoch %d" % epoch, disable=None, leave=False) as bar:
        for images, boxes, ignore in bar:
            labels, targets = build_targets(boxes, ignore, anchors)
            loc, conf, _ = net(images)
            loss, box_term, cls_term = criterion(loc, conf, labels, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(net)
            pos = float((labels == 1).sum()) / len(images)
            sums += [loss.item(), box_term.item(), cls_term.item(), pos]
            n += 1
            bar.set_postfix(loss="%.3f" % (sums[0] / n), lr="%.2e" % optimizer.param_groups[0]["lr"])
    return sums / max(n, 1)


def validate(net, sets, sources, split, eval_adjust, settings):
    """Face metrics of the PyTorch network on ``split`` of each source: {source: FaceScores}
    (``.result(fp_budget)`` gives the numbers; ``FaceScores.pooled`` joins sources)."""
    net.eval()
    out = {}
    for source in sources:
        scenes = sets[source][split]
        detector = TorchRetinaFace(net, box_adjust=eval_adjust[source], **settings)
        with tqdm(total=len(scenes), desc="%s %s" % (source, split), disable=None, leave=False) as bar:
            out[source] = evaluate_scenes(detector, scenes, bar)
    return out


def selection_score(val, metric):
    """Mean over sources of ``metric`` in {source: result} (None if a source lacks it)."""
    values = [r.get(metric) for r in val.values()]
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def improves(score, best):
    """Whether an epoch scoring ``score`` replaces ``best`` ({epoch, score, metric}); ties keep
    the earlier epoch, and an unknown best score (None) is replaced by any known one."""
    return score is not None and (best["score"] is None or score > best["score"])


def resumed_best(best, history, metric):
    """``best`` of a resumed run, scored by ``metric``. Checkpoints before selection rules
    recorded theirs hold {epoch, score}: mean val AP50. If the rule changes, best.pt keeps its
    epoch and is re-scored from that epoch's val in ``history``; when that has no such
    metric (an older run), its score is None and the next validated epoch replaces it."""
    metric_was = best.get("metric", "ap50")
    if metric_was == metric:
        return dict(best, metric=metric)
    score = None
    for entry in history:
        if entry["epoch"] == best["epoch"] and "val" in entry:
            score = selection_score(entry["val"], metric)
    return {"epoch": best["epoch"], "score": score, "metric": metric}


def operating_point(scores, fp_budget, confidence):
    """The operating point of one validated epoch, from {source: FaceScores}: per source and
    pooled (all sources' images together: total false positives <= ``fp_budget`` x total
    images) the lowest threshold within budget and the recall at IoU 0.5 there. ``confidence``
    is the validation's own floor: thresholds equal to it mean the budget was never reached."""
    from train.detector.evaluate import FaceScores

    def rounded(pair):
        recall, threshold = pair
        return (None if recall is None else round(recall, 4), None if threshold is None else round(threshold, 4))

    per_set = {source: rounded(f.at_budget(fp_budget)) for source, f in scores.items()}
    recall, threshold = rounded(FaceScores.pooled(scores.values()).at_budget(fp_budget))
    return {"fp_budget": fp_budget, "confidence": threshold, "recall_at_budget": recall,
            "validated_at_confidence": confidence,
            "per_set": {source: {"threshold_at_budget": t, "recall_at_budget": r}
                        for source, (r, t) in per_set.items()}}


def landmark_drift(net, reference, scenes, input_size, min_score=0.5):
    """How far the landmark outputs moved from the original network's, on anchors that the
    trained network calls a face (score >= ``min_score``): median point displacement in units
    of the anchor's size (0.1 x the raw difference, the centre variance), over ``scenes``."""
    import cv2
    moved = []
    net.eval()
    for scene in scenes:
        image = cv2.imread(scene.path, cv2.IMREAD_COLOR)
        scale = float(input_size) / max(image.shape[:2])
        size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        x = torch.from_numpy(preprocess(image))
        with torch.no_grad():
            _, conf, lm = net(x)
            _, _, lm_ref = reference(x)
        face = torch.softmax(conf[0], -1)[:, 1] >= min_score
        if face.any():
            diff = (lm[0][face] - lm_ref[0][face]).view(-1, 5, 2).norm(dim=2) * 0.1
            moved.append(diff.flatten().numpy())
    if not moved:
        return None
    return round(float(np.median(np.concatenate(moved))), 4)
