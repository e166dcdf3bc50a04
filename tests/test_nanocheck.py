"""``make nano-check`` (scripts/nano-check.sh, scripts/nanocheck.py) up to the hardware boundary.

No Nano is reachable from here: the check runs on this machine with a made-up /etc and /proc
(an L4T R32.7.1 release file, a Nano's board name), without the Jetson GStreamer elements and
camera, and with TensorRT absent or replaced by the stand-in of tests/helpers.py. Each step
must then say honestly what it did: pass, fail or skip with the reason. The report's format
(what the owner sends back) is pinned here.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, data_path

STEPS = ["platform", "libraries", "elements", "encode", "camera", "engine", "tests", "bench"]
STEP_KEYS = {"name", "status", "summary", "seconds", "details"}


def nano_root(tmp_path):
    """/etc and /proc as a Jetson Nano with JetPack 4.6.1 has them."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(
        "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 "
        "17:05:08 UTC 2022\n# KERNEL_VARIANT: oot\n")
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_bytes(b"NVIDIA Jetson Nano Developer Kit\0")
    (root / "proc" / "meminfo").write_text("MemTotal:        4051032 kB\nMemFree:          120000 kB\n")
    return str(root)


def nano_check(tmp_path, *args, env=None):
    """Exit status, console output and the JSON and markdown reports of one run."""
    out = str(tmp_path / "report")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "nanocheck.py"), "--out", out] +
                          list(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=900, env=dict(os.environ, **(env or {})))
    with open(os.path.join(out, "nano-check.json")) as f:
        report = json.load(f)
    with open(os.path.join(out, "nano-check.md")) as f:
        text = f.read()
    return proc.returncode, proc.stdout, report, text


def statuses(report):
    return dict((s["name"], s["status"]) for s in report["steps"])


def summary(report, name):
    return [s for s in report["steps"] if s["name"] == name][0]["summary"]


@pytest.mark.slow
def test_every_step_reports_honestly_off_the_nano_and_the_format_is_pinned(tmp_path):
    data = os.path.dirname(os.path.dirname(data_path("videos", "kaggle853_test_scenes.mp4")))
    code, out, report, text = nano_check(
        tmp_path, "--root", nano_root(tmp_path), "--tests", "tests/test_layout.py", "--bench-frames", "20",
        "--bench-args", "--detector haar --detector-size 480 --no-flops", env={"MASKGATE_DATA": data})
    assert code == 1, out  # steps failed: said by the exit status too
    assert statuses(report) == {
        "platform": "pass",    # the made-up release file says JetPack 4.6.1
        "libraries": "fail",   # no TensorRT, no pycuda here
        "elements": "fail",    # no nvvidconv, nvv4l2h264enc, ...
        "encode": "skip",      # nothing to encode with
        "camera": "skip",      # no Argus socket, no /dev/video* under the made-up root
        "engine": "skip",      # TensorRT does not import
        "tests": "pass",
        "bench": "pass"}, out
    assert summary(report, "platform") == "L4T 32.7.1 = JetPack 4.6.1, NVIDIA Jetson Nano Developer Kit"
    assert summary(report, "libraries").startswith("missing: pycuda, tensorrt")
    assert "nvidia-l4t-gstreamer" in summary(report, "elements")
    assert summary(report, "engine").startswith("tensorrt does not import")
    assert summary(report, "tests").endswith("0 failed, 0 errors, 0 skipped")
    assert summary(report, "bench").startswith("demo video, 20 frames: ")
    # The format the owner sends back.
    assert set(report) == {"format", "started", "finished", "host", "git", "steps", "summary"}
    assert report["format"] == "maskgate-nano-check/1"
    assert [s["name"] for s in report["steps"]] == STEPS
    assert all(set(s) == STEP_KEYS and isinstance(s["seconds"], float) for s in report["steps"])
    assert report["summary"] == {"pass": 3, "fail": 2, "skip": 3}
    libraries = [s for s in report["steps"] if s["name"] == "libraries"][0]["details"]
    assert libraries["numpy"]["jetpack_4_6"] == "1.13.3" and libraries["tensorrt"]["version"] is None
    bench = [s for s in report["steps"] if s["name"] == "bench"][0]["details"]
    assert bench["result"]["run"]["frames"] == 20 and bench["video_is"] == "the demo video"
    for name in STEPS:
        assert "| %s | %s |" % (name, statuses(report)[name].upper()) in text
    assert "pass 3, fail 2, skip 3" in text and "Send `nano-check.json` and `nano-check.md`" in text
    assert "report: " in out and "please send both back" in out


@pytest.mark.parametrize("fail", [None, "build"])
def test_the_engine_step_with_the_tensorrt_stand_in(tmp_path, fail):
    """What the step does where TensorRT imports (here: the stand-in, so only our flow is tested)."""
    from helpers import fake_runtime
    env = fake_runtime(tmp_path / "fakes", fail=fail)
    code, out, report, _ = nano_check(tmp_path, "--steps", "engine", env=env)
    step = report["steps"][0]
    if fail is None:
        assert (code, step["status"]) == (0, "pass"), out
        assert step["summary"].startswith("FP16 engine built in ") and "argmax agreement 100.0%" in step["summary"]
        assert step["details"]["sidecar"]["tensorrt"] == "8.2.1.8" and step["details"]["faces_checked"] == 48
        assert sorted(step["details"]["median_ms_per_batch"]) == ["1", "16", "4"]
        detector = step["details"]["detector"]
        assert "face detector engine built in " in step["summary"] and detector["median_ms"] > 0
        assert any("TensorRT FP16 vs onnxruntime (face detector)" in line for line in detector["log"])
        engines = os.listdir(os.path.join(str(tmp_path), "report", "engines"))
        assert any(n.startswith("face_detector.") and n.endswith(".s960.engine") for n in engines), engines
    else:
        assert (code, step["status"]) == (1, "fail"), out
        assert "TensorRT failed to build" in step["summary"]


def test_not_a_jetson_a_busy_camera_and_the_wrapper(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shims = tmp_path / "bin"
    shims.mkdir()
    systemctl = shims / "systemctl"  # as on a Nano where the service runs
    systemctl.write_text("#!/bin/sh\n[ \"$1\" = is-active ] && exit 0\nexit 1\n")
    systemctl.chmod(0o755)
    code, out, report, _ = nano_check(tmp_path, "--root", str(empty), "--steps", "platform,camera",
                                      env={"PATH": str(shims) + os.pathsep + os.environ["PATH"]})
    assert code == 1 and statuses(report) == {"platform": "fail", "camera": "skip"}
    assert summary(report, "platform") == "not a Jetson: /etc/nv_tegra_release is absent"
    assert "maskgate.service is running and holds the camera" in summary(report, "camera")
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "nanocheck.py"), "--steps", "bogus"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert bad.returncode == 2 and "unknown step(s) bogus" in bad.stdout
    wrapper = subprocess.run([os.path.join(ROOT, "scripts", "nano-check.sh"), "--steps", "platform",
                              "--out", str(tmp_path / "w")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=120)
    assert wrapper.returncode == 1 and "platform  FAIL not a Jetson" in wrapper.stdout, wrapper.stdout
    assert os.path.isfile(str(tmp_path / "w" / "nano-check.md"))
