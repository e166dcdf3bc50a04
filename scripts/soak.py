#!/usr/bin/env python3
"""Soak test: run the service on a looped real video and watch its memory and descriptors.

    .venv/bin/python scripts/soak.py --minutes 20            # the recorded soak
    .venv/bin/python scripts/soak.py --minutes 0.5 --warmup 0.1 --interval 2   # smoke run

Starts ``python -m edge INPUT --loop`` (the shared video replayed at its end, so the
source is reopened every loop like a restarted camera) headless with events and health,
as the appliance runs (``--video`` adds an H.264 file output: about 1 GB per 10 minutes); samples the process every ``--interval`` seconds:
resident memory, open file descriptors, threads and CPU from /proc, frames, FPS and source
state from the health file. After ``--warmup`` minutes it compares the first and the last
minute of samples (RSS by its 90th percentile, descriptors by their maximum): they must
not grow beyond the bounds. Then it stops
the service with SIGTERM, as systemd does. Writes OUT/soak.csv and OUT/soak.json; exit
status 0 when the verdict is a pass. Linux only (/proc); Python 3.6+ (runs on a Nano too).
"""
import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO = os.path.join(ROOT, "..", "shared", "data", "videos", "kaggle853_test_scenes.mp4")
COLUMNS = ("t_s", "rss_mb", "fds", "threads", "cpu_pct", "frames", "fps", "source_state")


def proc_sample(pid, clock_ticks=os.sysconf("SC_CLK_TCK")):
    """(rss MB, open fds, threads, cpu seconds) of a live process, from /proc."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / float(clock_ticks)  # utime + stime
    return (int(fields["VmRSS"][0]) / 1024.0, len(os.listdir("/proc/%d/fd" % pid)),
            int(fields["Threads"][0]), cpu)


def read_health(path):
    """The service's health document, or {} before its first write."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else None


def high_water(values):
    """90th percentile: RSS saw-tooths by tens of MB as GStreamer's buffer pools are freed
    and refilled at each reopen; the high-water mark is stable, and a leak raises it."""
    values = sorted(values)
    return values[int(round(0.9 * (len(values) - 1)))]


def verdict(rows, warmup_s, window_s, max_rss_mb, max_fds):
    """Growth between the first and the last window after warm-up, against the bounds."""
    steady = [r for r in rows if r["t_s"] >= warmup_s]
    if len(steady) < 4:
        return {"pass": False, "reason": "too few samples after warm-up (%d)" % len(steady)}
    end = steady[-1]["t_s"]
    window_s = min(window_s, (end - warmup_s) / 2.0)
    first = [r for r in steady if r["t_s"] <= warmup_s + window_s]
    last = [r for r in steady if r["t_s"] >= end - window_s]
    rss_first, rss_last = (high_water([r["rss_mb"] for r in rs]) for rs in (first, last))
    rss_growth = rss_last - rss_first
    # Descriptors by the median of each window: with --loop the file is reopened every few
    # seconds and a sample can land mid-reopen (old and new pipeline both open for a
    # moment); a leak raises the typical count, a reopen only a single sample.
    fd_growth = median([r["fds"] for r in last]) - median([r["fds"] for r in first])
    # Least-squares slope of RSS over the steady samples, in MB per hour: a slow leak
    # shows here before it shows in the difference.
    n = float(len(steady))
    mt = sum(r["t_s"] for r in steady) / n
    mr = sum(r["rss_mb"] for r in steady) / n
    var = sum((r["t_s"] - mt) ** 2 for r in steady) or 1.0
    slope = sum((r["t_s"] - mt) * (r["rss_mb"] - mr) for r in steady) / var * 3600.0
    frames = [r["frames"] for r in steady if isinstance(r["frames"], int)]
    progressing = len(frames) >= 2 and frames[-1] > frames[0]
    ok = rss_growth <= max_rss_mb and fd_growth <= max_fds and progressing
    reasons = []
    if rss_growth > max_rss_mb:
        reasons.append("RSS grew %.1f MB > %.1f" % (rss_growth, max_rss_mb))
    if fd_growth > max_fds:
        reasons.append("open fds grew by %d > %d" % (fd_growth, max_fds))
    if not progressing:
        reasons.append("no frames processed after warm-up")
    return {"pass": ok, "reason": "; ".join(reasons) or "within bounds",
            "rss_first_p90_mb": round(rss_first, 1), "rss_last_p90_mb": round(rss_last, 1),
            "rss_growth_mb": round(rss_growth, 1), "rss_slope_mb_per_h": round(slope, 1),
            "rss_peak_mb": round(max(r["rss_mb"] for r in steady), 1),
            "fds_first": median([r["fds"] for r in first]),
            "fds_last": median([r["fds"] for r in last]),
            "fds_max": max(r["fds"] for r in steady), "fd_growth": fd_growth,
            "window_s": round(window_s, 1), "samples_after_warmup": len(steady)}


