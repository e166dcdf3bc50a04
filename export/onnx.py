"""``python -m export.onnx CHECKPOINT``: a training checkpoint -> a verified, self-describing ONNX model.

The graph: input ``input`` float32 NCHW with a dynamic ``batch`` axis, output ``probs``
(softmax inside the graph; with ``--tta-flip``, the mean of the face's and its mirror image's
probabilities, metadata ``tta_flip: true``), opset 13 (the newest TensorRT 8.2 on JetPack 4.6 parses),
simplified by onnxslim to plain operators and passed through ``onnx.checker``. The
checkpoint's metadata travels in ``metadata_props`` with the checkpoint's sha256 and the
tool versions. Nothing is reported as done before onnxruntime agrees with PyTorch on real
face crops; a model that does not agree is never written.

PyTorch 2.9+ defaults to the torch.export-based exporter, which emits opset 18 and
needs a down-conversion for TensorRT 8.2; the TorchScript exporter (``dynamo=False``)
still emits opset 13 directly, so it is used here and its deprecation warning silenced.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import onnx
import torch
from torch import nn

from edge.common import sha256
from edge.infer.classify.onnx_meta import MetadataError, read_onnx_metadata  # noqa: F401 (API)
from edge.infer.classify.parity import compare, describe
from edge.infer.model_meta import to_string_props
from export.samples import verification_images
from train.checkpoint import CheckpointError, load_model
from train.transforms import eval_transform

OPSET = 13
PARITY_TOL = 1e-4  # largest |probability difference| accepted between PyTorch and ONNX
# The FP16 variant: |dprob| <= FP16_TOL (measured 3e-3..1e-2), and no top class flipped
# unless PyTorch itself had it within 2 * FP16_TOL of the runner-up (a near-tie).
FP16_TOL = 2e-2


class ExportError(RuntimeError):
    """The export could not be completed (unwritable output, invalid graph...)."""


class ParityError(ExportError):
    """The exported model does not reproduce the PyTorch model's outputs."""


class WithSoftmax(nn.Module):
    """The classifier with softmax appended, so the graph outputs probabilities.

    With ``flip`` (test-time augmentation), each face is also classified mirrored and
    the two probability vectors are averaged. The mirror is a Gather with constant
    indices and both halves go through the network as one batch of 2N, then a Reshape to
    (2, N, classes) and a mean: plain operators with static shapes except N, which
    TensorRT 8.2 parses and batches well.
    """

    def __init__(self, model, flip=False, width=None, num_classes=None):
        super().__init__()
        self.model = model
        self.flip = flip
        self.num_classes = num_classes
        if flip:
            self.register_buffer("mirror", torch.arange(width - 1, -1, -1), persistent=False)

    def forward(self, x):
        if not self.flip:
            return torch.softmax(self.model(x), dim=1)
        both = torch.cat([x, x.index_select(3, self.mirror)], dim=0)
        probs = torch.softmax(self.model(both), dim=1)
        return probs.reshape(2, -1, self.num_classes).mean(dim=0)


def load_for_export(checkpoint, flip=False):
    """Load ``(model wrapped with softmax, meta)``, with timm layers in their exportable form.

    timm's TF-ported models (EfficientNet-Lite) pad "same" from the input size at run
    time; exportable mode makes that padding a constant the graph can fold. ``flip``
    averages with the mirrored face (see ``WithSoftmax``) and says so in the metadata.
    """
    try:
        from timm.layers import set_layer_config
        with set_layer_config(exportable=True):
            model, meta = load_model(checkpoint)
    except ImportError:
        model, meta = load_model(checkpoint)
    if flip:
        meta = dict(meta, tta_flip=True)
    wrapped = WithSoftmax(model, flip, width=int(meta["input_size"][1]), num_classes=len(meta["classes"]))
    return wrapped.eval(), meta


