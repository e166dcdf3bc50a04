"""``python -m train.detector``: fine-tune RetinaFace-MobileNet0.25 on VOC scene sets.

    python -m train.detector --data ../shared/data/kaggle853 --out runs/det

Starts from the product's ONNX weights (``--init``), validates on each training set's
``val`` split at the edge's own settings (``evaluate.edge_settings``: long side 960,
confidence 0.3, min size 8, NMS 0.4), keeps the epoch with the best mean over the training
sets of the ``--select`` metric on val (``best.pt``; ``last.pt`` every epoch, ``--resume
last.pt`` continues), then reports ``test`` for every set given (``--data`` and the held-out
``--eval-data``).

``--ema DECAY`` validates, selects and saves an exponential moving average of the weights
(updated after every step; ``last.pt`` also keeps the trained weights, which ``--resume``
continues from, with the same flag).

``--select recall_at_budget`` (the default) scores an epoch by its recall at IoU 0.5 at the
lowest confidence whose false positives stay within ``--fp-budget`` per image: face AP ignores
the false alarms an operator sees, and the score calibration drifts between epochs, so the
false positives at the fixed confidence 0.3 swing from epoch to epoch. ``--select ap50`` is
the former rule. best.pt's ``meta["selection"]`` records the rule and its
``meta["operating_point"]`` the thresholds of the selected epoch on val: per set and pooled
(``confidence``: the one threshold that keeps all training sets' val false positives within
budget x their images), the confidence to run it at.
docs/detector-card.md records the recipe that was measured and why.
"""
import argparse
import json
import os
import random
import sys
import time

import cv2
import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from train.detector import checkpoint, engine
from train.detector.anchors import anchor_boxes
from train.detector.augment import TrainAugment
from train.detector.data import TrainScenes, collate, hygiene_lines, load_sets
from train.detector.evaluate import FP_BUDGET, edge_settings, format_scores
from train.detector.loss import MultiBoxLoss
from train.detector.net import freeze_for_finetuning, load_from_onnx

DEFAULT_INIT = os.path.join("models", "detectors", "retinaface_mnet025.onnx")


def get_args_parser():
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m train.detector", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="VOC scene set to train on (its train split), select on (val) and test; repeatable")
    p.add_argument("--eval-data", action="append", default=[], metavar="DIR",
                   help="scene set only tested on (cross-source); repeatable")
    p.add_argument("--out", default=os.path.join("runs", "det"))
    p.add_argument("--init", default=DEFAULT_INIT,
                   help="ONNX file whose weights start training: the WIDER FACE original, or an export "
                        "such as the shipped models/face_detector.onnx to go on from it")
    p.add_argument("--original", default=os.path.dirname(DEFAULT_INIT), metavar="DIR",
                   help="folder of the original WIDER FACE detector, which measures each source's box "
                        "framing and unannotated faces, whatever --init is")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate, select and save an exponential moving average of the weights "
                        "(decay per step, e.g. 0.998; 0: the weights as trained)")
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--input-size", type=int, default=640, help="side of the square training crops")
    p.add_argument("--scale-range", type=float, nargs=2, default=(0.5, 2.0), metavar=("LO", "HI"),
                   help="crop scale relative to the edge's inference scale (log-uniform)")
    p.add_argument("--large-faces", type=float, default=0.0, metavar="P",
                   help="share of crops zoomed onto one face so it is 128 px to 7/8 of the crop "
                        "across (foreground faces; the largest anchors see few otherwise)")
    p.add_argument("--box-style", default="common", choices=("common", "native"),
                   help="common: map every source's boxes to the original detector's framing "
                        "(the edge's BOX_ADJUST then applies); native: train on them as annotated")
    p.add_argument("--ignore-unannotated", action="append", default=[], metavar="SET=SCORE",
                   help="ignore (not teach as background) regions where the original detector "
                        "finds a face with at least SCORE that SET's annotations lack; repeatable")
    p.add_argument("--freeze", default="none", choices=("none", "stage1"),
                   help="besides the landmark head and the first conv (always frozen, see "
                        "net.freeze_for_finetuning): stage1 also freezes the first backbone stage "
                        "(cheaper steps, generic low-level features kept)")
    p.add_argument("--balance", action="store_true",
                   help="with several --data sets, draw crops from each set equally often")
    p.add_argument("--min-negatives", type=int, default=8, help="hard negatives per image without faces")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--select", default="recall_at_budget", choices=("recall_at_budget", "ap50"),
                   help="val metric (mean over the training sets) that picks best.pt: recall at IoU 0.5 "
                        "within --fp-budget false positives per image, or face AP@0.5")
    p.add_argument("--fp-budget", type=float, default=FP_BUDGET,
                   help="false positives per val image allowed for recall_at_budget and the thresholds")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and the last)")
    p.add_argument("--resume", metavar="LAST_PT", help="continue a run from its last.pt")
    p.add_argument("--cache-dir", default=os.path.join("runs", "cache"),
                   help="where the original detector's passes over train scenes are cached")
    p.add_argument("--limit", type=int, default=0, help="first N scenes per split and set (tests)")
    return p


