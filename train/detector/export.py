"""``python -m train.detector.export CHECKPOINT --out DIR|FILE.onnx``: a fine-tuned detector as ONNX.

The file (``DIR/face_detector.onnx``, or FILE.onnx) is what the edge's ``retinaface``
detector runs: the shipped ``models/face_detector.onnx``, or another one named by
``detector.model`` (``--detector-model``). One input ``input``
(N, 3, H, W) float32 BGR minus the mean, outputs ``loc`` (N, A, 4), ``conf`` (N, A, 2,
softmaxed) and ``landmarks`` (N, A, 10) with batch, height and width dynamic; opset 13
(TensorRT 8.2 on the Nano parses up to 13). ``edge/infer/detectors/retinaface.py`` runs it
unchanged. ``metadata_props`` describe it: architecture, input normalisation, anchors and
variances, box convention, training data with counts and licences, metrics, and the
operating point chosen on val (``operating_point``: the confidence the edge runs it at).

Before anything is written, onnxruntime's outputs are compared with PyTorch's on real scenes
(val scenes of the checkpoint's own data, at their own size and at the edge's long side,
and as a batch of two); a mismatch above ``--atol`` fails the export.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import cv2
import numpy as np
import torch

from edge.infer.detectors.retinaface import SHIPPED_MODEL
from train.detector.augment import preprocess
from train.detector.checkpoint import CheckpointError, load_net
from train.detector.evaluate import edge_settings
from train.detector.net import WithSoftmax

OPSET = 13
OUTPUTS = ("loc", "conf", "landmarks")
FILE_NAME = os.path.basename(SHIPPED_MODEL)  # face_detector.onnx


def portable(args):
    """Training arguments with absolute paths cut to their last part: the file ships, the
    training machine's folders mean nothing elsewhere (relative ones are kept as given)."""
    def clean(value):
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, str) and os.path.isabs(value):
            return os.path.basename(os.path.normpath(value))
        return value
    return dict((key, clean(value)) for key, value in args.items())


def metadata_props(meta, checkpoint_path):
    """The ONNX metadata (str -> str) of a checkpoint's ``meta``."""
    # Only the sets trained on bind the model (the first checkpoints listed the sets only
    # evaluated on beside them; train_args says which were trained on).
    trained_on = [os.path.basename(os.path.normpath(d)) for d in meta["train_args"].get("data") or []]
    # The folder name only: the file ships, the training machine's paths mean nothing elsewhere.
    training = {source: {"folder": os.path.basename(os.path.normpath(e.get("folder") or "")),
                         "licence": e.get("licence"), "scenes": e.get("scenes"),
                         "faces": e.get("faces")} for source, e in meta["training_data"].items()
                if source in trained_on}
    props = {
        "maskgate_model": "face-detector",
        "arch": meta["arch"],
        "layers": meta["layers"],
        "input": "NCHW float32, BGR, minus mean_bgr, scale 1; any H, W",
        "mean_bgr": ",".join("%g" % v for v in meta["input"]["mean_bgr"]),
        "outputs": json.dumps(meta["outputs"]),
        "anchors": json.dumps(meta["anchors"]),
        "variances": ",".join("%g" % v for v in meta["anchors"]["variances"]),
        "box_convention": json.dumps(meta["box_convention"]),
        "trained_on": json.dumps(trained_on),
        "training_data": json.dumps(training),
        "licences": "; ".join("%s: %s" % (s, e["licence"]) for s, e in training.items()),
        "init": json.dumps(meta["init"]),
        "metrics": json.dumps(meta.get("metrics", {})),
        "train_args": json.dumps(portable(meta["train_args"]), default=str),
        "checkpoint": os.path.basename(checkpoint_path),
    }
    if meta.get("operating_point"):
        # The confidence chosen on val for the false-positive budget: the edge's default
        # (detector.confidence: null) runs the file at it.
        props["operating_point"] = json.dumps(meta["operating_point"])
        props["selection"] = json.dumps(meta.get("selection", {}))
    return props


def parity_inputs(meta, count=2):
    """Real scenes to compare on: ``count`` val scenes of each training set, each at its own
    size and at the edge's long side; plus one batch of two equal-size crops."""
    from train.detector.data import load_sets
    folders = [e["folder"] for e in meta["training_data"].values() if e.get("folder")]
    folders = [f for f in folders if os.path.isdir(f)]
    if not folders:
        raise SystemExit("export: the checkpoint's data folders are not here, so parity cannot be "
                         "checked on real scenes; pass --data DIR (a VOC scene set)")
    return folders_to_inputs(folders, count, load_sets)


