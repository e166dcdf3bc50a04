"""The training loop: datasets, one epoch, evaluation, early stopping, checkpoints, DDP.

Runs on CPU or CUDA (mixed precision there) and, launched with ``torchrun``, data-parallel
over several processes (gloo on CPU, NCCL on GPUs); rank 0 evaluates, logs and saves.
"""
import math
import os
import shutil
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from edge.infer.preprocess import expand_box, letterbox
from train import checkpoint, report
from train.images import read_rgb
from train.transforms import SceneContext


class FaceDataset(Dataset):
    """Face crops of ``samples``; the letterboxed uint8 crop is cached after first use.

    The cache keeps a small array per face (e.g. 96x96x3 = 27 KB), so even SF-MASK's 45k
    faces stay near 1 GB, and epochs after the first skip decoding entirely. ``weighted``
    (training sets): items are (image, target, sample weight), the weight from
    ``train.data`` (near-copies and synthesized faces count as one face each). A sample of
    a class the model does not have gets target -1 (evaluation only: the compliance view).
    """

    def __init__(self, samples, classes, meta, transform, cache=True, weighted=False):
        self.samples = samples
        self.targets = [classes.index(s.label) if s.label in classes else -1 for s in samples]
        self.weights = [float(s.weight) for s in samples]
        self.meta = meta
        self.transform = transform
        # A transform that re-frames scene faces (``TrainTransform(framing=...)``) needs
        # their surroundings: those are cached then, and the model's crop is cut from them.
        self.context_margin = getattr(transform, "context_margin", 0.0)
        self.weighted = weighted
        self.cache = {} if cache else None

    def __len__(self):
        return len(self.samples)

    def boxed(self, i):
        """The letterboxed uint8 RGB crop of sample ``i``.

        A scene is decoded once for all its faces: with the cache on, every face of the
        image is cropped and cached when the first one is asked for (decoding a street
        photo costs far more than the network does on a 96 px face).
        """
        return self._boxed(self._entry(i))

    def _boxed(self, entry):
        if isinstance(entry, SceneContext):
            return letterbox(entry.crop(self.meta["crop_margin"]), self.meta["input_size"], self.meta["mean"])
        return entry

    def _entry(self, i):
        """What is cached of sample ``i``: its letterboxed crop, or its ``SceneContext`` when
        the training transform re-frames scene faces."""
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        path = self.samples[i].path
        rgb = read_rgb(path)
        siblings = self._by_path().get(path, [i]) if self.cache is not None else [i]
        for k in siblings:
            entry = self._crop(rgb, self.samples[k].box)
            if self.cache is not None:
                self.cache[k] = entry
            if k == i:
                result = entry
        return result

    def _by_path(self):
        if getattr(self, "_paths", None) is None:
            self._paths = {}
            for k, s in enumerate(self.samples):
                self._paths.setdefault(s.path, []).append(k)
        return self._paths

    def _crop(self, rgb, box):
        if box is not None and self.context_margin:
            return SceneContext.cut(rgb, box, self.context_margin)
        if box is not None:
            x1, y1, x2, y2 = expand_box(box, self.meta["crop_margin"], rgb.shape[1], rgb.shape[0])
            rgb = rgb[y1:y2, x1:x2]
        return letterbox(rgb, self.meta["input_size"], self.meta["mean"])

    def item(self, i, transform, weighted):
        """(image, target[, weight]) of sample ``i`` through ``transform``."""
        entry = self._entry(i)
        if isinstance(entry, SceneContext) and hasattr(transform, "from_context"):
            x = transform.from_context(entry)
        else:
            x = transform.from_boxed(self._boxed(entry))  # decoded once, even without the cache
        return (x, self.targets[i], self.weights[i]) if weighted else (x, self.targets[i])

    def __getitem__(self, i):
        return self.item(i, self.transform, self.weighted)

    def subset(self, indices, transform, weighted=False):
        """A view on some samples with another transform, sharing this dataset's crop cache."""
        return _SubsetView(self, list(indices), transform, weighted)


