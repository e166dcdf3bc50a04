"""``edge-bench INPUT [OUTPUT ...]``: how fast the service runs, stage by stage.

It runs the service's own code (``edge.app.assemble.VideoRun`` and ``edge.app.pipeline.run``)
on a video, camera or folder with the service's settings (the same flags as ``python -m
edge``, those that act here), first ``--warmup`` frames unmeasured, then reports per stage
(capture = read/decode, detect, preprocess, classify, track, draw, write = encode)
p50/p95/p99 latency, end-to-end FPS, faces per frame, classifications per second, CPU
use and peak memory (and GPU load, power and temperatures on a Jetson with jetson-stats).
Drawing and encoding are timed when there is an OUTPUT (``none`` draws and discards).

- ``--vs-baseline``: the same input again, every face classified on every frame one at a
  time (the ``baseline`` setting), with the same models; the report gives the FPS ratio.
  ``--baseline`` alone measures that configuration only, as it means for the service.
- ``--batch 1,4,8,16`` and/or ``--models a.onnx,b.onnx``: a classifier sweep on real
  face crops of the input (faces/s, ms per face, per-batch latency) to choose the input
  size and batch on numbers.
- A FLOPs count of the detector and classifier and a Jetson Nano estimate from the
  Nano's 472 GFLOPS FP16 peak (edge/measure/flops.py), marked as an estimate.
"""
import argparse
import collections
import json
import logging
import os
import sys

from edge.app import config as cfg
from edge.app.assemble import VideoRun, is_photo_input
from edge.app.pipeline import run
from edge.app.signals import Stopper
from edge.common import resolve_path
from edge.errors import FAILURES, ConfigError, SourceError, exit_status
from edge.infer.analyzer import FaceAnalyzer, StageTimer
from edge.measure import benchstats, benchsweep, flops, tables

log = logging.getLogger("edge.bench")


def build_parser():
    """The command line: INPUT, OUTPUT..., bench options, and the service's setting flags."""
    parser = argparse.ArgumentParser(
        prog="edge-bench", description="Speed of the face-mask service, stage by stage.",
        epilog="--vs-baseline: after the configured run, run the same input again with every face "
        "classified on every frame one at a time (the --baseline setting), and report the FPS "
        "ratio. Sweeps: --batch "
        "1,4,8,16 and --models a.onnx,b.onnx time the classifier on real face crops of INPUT. "
        "The Nano figures are estimates from FLOPs, not measurements.")
    parser.add_argument("input", help="video, camera URI or folder of images (as for python -m edge)")
    parser.add_argument("outputs", nargs="*", metavar="OUTPUT",
                        help="outputs to time drawing and encoding with (none: draw, discard)")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--warmup", type=int, default=10, metavar="N",
                        help="frames processed before measuring (default 10)")
    parser.add_argument("--vs-baseline", action="store_true",
                        help="also measure the baseline (every face, every frame, one at a time) and "
                        "report the ratio")
    parser.add_argument("--batch", metavar="LIST", help="classifier sweep: batch sizes, e.g. 1,4,8,16")
    parser.add_argument("--models", metavar="LIST",
                        help="classifier sweep: ONNX models (e.g. trained at 64, 96, 128 px)")
    parser.add_argument("--sweep-faces", type=int, default=64, metavar="N",
                        help="face crops in the sweep (default 64)")
    parser.add_argument("--sweep-repeat", type=int, default=5, metavar="N",
                        help="passes over the crops per sweep point (default 5)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOPs count / Nano estimate")
    # What acts in a measurement; the health file and logging do not. --health-http
    # (the HTTP server: /metrics, the page) and --mqtt do: their cost is measured.
    cfg.add_arguments(parser, exclude=("input", "outputs", "headless", "log_level", "health.file"))
    return parser


def _ints(text, what):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError("%s %r: expected comma-separated integers" % (what, text))
    if not values or min(values) < 1:
        raise ConfigError("%s %r: expected integers >= 1" % (what, text))
    return values


def baseline_outputs(uris):
    """The outputs of the baseline run: files get a ``_baseline`` suffix, others are reused."""
    out = []
    for uri in uris:
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        stem, ext = os.path.splitext(path)
        if "://" not in path and ext and uri != "none":
            out.append(stem + "_baseline" + ext)
        else:
            out.append(uri)
    return out


