"""``python -m export.trt MODEL``: a verified ONNX model (or a checkpoint) -> a TensorRT engine + sidecar.

Runs on the device that will use the engine (a Jetson Nano: Python 3.6, TensorRT 8.2),
so this module and what it imports are torch-free and 3.6-compatible; a checkpoint is
first exported through ``export.onnx`` (imported only then, on a workstation). One
optimization profile covers batches 1..max; FP16 by default; INT8 (calibrated on real
face crops) where the GPU has fast INT8 (Xavier, Orin), refused on the Nano.
"""
import argparse
import contextlib
import hashlib
import os
import re
import sys
import tempfile
import threading
import time

from edge import trt_compat
from edge.errors import ModelError
from edge.trt_backend import (TrtClassifier, check_sidecar, gpu_name, import_pycuda, import_tensorrt,
                              read_sidecar, sidecar_path, write_sidecar)
from export.onnx_meta import MetadataError, file_sha256, read_onnx_metadata
from export.parity import compare, describe
from export.samples import device_batch, verification_images

PRECISIONS = ("fp32", "fp16", "int8")
OPT_BATCH = 4  # kernels are tuned for this batch: a Nano frame rarely holds more faces
DEFAULT_WORKSPACE_MB = 256
MIN_AGREE = 0.995  # engine vs onnxruntime argmax agreement (FP16 flips a near-tie now and then)
VERIFY_IMAGES = 200  # enough that one flipped near-tie (0.5%) does not fail the check alone


class BuildError(RuntimeError):
    """TensorRT could not build (or verify) an engine."""


def cache_key(onnx_sha256, trt_version, gpu, precision, max_batch):
    """Every fact an engine depends on, as a file-name fragment (after jetson-inference's cache)."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
    return "%s.trt%s.%s.%s.b%d" % (onnx_sha256[:16], trt_version, slug, precision, int(max_batch))


def cached_engine_path(onnx_path, cache_dir, onnx_sha256, trt_version, gpu, precision, max_batch):
    """``CACHE/<onnx stem>.<cache key>.engine``."""
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    return os.path.join(cache_dir, "%s.%s.engine" % (stem, cache_key(onnx_sha256, trt_version, gpu,
                                                                       precision, max_batch)))


@contextlib.contextmanager
def _progress(trt, config, log, every=15.0):
    """Show that a long build is alive: TensorRT's phases where it reports them, else a clock."""
    monitor = trt_compat.attach_progress(trt, config, log)
    done = threading.Event()
    started = time.time()

    def tick():
        while not done.wait(every):
            log("  building... %.0f s" % (time.time() - started))
    ticker = None if monitor else threading.Thread(target=tick, name="trt-build-clock")
    if ticker:
        ticker.daemon = True
        ticker.start()
    try:
        yield monitor
    finally:
        done.set()
        log("build took %.0f s" % (time.time() - started))