def service_command(args, out):
    """The service's command line: looped input, events, health, optional video."""
    cmd = [sys.executable, "-m", "edge", args.input]
    cmd += [os.path.join(out, "soak.mp4"), "--bitrate", "1000"] if args.video else ["none"]
    cmd += ["--headless", "--loop", "--events", os.path.join(out, "events.jsonl"),
            "--health-file", os.path.join(out, "health.json")]
    return cmd + args.service_args


def main(argv=None):
    """Run the soak; returns 0 when memory and descriptors stayed within the bounds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="length (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="minutes excluded from the verdict (default 3)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds of samples averaged at each end (default 60)")
    parser.add_argument("--max-rss-growth", type=float, default=16.0,
                        help="MB of RSS growth allowed after warm-up (default 16)")
    parser.add_argument("--max-fd-growth", type=int, default=2,
                        help="open descriptors allowed to appear after warm-up (default 2)")
    parser.add_argument("--input", default=VIDEO, help="video to loop (default: the shared clip)")
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "soak"), help="output folder")
    parser.add_argument("--video", action="store_true",
                        help="also write an H.264 file (1 Mbit/s; large: the loop runs faster "
                        "than real time)")
    parser.add_argument("service_args", nargs=argparse.REMAINDER,
                        help="after --: more flags for the service (e.g. -- --detector haar)")
    args = parser.parse_args(argv)
    args.service_args = [a for a in args.service_args if a != "--"]
    if not os.path.isfile(args.input):
        parser.error("input video not found: %s" % args.input)
    os.makedirs(args.out, exist_ok=True)
    health_path = os.path.join(args.out, "health.json")
    if os.path.exists(health_path):
        os.unlink(health_path)
    cmd = service_command(args, args.out)
    print("soak: %s" % " ".join(cmd), flush=True)
    log = open(os.path.join(args.out, "service.log"), "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    rows, start, last_cpu = [], time.time(), None
    print("%7s %8s %5s %7s %6s %8s %6s  %s" % COLUMNS, flush=True)
    try:
        while time.time() - start < args.minutes * 60 and proc.poll() is None:
            time.sleep(args.interval)
            try:
                rss, fds, threads, cpu = proc_sample(proc.pid)
            except (OSError, IndexError, KeyError):
                break  # exited (or a zombie) between poll() and the read
            now = time.time() - start
            cpu_pct = 0.0 if last_cpu is None else 100.0 * (cpu - last_cpu[1]) / (now - last_cpu[0])
            last_cpu = (now, cpu)
            doc = read_health(health_path)
            row = dict(zip(COLUMNS, (round(now, 1), round(rss, 1), fds, threads, round(cpu_pct),
                                     doc.get("frames"), doc.get("fps"), doc.get("source_state"))))
            rows.append(row)
            print("%7.1f %8.1f %5d %7d %6d %8s %6s  %s" % tuple(row[c] for c in COLUMNS),
                  flush=True)
    finally:
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
    result = verdict(rows, args.warmup * 60, args.window, args.max_rss_growth, args.max_fd_growth)
    if not alive:
        with open(log.name, "rb") as f:
            tail = f.read().decode("utf-8", "replace").splitlines()[-5:]
        result.update({"pass": False, "reason": "the service exited by itself (status %s): %s"
                       % (code, " | ".join(tail))})
    result.update({"minutes": args.minutes, "warmup_min": args.warmup, "exit_status": code,
                   "frames": rows[-1]["frames"] if rows else None, "command": cmd,
                   "fps_median": round(median([r["fps"] for r in rows if r["fps"]] or [0]), 2)})
    with open(os.path.join(args.out, "soak.csv"), "w") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.out, "soak.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print("soak %s: %s" % ("PASS" if result["pass"] else "FAIL", result["reason"]))
    return 0 if result["pass"] and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
