"""One check a Jetson Nano owner runs once (``make nano-check``, ``scripts/nano-check.sh``),
and one report to send back: REPORT_DIR/nano-check.json and nano-check.md.

Steps, each reported as pass, fail or skip with the reason and what was measured:
  platform   L4T release (/etc/nv_tegra_release) and the JetPack it means, board, power mode
  libraries  Python, numpy, OpenCV, PyYAML, GStreamer, TensorRT, pycuda, onnxruntime
             against JetPack 4.6's (what the code is written and checked for)
  elements   the Jetson GStreamer elements the service uses
  encode     videotestsrc -> nvvidconv -> nvv4l2h264enc, and the service's own video file
             output, decoded back through its own source (nvv4l2decoder)
  camera     nvarguscamerasrc (csi://0) when the Argus daemon is up, else the first
             /dev/video*: frames through the service's own source
  engine     the shipped classifier's and face detector's FP16 TensorRT engines, built and
             checked against onnxruntime on the shipped face crops, then timed (per batch;
             per 960x540 frame)
  tests      pytest on the tests that need TensorRT, pycuda and the Jetson elements
  bench      edge-bench on the demo video (or a clip made from the shipped face crops)
Runs under the service's Python (3.6 on JetPack 4.6, standard library only here).
Exit status: 0 when no step failed, 1 otherwise.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FORMAT = "maskgate-nano-check/1"
STEPS = ("platform", "libraries", "elements", "encode", "camera", "engine", "tests", "bench")
# What JetPack 4.6.x ships, which the device code is written and checked for.
JETPACK_46 = {"python": "3.6.9", "numpy": "1.13.3", "cv2": "4.1.1", "yaml": "3.12", "gstreamer": "1.14.5",
              "tensorrt": "8.2.1", "pycuda": "2019.1.2", "onnxruntime": "1.10"}
L4T_TO_JETPACK = {"32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
                  "32.7.5": "4.6.5", "32.7.6": "4.6.6"}
JETSON_ELEMENTS = ("nvarguscamerasrc", "nvvidconv", "nvv4l2h264enc", "nvv4l2decoder", "nv3dsink")
NANO_TESTS = ["tests/export/test_export_trt.py", "tests/infer/test_fallback.py", "tests/io/test_sources.py",
              "tests/io/test_sinks.py"]
DEMO = os.path.join("videos", "kaggle853_test_scenes.mp4")


class Skip(Exception):
    """The step cannot run here (the reason says why)."""


class Fail(Exception):
    """The step ran and found a problem."""


def utc():
    return datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


def sh(cmd, timeout=120, env=None):
    """(exit status, output) of a command; 124 on timeout, 127 when it is not installed."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              universal_newlines=True, cwd=REPO, env=env)
        return proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        return 124, (exc.output or "") if isinstance(exc.output, str) else "timed out"
    except OSError as exc:
        return 127, str(exc)


def read(root, path):
    try:
        with open(os.path.join(root, path.lstrip("/")), "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\0", "").strip()
    except (IOError, OSError):
        return None


# -- the steps: each returns (one-line summary, details) or raises Skip / Fail ------------

def step_platform(ctx):
    release = read(ctx.root, "/etc/nv_tegra_release")
    details = {"machine": platform.machine(), "kernel": platform.release(),
               "model": read(ctx.root, "/proc/device-tree/model")}
    meminfo = read(ctx.root, "/proc/meminfo") or ""
    found = re.search(r"MemTotal:\s+(\d+)", meminfo)
    details["memory_mb"] = int(found.group(1)) // 1024 if found else None
    details["disk_free_gb"] = round(shutil.disk_usage(REPO).free / 1e9, 1)
    code, out = sh(["nvpmodel", "-q"], timeout=10)
    details["power_mode"] = out.strip().splitlines()[0] if code == 0 and out.strip() else None
    if release is None:
        raise Fail("not a Jetson: /etc/nv_tegra_release is absent", details)
    found = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", release)
    if not found:
        raise Fail("cannot read the L4T release from %r" % release.splitlines()[0])
    l4t = "%s.%s" % (found.group(1), found.group(2))
    details.update(l4t=l4t, jetpack=L4T_TO_JETPACK.get(l4t), nv_tegra_release=release.splitlines()[0])
    if found.group(1) != "32":
        raise Fail("L4T R%s: this project targets JetPack 4.6 (L4T R32.6-32.7)" % l4t)
    return "L4T %s = JetPack %s, %s" % (l4t, details["jetpack"] or "4.x (not 4.6)", details["model"]), details


