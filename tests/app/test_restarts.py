"""Faults of a long life, on the real service (`python -m edge` as a child process, as
systemd runs it): a restart and a kill mid-run, a power cut mid-line, SIGHUP with a good and
with a broken configuration, rotation under load, a TensorRT engine that does not build.

TensorRT cannot be installed here: the fallback test gives the child the stand-in of
tests/helpers.py (TensorRT's and pycuda's Python surface) with the build forced to fail.
Two instances of the template unit: test_instances.py.
"""
import gzip
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from test_faults import Service, count_frames, model  # noqa: F401 (model: the fixture)

from conftest import ROOT, data_path
from edge.app import events as ev

pytestmark = pytest.mark.slow

def video():
    return data_path("videos", "kaggle853_test_scenes.mp4")


def fast(model):
    # Haar on a frame scaled to 480 px: faces and tracks, at a pace a loaded 2-core CI
    # machine keeps; the path is the appliance's (GStreamer, detector, classifier, tracker).
    return ["--model", model, "--backend", "ort", "--detector", "haar", "--detector-size", "480",
            "--detect-every", "2"]


def all_lines(path):
    """Every line of the events file and its rotated files, oldest first; each one must parse."""
    out = []
    for _, rotated in ev.rotated_files(path):
        with (gzip.open(rotated, "rt") if rotated.endswith(".gz") else open(rotated)) as f:
            out += [json.loads(line) for line in f.read().splitlines()]
    with open(path) as f:
        out += [json.loads(line) for line in f.read().splitlines()]
    return out


def by_run(lines):
    """[(run id, [its lines])] in the order the runs wrote them."""
    runs = []
    for line in lines:
        if not runs or runs[-1][0] != line["run"]:
            runs.append((line["run"], []))
        runs[-1][1].append(line)
    return runs


def tracks(lines):
    return {f["track"] for line in lines for f in line["faces"]}


def start(folder, args, env=None):
    """The service in a child process, its health file and log in ``folder``."""
    if not os.path.isdir(str(folder)):
        os.makedirs(str(folder))
    return Service(folder, args, env=env)


def finished(service, timeout=300):
    """Wait for a service run with --max-frames to end by itself; its exit status."""
    try:
        return service.proc.wait(timeout=timeout)
    finally:
        service.stop()


def test_restart_and_kill_mid_run_keep_every_line_and_never_reuse_a_track_id(model, tmp_path):
    events = str(tmp_path / "state" / "events.jsonl")
    args = [video(), "none", "--events", events, "--loop"] + fast(model)
    first = start(tmp_path / "1", args)  # systemctl restart: SIGTERM mid-run
    first.wait_for(lambda d: (d.get("frames") or 0) >= 25)
    assert first.stop() == 0, first.log()
    stopped_at = first.state()["frames"]
    killed = start(tmp_path / "2", args)  # the watchdog, the OOM killer: SIGKILL mid-run
    killed.wait_for(lambda d: (d.get("frames") or 0) >= 15)
    killed.proc.send_signal(signal.SIGKILL)
    killed.stop()
    last = start(tmp_path / "3", [video(), "none", "--events", events, "--max-frames", "20"] + fast(model))
    assert finished(last) == 0, last.log()
    runs = by_run(all_lines(events))
    assert len(runs) == 3 and len({run for run, _ in runs}) == 3
    (_, one), (_, two), (_, three) = runs
    assert [l["frame"] for l in one] == list(range(stopped_at))  # every processed frame, once
    assert [l["frame"] for l in two] == list(range(len(two))) and len(two) >= 15  # up to the kill
    assert [l["frame"] for l in three] == list(range(20))
    assert tracks(one) and tracks(two) and tracks(three)
    assert max(tracks(one)) < min(tracks(two)) and max(tracks(two)) < min(tracks(three))
    assert min(tracks(three)) > max(tracks(two)) + 1  # the killed run's reserved ids are skipped


def test_a_power_cut_mid_line_is_repaired_at_start(model, tmp_path):
    events = str(tmp_path / "events.jsonl")
    args = [video(), "none", "--events", events, "--max-frames", "10"] + fast(model)
    assert finished(start(tmp_path / "1", args)) == 0
    torn = b'{"time":"2026-11-28T06:00:00.123Z","run":"x","frame":10,"faces":[{"tra' + b"\0" * 512
    with open(events, "ab") as f:  # the power went while a line was half written
        f.write(torn)
    second = start(tmp_path / "2", args)
    assert finished(second) == 0, second.log()
    lines = all_lines(events)  # all parse: the torn line is gone
    assert [l["frame"] for l in lines] == list(range(10)) * 2
    assert "ended in a partial line (%d bytes, a power cut?): removed" % len(torn) in second.log()


def write_config(path, **sections):
    with open(str(path), "w") as f:
        yaml.safe_dump(sections, f)