def _atomic_write(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build_engine(onnx_path, engine_path, max_batch=16, precision="fp16", workspace_mb=DEFAULT_WORKSPACE_MB,
                 calib_folder=None, log=print):
    """Build ``engine_path`` (+ its sidecar) from an exported ONNX model; return the sidecar dict."""
    if precision not in PRECISIONS:
        raise ValueError("precision %r: choose one of %s" % (precision, ", ".join(PRECISIONS)))
    meta = read_onnx_metadata(onnx_path)  # a foreign ONNX fails here, before minutes of building
    with open(onnx_path, "rb") as f:
        data = f.read()
    trt, cuda = import_tensorrt(), import_pycuda()
    gpu = gpu_name(cuda)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if precision == "int8" and not trt_compat.has_fast(builder, "int8"):
        raise BuildError("INT8 refused: %s has no fast INT8 (the Jetson Nano's Maxwell GPU has none); "
                         "build with --fp16 instead. INT8 pays off on Xavier and Orin." % gpu)
    if precision == "fp16" and not trt_compat.has_fast(builder, "fp16"):
        log("warning: %s has no fast FP16; the engine will work but gain little" % gpu)
    network = builder.create_network(trt_compat.network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError("TensorRT %s cannot parse %s:\n  %s" % (trt.__version__, onnx_path, errors))
    config = builder.create_builder_config()
    trt_compat.set_workspace(trt, config, int(workspace_mb) << 20)
    chw = (3, int(meta["input_size"][0]), int(meta["input_size"][1]))
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1,) + chw, (min(OPT_BATCH, max_batch),) + chw, (max_batch,) + chw)
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32
    ctx = cuda.Device(0).retain_primary_context()  # the calibrator's buffer needs a current context
    ctx.push()
    try:
        if precision == "int8":
            from export.calibrate import make_calibrator
            images = verification_images(calib_folder, limit=512, margin=meta["crop_margin"])
            log("INT8 calibration on %d real images from %s" % (len(images), calib_folder))
            config.set_flag(trt.BuilderFlag.INT8)
            # The ranges cache is keyed on the model: a retrained model never reuses stale ranges.
            table = "%s.%s.calib" % (engine_path, hashlib.sha256(data).hexdigest()[:16])
            if os.path.isfile(table):
                log("reusing INT8 calibration table %s (delete it to recalibrate)" % table)
            config.int8_calibrator = make_calibrator(trt, cuda, device_batch(images, meta), table)
            trt_compat.set_calibration_profile(config, profile)
        log("building %s engine (TensorRT %s, %s, batch 1..%d, workspace %d MB)"
            % (precision.upper(), trt.__version__, gpu, max_batch, workspace_mb))
        with _progress(trt, config, log):
            serialized = builder.build_serialized_network(network, config)
    finally:
        ctx.pop()
        ctx.detach()
    if serialized is None:
        raise BuildError("TensorRT failed to build %s (messages above); a larger --workspace may help" % onnx_path)
    info = {"meta": meta, "onnx": os.path.basename(onnx_path), "onnx_sha256": hashlib.sha256(data).hexdigest(),
            "tensorrt": trt.__version__, "gpu": gpu, "precision": precision, "max_batch": int(max_batch),
            "workspace_mb": int(workspace_mb), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _atomic_write(engine_path, serialized)  # IHostMemory: a buffer, written as the samples do
    write_sidecar(engine_path, info)
    return info


def ensure_engine(onnx_path, cache_dir, max_batch=16, precision="fp16", workspace_mb=DEFAULT_WORKSPACE_MB,
                  log=print):
    """The cached engine for this model, TensorRT, GPU, precision and max batch; built on first use."""
    trt, cuda = import_tensorrt(), import_pycuda()
    sha, gpu = file_sha256(onnx_path), gpu_name(cuda)
    path = cached_engine_path(onnx_path, cache_dir, sha, trt.__version__, gpu, precision, max_batch)
    if os.path.isfile(path):
        try:
            info = check_sidecar(read_sidecar(path), trt.__version__, gpu, path)
            if info["onnx_sha256"] == sha:
                return path
        except ModelError as exc:
            log("engine cache: %s; rebuilding" % exc)
    if not os.path.isdir(cache_dir):
        os.makedirs(cache_dir)
    log("engine cache: building %s (once per model and device; minutes on a Nano)" % os.path.basename(path))
    build_engine(onnx_path, path, max_batch, precision, workspace_mb, log=log)
    return path


def verify_engine(engine_path, onnx_path, images, log=print):
    """Compare the engine with onnxruntime on real images; None (with a message) without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        log("verification skipped: onnxruntime is not installed (usual on a Jetson Nano, where it dropped "
            "Python 3.6 after 1.10); verify this ONNX model on a workstation with python -m export.onnx")
        return None
    with TrtClassifier(engine_path) as engine:
        batch = device_batch(images, engine.meta)
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        reference = session.run(["probs"], {"input": batch})[0]
        stats = compare(reference, engine.predict(batch), tie=0.02)
    log(describe(stats, "TensorRT %s vs onnxruntime" % engine.sidecar["precision"].upper()))
    if stats["argmax_agree"] < MIN_AGREE:
        raise BuildError("engine disagrees with onnxruntime on %d of %d images (need %.1f%% agreement)"
                         % (len(stats["mismatches"]), stats["n"], 100 * MIN_AGREE))
    return stats


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m export.trt",
        description="Build a TensorRT engine (+ ENGINE.json sidecar) from an exported ONNX model, or from a "
                    "checkpoint (exported first). Run it on the device that will use the engine: engines are "
                    "tied to their TensorRT version and GPU.")
    parser.add_argument("model", help="an ONNX model from export.onnx, or a training checkpoint (.pt)")
    parser.add_argument("-o", "--output", help="engine path (default: the model's name with .engine)")
    parser.add_argument("--max-batch", type=int, default=16, help="largest batch of faces (default 16)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="FP16 (the default)")
    mode.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="full precision")
    mode.add_argument("--int8", dest="precision", action="store_const", const="int8",
                      help="INT8 calibrated on --calib (Xavier/Orin; the Nano has no INT8)")
    parser.add_argument("--calib", metavar="FOLDER", help="face images for INT8 calibration (a few hundred)")
    parser.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MB, metavar="MB",
                        help="builder scratch memory (default %d MB)" % DEFAULT_WORKSPACE_MB)
    parser.add_argument("--verify", metavar="FOLDER", help="face images for the engine check "
                        "(default: ../shared/data when present)")
    parser.add_argument("--images", type=int, default=VERIFY_IMAGES,
                        help="how many verification images (default %d)" % VERIFY_IMAGES)
    args = parser.parse_args(argv)
    args.precision = args.precision or "fp16"
    if not os.path.isfile(args.model):
        parser.error("model not found: %s" % args.model)
    if not args.model.endswith((".onnx", ".pt", ".pth")):
        parser.error("%s: give an .onnx model or a .pt checkpoint" % args.model)
    if args.max_batch < 1 or args.workspace < 1:
        parser.error("--max-batch and --workspace must be positive")
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


def main(argv=None):
    args = _parse_args(argv)
    log = lambda line: print(line, flush=True)  # noqa: E731 (progress must show while TensorRT works)
    try:
        onnx_path = args.model if args.model.endswith(".onnx") else _export_first(args.model, args.verify)
        engine = args.output or os.path.splitext(onnx_path)[0] + ".engine"
        build_engine(onnx_path, engine, args.max_batch, args.precision, args.workspace, args.calib, log=log)
    except (BuildError, ModelError, MetadataError, ValueError, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    try:
        margin = read_onnx_metadata(onnx_path)["crop_margin"]
        images = verification_images(args.verify, limit=args.images, margin=margin)
    except FileNotFoundError as exc:
        log("verification skipped: %s" % exc)
    else:
        try:
            verify_engine(engine, onnx_path, images, log=log)
        except (BuildError, ModelError) as exc:
            for path in (engine, sidecar_path(engine)):  # an engine that failed its check is not kept
                if os.path.exists(path):
                    os.remove(path)
            print("error: %s; %s removed" % (exc, engine), file=sys.stderr)
            return 1
    log("wrote %s and %s" % (engine, sidecar_path(engine)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
