"""Self-describing checkpoints: weights plus the metadata contract and the training record.

A checkpoint is a dict with ``format``, ``meta`` (``edge.infer.model_meta``: arch, classes,
input size, resize, mean/std, crop margin), ``model_state``, and for resuming
``optimizer_state``, ``scheduler_state``, ``epoch``, ``history``, ``args``. ``meta`` also
holds ``train_args``, ``data_summary`` and ``metrics``, so exported models carry them too.
"""
import os
import tempfile

import torch

from edge.infer import model_meta
from train.models import build_model

FORMAT = "maskgate-checkpoint/1"


class CheckpointError(ValueError):
    """A file is not a usable checkpoint of this project."""


def save(path, model, meta, checkpoint_format=FORMAT, **state):
    """Write a checkpoint atomically (temporary file, then rename)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {"format": checkpoint_format, "meta": meta, "model_state": model.state_dict()}
    payload.update(state)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_payload(path, expected_format=FORMAT, kind="a checkpoint of this project", error=None):
    """The checkpoint dict at ``path`` if its ``format`` is ``expected_format``; else ``error``
    (default ``CheckpointError``) says what the file is not."""
    error = error or CheckpointError
    if not os.path.isfile(path):
        raise error("checkpoint not found: %s" % path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a non-checkpoint file
        raise error("%s is not a PyTorch checkpoint: %s" % (path, exc)) from exc
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise error("%s is not %s (expected format %s)" % (path, kind, expected_format))
    return payload


def read(path):
    """Load and check a checkpoint dict; ``CheckpointError`` says what is wrong."""
    payload = load_payload(path)
    missing = [k for k in ("meta", "model_state") if k not in payload]
    if missing:
        raise CheckpointError("%s is missing %s" % (path, ", ".join(missing)))
    try:
        model_meta.validate(payload["meta"], source=path)
    except model_meta.MetadataError as exc:
        raise CheckpointError(str(exc)) from exc
    return payload


def load_model(path):
    """Rebuild the model from a checkpoint; returns ``(model in eval mode, meta)``."""
    payload = read(path)
    meta = payload["meta"]
    try:
        model = build_model(meta["arch"], len(meta["classes"]), weights="none")
    except ValueError as exc:
        raise CheckpointError("%s: %s" % (path, exc)) from exc
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as exc:
        raise CheckpointError("%s: weights do not fit %s: %s" % (path, meta["arch"], exc)) from exc
    return model.eval(), meta