def _version(module):
    """(version or None, error or None) of an importable module."""
    try:
        if module == "gstreamer":
            from edge.io import gst
            return ".".join(str(v) for v in gst.init().version()[:3]), None
        if module == "pycuda":
            import pycuda
            import pycuda.driver  # noqa: F401 (the part the backend needs)
            return getattr(pycuda, "VERSION_TEXT", "?"), None
        mod = __import__(module)
        return getattr(mod, "__version__", "?"), None
    except Exception as exc:  # noqa: ImportError, or a library that fails to load
        return None, "%s: %s" % (type(exc).__name__, exc)


def step_libraries(ctx):
    details, missing = {}, []
    for name, expected in sorted(JETPACK_46.items()):
        if name == "python":
            version, error = platform.python_version(), None
        else:
            version, error = _version(name)
        details[name] = {"version": version, "jetpack_4_6": expected, "error": error,
                         "same_as_jetpack": bool(version) and version.startswith(expected)}
        if version is None:
            missing.append(name)
    if details["cv2"]["version"]:
        import cv2
        details["cv2"]["gstreamer_in_build"] = bool(re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))
    if missing:
        raise Fail("missing: %s (see details for why)" % ", ".join(missing), details)
    differ = [n for n, d in details.items() if not d["same_as_jetpack"]]
    return "all present; differs from JetPack 4.6: %s" % (", ".join(differ) or "none"), details


def _gst():
    from edge.io import gst
    try:
        gst.init()
    except Exception as exc:  # noqa: no PyGObject or GStreamer
        raise Skip("GStreamer for Python is not available: %s" % exc)
    return gst


def step_elements(ctx):
    gst = _gst()
    present = dict((name, gst.has_element(name)) for name in JETSON_ELEMENTS)
    ctx.elements = present
    missing = [n for n, ok in present.items() if not ok]
    if missing:
        raise Fail("missing %s (%s)" % (", ".join(missing), gst.ELEMENT_PACKAGES[missing[0]]), present)
    return "all %d Jetson elements present" % len(present), present


def _count_frames(path):
    from edge.io.sources import open_source
    source = open_source(path)
    count = 0
    try:
        while source.is_streaming:
            count += source.read(timeout=5.0) is not None
    finally:
        source.close()
    return count


def step_encode(ctx):
    gst = _gst()
    need = [n for n in ("nvvidconv", "nvv4l2h264enc") if not gst.has_element(n)]
    if need:
        raise Skip("no %s: not a Jetson's GStreamer" % " or ".join(need))
    clip = os.path.join(ctx.out, "encode-videotestsrc.mkv")
    started = time.time()
    code, out = sh(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=90", "!",
                    "video/x-raw,width=1280,height=720,framerate=30/1", "!", "nvvidconv", "!",
                    "video/x-raw(memory:NVMM),format=I420", "!", "nvv4l2h264enc", "bitrate=4000000", "!",
                    "h264parse", "!", "matroskamux", "!", "filesink", "location=" + clip], timeout=120)
    details = {"gst_launch_exit": code, "gst_launch_seconds": round(time.time() - started, 2),
               "gst_launch_output": out[-1500:]}
    if code != 0:
        raise Fail("videotestsrc -> nvvidconv -> nvv4l2h264enc failed (exit %d)" % code, details)
    details["decoded_back"] = _count_frames(clip)
    import numpy as np

    from edge.io.sinks import open_sink
    own = os.path.join(ctx.out, "encode-service-sink.mp4")
    sink = open_sink(own, fps=30)  # the service's file output: nvv4l2h264enc on a Jetson
    for i in range(60):
        sink.write(np.full((720, 1280, 3), (i * 4) % 256, np.uint8))
    sink.close()
    encoder = [part.split()[0] for part in gst.h264_encoder(4000).split(" ! ") if "264enc" in part]
    details.update(service_sink_encoder=encoder[0] if encoder else None, service_sink_failed=sink.failed,
                   service_sink_decoded_back=_count_frames(own))
    if details["decoded_back"] != 90 or details["service_sink_decoded_back"] != 60:
        raise Fail("frames lost: %d/90 through gst-launch, %d/60 through the service's output"
                   % (details["decoded_back"], details["service_sink_decoded_back"]), details)
    return "90/90 and 60/60 frames encoded in hardware and decoded back", details