# A live source has no end: without --max-frames it is measured for this many frames.
LIVE_FRAMES = 300


def measure(config, analyzer=None, warmup=10, outputs=(), should_stop=None):
    """Run the service pipeline over ``config["input"]``; (the measured dict of one run, analyzer).

    ``analyzer``: already-loaded models to reuse (the baseline run uses the default run's,
    so that both measure the same models). ``should_stop()`` ends the measurement early
    (Ctrl-C): what was measured is reported.
    """
    timer = StageTimer()
    if analyzer is not None:
        analyzer = FaceAnalyzer(analyzer.detector, analyzer.classifier, timer=timer,
                                max_batch=1 if config["baseline"] else config["classifier"]["max_batch"],
                                non_compliant_threshold=config["classifier"]["non_compliant_threshold"])
    with VideoRun(config, outputs=outputs, analyzer=analyzer, timer=timer,
                  health=bool(config["health"]["http"]), should_stop=should_stop) as video:
        analyzer, pipeline = video.analyzer, video.pipeline
        video._owns_analyzer = False  # handed back to the caller, who closes it
        pending = video.first
        if warmup:
            sys.stderr.write("edge-bench: %d warm-up frames ...\n" % warmup)
            run(pipeline, video.source, should_stop, max_frames=warmup, pending=pending[:warmup])
            pending = pending[warmup:]
        timer.reset()
        frames0, faces0 = pipeline.frames, pipeline.faces_seen
        classified0, calls0 = analyzer.classified, analyzer.predict_calls
        limit = config["max_frames"] or (LIVE_FRAMES if video.source.is_live else 0)
        clock = benchstats.CpuClock().start()
        jetson = benchstats.JetsonStats().start()
        summary = run(pipeline, video.source, should_stop, max_frames=pipeline.frames + limit if limit else 0,
                      pending=pending, progress=_progress)
        device = jetson.stop()
        cpu = clock.stop()
    frames = pipeline.frames - frames0
    if frames < 1 and should_stop is not None and should_stop():
        raise SourceError("stopped before any frame was measured")
    if frames < 1:
        raise SourceError("%s ended during the %d warm-up frames: nothing left to measure "
                          "(use a longer input or --warmup 0)" % (config["input"], warmup))
    seconds = summary["seconds"]
    classified = analyzer.classified - classified0
    stages = summary["stages"]
    detects = stages.get("detect", {}).get("count", 0)
    result = collections.OrderedDict([
        ("frames", frames), ("errors", pipeline.errors), ("seconds", seconds),
        ("fps", round(frames / seconds, 2) if seconds else None),
        ("faces_per_frame", round((pipeline.faces_seen - faces0) / float(frames), 2)),
        ("classified", classified),
        ("classifications_per_s", round(classified / seconds, 1) if seconds else None),
        ("classified_per_frame", round(classified / float(frames), 3)),
        ("detections_per_frame", round(detects / float(frames), 3)),
        ("predict_calls", analyzer.predict_calls - calls0),
        ("stages", stages),
        ("cpu", cpu), ("peak_rss_mb", benchstats.peak_rss_mb()), ("jetson", device),
        ("backend", getattr(analyzer.classifier, "backend", None)),
        ("detector_backend", getattr(analyzer.detector, "backend", None)),
        ("frame_size", list(pipeline.frame_size)),
    ])
    return result, analyzer


def _progress(frames, seconds):
    """One line every few hundred frames on stderr, so a long measurement shows it is alive."""
    if frames % 200 == 0:
        sys.stderr.write("edge-bench: %d frames, %.1f FPS\n" % (frames, frames / max(seconds, 1e-9)))