def test_sighup_applies_a_valid_config_and_keeps_running_on_a_broken_one(model, tmp_path):
    conf, events, out = tmp_path / "maskgate.yaml", str(tmp_path / "events.jsonl"), str(tmp_path / "out.mkv")
    base = {"input": video(), "source": {"loop": True}, "events": {"path": events},
            "classifier": {"model": model, "backend": "ort"},
            "detector": {"name": "haar", "input_size": 480, "every": 2}}
    write_config(conf, **base)
    service = start(tmp_path, ["--config", str(conf)])  # everything from the file: flags would win
    try:
        service.wait_for(lambda d: (d.get("frames") or 0) >= 10)
        pid = service.proc.pid

        def hup_and_wait(previous):
            """SIGHUP; the health's record of the reload that answered it."""
            service.proc.send_signal(signal.SIGHUP)
            return service.wait_for(lambda d: d.get("last_reload") is not None and
                                    d["last_reload"]["time"] > (previous or {}).get("time", 0))["last_reload"]
        write_config(conf, outputs=[out], tracker={"vote": 3}, **base)
        applied = hup_and_wait(None)
        assert applied["ok"] and applied["changed"] == ["loop", "outputs"], applied
        assert {"input", "models", "events"} <= set(applied["kept"])  # the camera is kept
        reloaded_at = applied["frame"]
        doc = service.wait_for(lambda d: d["frames"] >= reloaded_at + 10)
        assert doc["reloads"] == 1 and doc["status"] == "ok"
        conf.write_text("detector: [unclosed\n")  # an edit saved half way
        broken = hup_and_wait(applied)
        assert not broken["ok"] and "not valid YAML" in broken["error"]
        write_config(conf, outputs=[out], **dict(base, classifier={"model": "/nowhere.onnx", "backend": "ort"}))
        unusable = hup_and_wait(broken)
        assert not unusable["ok"] and "classifier model not found" in unusable["error"]
        doc = service.wait_for(lambda d: d["frames"] >= unusable["frame"] + 10)
        assert doc["reloads"] == 1 and service.proc.pid == pid and service.proc.poll() is None
    finally:
        code = service.stop()
    assert code == 0, service.log()
    lines = all_lines(events)
    total = service.state()["frames"]
    assert [l["frame"] for l in lines] == list(range(total))  # no line lost or doubled by any reload
    assert len({l["run"] for l in lines}) == 1
    assert count_frames(out) == total - reloaded_at  # the output opened by the reload is whole
    log = service.log()
    assert "configuration reloaded: changed loop, outputs" in log and log.count("reload failed") == 2


def test_rotation_under_load_loses_no_line(model, tmp_path):
    events = str(tmp_path / "events.jsonl")
    # About 4 KiB a file: a rotation (and a background gzip) every dozen frames.
    service = start(tmp_path, [video(), "none", "--events", events, "--max-frames", "120",
                               "--events-rotate-mb", "0.004", "--events-keep", "1000"] + fast(model))
    assert finished(service) == 0, service.log()
    rotated = ev.rotated_files(events)
    assert len(rotated) >= 5 and all(p.endswith(".gz") for _, p in rotated)
    assert [l["frame"] for l in all_lines(events)] == list(range(120))
    assert service.log().count("events file rotated to") == len(rotated)


@pytest.mark.parametrize("fault, reason", [("build", "TensorRT failed to build"),
                                           ("pycuda", "pycuda is not installed")])
def test_tensorrt_that_cannot_be_used_falls_back_to_onnxruntime_and_health_says_so(
        model, tmp_path, fault, reason):
    from helpers import fake_runtime
    env = fake_runtime(tmp_path / "fakes", fail=fault, pycuda=fault != "pycuda")
    cache = str(tmp_path / "engines")
    args = [video(), "none", "--loop", "--model", model, "--backend", "auto", "--engine-cache",
            cache, "--detector", "haar", "--detector-size", "480"]
    first = start(tmp_path / "1", args, env=env)
    doc = first.wait_for(lambda d: d.get("backend") is not None)  # in health before the first frame
    assert doc["backend"] == "ort" and reason in doc["fallback"], doc
    first.wait_for(lambda d: (d.get("frames") or 0) >= 10)  # not a crash loop: it runs
    check = subprocess.run([sys.executable, "-m", "edge.health", first.health, "--max-age", "3600"], cwd=ROOT,
                           stdout=subprocess.PIPE, universal_newlines=True)
    assert check.returncode == 0 and "classifier on ort: TensorRT could not be used" in check.stdout
    assert first.stop() == 0, first.log()
    assert "falling back to onnxruntime" in first.log() and reason in first.log()
    args = [a for a in args if a != "--loop"] + ["--max-frames", "5"]
    if fault == "build":  # the next start does not build for minutes again
        second = start(tmp_path / "2", args, env=env)
        assert finished(second) == 0, second.log()
        assert "failed before" in second.state()["fallback"] and "engine cache: building" not in second.log()
