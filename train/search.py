"""The seed's hyper-parameter search: learning rate x batch size, stratified k-fold CV.

Each cell trains ``--search-epochs`` epochs on k-1 folds of the training split and scores
on the held-out fold; folds are stratified by class and keep scene / near-duplicate
groups whole (``StratifiedGroupKFold``), so a fold never validates on a copy it trained on.
"""
import copy

import numpy as np

from train.engine import fit
from train.models import build_model, set_trainable
from train.transforms import EvalTransform


def parse_grid(text, cast):
    """``"1e-3,1e-4"`` -> [0.001, 0.0001]."""
    return [cast(v) for v in str(text).split(",") if v.strip()]


def folds(train_set, k, seed):
    """k (train indices, val indices) pairs, stratified by class, grouped by scene/duplicate."""
    from sklearn.model_selection import StratifiedGroupKFold
    groups = [s.group for s in train_set.samples]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(groups)), train_set.targets, groups))


def grid_search(train_set, meta, args, log=print):
    """Run the grid; returns (markdown table, (best lr, best batch size))."""
    lrs, batches = parse_grid(args.grid_lr, float), parse_grid(args.grid_batch, int)
    splits = folds(train_set, args.folds, args.seed)
    evaluation = EvalTransform(meta)
    rows = []
    for lr in lrs:
        for batch in batches:
            scores, losses, aucs = [], [], []
            for f, (train_idx, val_idx) in enumerate(splits):
                cell = copy.copy(args)
                cell.lr, cell.batch_size, cell.epochs, cell.resume = lr, batch, args.search_epochs, None
                cell.patience = 0
                model = build_model(args.arch, len(meta["classes"]), args.weights, meta["classes"])
                set_trainable(model, args.freeze)
                _, best = fit(model, train_set.subset(train_idx, train_set.transform, weighted=True),
                              train_set.subset(val_idx, evaluation), meta, cell, out_dir=None,
                              show=False, log=lambda *_: None)
                scores.append(best["accuracy"])
                losses.append(best["loss"])
                aucs.append(best["auc"] if best["auc"] is not None else float("nan"))
                log("search lr=%g batch=%d fold %d/%d: val accuracy %.4f, loss %.4f" % (
                    lr, batch, f + 1, len(splits), best["accuracy"], best["loss"]))
            rows.append((lr, batch, float(np.mean(scores)), float(np.std(scores)), float(np.mean(losses)),
                         float(np.mean(aucs))))
    # The seed chooses on accuracy; near-saturated folds tie often, and loss breaks the tie.
    best = max(rows, key=lambda r: (r[2], -r[4], -r[3]))
    table = ["| lr | batch size | mean val accuracy | std | mean val loss | mean val AUC | |",
             "|---|---|---|---|---|---|---|"]
    table += ["| %g | %d | %.4f | %.4f | %.4f | %.4f | %s |" % (
        lr, b, m, s, loss, auc, "**chosen**" if (lr, b) == best[:2] else "")
        for lr, b, m, s, loss, auc in rows]
    return "\n".join(table) + "\n", (best[0], best[1])