def flops_report(config, analyzer, frame_size, run, baseline=None):
    """FLOPs of the detector and classifier, and the Nano estimate for each run's frame mix.

    The estimate per frame is detector FLOPs x detections per frame + classifier FLOPs x
    classifications per frame, both measured in the run.
    """
    h, w = [int(v) for v in analyzer.classifier.meta["input_size"]]
    try:
        cls = flops.onnx_flops(resolve_path(config["classifier"]["model"]), (1, 3, h, w))["flops"]
    except ImportError:
        cls = None
    det = flops.detector_flops(analyzer.detector, frame_size,
                               resolve_path(config["detector"]["models_dir"]))
    det_flops = det["flops"] if det else None
    out = collections.OrderedDict([
        ("note", "ESTIMATE from FLOPs and the Nano's 472 GFLOPS FP16 peak at the stated "
                 "efficiencies; GPU work only (no decode, copies, Python or drawing); "
                 "not a measurement"),
        ("classifier_flops", cls), ("classifier_input", [h, w]), ("detector", det),
    ])
    for name, measured in (("nano_estimate", run), ("nano_estimate_baseline", baseline)):
        if measured is None:
            continue
        per_frame = (det_flops or 0) * measured["detections_per_frame"] + \
            (cls or 0) * measured["classified_per_frame"]
        if name == "nano_estimate":
            out["flops_per_frame"] = int(per_frame) if per_frame else None
        estimates = collections.OrderedDict()
        for eff in flops.EFFICIENCIES:
            ms = flops.nano_ms(per_frame, eff)
            estimates["%d%%" % round(100 * eff)] = {
                "classifier_ms_per_face": _round(flops.nano_ms(cls, eff), 3),
                "detector_ms": _round(flops.nano_ms(det_flops, eff), 2),
                "ms_per_frame": _round(ms, 2),
                "fps_bound": _round(1000.0 / ms, 1) if ms else None}
        out[name] = estimates
    return out


def _round(value, digits):
    return None if value is None else round(value, digits)


def main(argv=None):
    """Entry point of ``edge-bench``; exit status 0, 1 (input, output or model) or 2 (setting)."""
    args = build_parser().parse_args(argv)
    stopper = Stopper().install()
    try:
        return _main(args, stopper.is_set)
    finally:
        stopper.restore()


def _main(args, should_stop):
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        overrides = cfg.overrides_from_args(args)
        overrides["input"] = args.input
        overrides["headless"] = True
        config = cfg.load(args.config, overrides)
        photos = is_photo_input(config)
        if photos:
            # The service runs still-photo mode here: every image detected and classified.
            config = cfg.merge(config, {"detector.every": 1, "classifier.every": 1}, "photo mode")
        batches = _ints(args.batch, "--batch") if args.batch else None
        models = [m for m in (args.models or "").split(",") if m.strip()]
        report = collections.OrderedDict([("input", args.input), ("outputs", list(args.outputs)),
                                          ("mode", "photos" if photos else "video"),
                                          ("warmup", args.warmup)])
        report["config"] = _config_summary(config, args.vs_baseline)
        measured, analyzer = measure(config, warmup=args.warmup, outputs=args.outputs, should_stop=should_stop)
        report["run"] = measured
        try:
            if args.vs_baseline and not should_stop():
                base_cfg = cfg.merge(config, {"baseline": True}, "edge-bench")
                base, _ = measure(base_cfg, analyzer, args.warmup, baseline_outputs(args.outputs), should_stop)
                report["baseline"] = base
                report["speedup"] = round(measured["fps"] / base["fps"], 2) if base["fps"] else None
            if (batches or models) and not should_stop():
                report["sweep"] = benchsweep.sweep(config, analyzer, models or [config["classifier"]["model"]],
                                                   batches or [1, config["classifier"]["max_batch"] or 16],
                                                   args.sweep_faces, args.sweep_repeat)
            if not args.no_flops:
                report["flops"] = flops_report(config, analyzer, measured["frame_size"], measured,
                                               report.get("baseline"))
        finally:
            analyzer.close()
    except FAILURES as exc:
        log.error("%s", exc)
        return exit_status(exc)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(tables.bench_text(report))
    return 0


def _config_summary(config, vs_baseline):
    det, clf = config["detector"], config["classifier"]
    return collections.OrderedDict([
        ("detector", det["name"]), ("detector_input", det["input_size"]), ("detector_backend", det["backend"]),
        ("detect_every", det["every"]), ("model", clf["model"]), ("backend", clf["backend"]),
        ("max_batch", clf["max_batch"]), ("classify_every", clf["every"]),
        ("max_frames", config["max_frames"]), ("baseline", bool(config["baseline"])), ("baseline_compared", bool(vs_baseline)),
    ])


if __name__ == "__main__":
    sys.exit(main())