class _SubsetView(Dataset):
    def __init__(self, parent, indices, transform, weighted):
        self.parent, self.indices, self.transform, self.weighted = parent, indices, transform, weighted
        self.targets = [parent.targets[i] for i in indices]
        self.weights = [parent.weights[i] for i in indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.parent.item(self.indices[i], self.transform, self.weighted)


def class_weights(targets, num_classes, sample_weights=None, power=1.0):
    """Inverse-frequency weights (sklearn's 'balanced'): (n / (C * n_c)) ** power, where a
    class's n_c is the sum of its samples' weights (their count when unweighted).

    ``power`` 0.5 ('sqrt') balances halfway: a class fifty times rarer weighs seven times
    more, not fifty (with so few examples a full weight over-calls it).
    """
    counts = np.bincount(np.asarray(targets), weights=sample_weights, minlength=num_classes).astype(float)
    balanced = counts.sum() / (num_classes * np.maximum(counts, 1e-9))
    return torch.tensor(balanced ** power, dtype=torch.float32)


def weighted_loss(per_sample, targets, weights, class_weight=None):
    """The batch loss from per-sample losses: a weighted mean, as ``CrossEntropyLoss``'s.

    With hard targets it is normalized by the sum of (sample weight x class weight), which
    for unit sample weights is exactly the class-weighted mean; with soft (mixed) targets
    by the sum of sample weights.
    """
    norm = weights
    if targets.dim() == 1 and class_weight is not None:
        norm = weights * class_weight[targets]
    return (per_sample * weights).sum() / norm.sum().clamp_min(1e-12)


def distributed_setup():
    """Join the process group when launched by torchrun; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return (dist.get_rank() if dist.is_initialized() else 0), world


def distributed_teardown():
    """Leave the process group (after training, before any rank exits).

    A rank that exits with the group still up can abort in gloo's threads at interpreter
    shutdown ("terminate called without an active exception", SIGABRT), now and then.
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def make_loader(dataset, batch_size, shuffle, workers, seed, distributed=False, epoch_samples=0):
    """A DataLoader; a DistributedSampler shards training data under torchrun.

    ``epoch_samples``: draw that many samples per epoch, with replacement, with the
    probability of each sample's weight (large sets whose near-copies need not all be seen
    every epoch); the caller then leaves the sample weights out of the loss.
    """
    generator = torch.Generator().manual_seed(seed)
    if epoch_samples:
        if distributed:
            raise ValueError("--epoch-samples is not supported under torchrun")
        sampler = WeightedRandomSampler(dataset.weights, int(epoch_samples), replacement=True, generator=generator)
    else:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if distributed else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, generator=generator, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0, drop_last=False)


def batch_mixer(kind, num_classes):
    """MixUp or CutMix on batches (torchvision v2), or None."""
    if kind in (None, "none"):
        return None
    from torchvision.transforms import v2
    return {"mixup": v2.MixUp, "cutmix": v2.CutMix}[kind](num_classes=num_classes)


def train_one_epoch(model, loader, criterion, optimizer, scheduler, device, scaler=None, mixer=None,
                    desc="train", show=True, ema=None):
    """One pass over ``loader``; returns (mean loss, accuracy on the un-mixed labels).

    ``ema``: a ``torch.optim.swa_utils.AveragedModel`` updated after every step.
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    # disable=None: bars on a terminal only; logs get the one-line epoch summary instead.
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if show else True)
    for batch in bar:
        images, targets = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        weights = batch[2].to(device, non_blocking=True).float() if len(batch) > 2 else torch.ones(len(targets), device=device)
        hard = targets
        if mixer is not None:
            images, targets = mixer(images, targets)
        with torch.autocast(device.type, enabled=scaler is not None):
            logits = model(images)
            loss = weighted_loss(criterion(logits, targets), targets, weights, criterion.weight)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(getattr(model, "module", model))  # unwrapped from DDP
        total_loss += loss.item() * len(hard)
        correct += (logits.argmax(1) == hard).sum().item()
        seen += len(hard)
        bar.set_postfix(loss="%.4f" % (total_loss / seen))
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.no_grad()
def predict(model, loader, device, flip=False, show=False):
    """Class probabilities and labels for every sample; ``flip`` averages a mirrored pass."""
    model.eval()
    probs, labels = [], []
    for images, targets in tqdm(loader, desc="eval", unit="batch", leave=False, disable=not show):
        images = images.to(device, non_blocking=True)
        p = model(images).float().softmax(1)
        if flip:
            p = (p + model(images.flip(3)).float().softmax(1)) / 2
        probs.append(p.cpu())
        labels.append(targets)
    return torch.cat(labels).numpy(), torch.cat(probs).numpy()


def evaluate(model, loader, device, classes, flip=False):
    """Metrics (``report.compute_metrics``, the compliance view) plus the unweighted
    cross-entropy as ``loss``."""
    labels, probs = predict(model, loader, device, flip)
    metrics = report.compute_metrics(labels, probs, classes)
    metrics["compliance"] = report.compliance_metrics([classes[k] for k in labels], probs, classes)
    picked = probs[np.arange(len(labels)), labels]
    metrics["loss"] = float(-np.log(np.clip(picked, 1e-7, 1)).mean()) if len(labels) else None
    return metrics, labels, probs


class EarlyStopping:
    """Stops after ``patience`` epochs without improving the monitored value by ``min_delta``."""

    def __init__(self, patience, mode="min", min_delta=1e-4):
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best, self.bad_epochs = None, 0

    def step(self, value):
        """Record an epoch's value; returns True when it is the best so far."""
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                       else value > self.best + self.min_delta)
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self):
        return self.patience > 0 and self.bad_epochs >= self.patience


