"""The face-mask compliance service (``python -m edge INPUT [OUTPUT ...]``, console: maskgate).

Loads the config (defaults < --config FILE < flags), the detector and classifier, opens
the input and outputs, and runs the pipeline until the input ends or SIGINT/SIGTERM.
On the way out it flushes and closes events and outputs (a video file plays to its last
frame) and releases the camera; exit status 0. SIGHUP (``systemctl reload``) reads the
config file again between two frames and applies it (``VideoRun.reload``); a config that
is invalid or cannot be applied is logged and the running one stays. An image or a
folder of images runs still-photo mode instead. Errors in the setup (a missing model, an
absent camera, a bad setting) end with one clear line and status 1 (2 for a bad setting).
"""
import argparse
import logging
import os
import sys
import time

from edge.app import config as cfg
from edge.app import notify, photos
from edge.app.assemble import VideoRun, is_photo_input
from edge.app.events import new_run_id
from edge.app.pipeline import run, summary
from edge.app.signals import Stopper
from edge.common import redact, resolve_path
from edge.errors import FAILURES, ConfigError, exit_status
from edge.infer.detectors.retinaface_format import floors_text

log = logging.getLogger("edge")

EPILOG = """inputs: csi://0, v4l2:///dev/video0 (or /dev/video0), video.mp4 or file://...,
  rtsp://[user:pass@]host/stream, image.jpg, a folder of images, test://
outputs: display://0, out.mp4 (.mkv .avi), rtsp://@:8554/out (this machine only;
  rtsp://USER:PASS@0.0.0.0:8554/out, or --rtsp-password, to watch from others),
  http://@:8090/ (MJPEG; beyond localhost with ?token= or --http-token), none
Every setting can also be set in a YAML file (--config); see edge/app/default_config.yaml.
SIGHUP reads the --config file again and applies it (an invalid one is logged and ignored).
"""


def build_parser(prog=None):
    """The command line: INPUT, OUTPUT..., --config, and one flag per setting."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Face-mask compliance camera: every face classified, "
        "overlay and events out.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", help="input URI or path (config: input)")
    parser.add_argument("outputs", nargs="*", metavar="OUTPUT",
                        help="output URIs (config: outputs)")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument("--print-config", action="store_true",
                        help="print the merged settings as YAML and exit")
    cfg.add_arguments(parser)
    return parser


def setup_logging(level):
    """Log to stderr; under systemd ($JOURNAL_STREAM) without timestamps (the journal adds them)."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def main(argv=None):
    """Entry point of ``python -m edge`` and the ``maskgate`` console script."""
    parser = build_parser("maskgate" if os.path.basename(sys.argv[0]) == "maskgate"
                          else "python -m edge")
    args = parser.parse_args(argv)
    overrides = cfg.overrides_from_args(args)
    if args.input:
        overrides["input"] = args.input
    if args.outputs:
        overrides["outputs"] = args.outputs
    setup_logging("info")
    # SIGHUP from here on is a reload request, never the default (which would kill us).
    stopper = Stopper(reload=True).install()
    try:
        try:
            config = cfg.load(args.config, overrides)
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        setup_logging(config["log_level"])
        if args.print_config:
            sys.stdout.write(cfg.dump(config))
            return 0
        if not config["input"]:
            parser.error("an INPUT is needed (as the first argument or `input:` in --config)")
        if is_photo_input(config):
            return photos.run(config, stopper.is_set)
        return serve(config, stopper, lambda: cfg.load(args.config, overrides))
    except FAILURES as exc:
        log.error("%s", exc)
        return exit_status(exc)
    finally:
        stopper.restore()


def serve(config, stopper, reread=None):
    """Run the video service until the input ends or ``stopper`` is set; returns 0.

    ``reread()``: the configuration read again (file + flags) when SIGHUP asks for it.
    """
    video = None
    seconds = cpu = 0.0
    try:
        video = VideoRun(config, should_stop=stopper.is_set, run_id=new_run_id())
        _describe(video)
        if video.health is not None:
            video.health.update(reloads=0, last_reload=None)
        heartbeat = notify.Heartbeat()
        notify.ready("processing %s" % redact(config["input"]))
        while True:
            pending, video.first = video.first, []
            result = run(video.pipeline, video.source, stopper.interrupted, video.config["max_frames"],
                         heartbeat, pending=pending)
            seconds, cpu = seconds + result["seconds"], cpu + (result["cpu_seconds"] or 0.0)
            if not stopper.interrupted() or not stopper.take_reload():
                break  # the input ended, max_frames, or a stop
            _reload(video, reread)
        _report(summary(video.pipeline, seconds, cpu), stopper)
    finally:
        notify.stopping("closing outputs")
        if video is not None:
            video.close()
    return 0


def _describe(video):
    """Log the models in use and put the backend (and why, after a fallback) in health."""
    config, classifier = video.config, video.analyzer.classifier
    detector = video.analyzer.detector
    detector_backend = getattr(detector, "backend", None)
    detector_fallback = getattr(detector, "fallback", None)
    parts = [getattr(detector, "path", None), detector_backend and "%s backend" % detector_backend,
             detector_fallback and "fallback: %s" % detector_fallback, "confidence %g" % detector.confidence,
             floors_text(detector)]
    log.info("run %s: detector %s (%s), classifier %s (%s backend%s, classes %s)", video.run_id,
             config["detector"]["name"], ", ".join(p for p in parts if p),
             resolve_path(config["classifier"]["model"]), classifier.backend,
             ", fallback: %s" % classifier.fallback if classifier.fallback else "",
             ",".join(video.analyzer.classes))
    if video.health is not None:
        video.health.update(run=video.run_id, backend=classifier.backend, fallback=classifier.fallback,
                            detector_backend=detector_backend, detector_fallback=detector_fallback)


def _reload(video, reread):
    """Read the configuration again and apply it; an invalid one is logged and changes nothing."""
    notify.reloading("reloading the configuration")
    record = {"time": time.time(), "frame": video.pipeline.frames}
    try:
        if reread is None:
            raise ConfigError("this run has no configuration to read again")
        config = reread()
        if not config["input"]:
            raise ConfigError("the reloaded configuration has no input")
        with notify.keepalive():  # a new model may build a TensorRT engine for minutes
            applied = video.reload(config)
    except Exception as exc:  # noqa: whatever went wrong, the running configuration goes on
        if isinstance(exc, FAILURES + (OSError,)):
            log.error("reload failed, the running configuration stays: %s", exc)
        else:
            log.exception("reload failed, the running configuration stays")
        record.update(ok=False, error="%s: %s" % (type(exc).__name__, exc))
    else:
        setup_logging(config["log_level"])
        log.info("configuration reloaded: changed %s; kept %s", ", ".join(applied["changed"]) or "nothing",
                 ", ".join(applied["kept"]) or "nothing")
        record.update(ok=True, **applied)
        _describe(video)
    if video.health is not None:
        video.health.update(reloads=video.reloads, last_reload=record)
    notify.ready("processing %s" % redact(video.config["input"]))


def _report(result, stopper):
    stages = ", ".join("%s %.1f ms" % (name, s["mean_ms"]) for name, s in result["stages"].items())
    log.info("%s after %d frames in %.1f s: %.1f FPS, CPU %.1f ms/frame, %.1f faces/frame, "
             "%d classified in %d calls, %d bad frames; mean per call: %s",
             "stopped" if stopper.is_set() else "input ended", result["frames"], result["seconds"],
             result["fps"], result["cpu_ms_per_frame"] or 0.0, result["faces_per_frame"],
             result["classified"], result["predict_calls"], result["errors"], stages)