def _plain(value):
    """JSON fallback for numpy/torch values a trainer may leave in the metadata."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def export_graph(wrapped, meta, path):
    """Trace ``wrapped`` to ONNX at ``path`` (opset 13, dynamic batch), then simplify it in place."""
    h, w = meta["input_size"]
    dummy = torch.zeros(2, 3, int(h), int(w))  # batch 2: nothing gets specialized to a batch of 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice (see above)
        torch.onnx.export(wrapped, (dummy,), path, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["probs"],
                          dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}},
                          do_constant_folding=True)
    model = simplify(onnx.load(path))
    onnx.save(model, path)
    return model


def simplify(model):
    """Fold constants and shape arithmetic into plain operators (onnxslim)."""
    import onnxslim
    return onnxslim.slim(model)


def add_metadata(model, meta, checkpoint):
    """Write the metadata contract plus provenance into ``model.metadata_props``."""
    import onnxruntime
    import onnxslim
    props = dict(json.loads(json.dumps(meta, default=_plain)))
    props.update({
        "source_checkpoint": os.path.basename(checkpoint),
        "source_sha256": sha256(checkpoint),
        "export_tools": {"torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxslim": onnxslim.__version__, "onnxruntime": onnxruntime.__version__,
                         "opset": OPSET},
    })
    del model.metadata_props[:]
    for key, value in sorted(to_string_props(props).items()):
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "maskgate"
    return model


def preprocess(images, meta):
    """Real face images -> the model's float32 NCHW batch, through train's eval transform."""
    return np.stack([eval_transform(rgb, meta).numpy() for _, rgb in images]).astype(np.float32)


def torch_probs(wrapped, batch, chunk=16):
    """PyTorch reference probabilities for a numpy batch."""
    with torch.no_grad():
        return np.concatenate([wrapped(torch.from_numpy(batch[i:i + chunk])).numpy()
                               for i in range(0, len(batch), chunk)])


def ort_probs(path, batch, chunk=16):
    """onnxruntime (CPU) probabilities for a numpy batch, in chunks of the dynamic batch axis."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["probs"], {"input": batch[i:i + chunk]})[0]
                           for i in range(0, len(batch), chunk)])


def check_parity(reference, onnx_path, batch, tol=PARITY_TOL, tie=0.0, what="onnxruntime vs PyTorch"):
    """Run ``onnx_path`` on ``batch`` and compare with ``reference`` probabilities.

    Prints the numbers; raises ``ParityError`` if any top class differs (except, with
    ``tie`` > 0, where the reference's top-two margin is below ``tie``) or the largest
    probability difference exceeds ``tol``. Returns the statistics.
    """
    stats = compare(reference, ort_probs(onnx_path, batch), tie=tie)
    stats.update(tolerance=tol)
    print(describe(stats, what), flush=True)
    if stats["decisive_mismatches"] or stats["max_diff"] > tol:
        raise ParityError("%s: exported model disagrees with PyTorch (%d of %d top classes differ; max |dprob| "
                          "%.2e, tolerance %.0e); nothing written" % (
                              onnx_path, len(stats["decisive_mismatches"]), stats["n"], stats["max_diff"], tol))
    return stats


def _temp_beside(out):
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".%s." % os.path.basename(out), suffix=".tmp")
    except OSError as exc:
        raise ExportError("cannot write %s: %s" % (out, exc.strerror or exc))
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model file is meant to be read by the service user
    return tmp


def _remove(path):
    if path and os.path.exists(path):
        os.remove(path)


def fp16_variant(model, reference, batch, out):
    """Write an FP16-weight copy (float32 input/output kept) after checking it against ``reference``."""
    from onnxconverter_common import float16  # optional: pip install onnxconverter-common
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per weight below fp16's smallest normal
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    half.metadata_props.add(key="onnx_precision", value=json.dumps("fp16"))
    tmp = _temp_beside(out)
    try:
        onnx.save(half, tmp)
        stats = check_parity(reference, tmp, batch, tol=FP16_TOL, tie=2 * FP16_TOL,
                             what="FP16 onnxruntime vs PyTorch")
        os.replace(tmp, out)
    finally:
        _remove(tmp)
    return stats