def fit(model, train_set, val_set, meta, args, out_dir=None, show=True, log=print):
    """Train ``model``; returns (history, best val metrics). Saves best.pt/last.pt in ``out_dir``.

    ``args`` needs: epochs, batch_size, lr, weight_decay, workers, seed, patience, monitor,
    label_smoothing, mix, amp, resume (path or None); optional ema (decay, 0 = off),
    class_weights (``balanced``, the default, ``sqrt`` or ``none``; from the samples' weights) and
    epoch_samples (draw that many samples per epoch by weight instead of a full weighted
    pass). Under torchrun, data are sharded.

    With ``ema``, an exponential moving average of the weights (and BatchNorm statistics)
    is what gets evaluated, selected and saved as the model; last.pt keeps the raw training
    weights too (``train_state``) so that --resume continues the same run.
    """
    rank, world = distributed_setup()
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    model.to(device)
    classes = meta["classes"]
    power = {"balanced": 1.0, "sqrt": 0.5}.get(getattr(args, "class_weights", "balanced"))
    weights = class_weights(train_set.targets, len(classes), train_set.weights, power).to(device) \
        if power else None
    # Per-sample losses: the batch mean is weighted by each sample's weight (weighted_loss).
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=args.label_smoothing, reduction="none")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    epoch_samples = getattr(args, "epoch_samples", 0) or 0
    train_loader = make_loader(train_set, args.batch_size, True, args.workers, args.seed, world > 1, epoch_samples)
    if epoch_samples:
        train_set.weighted = False  # drawn by weight already: the loss counts every draw once
    val_loader = make_loader(val_set, max(args.batch_size, 64), False, args.workers, args.seed)
    steps = args.epochs * len(train_loader)
    warmup = min(len(train_loader), steps // 10)
    # Linear warm-up for the new head, then cosine decay to zero.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / max(warmup, 1) if s < warmup
                                                  else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(steps - warmup, 1))))
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and args.amp else None
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    mixer = batch_mixer(args.mix, len(classes))
    ema_decay = getattr(args, "ema", 0.0) or 0.0
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True) \
        if ema_decay else None
    kept = ema.module if ema is not None else model  # the weights evaluated and saved
    mode = "min" if args.monitor == "loss" else "max"
    stopper = EarlyStopping(args.patience, mode)
    history, start_epoch, best_metrics = [], 1, None
    if getattr(args, "resume", None):
        state = checkpoint.read(args.resume)
        if ema is not None:
            if "ema_state" not in state:
                raise checkpoint.CheckpointError("%s was trained without --ema; resume it without --ema"
                                                 % args.resume)
            model.load_state_dict(state["train_state"])
            ema.load_state_dict(state["ema_state"])
        else:
            model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        scheduler.load_state_dict(state["scheduler_state"])
        history, start_epoch = state.get("history", []), state["epoch"] + 1
        stopper.best, stopper.bad_epochs = state.get("best_value"), state.get("bad_epochs", 0)
        best_metrics = state.get("best_metrics")
        log("resumed from %s at epoch %d" % (args.resume, start_epoch))
        earlier_best = os.path.join(os.path.dirname(os.path.abspath(args.resume)), "best.pt")
        if out_dir and os.path.isfile(earlier_best) and not os.path.isfile(os.path.join(out_dir, "best.pt")):
            os.makedirs(out_dir, exist_ok=True)
            shutil.copyfile(earlier_best, os.path.join(out_dir, "best.pt"))
    for epoch in range(start_epoch, args.epochs + 1):
        if world > 1:
            train_loader.sampler.set_epoch(epoch)
        started = time.time()
        train_loss, train_acc = train_one_epoch(net, train_loader, criterion, optimizer, scheduler, device,
                                                scaler, mixer, "epoch %d/%d" % (epoch, args.epochs), show and rank == 0,
                                                ema)
        stop = torch.zeros(1)
        if rank == 0:
            val, _, _ = evaluate(kept, val_loader, device, classes)
            value = val[args.monitor]
            improved = stopper.step(value)
            history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                            "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_auc": val["auc"],
                            "seconds": time.time() - started, "lr": optimizer.param_groups[0]["lr"]})
            log("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f auc %s | %.0fs%s" % (
                epoch, args.epochs, train_loss, train_acc, val["loss"], val["accuracy"],
                "n/a" if val["auc"] is None else "%.4f" % val["auc"], time.time() - started,
                "  *best*" if improved else ""))
            if improved:
                best_metrics = val
            if out_dir:
                state = dict(optimizer_state=optimizer.state_dict(), scheduler_state=scheduler.state_dict(),
                             epoch=epoch, history=history, best_value=stopper.best,
                             bad_epochs=stopper.bad_epochs, best_metrics=best_metrics, args=vars(args))
                if ema is not None:
                    state.update(train_state=model.state_dict(), ema_state=ema.state_dict())
                checkpoint.save(os.path.join(out_dir, "last.pt"), kept, meta, **state)
                if improved:
                    checkpoint.save(os.path.join(out_dir, "best.pt"), kept, meta, **state)
            stop[0] = float(stopper.should_stop)
        if world > 1:
            dist.broadcast(stop, 0)
        if stop.item():
            if rank == 0:
                log("early stopping: no improvement of val %s for %d epochs" % (args.monitor, args.patience))
            break
    return history, best_metrics
