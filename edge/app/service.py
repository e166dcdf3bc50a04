"""The face-mask compliance service (``python -m edge INPUT [OUTPUT ...]``, console: maskgate).

Loads the config (defaults < --config FILE < flags), the detector and classifier, opens
the input and outputs, and runs the pipeline until the input ends or SIGINT/SIGTERM.
On the way out it flushes and closes events and outputs (a video file plays to its last
frame) and releases the camera; exit status 0. An image or a folder of images runs
still-photo mode instead. Errors in the setup (a missing model, an absent camera, a bad
setting) end with one clear line and status 1 (2 for a bad setting).
"""
import argparse
import logging
import os
import sys

from edge.app import config as cfg
from edge.app import notify, photos
from edge.app.assemble import VideoRun, is_photo_input
from edge.app.pipeline import run
from edge.app.signals import Stopper
from edge.common import resolve_path
from edge.errors import FAILURES, ConfigError, exit_status

log = logging.getLogger("edge")

EPILOG = """inputs: csi://0, v4l2:///dev/video0 (or /dev/video0), video.mp4 or file://...,
  rtsp://[user:pass@]host/stream, image.jpg, a folder of images, test://
outputs: display://0, out.mp4 (.mkv .avi), rtsp://@:8554/out (this machine only;
  rtsp://USER:PASS@0.0.0.0:8554/out to watch from others), http://@:8090/ (MJPEG), none
Every setting can also be set in a YAML file (--config); see edge/app/default_config.yaml.
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
    stopper = Stopper().install()
    try:
        if is_photo_input(config):
            return photos.run(config, stopper.is_set)
        return serve(config, stopper)
    except FAILURES as exc:
        log.error("%s", exc)
        return exit_status(exc)
    finally:
        stopper.restore()


def serve(config, stopper):
    """Run the video service until the input ends or ``stopper`` is set; returns 0."""
    video = None
    try:
        video = VideoRun(config, should_stop=stopper.is_set)
        log.info("detector %s, classifier %s (%s backend, classes %s)", config["detector"]["name"],
                 resolve_path(config["classifier"]["model"]), video.analyzer.classifier.backend,
                 ",".join(video.analyzer.classes))
        heartbeat = notify.Heartbeat()
        notify.ready("processing %s" % config["input"])
        result = run(video.pipeline, video.source, stopper.is_set, config["max_frames"], heartbeat,
                     pending=video.first)
        _report(result, stopper)
    finally:
        notify.stopping("closing outputs")
        if video is not None:
            video.close()
    return 0


def _report(result, stopper):
    stages = ", ".join("%s %.1f ms" % (name, s["mean_ms"]) for name, s in result["stages"].items())
    log.info("%s after %d frames in %.1f s: %.1f FPS, CPU %.1f ms/frame, %.1f faces/frame, "
             "%d classified in %d calls, %d bad frames; mean per call: %s",
             "stopped" if stopper.is_set() else "input ended", result["frames"], result["seconds"],
             result["fps"], result["cpu_ms_per_frame"] or 0.0, result["faces_per_frame"],
             result["classified"], result["predict_calls"], result["errors"], stages)
