"""What the operator's side costs: edge-bench on a video, plain and with MQTT, /metrics and the page.

    .venv/bin/python bench/ops_cost.py ../shared/data/videos/kaggle853_test_scenes.mp4 --frames 1200 --repeat 3

Each configuration is one ``edge-bench INPUT --loop --max-frames N --json`` (headless, no
video output, so that what is added is not hidden behind an encoder), run in turn with the
others (A B C D E, A B C D E, ...) so that a change in the machine's load falls on all:

- plain: the service as `make demo` runs it, without outputs (people are always counted);
- http: + the HTTP server (``--health-http``): /health, /metrics, /api/state, the page; nobody asks;
- mqtt: + MQTT to a local Mosquitto that this script starts (status every 5 s, a message per
  person and per alert);
- scraped: http + mqtt, and /metrics fetched every second (Prometheus' default is every 15 s);
- watched: scraped + the page open in headless Chromium (its stream at 10 fps, the state
  polled every second), driven through ChromeDriver as in the tests.

Reported per configuration: the median over the repeats of frames per second and of the
service's CPU milliseconds per frame (its own process, all threads: HTTP, JPEG, MQTT), and
both as a ratio to plain. On a 2-core machine Chromium itself competes for the CPU in the
watched runs: the CPU per frame says what the service paid, the FPS what the machine did.

``--direct`` measures the parts one by one in this process instead (what a shared machine's
noise hides in whole runs): the loop's own share per frame (people, alerts, MQTT queueing:
the ``ops`` stage), one /metrics scrape, one /api/state answer, drawing and JPEG-encoding
one frame of the live view, one MQTT ``publish()`` call.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from mqtt_broker import Broker, free_port  # noqa: E402 (tests/ holds the broker and browser helpers)

CONFIGS = ("plain", "http", "mqtt", "scraped", "watched")


def scrape(url, stop, last):
    """GET ``url`` every second until ``stop``; keeps the last body in ``last``."""
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                last["text"] = response.read().decode("utf-8")
                last["scrapes"] = last.get("scrapes", 0) + 1
        except OSError:
            pass


def wait_http(url, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def one_run(name, args, broker, workdir):
    """One edge-bench run of configuration ``name``: its JSON report plus what the client saw."""
    port = free_port()
    cmd = [sys.executable, "-m", "edge.measure.bench", args.input, "--json", "--no-flops", "--loop",
           "--max-frames", str(args.frames), "--warmup", str(args.warmup), "--backend", "ort"]
    if name != "plain" and name != "mqtt":
        cmd += ["--health-http", "127.0.0.1:%d" % port]
    if name in ("mqtt", "scraped", "watched"):
        cmd += ["--mqtt", broker.url("bench")]
    out = os.path.join(workdir, "%s.json" % name)
    with open(out, "w") as stdout:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=stdout, stderr=subprocess.DEVNULL)
    seen, stop, browser = {}, threading.Event(), None
    try:
        if name in ("scraped", "watched"):
            base = "http://127.0.0.1:%d" % port
            if not wait_http(base + "/health", proc):
                raise RuntimeError("%s: the HTTP server did not answer" % name)
            if name == "watched":
                from webdriver import Browser
                browser = Browser(tempfile.mkdtemp(dir=workdir))
                browser.open(base + "/")
            thread = threading.Thread(target=scrape, args=(base + "/metrics", stop, seen))
            thread.start()
        proc.wait()
    finally:
        stop.set()
        if browser is not None:
            try:
                seen["page_updates"] = int(browser.run("return Number(document.body.dataset.updates)"))
            except Exception:  # noqa: the page's server is gone with the bench
                pass
            browser.quit()
    if proc.returncode != 0:
        raise RuntimeError("%s: edge-bench exited %s" % (name, proc.returncode))
    with open(out) as f:
        report = json.load(f)["run"]
    text = seen.get("text", "")
    for line in text.splitlines():
        if line.startswith("maskgate_stream_frames_total "):
            seen["stream_frames"] = int(float(line.split()[1]))
    seen.pop("text", None)
    return {"fps": report["fps"], "frames": report["frames"],
            "cpu_ms_per_frame": round(1000.0 * report["cpu"]["cpu_seconds"] / report["frames"], 2),
            "ops_ms": report["stages"].get("ops", {}).get("mean_ms"),
            "draw_ms": report["stages"].get("draw", {}).get("mean_ms"),
            "client": seen}


def timed(func, repeat):
    """Median seconds of ``func()`` over ``repeat`` calls (process CPU time, not wall)."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        func()
        times.append(time.process_time() - start)
    return median(times)


