"""``python -m train``: train a mask classifier and write a checkpoint and its report.

``python -m train`` alone trains the two-class model (``train/configs/default.yaml``), the first
step of the shipped classifier's recipe (``make train``; see docs/model-card.md); flags override
it, ``--config FILE`` replaces it.
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np
import torch
import yaml

from edge.infer import model_meta
from train import checkpoint, data, facecrop, report
from train.engine import FaceDataset, distributed_teardown, evaluate, fit, make_loader
from train.models import ARCHS, build_model, normalization, set_trainable
from train.transforms import EvalTransform, TrainTransform

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.yaml")


def get_args_parser():
    p = argparse.ArgumentParser(description="Train a face-mask classifier.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="YAML file whose keys are these options (flags override it); "
                   "default: train/configs/default.yaml, the two-class first step of the shipped recipe")
    p.add_argument("--data", action="append", help="data root (class folders, SF-MASK or VOC scenes); "
                   "repeatable; replaces the config's data")
    p.add_argument("--train-data", action="append",
                   help="data root used for training only, never for val or test (a single-person webcam "
                        "set, a synthesized set); repeatable; replaces the config's train_data")
    p.add_argument("--synthetic-share", type=float, default=0.3,
                   help="share of each class's training weight that synthesized faces (a --train-data set "
                        "with a manifest.csv) make up")
    p.add_argument("--classes", default="mask,no_mask", help="classes in output order")
    p.add_argument("--arch", default="mobilenet_v2", choices=sorted(ARCHS))
    p.add_argument("--weights", default="imagenet",
                   help="imagenet | none | PATH (a checkpoint of this project: a model of other classes "
                        "keeps the rows of the classes both name, so a two-class model can grow `incorrect`)")
    p.add_argument("--freeze", default="none", help="none | head | N (train the last N blocks + head)")
    p.add_argument("--input-size", type=int, default=96)
    p.add_argument("--crop-margin", type=float, default=0.15, help="face-box margin on each side for scene crops")
    p.add_argument("--min-size", type=int, default=8,
                   help="exclude faces whose longest side is smaller (px; as the edge detector's --min-size)")
    p.add_argument("--face-crop", default="none", choices=facecrop.CHOICES,
                   help="crop whole images (folder data) to the face this detector finds, as the edge "
                        "service does; scene annotations keep their boxes")
    p.add_argument("--subset", type=float, default=1.0, help="train on this stratified share of the data")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--epoch-samples", type=int, default=0,
                   help="samples drawn per epoch by their weight, with replacement (0: every sample once, "
                        "weighted in the loss)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--class-weights", default="balanced", choices=["balanced", "sqrt", "none"],
                   help="weight the loss by inverse class frequency (balanced), its square root (sqrt) or not")
    p.add_argument("--ema", type=float, default=0.0,
                   help="keep an exponential moving average of the weights with this decay per step "
                        "(e.g. 0.998) and evaluate, select and ship it; 0 disables")
    p.add_argument("--random-erasing", type=float, default=0.0, help="probability of random erasing")
    p.add_argument("--lowres", type=float, default=0.0,
                   help="probability of degrading a training crop to a 12-32 px face and back")
    p.add_argument("--mix", default="none", choices=["none", "mixup", "cutmix"])
    p.add_argument("--occluders", type=float, default=0.0,
                   help="probability of a hand, phone or sheet of paper drawn before the mouth (label kept)")
    p.add_argument("--sunglasses", type=float, default=0.0, help="probability of drawn sunglasses")
    p.add_argument("--blur", type=float, default=0.0, help="probability of defocus or motion blur")
    p.add_argument("--framing", type=float, default=0.0,
                   help="probability of cutting a scene face again with each side's margin drawn from "
                        "0 to 0.35 of the box (sources and detectors frame faces differently)")
    p.add_argument("--patience", type=int, default=5, help="early stopping; 0 disables")
    p.add_argument("--monitor", default="loss", choices=["loss", "accuracy", "auc"])
    p.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=False,
                   help="report metrics with test-time horizontal flip too, and with --export put the "
                        "flip into the exported model (each face averaged with its mirror image)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable mixed precision on CUDA")
    p.add_argument("--seed", type=int, default=0, help="weights, data order and augmentation")
    p.add_argument("--split-seed", type=int, default=0,
                   help="train/val/test split and --subset, kept apart from --seed so that runs "
                        "with different seeds are compared on the same faces")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", help="last.pt of an interrupted run")
    p.add_argument("--out", default="runs/train", help="output folder: checkpoints and report")
    p.add_argument("--search", action="store_true", help="run the lr x batch-size grid with k-fold CV first")
    p.add_argument("--grid-lr", default="1e-2,1e-3,1e-4,1e-5")
    p.add_argument("--grid-batch", default="16,32,64")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--search-epochs", type=int, default=3)
    p.add_argument("--export", action=argparse.BooleanOptionalAction, default=False,
                   help="export best.pt to ONNX when done (export.onnx)")
    return p


def parse_args(argv=None):
    """Flags over the YAML config over the defaults; unknown config keys are errors.

    Without ``--config`` the two-class recipe (``train/configs/default.yaml``) is the config;
    ``--data`` on the command line replaces the config's data instead of adding to it.
    """
    parser = get_args_parser()
    args = parser.parse_args(argv)
    given_data, given_train_data = args.data, args.train_data
    path = args.config or DEFAULT_CONFIG
    if not os.path.isfile(path):
        parser.exit(2, "error: config file not found: %s\n" % path)
    with open(path) as f:
        try:
            config = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            parser.exit(2, "error: %s is not valid YAML: %s\n" % (path, " ".join(str(exc).split())))
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in config if k.replace("-", "_") not in known)
    if unknown:
        parser.exit(2, "error: %s: unknown keys %s; known: %s\n" % (path, unknown, sorted(known - {"help"})))
    parser.set_defaults(**{k.replace("-", "_"): v for k, v in config.items()})
    args = parser.parse_args(argv)
    args.config = path
    if given_data:  # data given on the command line replace the config's, both kinds
        args.data, args.train_data = given_data, given_train_data
    elif given_train_data:
        args.train_data = given_train_data
    if not args.data:
        parser.error("give at least one --data folder (or data: in --config)")
    args.classes = [c.strip() for c in args.classes.split(",")] if isinstance(args.classes, str) else list(args.classes)
    bad = [c for c in args.classes if c not in model_meta.CLASS_NAMES]
    if bad:
        parser.error("--classes: unknown %s; accepted %s" % (bad, list(model_meta.CLASS_NAMES)))
    return args


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_datasets(samples, meta, args):
    """(train, val, {evaluation set name: dataset}), training augmentation on train only.

    Evaluation sets: val and test, each also per source and, for scene crops, for faces
    under 32 px (the small-face regime the deployed camera lives in).
    """
    by_split = {s: [x for x in samples if x.split == s] for s in data.SPLITS}
    train_set = FaceDataset(by_split["train"], meta["classes"], meta,
                            TrainTransform(meta, random_erasing=args.random_erasing, lowres=args.lowres,
                                           occluders=args.occluders, sunglasses=args.sunglasses, blur=args.blur,
                                           framing=args.framing),
                            weighted=True)
    evaluation = EvalTransform(meta)
    sets = {}
    for split in ("val", "test"):
        sets[split] = by_split[split]
        for source in sorted({s.source for s in by_split[split]}):
            part = [s for s in by_split[split] if s.source == source]
            sets["%s_%s" % (split, source)] = part
            sets["%s_%s_under32px" % (split, source)] = [
                s for s in part if s.box is not None and max(s.box[2] - s.box[0], s.box[3] - s.box[1]) < 32]
    datasets = {k: FaceDataset(v, meta["classes"], meta, evaluation) for k, v in sets.items() if v}
    return train_set, datasets.pop("val"), datasets


def main(argv=None):
    args = parse_args(argv)
    seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    samples, hygiene = data.prepare(args.data, args.classes, args.min_size, args.split_seed, args.subset,
                                    facecrop.detector_name(args.face_crop), args.train_data or (),
                                    args.synthetic_share)
    summary = data.summarize(samples)
    print(hygiene)
    print("data: %s" % json.dumps(summary["splits"]))
    print("training weight by source and class: %s" % json.dumps(summary["train_weight"]))
    mean, std = normalization(args.arch)
    train_args = {k: v for k, v in vars(args).items() if k not in ("resume",)}
    meta = model_meta.make_metadata(args.arch, args.classes, (args.input_size, args.input_size), mean, std,
                                  args.crop_margin, train_args=train_args,
                                  data_summary=dict(summary, hygiene=hygiene.summary()))
    train_set, val_set, test_sets = build_datasets(samples, meta, args)
    search_md = ""
    if args.search:
        from train.search import grid_search
        table, best = grid_search(train_set, meta, args)
        args.lr, args.batch_size = best
        search_md = table
        print(table)
    model = build_model(args.arch, len(args.classes), args.weights, args.classes)
    trainable = set_trainable(model, args.freeze)
    print("%s at %d px: %d trainable parameters" % (args.arch, args.input_size, trainable))
    history, _ = fit(model, train_set, val_set, meta, args, out_dir=args.out)
    distributed_teardown()  # only rank 0 goes on (evaluation, report), alone
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    best_path = os.path.join(args.out, "best.pt")
    model, meta = checkpoint.load_model(best_path)
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    model.to(device)
    results = {}
    for name, dataset in [("val", val_set)] + sorted(test_sets.items()):
        loader = make_loader(dataset, 128, False, args.workers, args.seed)
        results[name] = evaluate(model, loader, device, meta["classes"])
        print(report.format_metrics(results[name][0], name))
        if args.tta_flip:
            results[name + "_flip"] = evaluate(model, loader, device, meta["classes"], flip=True)
            print(report.format_metrics(results[name + "_flip"][0], name + "_flip"))
    payload = checkpoint.read(best_path)
    meta["metrics"] = {name: {k: v for k, v in m.items()} for name, (m, _, _) in results.items()}
    meta["train_seconds"] = round(time.time() - started, 1)
    checkpoint.save(best_path, model, meta, **{k: v for k, v in payload.items()
                                               if k not in ("format", "meta", "model_state")})
    # The mistakes of every whole set (not the flip or size slices) are drawn for review.
    datasets = dict(test_sets, val=val_set)
    crops = {name: datasets[name].boxed for name in results if name in datasets and "under32px" not in name}
    report.write_report(args.out, results, history, ("## Grid search\n\n" + search_md) if search_md else "",
                        crops)
    print("report: %s" % os.path.join(args.out, "report.md"))
    if args.export:
        from export.onnx import export_onnx
        export_onnx(best_path, os.path.join(args.out, "model.onnx"), flip=args.tta_flip)
    return 0


def cli(argv=None):
    """``main`` with the errors a user can fix (data, checkpoint, detector files) said in
    one line and exit status 2, instead of a traceback."""
    from edge.errors import ConfigError, ModelError
    try:
        return main(argv)
    except (data.DataError, checkpoint.CheckpointError, model_meta.MetadataError, ConfigError,
            ModelError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
