"""``python -m edge INPUT [OUTPUT ...]``: the face-mask compliance service (console: maskgate).

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
import signal
import sys
import time

from edge import config as cfg
from edge.errors import ConfigError, ModelError, SinkError, SourceError
from edge.model_meta import MetadataError

log = logging.getLogger("edge")

EPILOG = """inputs: csi://0, v4l2:///dev/video0 (or /dev/video0), video.mp4 or file://...,
  rtsp://[user:pass@]host/stream, image.jpg, a folder of images, test://
outputs: display://0, out.mp4 (.mkv .avi), rtsp://@:8554/out, http://@:8090/ (MJPEG), none
Every setting can also be set in a YAML file (--config); see edge/default_config.yaml.
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


class Stopper(object):
    """SIGINT/SIGTERM set a flag the main loop checks; a second signal stops at once."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def install(self):
        """Take over SIGINT and SIGTERM (main thread only)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            # Asked twice: the user means it. finally-blocks still close what they can.
            raise KeyboardInterrupt
        self.signal = signum
        log.info("%s received: finishing the current frame and closing outputs",
                 signal.Signals(signum).name)

    def is_set(self):
        """True once a stop was requested."""
        return self.signal is not None

    def restore(self):
        """Give the signals back to their previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def is_photo_input(config):
    """Still-photo mode: --photo, or an input that is an image file or a folder."""
    from edge.sources import IMAGE_EXTENSIONS
    path = config["input"]
    path = path[len("file://"):] if path.startswith("file://") else path
    return config["photo"] or os.path.isdir(path) or path.lower().endswith(IMAGE_EXTENSIONS)


def output_uris(config):
    """The outputs to open: display://0 by default, none when headless."""
    uris = list(config["outputs"]) or ([] if config["headless"] else ["display://0"])
    if config["headless"]:
        uris = [u for u in uris if not u.startswith("display://")]
    return [u for u in uris if u != "none"]


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
            from edge import photos
            return photos.run(config, stopper.is_set)
        return serve(config, stopper)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except (SourceError, SinkError, ModelError, MetadataError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        stopper.restore()


def serve(config, stopper):
    """Run the video service until the input ends or ``stopper`` is set; returns 0."""
    from edge import pipeline as pl
    from edge.events import EventWriter, FaceSaver
    from edge.sinks import open_sinks
    from edge.sources import first_frames, fps_from, open_source

    notify = _optional("edge.notify")
    source = events = health = pipeline = analyzer = None
    try:
        analyzer = pl.build_analyzer(config)
        log.info("detector %s, classifier %s (%s backend, classes %s)", config["detector"]["name"],
                 cfg.resolve_path(config["classifier"]["model"]), analyzer.classifier.backend,
                 ",".join(analyzer.classes))
        source = open_source(config["input"], **config["source"])
        health = _open_health(config)
        out = config["output"]
        # A file's rate comes from its first two timestamps (read now, processed first);
        # a live source is never waited on here: a camera absent at boot must not hold
        # READY back, and its rate is the one asked of it.
        first = [] if source.is_live or out["fps"] else first_frames(source, 2, stopper.is_set)
        fps = out["fps"] or (config["source"]["fps"] if source.is_live else fps_from(first))
        sinks = open_sinks(output_uris(config), fps, bitrate=out["bitrate"],
                           quality=out["quality"], token=out["token"])
        ev = config["events"]
        events = EventWriter(ev["path"], ev["flush_every"]) if ev["path"] else None
        saver = FaceSaver(ev["faces_dir"]) if ev["save_faces"] else None
        pipeline = pl.build_pipeline(config, analyzer, sinks, events, health, saver)
        heartbeat = notify.Heartbeat() if notify else None
        if notify:
            notify.ready("processing %s" % config["input"])
        result = pl.run(pipeline, source, stopper.is_set, config["max_frames"], heartbeat,
                        pending=first)
        _report(result, stopper)
    finally:
        if notify:
            notify.stopping("closing outputs")
        if pipeline is not None:
            pipeline.close()
        elif events is not None:
            events.close()
        if source is not None:
            source.close()
        if health is not None:
            health.close()
        if analyzer is not None:
            analyzer.classifier.close()
    return 0


def _optional(module):
    """Import an optional helper module (notify, health); None when it is unavailable."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        log.debug("%s unavailable: %s", module, exc)
        return None


def _open_health(config):
    h = config["health"]
    if not (h["file"] or h["http"]):
        return None
    from edge.health import Health
    return Health(path=h["file"], http=h["http"], token=h["token"])


def _report(result, stopper):
    stages = ", ".join("%s %.1f ms" % (name, s["mean_ms"]) for name, s in result["stages"].items())
    log.info("%s after %d frames in %.1f s: %.1f FPS, CPU %.1f ms/frame, %.1f faces/frame, "
             "%d classified in %d calls, %d bad frames; mean per call: %s",
             "stopped" if stopper.is_set() else "input ended", result["frames"], result["seconds"],
             result["fps"], result["cpu_ms_per_frame"] or 0.0, result["faces_per_frame"],
             result["classified"], result["predict_calls"], result["errors"], stages)


if __name__ == "__main__":
    sys.exit(main())