def folders_to_inputs(folders, count, load_sets):
    """The parity blobs (float32 NCHW) from scene-set folders."""
    sets, _ = load_sets(folders)
    long_side = edge_settings()["input_size"]
    blobs = []
    for split in sets.values():
        for scene in split["val"][:count]:
            image = cv2.imread(scene.path, cv2.IMREAD_COLOR)
            blobs.append(preprocess(image))
            scale = float(long_side) / max(image.shape[:2])
            size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
            blobs.append(preprocess(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)))
    pair = [b[:, :, :200, :200] for b in blobs[:2] if b.shape[2] >= 200 and b.shape[3] >= 200]
    if len(pair) == 2:
        blobs.append(np.ascontiguousarray(np.concatenate(pair, axis=0)))
    return blobs


def check_parity(wrapped, onnx_path, blobs, atol):
    """Largest |onnxruntime - PyTorch| per output over ``blobs``; SystemExit above ``atol``."""
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    worst = dict((name, 0.0) for name in OUTPUTS)
    for blob in blobs:
        got = session.run(list(OUTPUTS), {"input": blob})
        with torch.no_grad():
            want = [t.numpy() for t in wrapped(torch.from_numpy(blob))]
        for name, g, w in zip(OUTPUTS, got, want):
            if g.shape != w.shape:
                raise SystemExit("export: %s has shape %s in onnxruntime, %s in PyTorch" % (name, g.shape, w.shape))
            worst[name] = max(worst[name], float(np.abs(g - w).max()))
    bad = dict((k, v) for k, v in worst.items() if v > atol)
    if bad:
        raise SystemExit("export: onnxruntime differs from PyTorch by %s (> %g); not written" % (bad, atol))
    return worst


def export(checkpoint_path, out, blobs=None, atol=1e-4):
    """Export a checkpoint to ``out`` (a .onnx path, or a folder for face_detector.onnx) after
    the parity check; returns (path, worst differences, number of inputs compared)."""
    import onnx
    net, meta = load_net(checkpoint_path)
    wrapped = WithSoftmax(net).eval()
    blobs = parity_inputs(meta) if blobs is None else blobs
    dynamic = {"input": {0: "batch_size", 2: "height", 3: "width"}}
    dynamic.update((name, {0: "batch_size", 1: "anchors"}) for name in OUTPUTS)
    tmp_dir = tempfile.mkdtemp(prefix="det-export-")
    try:
        tmp = os.path.join(tmp_dir, FILE_NAME)
        torch.onnx.export(wrapped, (torch.from_numpy(blobs[0]),), tmp, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=list(OUTPUTS), dynamic_axes=dynamic,
                          do_constant_folding=True)
        model = onnx.load(tmp)
        onnx.checker.check_model(model)
        for key, value in sorted(metadata_props(meta, checkpoint_path).items()):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, tmp)
        worst = check_parity(wrapped, tmp, blobs, atol)
        path = out if out.endswith(".onnx") else os.path.join(out, FILE_NAME)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        shutil.move(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path, worst, len(blobs)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.detector.export", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="best.pt of a python -m train.detector run")
    p.add_argument("--out", required=True, metavar="DIR|FILE.onnx",
                   help="folder for %s, or the file's path (the edge runs it with --detector-model "
                        "FILE; %s is the shipped one)" % (FILE_NAME, os.path.relpath(SHIPPED_MODEL)))
    p.add_argument("--data", action="append", metavar="DIR",
                   help="scene sets for the parity check (default: the checkpoint's training data)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest accepted |onnxruntime - PyTorch|")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    try:
        blobs = None
        if args.data:
            from train.detector.data import load_sets
            blobs = folders_to_inputs(args.data, 2, load_sets)
        path, worst, compared = export(args.checkpoint, args.out, blobs, args.atol)
    except CheckpointError as exc:
        print("export: %s" % exc, file=sys.stderr)
        return 2
    print("wrote %s (opset %d); parity on %d real inputs, max |ort - torch|: %s"
          % (path, OPSET, compared, ", ".join("%s %.2e" % kv for kv in worst.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
