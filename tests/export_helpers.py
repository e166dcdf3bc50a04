"""Shared fixtures for the export tests: a small checkpoint really trained on real faces."""
import os

import numpy as np
import pytest

from export.samples import default_data_root

DATA = default_data_root()  # ../shared/data, or $MASKGATE_DATA
FMD = os.path.join(DATA, "fmd")
SIZE = 64  # small input: the whole export suite stays fast on a 2-core CPU


def require_data():
    """Skip the calling test when the development data is absent."""
    if not os.path.isdir(FMD):
        pytest.skip("real face data not found at %s (../shared/data)" % os.path.normpath(DATA))


def real_faces(per_class=24):
    """``(rgb, label)`` pairs from fmd's two class folders (label 0 = mask, 1 = no_mask)."""
    from export.samples import folder_images
    faces = []
    for label, sub in enumerate(("with_mask", "without_mask")):
        faces += [(rgb, label) for _, rgb in folder_images(os.path.join(FMD, sub), per_class)]
    return faces


def make_checkpoint(path, arch="mobilenet_v2", steps=5, weights="imagenet"):
    """Fine-tune ``arch`` for a few SGD steps on ~48 real crops at 64 px and save a checkpoint.

    A few steps move the head off its random init, so the probabilities are not all
    near 0.5 and a parity check compares a real decision, not noise.
    """
    import torch
    from train import checkpoint, metadata, models, transforms
    from train.weights import cached_path
    if weights == "imagenet" and cached_path(arch) is None:
        weights = "none"  # offline without `make weights`: a from-scratch start still trains a little
    torch.manual_seed(0)
    mean, std = models.normalization(arch)
    meta = metadata.make_metadata(arch, ["mask", "no_mask"], (SIZE, SIZE), mean, std, crop_margin=0.15,
                                  metrics={"note": "export test fixture, %d steps" % steps})
    model = models.build_model(arch, 2, weights)
    faces = real_faces()
    x = torch.stack([transforms.eval_transform(rgb, meta) for rgb, _ in faces])
    y = torch.tensor([label for _, label in faces])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    order = torch.randperm(len(x))
    for step in range(steps):
        idx = order[(step * 16) % len(x):][:16]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
    model.eval()
    checkpoint.save(path, model, meta, epoch=0)
    return path


def batch_of(meta, count, seed=0):
    """A deterministic batch of real faces, preprocessed with the device's code path."""
    import cv2
    from export.samples import verification_images
    from edge.preprocess import crops_to_batch
    rows = []
    for _, rgb in verification_images(limit=count)[:count]:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        h, w = bgr.shape[:2]
        batch, _ = crops_to_batch(bgr, np.array([[0, 0, w, h]], np.float32), dict(meta, crop_margin=0.0))
        rows.append(batch[0])
    return np.stack(rows)
