"""TensorRT engines: built from a verified ONNX model, checked against onnxruntime, cached.

One home for what the command line (``python -m export.trt``) and the service (an engine
built on first use) both do, so that both verify the same way and both report progress
through the ``log`` callable they pass (the service's logger, the CLI's console). One
optimization profile covers batches 1..max; FP16 by default; INT8 (calibrated on real face
crops) where the GPU has fast INT8 (Xavier, Orin), refused on the Nano. The cache name
holds every fact an engine depends on (after jetson-inference's cache). Torch-free and
Python 3.6: it runs on the Jetson.
"""
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time

from edge.common import atomic_write, sha256
from edge.errors import ModelError
from edge.infer.classify import trt_compat
from edge.infer.classify.base import DEFAULT_MAX_BATCH
from edge.infer.classify.onnx_meta import read_onnx_metadata
from edge.infer.classify.parity import compare, describe
from edge.infer.classify.sidecar import check_sidecar, read_sidecar, sidecar_path, write_sidecar
from edge.infer.classify.trt import TrtClassifier, gpu_name, import_pycuda, import_tensorrt
from edge.infer.preprocess import images_to_batch

PRECISIONS = ("fp32", "fp16", "int8")
OPT_BATCH = 4  # kernels are tuned for this batch: a Nano frame rarely holds more faces
DEFAULT_WORKSPACE_MB = 256
MIN_AGREE = 0.995  # engine vs onnxruntime argmax agreement (FP16 flips a near-tie now and then)

_log = logging.getLogger(__name__)


class BuildError(ModelError):
    """TensorRT could not build an engine, or the engine failed its check against onnxruntime."""