def step_camera(ctx):
    gst = _gst()
    code, _ = sh(["systemctl", "is-active", "--quiet", "maskgate"], timeout=10)
    if code == 0:
        raise Skip("maskgate.service is running and holds the camera: sudo systemctl stop maskgate, "
                   "run this again, then sudo systemctl start maskgate")
    if gst.has_element("nvarguscamerasrc") and os.path.exists(os.path.join(ctx.root, "tmp/argus_socket")):
        uri = "csi://0"
    else:
        devices = sorted(glob.glob(os.path.join(ctx.root, "dev", "video[0-9]*")))
        if not devices:
            raise Skip("no camera: no Argus socket (nvargus-daemon) and no /dev/video*")
        uri = "/dev/" + os.path.basename(devices[0])
    from edge.io.sources import open_source
    source = open_source(uri, open_timeout=15.0, reconnect=False)
    frames, shape, started = 0, None, time.time()
    try:
        while frames < 60 and time.time() - started < 30:
            frame = source.read(timeout=2.0)
            if frame is not None:
                frames, shape = frames + 1, frame.image.shape
    finally:
        source.close()
    details = {"uri": uri, "frames": frames, "shape": shape, "fps": round(frames / (time.time() - started), 1)}
    if frames < 60:
        raise Fail("%s gave %d of 60 frames in 30 s" % (uri, frames), details)
    return "%s: 60 frames of %s at %.1f fps" % (uri, "x".join(str(v) for v in shape[1::-1]), details["fps"]), details