def direct(args):
    """The parts one by one on the demo video (see the module docstring); a dict of ms."""
    import cv2

    from edge.app import config as cfg
    from edge.app import overlay
    from edge.app import pipeline as pl
    from edge.app.assemble import build_analyzer, build_ops, build_pipeline
    from edge.infer.faces import count_labels
    from edge.io.sources import open_source
    from edge.ops import metrics
    workdir = tempfile.mkdtemp(prefix="ops_direct_")
    broker = Broker(workdir).start()
    config = cfg.load(overrides={"classifier.backend": "ort", "events.mqtt": broker.url("direct")})
    analyzer = build_analyzer(config)
    hub, _ = build_ops(config)
    # The loop's share in thread CPU time: a loaded machine's preemption inflates wall clocks.
    cpu = {"on_frame": [], "tick": []}

    def measured(name, method):
        def call(*a, **k):
            start = time.thread_time()
            method(*a, **k)
            cpu[name].append(time.thread_time() - start)
        return call
    hub.on_frame, hub.tick = measured("on_frame", hub.on_frame), measured("tick", hub.tick)
    pipeline = build_pipeline(config, analyzer, ops=hub)
    source = open_source(args.input)
    frames = []
    try:
        pl.run(pipeline, source, max_frames=400, progress=lambda n, s: None)
        source = open_source(args.input)
        frames = [source.read(timeout=5.0) for _ in range(3)]
    finally:
        source.close()
    per_frame = [a + b for a, b in zip(cpu["on_frame"], cpu["tick"])]
    snapshot = lambda: json.dumps(hub.snapshot())  # noqa: E731
    scrape = lambda: metrics.render(hub.snapshot(full=False), analyzer.timer.histograms())  # noqa: E731
    image = frames[-1].image
    faces = analyzer.analyze(image)
    counts = count_labels(faces)
    draw = lambda: overlay.draw(image.copy(), faces, 30.0, counts)  # noqa: E731
    copy = lambda: image.copy()  # noqa: E731
    shown = draw()
    encode = lambda: cv2.imencode(".jpg", shown, [cv2.IMWRITE_JPEG_QUALITY, config["output"]["quality"]])  # noqa: E731
    publish = lambda: [hub.mqtt.publish("bench", {"seq": i, "label": "mask"}) for i in range(1000)]  # noqa: E731
    import logging
    logging.getLogger("edge.ops.mqtt").setLevel(logging.ERROR)  # the flood below fills the buffer
    result = {
        "frames": pipeline.frames, "people": sum(hub.people.totals.values()),
        "mqtt_sent": hub.mqtt.stats()["sent"],
        "loop_us_per_frame_mean": round(1e6 * sum(per_frame) / len(per_frame), 1),
        "loop_us_per_frame_p99": round(1e6 * sorted(per_frame)[int(0.99 * len(per_frame))], 1),
        "metrics_scrape_ms": round(1000 * timed(scrape, 200), 3),
        "metrics_bytes": len(scrape()),
        "state_json_ms": round(1000 * timed(snapshot, 200), 3),
        "state_bytes": len(snapshot()),
        "draw_ms_per_frame": round(1000 * (timed(draw, 50) - timed(copy, 50)), 3),
        "jpeg_ms_per_frame": round(1000 * timed(encode, 50), 3),
        "jpeg_bytes": len(encode()[1]),
        "mqtt_publish_us": round(1e6 * timed(publish, 5) / 1000, 2),
    }
    hub.close()
    analyzer.classifier.close()
    broker.kill()
    return result


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="the video (the demo video in the docs)")
    parser.add_argument("--frames", type=int, default=1200, help="measured frames per run (default 1200)")
    parser.add_argument("--warmup", type=int, default=150,
                        help="warm-up frames (default 150: the browser attaches meanwhile)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="which (default: all)")
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "ops_cost.json"))
    parser.add_argument("--direct", action="store_true",
                        help="measure the parts one by one in this process instead")
    args = parser.parse_args(argv)
    if args.direct:
        sys.path.insert(0, ROOT)
        print(json.dumps(direct(args), indent=1))
        return 0
    configs = [c for c in args.configs.split(",") if c]
    workdir = tempfile.mkdtemp(prefix="ops_cost_")
    broker = Broker(workdir).start()
    runs = dict((c, []) for c in configs)
    try:
        for k in range(args.repeat):
            for name in configs:
                result = one_run(name, args, broker, workdir)
                runs[name].append(result)
                sys.stderr.write("%d/%d %-8s %6.1f FPS  %6.2f CPU ms/frame  %s\n" % (
                    k + 1, args.repeat, name, result["fps"], result["cpu_ms_per_frame"],
                    json.dumps(result["client"])))
    finally:
        broker.kill()
    plain = runs.get("plain")
    table = ["| configuration | FPS (median) | ratio | CPU ms/frame (median) | ratio | runs (FPS) |",
             "|---|---|---|---|---|---|"]
    summary = {}
    for name in configs:
        fps = median([r["fps"] for r in runs[name]])
        cpu = median([r["cpu_ms_per_frame"] for r in runs[name]])
        base_fps = median([r["fps"] for r in plain]) if plain else None
        base_cpu = median([r["cpu_ms_per_frame"] for r in plain]) if plain else None
        summary[name] = {"fps": fps, "cpu_ms_per_frame": cpu, "runs": runs[name]}
        table.append("| %s | %.1f | %s | %.2f | %s | %s |" % (
            name, fps, "%.3f" % (fps / base_fps) if base_fps else "-", cpu,
            "%.3f" % (cpu / base_cpu) if base_cpu else "-",
            ", ".join("%.1f" % r["fps"] for r in runs[name])))
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    with open(args.out, "w") as f:
        json.dump({"frames": args.frames, "repeat": args.repeat, "configs": summary}, f, indent=1)
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