def cache_key(onnx_sha256, trt_version, gpu, precision, max_batch, shapes=None):
    """Every fact an engine depends on, as a file-name fragment; ``shapes``: the profile's
    tag when it is not a batch (the detector's ``s960``), else ``b<max_batch>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
    return "%s.trt%s.%s.%s.%s" % (onnx_sha256[:16], trt_version, slug, precision,
                                  shapes or "b%d" % int(max_batch))


def cached_engine_path(onnx_path, cache_dir, onnx_sha256, trt_version, gpu, precision, max_batch, shapes=None):
    """``CACHE/<onnx stem>.<cache key>.engine``."""
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    return os.path.join(cache_dir, "%s.%s.engine" % (stem, cache_key(onnx_sha256, trt_version, gpu,
                                                                       precision, max_batch, shapes)))


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


def serialize(onnx_path, data, shapes, precision="fp16", workspace_mb=DEFAULT_WORKSPACE_MB, log=_log.info,
              what="", calibrate=None):
    """Parse the ONNX bytes ``data`` and build a serialized engine: (bytes, the build's facts
    for the sidecar: ``onnx``, ``onnx_sha256``, ``tensorrt``, ``gpu``, ``precision``, ``workspace_mb``).

    ``shapes``: {input name: (min, opt, max) shapes}, one optimization profile;
    ``calibrate(trt, cuda, config, profile)``: sets up INT8 calibration (int8 only);
    ``what``: the build's description for the progress line (batch or frame sizes).
    """
    if precision not in PRECISIONS:
        raise ValueError("precision %r: choose one of %s" % (precision, ", ".join(PRECISIONS)))
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
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32
    ctx = cuda.Device(0).retain_primary_context()  # the calibrator's buffer needs a current context
    ctx.push()
    try:
        if precision == "int8":
            calibrate(trt, cuda, config, profile)
        log("building %s engine (TensorRT %s, %s, %s, workspace %d MB)"
            % (precision.upper(), trt.__version__, gpu, what, workspace_mb))
        with _progress(trt, config, log):
            serialized = builder.build_serialized_network(network, config)
    finally:
        ctx.pop()
        ctx.detach()
    if serialized is None:
        raise BuildError("TensorRT failed to build %s (messages above); a larger --workspace may help" % onnx_path)
    facts = {"onnx": os.path.basename(onnx_path), "onnx_sha256": hashlib.sha256(data).hexdigest(),
             "tensorrt": trt.__version__, "gpu": gpu, "precision": precision, "workspace_mb": int(workspace_mb)}
    return bytes(serialized), facts  # IHostMemory: a buffer


def write_engine(engine_path, serialized, info):
    """The engine file and its sidecar (``info`` + the build time), each written atomically."""
    info = dict(info, built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    atomic_write(engine_path, serialized)
    write_sidecar(engine_path, info)
    return info


def build_engine(onnx_path, engine_path, max_batch=DEFAULT_MAX_BATCH, precision="fp16",
                 workspace_mb=DEFAULT_WORKSPACE_MB, calib_images=None, log=_log.info):
    """Build ``engine_path`` (+ its sidecar) from an exported ONNX classifier; return the sidecar dict.

    ``calib_images``: ``(name, rgb)`` face crops for INT8 calibration (int8 only).
    """
    meta = read_onnx_metadata(onnx_path)  # a foreign ONNX fails here, before minutes of building
    if precision == "int8" and not calib_images:
        raise BuildError("INT8 needs calibration images (real face crops)")
    with open(onnx_path, "rb") as f:
        data = f.read()
    chw = (3, int(meta["input_size"][0]), int(meta["input_size"][1]))

    def calibrate(trt, cuda, config, profile):
        from edge.infer.classify.calibrate import make_calibrator
        log("INT8 calibration on %d real images" % len(calib_images))
        config.set_flag(trt.BuilderFlag.INT8)
        # The ranges cache is keyed on the model: a retrained model never reuses stale ranges.
        table = "%s.%s.calib" % (engine_path, hashlib.sha256(data).hexdigest()[:16])
        if os.path.isfile(table):
            log("reusing INT8 calibration table %s (delete it to recalibrate)" % table)
        config.int8_calibrator = make_calibrator(trt, cuda, images_to_batch(calib_images, meta), table)
        trt_compat.set_calibration_profile(config, profile)

    shapes = {"input": ((1,) + chw, (min(OPT_BATCH, max_batch),) + chw, (max_batch,) + chw)}
    serialized, facts = serialize(onnx_path, data, shapes, precision, workspace_mb, log,
                                  "batch 1..%d" % max_batch, calibrate)
    return write_engine(engine_path, serialized, dict(facts, meta=meta, max_batch=int(max_batch)))


def verify_engine(engine_path, onnx_path, images, log=_log.info):
    """Compare the engine with onnxruntime on real face crops ``(name, rgb)``; the parity stats.

    None (with a message) where onnxruntime is absent (usual on a Jetson Nano, where it
    dropped Python 3.6 after 1.10). Raises BuildError when fewer than ``MIN_AGREE`` of the
    images get the same top class.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        log("engine check skipped: onnxruntime is not installed; verify this ONNX model on a workstation "
            "with python -m export.onnx")
        return None
    with TrtClassifier(engine_path) as engine:
        batch = images_to_batch(images, engine.meta)
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        reference = session.run(["probs"], {"input": batch})[0]
        stats = compare(reference, engine.predict(batch), tie=0.02)
    log(describe(stats, "TensorRT %s vs onnxruntime" % engine.sidecar["precision"].upper()))
    if stats["argmax_agree"] < MIN_AGREE:
        raise BuildError("engine %s disagrees with onnxruntime on %d of %d images (need %.1f%% agreement)"
                         % (engine_path, len(stats["mismatches"]), stats["n"], 100 * MIN_AGREE))
    return stats


def remove_engine(engine_path):
    """Delete an engine and its sidecar (one that failed its check is never kept)."""
    for path in (engine_path, sidecar_path(engine_path)):
        if os.path.exists(path):
            os.remove(path)