def export_onnx(checkpoint, out, verify_images=None, fp16=False, limit=48, flip=False):
    """Export ``checkpoint`` to a verified ONNX model at ``out``; return a report dict.

    ``flip``: the graph averages each face with its mirror image (twice the compute).

    ``verify_images``: a folder of face images (default: the development data's fmd and
    kaggle853 crops). Raises ``CheckpointError`` for a bad checkpoint, ``ExportError`` for
    an unwritable output, ``ParityError`` when onnxruntime disagrees with PyTorch; in every
    failure nothing is left at ``out`` (an existing file there is not touched).
    """
    started = time.time()
    wrapped, meta = load_for_export(checkpoint, flip)
    images = verification_images(verify_images, limit=limit, margin=meta["crop_margin"])
    batch = preprocess(images, meta)
    tmp = _temp_beside(out)
    try:
        model = export_graph(wrapped, meta, tmp)
        add_metadata(model, meta, checkpoint)
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError("exported graph fails onnx.checker: %s" % exc)
        onnx.save(model, tmp)
        reference = torch_probs(wrapped, batch)
        stats = check_parity(reference, tmp, batch)
        os.replace(tmp, out)
    finally:
        _remove(tmp)
    report = {
        "onnx": out, "sha256": sha256(out), "bytes": os.path.getsize(out), "opset": OPSET,
        "nodes": len(model.graph.node), "ops": sorted({n.op_type for n in model.graph.node}),
        "parity": stats, "images": len(images), "seconds": round(time.time() - started, 2), "fp16": None,
        "tta_flip": bool(flip),
    }
    if fp16:
        fp16_out = os.path.splitext(out)[0] + ".fp16.onnx"
        report["fp16"] = dict(fp16_variant(model, reference, batch, fp16_out), onnx=fp16_out)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m export.onnx",
        description="Export a training checkpoint to a self-describing ONNX model (opset %d, dynamic batch, "
                    "softmax in the graph), written only after onnxruntime matches PyTorch on real faces "
                    "(every top class equal, |dprob| <= %g)." % (OPSET, PARITY_TOL))
    parser.add_argument("checkpoint", help="a checkpoint written by train (.pt)")
    parser.add_argument("-o", "--output", help="ONNX path (default: the checkpoint's name with .onnx)")
    parser.add_argument("--verify", metavar="FOLDER",
                        help="face images for the parity check (default: ../shared/data fmd + kaggle853 crops)")
    parser.add_argument("--images", type=int, default=48, help="how many verification images (default 48)")
    parser.add_argument("--fp16", action="store_true",
                        help="also write OUT.fp16.onnx (FP16 weights, float32 I/O), checked to |dprob| <= %g "
                             "and no confident top class flipped" % FP16_TOL)
    parser.add_argument("--tta-flip", action="store_true",
                        help="test-time flip inside the graph: average each face with its mirror image "
                             "(twice the compute per face)")
    args = parser.parse_args(argv)
    out = args.output or os.path.splitext(args.checkpoint)[0] + ".onnx"
    print("exporting %s -> %s (opset %d)" % (args.checkpoint, out, OPSET), flush=True)
    try:
        report = export_onnx(args.checkpoint, out, args.verify, fp16=args.fp16, limit=args.images, flip=args.tta_flip)
    except (CheckpointError, MetadataError, ExportError, FileNotFoundError, ImportError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print("wrote %s: %d nodes%s, %.1f MB, sha256 %s, verified on %d real images, %.1f s" % (
        out, report["nodes"], ", test-time flip in the graph" if report["tta_flip"] else "",
        report["bytes"] / 1e6, report["sha256"][:16], report["images"], report["seconds"]))
    if report["fp16"]:
        print("wrote %s (FP16 weights)" % report["fp16"]["onnx"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
