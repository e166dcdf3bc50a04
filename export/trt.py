"""``python -m export.trt MODEL``: a verified ONNX model (or a checkpoint) -> a TensorRT engine + sidecar.

MODEL is the classifier (``models/mask_classifier.onnx``, or a checkpoint) or the face
detector (``models/face_detector.onnx``, recognised by its metadata: one engine for frames
up to ``--max-side`` px, checked against onnxruntime on mosaics of real faces,
``edge.infer.detectors.retinaface_trt``).

Runs on the device that will use the engine (a Jetson Nano: Python 3.6, TensorRT 8.2), so
this module is torch-free; a checkpoint is first exported through ``export.onnx`` (imported
only then, on a workstation). Building, caching and checking engines is
``edge.infer.classify.engine``, which the service also uses for the engine it builds on
first start: this is its command line, which also writes an engine to a path of your choice.
"""
import argparse
import os
import sys

from edge.errors import ModelError
from edge.infer.classify.base import DEFAULT_MAX_BATCH
from edge.infer.classify.engine import DEFAULT_WORKSPACE_MB, BuildError, build_verified
from edge.infer.classify.onnx_meta import read_metadata_props, read_onnx_metadata
from edge.infer.classify.sidecar import sidecar_path
from edge.infer.model_meta import MetadataError
from export.samples import verification_images

VERIFY_IMAGES = 200  # enough that one flipped near-tie (0.5%) does not fail the check alone


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m export.trt", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Build a TensorRT engine (+ ENGINE.json sidecar) from an exported ONNX model, or from a "
                    "checkpoint (exported first), and check it against onnxruntime on real face crops. Run it "
                    "on the device that will use the engine: engines are tied to their TensorRT version and GPU.")
    parser.add_argument("model", help="an ONNX model from export.onnx, or a training checkpoint (.pt)")
    parser.add_argument("-o", "--output", help="engine path (default: the model's name with .engine)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="largest batch of faces")
    parser.add_argument("--max-side", type=int, default=960,
                        help="face detector: the largest frame side the engine takes (the detector's input size)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="FP16 (the default)")
    mode.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="full precision")
    mode.add_argument("--int8", dest="precision", action="store_const", const="int8",
                      help="INT8 calibrated on --calib (Xavier/Orin; the Nano has no INT8)")
    parser.add_argument("--calib", metavar="FOLDER", help="face images for INT8 calibration (a few hundred)")
    parser.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MB, metavar="MB",
                        help="builder scratch memory")
    parser.add_argument("--verify", metavar="FOLDER", help="face images for the engine check (default: the "
                        "crops shipped beside the model, else ../shared/data)")
    parser.add_argument("--images", type=int, default=VERIFY_IMAGES, help="how many verification images")
    args = parser.parse_args(argv)
    args.precision = args.precision or "fp16"
    if not os.path.isfile(args.model):
        parser.error("model not found: %s" % args.model)
    if not args.model.endswith((".onnx", ".pt", ".pth")):
        parser.error("%s: give an .onnx model or a .pt checkpoint" % args.model)
    if args.max_batch < 1 or args.workspace < 1 or args.max_side < 32:
        parser.error("--max-batch and --workspace must be positive, --max-side at least 32")
    if args.precision == "int8" and not args.calib:
        parser.error("--int8 needs --calib FOLDER (real face crops to calibrate on)")
    if args.calib and not os.path.isdir(args.calib):
        parser.error("calibration folder not found: %s" % args.calib)
    return args


def _export_first(checkpoint, verify):
    """A checkpoint -> its verified ONNX beside it (workstation only: this imports torch)."""
    try:
        from export.onnx import ExportError, export_onnx
    except ImportError as exc:
        raise BuildError("exporting a checkpoint needs PyTorch and onnx (%s). On a Jetson, export on the "
                         "workstation (python -m export.onnx %s), copy the .onnx here and give that instead"
                         % (exc, checkpoint))
    onnx_path = os.path.splitext(checkpoint)[0] + ".onnx"
    print("exporting %s -> %s first" % (checkpoint, onnx_path), flush=True)
    try:
        export_onnx(checkpoint, onnx_path, verify)
    except (ExportError, ValueError, FileNotFoundError) as exc:
        raise BuildError("cannot export %s: %s" % (checkpoint, exc))
    return onnx_path


def _check_images(args, onnx_path, log):
    """The crops the engine is checked on; [] (said) when none can be found."""
    try:
        margin = read_onnx_metadata(onnx_path)["crop_margin"]
        return verification_images(args.verify, limit=args.images, margin=margin, model=onnx_path)
    except FileNotFoundError as exc:
        log("engine check skipped: %s" % exc)
        return []


def is_face_detector(onnx_path):
    """True for an export of ``python -m train.detector.export`` (its metadata says so)."""
    from edge.infer.detectors.retinaface_format import METADATA_KIND
    return read_metadata_props(onnx_path).get("maskgate_model") == METADATA_KIND


def _build_detector(args, onnx_path, engine, log):
    from edge.infer.detectors.retinaface_trt import build_verified_detector, max_side_for
    try:
        faces = verification_images(args.verify, limit=48, model=onnx_path)
    except FileNotFoundError as exc:
        log("engine check skipped: %s" % exc)
        faces = []
    build_verified_detector(onnx_path, engine, faces, max_side_for(args.max_side), log=log,
                            precision=args.precision, workspace_mb=args.workspace)
    log("wrote %s and %s" % (engine, sidecar_path(engine)))
    return 0


def main(argv=None):
    """Entry point: build, check, and report; exit status 0, or 1 with the reason."""
    args = _parse_args(argv)
    log = lambda line: print(line, flush=True)  # noqa: E731 (progress must show while TensorRT works)
    try:
        onnx_path = args.model if args.model.endswith(".onnx") else _export_first(args.model, args.verify)
        engine = args.output or os.path.splitext(onnx_path)[0] + ".engine"
        if is_face_detector(onnx_path):
            return _build_detector(args, onnx_path, engine, log)
        calib = verification_images(args.calib, limit=512) if args.precision == "int8" else None
        build_verified(onnx_path, engine, _check_images(args, onnx_path, log), log=log,
                       max_batch=args.max_batch, precision=args.precision, workspace_mb=args.workspace,
                       calib_images=calib)
    except (ModelError, MetadataError, ValueError, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    log("wrote %s and %s" % (engine, sidecar_path(engine)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