def build_verified(onnx_path, engine_path, images, log=_log.info, **build_options):
    """``build_engine`` then ``verify_engine`` on ``images``; a failing engine is removed."""
    build_engine(onnx_path, engine_path, log=log, **build_options)
    if not images:
        log("engine check skipped: no face crops to check it on")
        return None
    try:
        return verify_engine(engine_path, onnx_path, images, log=log)
    except ModelError as exc:
        remove_engine(engine_path)
        raise BuildError("%s; %s removed" % (exc, engine_path))
    except Exception:
        remove_engine(engine_path)
        raise


def failure_path(engine_path):
    """Where a failed build of ``engine_path`` is remembered (``ENGINE.failed``, JSON)."""
    return engine_path + ".failed"


def ensure_engine(onnx_path, cache_dir, max_batch=DEFAULT_MAX_BATCH, precision="fp16",
                  workspace_mb=DEFAULT_WORKSPACE_MB, verify_images=None, log=_log.info):
    """The cached engine for this model, TensorRT, GPU, precision and max batch; built on first use.

    A new engine is checked against onnxruntime on ``verify_images`` (``(name, rgb)`` face
    crops) before it is cached; one that fails is deleted and BuildError raised. See
    ``cached_build`` for failures and for two processes sharing the cache.
    """
    trt, cuda = import_tensorrt(), import_pycuda()
    sha, gpu = sha256(onnx_path), gpu_name(cuda)
    path = cached_engine_path(onnx_path, cache_dir, sha, trt.__version__, gpu, precision, max_batch)
    return cached_build(path, sha, lambda: build_verified(
        onnx_path, path, verify_images, log=log, max_batch=max_batch, precision=precision,
        workspace_mb=workspace_mb), log)


def cached_build(path, onnx_sha256, build, log=_log.info, kind="classifier"):
    """``path`` when a valid engine of the ONNX ``onnx_sha256`` is there, else ``build()`` it there.

    A failed build is remembered beside it (``failure_path``): later starts raise BuildError
    at once instead of spending minutes on the same failure (the file's name holds every
    fact the build depends on, so a new model or JetPack tries again; deleting it does too).
    Two processes sharing the cache (two cameras) build one at a time: the second reuses
    the first's engine.
    """
    trt, cuda = import_tensorrt(), import_pycuda()
    cache_dir = os.path.dirname(path)
    if not os.path.isdir(cache_dir):
        os.makedirs(cache_dir)
    with _build_lock(path + ".lock", log):
        if os.path.isfile(path):
            try:
                info = check_sidecar(read_sidecar(path, kind), trt.__version__, gpu_name(cuda), path)
                if info["onnx_sha256"] == onnx_sha256:
                    return path
            except ModelError as exc:
                log("engine cache: %s; rebuilding" % exc)
        failed = _read_failure(path)
        if failed is not None:
            raise BuildError("this engine failed before (%s: %s); not trying again: delete %s to retry"
                             % (failed.get("time"), failed.get("error"), failure_path(path)))
        log("engine cache: building %s (once per model and device; minutes on a Nano)" % os.path.basename(path))
        try:
            build()
        except Exception as exc:  # noqa: remembered whatever it was, then raised as it was
            _remember_failure(path, exc)
            raise
    return path


def _read_failure(path):
    try:
        with open(failure_path(path)) as f:
            return json.load(f)
    except (OSError, IOError):
        return None
    except ValueError:
        return {"error": "unreadable record", "time": "?"}


def _remember_failure(path, exc):
    text = " ".join(("%s: %s" % (type(exc).__name__, exc)).split())[:600]
    try:
        atomic_write(failure_path(path), json.dumps(
            {"error": text, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    except OSError as err:
        _log.warning("cannot record the failed build in %s: %s", failure_path(path), err)


@contextlib.contextmanager
def _build_lock(path, log):
    """An exclusive lock on ``path`` (flock) for as long as the block runs."""
    import fcntl
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (OSError, IOError):
            log("engine cache: another process is building this engine; waiting for it")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