def parse_ignore(items, sources):
    """{source: score} from SET=SCORE items."""
    out = {}
    for item in items:
        name, _, score = item.partition("=")
        if name not in sources or not score:
            raise SystemExit("--ignore-unannotated %s: expected SET=SCORE with SET one of %s"
                             % (item, ", ".join(sources)))
        out[name] = float(score)
    return out


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)  # augmentation runs beside torch's threads on the same cores
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "train.log"), "a")

    def say(line):
        print(line)
        log.write(line + "\n")
        log.flush()

    say("$ python -m train.detector " + " ".join(sys.argv[1:] if argv is None else argv))
    sets, summary = load_sets(args.data + args.eval_data)
    train_sources = [os.path.basename(os.path.normpath(d)) for d in args.data]
    all_sources = list(sets)
    if args.limit:  # the checkpoint then records what was really used
        for source, split in sets.items():
            for name in split:
                split[name] = split[name][:args.limit]
            summary[source].update(limit=args.limit, scenes={k: len(v) for k, v in split.items()},
                                   faces={k: int(sum(len(s.boxes) for s in v)) for k, v in split.items()})
    for line in hygiene_lines(summary):
        say(line)
    settings = edge_settings()
    to_common, eval_adjust, source_report = engine.prepare_sources(
        sets, args.original, settings, args.cache_dir, args.box_style, train_sources,
        parse_ignore(args.ignore_unannotated, train_sources), threads=args.threads)
    for source, entry in source_report.items():
        summary[source].update(entry)
        say("%s: %s" % (source, entry))
    train_scenes = [s for src in train_sources for s in sets[src]["train"]]
    augment = TrainAugment(args.input_size, settings["input_size"], args.scale_range, p_large=args.large_faces)
    dataset = TrainScenes(train_scenes, augment, to_common, seed=args.seed)
    sampler = None
    if args.balance and len(train_sources) > 1:
        # Each source equally often (with replacement), whatever its size: the larger set
        # otherwise sets the box style and the scene mix of most crops.
        sizes = {src: len(sets[src]["train"]) for src in train_sources}
        weights = torch.tensor([1.0 / sizes[s.source] for s in train_scenes], dtype=torch.double)
        sampler = torch.utils.data.WeightedRandomSampler(weights, len(train_scenes), replacement=True,
                                                         generator=torch.Generator().manual_seed(args.seed))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=sampler is None,
                                         sampler=sampler, drop_last=True, num_workers=args.workers,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(args.seed))
    net = freeze_for_finetuning(load_from_onnx(args.init))
    if args.freeze == "stage1":
        for p in net.fx.stage1.parameters():
            p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, engine.warmup_cosine(steps, max(1, int(args.warmup_epochs * len(loader)))))
    # With --ema the averaged weights are the ones validated, selected and exported; last.pt
    # also keeps the trained ones, which --resume continues from.
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True) if args.ema else None
    kept = ema.module if ema is not None else net
    criterion = MultiBoxLoss(min_negatives=args.min_negatives)
    anchors = anchor_boxes(args.input_size, args.input_size)
    meta = checkpoint.describe(args.init, args.box_style, eval_adjust, summary, vars(args), args.input_size,
                               train_sources)
    selection = {"metric": args.select, "fp_budget": args.fp_budget, "split": "val", "sets": train_sources}

    def validate():
        """(val results, operating point) of the network now on the training sets."""
        scores = engine.validate(kept, sets, train_sources, "val", eval_adjust, settings)
        return ({s: f.result(args.fp_budget) for s, f in scores.items()},
                engine.operating_point(scores, args.fp_budget, settings["confidence"]))

    def save_best(epoch, history, best, point):
        checkpoint.save(os.path.join(args.out, "best.pt"), kept, dict(meta, selection=selection, operating_point=point),
                        epoch=epoch, history=history, best=best)

    history, best, start = [], None, 1
    if args.resume:
        state = checkpoint.read(args.resume)
        net.load_state_dict(state.get("train_state", state["model_state"]))
        if (ema is not None) != ("ema_state" in state):
            raise SystemExit("--resume %s: that run was trained %s --ema; resume it %s" % (
                args.resume, "with" if "ema_state" in state else "without",
                "with the same --ema" if "ema_state" in state else "without --ema"))
        if ema is not None:
            ema.load_state_dict(state["ema_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        scheduler.load_state_dict(state["scheduler_state"])
        history, start = state["history"], state["epoch"] + 1
        best = engine.resumed_best(state["best"], history, args.select)
        if best.get("metric") != state["best"].get("metric", "ap50"):
            say("best.pt (epoch %d) was selected by %s; from here on by %s (its score: %s)" % (
                best["epoch"], state["best"].get("metric", "ap50"), args.select, best["score"]))
        say("resumed from %s after epoch %d (best val %s %s)" % (args.resume, state["epoch"], args.select,
                                                                best["score"]))
    else:
        val, point = validate()
        best = {"epoch": 0, "score": engine.selection_score(val, args.select), "metric": args.select}
        history.append({"epoch": 0, "val": val})
        for source, r in val.items():
            say("epoch 0 (initial weights) val %s: %s" % (source, format_scores(r)))
        save_best(0, history, best, point)
    say("%d training scenes, %d steps per epoch, %d epochs" % (len(dataset), len(loader), args.epochs))
    for epoch in range(start, args.epochs + 1):
        started = time.time()
        dataset.epoch = epoch
        losses = engine.train_one_epoch(net, loader, anchors, criterion, optimizer, scheduler, epoch, ema)
        entry = {"epoch": epoch, "loss": losses[0], "box": losses[1], "cls": losses[2],
                 "positives_per_image": losses[3], "seconds": round(time.time() - started, 1)}
        line = "epoch %d/%d loss %.4f (box %.4f cls %.4f, %.1f positives/crop) %.0f s" % (
            epoch, args.epochs, losses[0], losses[1], losses[2], losses[3], entry["seconds"])
        if epoch % args.val_every == 0 or epoch == args.epochs:
            entry["val"], point = validate()
            score = engine.selection_score(entry["val"], args.select)
            line += " | val AP50 " + " ".join("%s %.4f" % (s, v["ap50"]) for s, v in entry["val"].items())
            line += ", FP/img " + " ".join("%s %.2f" % (s, v["fp_per_image"]) for s, v in entry["val"].items())
            line += ", recall50 at <=%g FP/img %s (pooled threshold %s)" % (
                args.fp_budget, " ".join("%s %s" % (s, v["recall_at_budget"]) for s, v in entry["val"].items()),
                point["confidence"])
            if engine.improves(score, best):
                best = {"epoch": epoch, "score": score, "metric": args.select}
                save_best(epoch, history + [entry], best, point)
                line += " (best by %s)" % args.select
        history.append(entry)
        say(line)
        averaged = {} if ema is None else {"train_state": net.state_dict(), "ema_state": ema.state_dict()}
        checkpoint.save(os.path.join(args.out, "last.pt"), kept, meta, epoch=epoch, history=history, best=best,
                        optimizer_state=optimizer.state_dict(), scheduler_state=scheduler.state_dict(), **averaged)
    report(args, sets, train_sources, all_sources, eval_adjust, settings, say)
    log.close()


def report(args, sets, train_sources, all_sources, eval_adjust, settings, say):
    """Test (and val) metrics of best.pt on every set; written into best.pt and metrics.json."""
    path = os.path.join(args.out, "best.pt")
    state = checkpoint.read(path)
    net, meta = checkpoint.load_net(path)
    metrics = {"selected_epoch": state["epoch"], "settings": settings}
    for split in ("val", "test"):
        scores = engine.validate(net, sets, all_sources, split, eval_adjust, settings)
        metrics[split] = {s: f.result(args.fp_budget) for s, f in scores.items()}
    reference = load_from_onnx(args.init)
    metrics["landmark_drift_val"] = engine.landmark_drift(
        net, reference, sets[train_sources[0]]["val"][:32], settings["input_size"])
    for split in ("val", "test"):
        for source, r in metrics[split].items():
            say("best (epoch %d) %s %s: %s" % (state["epoch"], split, source, format_scores(r)))
    say("landmark drift (median point shift, anchor sizes): %s" % metrics["landmark_drift_val"])
    meta["metrics"] = metrics
    state["meta"] = meta
    checkpoint.save(path, net, meta, **{k: v for k, v in state.items()
                                        if k not in ("format", "meta", "model_state")})
    with open(os.path.join(args.out, "metrics.json"), "w") as stream:
        json.dump(metrics, stream, indent=1)


if __name__ == "__main__":
    main()