def step_engine(ctx):
    for module in ("tensorrt", "pycuda.driver"):
        try:
            __import__(module)
        except Exception as exc:  # noqa: ImportError, or a library that fails to load
            raise Skip("%s does not import (%s): the service falls back to onnxruntime" % (module, exc))
    from edge.infer.classify import engine as engines
    from edge.infer.classify.trt import TrtClassifier, gpu_name
    from edge.infer.preprocess import images_to_batch
    from edge.infer.samples import shipped_faces
    model = os.path.join(REPO, "models", "mask_classifier.onnx")
    faces = shipped_faces(model)
    import pycuda.driver as cuda
    import tensorrt

    from edge.common import sha256
    messages = []
    # Named as the service's cache names it: edge-bench below uses it instead of building again.
    engine = engines.cached_engine_path(model, os.path.join(ctx.out, "engines"), sha256(model), tensorrt.__version__,
                                        gpu_name(cuda), "fp16", 16)
    os.makedirs(os.path.dirname(engine), exist_ok=True)
    started = time.time()
    try:
        stats = engines.build_verified(model, engine, faces, log=messages.append, max_batch=16, precision="fp16")
    except Exception as exc:  # noqa: BuildError, or TensorRT's own
        raise Fail("%s: %s" % (type(exc).__name__, exc), {"log": messages[-30:]})
    details = {"build_seconds": round(time.time() - started, 1), "engine_mb": round(os.path.getsize(engine) / 1e6, 2),
               "faces_checked": len(faces), "log": messages[-30:],
               "check": None if stats is None else dict((k, v) for k, v in stats.items() if k != "mismatches")}
    ctx.engine = engine
    latency = {}
    with TrtClassifier(engine) as clf:
        details["sidecar"] = dict((k, clf.sidecar[k]) for k in ("tensorrt", "gpu", "precision", "max_batch"))
        for batch in (1, 4, 16):
            x = images_to_batch((faces * 16)[:batch], clf.meta)
            clf.predict(x)  # warm-up
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                clf.predict(x)
                times.append(time.perf_counter() - t0)
            latency[batch] = round(1000 * sorted(times)[len(times) // 2], 2)
    details["median_ms_per_batch"] = latency
    summary = "FP16 engine built in %.0f s, %s; batch 1/4/16: %s ms" % (
        details["build_seconds"], "check skipped (no onnxruntime)" if stats is None else
        "argmax agreement %.1f%%" % (100 * stats["argmax_agree"]), "/".join(str(latency[b]) for b in (1, 4, 16)))
    details["detector"] = detector_engine(os.path.dirname(engine), faces)
    summary += "; face detector %s" % details["detector"]["summary"]
    return summary, details


def detector_engine(cache, faces):
    """The shipped face detector's engine, built into the service's cache (edge-bench then uses
    it), and its median latency on a 960x540 frame; a failure is reported, not raised."""
    from edge.infer.detectors.retinaface import SHIPPED_MODEL
    from edge.infer.detectors.retinaface_format import to_blob
    from edge.infer.detectors.retinaface_trt import TrtDetectorSession, check_frames, ensure_detector_engine
    messages, started = [], time.time()
    try:
        engine = ensure_detector_engine(SHIPPED_MODEL, cache, 960, faces=faces, log=messages.append)
    except Exception as exc:  # noqa: BuildError, or TensorRT's own: the service falls back to onnxruntime
        return {"summary": "FAILED (%s: %s)" % (type(exc).__name__, exc), "log": messages[-30:]}
    blob = to_blob(check_frames(faces, count=1)[0])
    session, times = TrtDetectorSession(engine), []
    try:
        for _ in range(21):
            t0 = time.perf_counter()
            session.run(["loc", "conf"], {"input": blob})
            times.append(time.perf_counter() - t0)
    finally:
        session.close()
    ms = round(1000 * sorted(times[1:])[len(times) // 2], 2)
    return {"summary": "engine built in %.0f s, %s ms per 960x540 frame" % (time.time() - started, ms),
            "median_ms": ms, "log": messages[-30:]}


def step_tests(ctx):
    env = dict(os.environ)
    try:
        import pytest  # noqa: F401
    except ImportError:
        target = os.path.join(ctx.out, "pytest-lib")
        code, out = sh([sys.executable, "-m", "pip", "install", "-q", "--target", target, "pytest<7.1"], timeout=600)
        if code != 0:
            raise Skip("pytest is not installed and could not be (pip install 'pytest<7.1'): %s" % out[-300:])
        env["PYTHONPATH"] = target + os.pathsep + env.get("PYTHONPATH", "")
    report = os.path.join(ctx.out, "tests.xml")
    code, out = sh([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--junitxml", report]
                   + ctx.tests, timeout=3600, env=env)
    details = {"selection": ctx.tests, "exit": code, "output_tail": out[-4000:]}
    try:
        with open(report) as f:
            head = f.read(4000)
        counts = dict((k, int(v)) for k, v in re.findall(r'\b(tests|failures|errors|skipped)="(\d+)"', head))
    except (IOError, OSError):
        counts = {}
    details.update(counts)
    details["skips"] = re.findall(r"^SKIPPED \[\d+\] (.*)$", out, re.M)
    summary = "%s tests: %s failed, %s errors, %s skipped" % (counts.get("tests", "?"), counts.get("failures", "?"),
                                                               counts.get("errors", "?"), counts.get("skipped", "?"))
    if code != 0 or not counts.get("tests"):
        raise Fail(summary, details)
    return summary, details


def demo_video(ctx):
    """(path, what it is): --video, the demo video in the shared data, else a clip of the crops."""
    if ctx.video and ctx.video != "synthetic":
        return ctx.video, "given with --video"
    for root in (os.environ.get("MASKGATE_DATA"), os.path.join(REPO, "..", "shared", "data")):
        if ctx.video != "synthetic" and root and os.path.isfile(os.path.join(root, DEMO)):
            return os.path.join(root, DEMO), "the demo video"
    return synthetic_clip(os.path.join(ctx.out, "bench-clip.mp4")), \
        "SYNTHETIC: the shipped face crops moving on a grey picture (the demo video was not found)"


def synthetic_clip(path, frames=300):
    """A 1280x720 clip of the shipped face crops gliding over a gradient, through the service's sink."""
    import cv2
    import numpy as np

    from edge.infer.samples import shipped_faces
    from edge.io.sinks import open_sink
    faces = [cv2.cvtColor(cv2.resize(rgb, (96, 112)), cv2.COLOR_RGB2BGR)
             for _, rgb in shipped_faces(os.path.join(REPO, "models", "mask_classifier.onnx"), 8)]
    if not faces:
        raise Skip("no demo video and no shipped face crops to make a clip from")
    background = np.tile(np.linspace(60, 190, 1280, dtype=np.uint8)[None, :, None], (720, 1, 3))
    sink = open_sink(path, fps=30)
    for n in range(frames):
        image = background.copy()
        for i, face in enumerate(faces):
            x, y = (100 + 140 * i + 2 * n) % 1150, 200 + 180 * (i % 3)
            image[y:y + 112, x:x + 96] = face
        sink.write(image)
    sink.close()
    return path


def step_bench(ctx):
    video, what = demo_video(ctx)
    cmd = [sys.executable, "-m", "edge.measure.bench", video, "none", "--json", "--warmup", "10",
           "--max-frames", str(ctx.bench_frames)]
    installed = "/opt/maskgate/models/detectors"
    if os.path.isdir(installed) and not os.path.isdir(os.path.join(REPO, "models", "detectors")):
        cmd += ["--models-dir", installed]
    if getattr(ctx, "engine", None):
        cmd += ["--engine-cache", os.path.dirname(ctx.engine)]
    cmd += ctx.bench_args
    code, out = sh(cmd, timeout=1800)
    details = {"video": video, "video_is": what, "command": " ".join(cmd[1:]), "exit": code}
    start = out.find("{")
    try:
        result = json.loads(out[start:]) if start >= 0 else None
    except ValueError:
        result = None
    if code != 0 or result is None:
        details["output_tail"] = out[-3000:]
        raise Fail("edge-bench failed (exit %d)" % code, details)
    run = result["run"]
    details.update(result=result)
    cpu_ms = 1000.0 * run["cpu"]["cpu_seconds"] / run["frames"] if run.get("cpu") and run["frames"] else None
    name = {"the demo video": "demo video", "given with --video": os.path.basename(video)}.get(what, "synthetic clip")
    return "%s, %d frames: %.1f FPS, %s ms CPU per frame, classifier on %s" % (
        name, run["frames"], run["fps"], "?" if cpu_ms is None else "%.0f" % cpu_ms, run.get("backend")), details


# -- running and reporting ------------------------------------------------------------------

def run_steps(ctx, names):
    results = []
    for name in names:
        started = time.time()
        entry = {"name": name}
        try:
            summary, details = globals()["step_" + name](ctx)
            entry.update(status="pass", summary=summary, details=details)
        except Skip as exc:
            entry.update(status="skip", summary=str(exc), details={})
        except Fail as exc:
            entry.update(status="fail", summary=str(exc.args[0]), details=exc.args[1] if len(exc.args) > 1 else {})
        except Exception as exc:  # noqa: a step that breaks is a failed step, the others still run
            entry.update(status="fail", summary="%s: %s" % (type(exc).__name__, exc),
                         details={"traceback": traceback.format_exc()[-3000:]})
        entry["seconds"] = round(time.time() - started, 2)
        results.append(entry)
        print("%-9s %-4s %s" % (name, entry["status"].upper(), entry["summary"]), flush=True)
    return results


def markdown(report):
    lines = ["# maskgate nano-check", "",
             "%s to %s on `%s` (%s), commit `%s`." % (report["started"], report["finished"], report["host"]["hostname"],
                                                    report["host"]["machine"], report["git"]),
             "", "| step | result | seconds | summary |", "|---|---|---|---|"]
    for step in report["steps"]:
        lines.append("| %s | %s | %s | %s |" % (step["name"], step["status"].upper(), step["seconds"],
                                                step["summary"].replace("|", "/")))
    lines += ["", "pass %(pass)d, fail %(fail)d, skip %(skip)d" % report["summary"], ""]
    for step in report["steps"]:
        if step["details"]:
            lines += ["## %s" % step["name"], "", "```json",
                      json.dumps(step["details"], indent=2, sort_keys=True, default=str), "```", ""]
    lines.append("Send `nano-check.json` and `nano-check.md` back to the maskgate maintainers.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nano-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "out", "nano-check"), help="report folder")
    parser.add_argument("--steps", default=",".join(STEPS), help="steps to run (default: all)")
    parser.add_argument("--video", help="video for edge-bench (default: the demo video, else a clip made "
                        "from the shipped face crops; 'synthetic': that clip)")
    parser.add_argument("--bench-frames", type=int, default=300, help="frames edge-bench measures")
    parser.add_argument("--bench-args", default="", help="more edge-bench arguments (one string)")
    parser.add_argument("--tests", default=" ".join(NANO_TESTS), help="pytest selection (one string)")
    parser.add_argument("--root", default="/", help=argparse.SUPPRESS)  # tests: a made-up /etc and /proc
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        parser.error("unknown step(s) %s; known: %s" % (", ".join(unknown), ", ".join(STEPS)))
    os.makedirs(args.out, exist_ok=True)
    ctx = argparse.Namespace(root=args.root, out=os.path.abspath(args.out), video=args.video,
                             bench_frames=args.bench_frames, bench_args=args.bench_args.split(),
                             tests=args.tests.split(), engine=None)
    code, commit = sh(["git", "rev-parse", "--short", "HEAD"], timeout=10)
    report = {"format": FORMAT, "started": utc(),
              "host": {"hostname": platform.node(), "machine": platform.machine(), "python": sys.executable},
              "git": commit.strip() if code == 0 else None}
    report["steps"] = run_steps(ctx, names)
    report["finished"] = utc()
    report["summary"] = dict((s, sum(1 for r in report["steps"] if r["status"] == s)) for s in ("pass", "fail", "skip"))
    with open(os.path.join(ctx.out, "nano-check.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    with open(os.path.join(ctx.out, "nano-check.md"), "w") as f:
        f.write(markdown(report))
    print("report: %s/nano-check.json and nano-check.md (pass %d, fail %d, skip %d): please send both back"
          % (ctx.out, report["summary"]["pass"], report["summary"]["fail"], report["summary"]["skip"]))
    return 1 if report["summary"]["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
