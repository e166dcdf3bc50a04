"""Faults the appliance survives, exercised on the real service (`python -m edge` as a
separate process, as systemd runs it): systemd notify and watchdog pings, SIGTERM during
processing, an RTSP camera that goes away and comes back, a disk that fills up."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, SHIPPED, data_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The shipped classifier, else a small real ONNX classifier with the metadata contract
    (these tests are about the service's plumbing, not about its accuracy)."""
    if os.path.isfile(SHIPPED):
        return SHIPPED
    onnx = pytest.importorskip("onnx", reason="onnx builds the stand-in classifier")
    import numpy as np
    from onnx import TensorProto, helper
    weights = np.random.RandomState(0).randn(3, 2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "faults_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 2], weights.ravel().tolist())])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 7
    meta = {"arch": "faults_test", "classes": ["mask", "no_mask"], "input_size": [32, 32],
            "resize": "letterbox", "mean": [0.5] * 3, "std": [0.5] * 3, "crop_margin": 0.15,
            "color": "RGB"}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    path = str(tmp_path_factory.mktemp("model") / "classifier.onnx")
    onnx.save(proto, path)
    return path


class Service(object):
    """``python -m edge`` in a child process with a health file and a log; optional notify."""

    def __init__(self, tmp, args, env=None):
        self.health = os.path.join(str(tmp), "health.json")
        self.log_path = os.path.join(str(tmp), "service.log")
        self._log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "edge"] + args + [
            "--headless", "--health-file", self.health, "--log-level", "info"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))

    def state(self):
        try:
            with open(self.health) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def wait_for(self, what, timeout=60.0):
        """Wait until ``what(health_doc)`` is true; fail with the log if the service died."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("service exited (%s):\n%s" % (self.proc.returncode, self.log()))
            doc = self.state()
            if doc and what(doc):
                return doc
            time.sleep(0.2)
        pytest.fail("timed out; health %s\n%s" % (self.state(), self.log()[-3000:]))

    def stop(self, timeout=60):
        """SIGTERM, as systemd stops it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def base_args(model):
    # Haar and small settings keep the 2-core CI machine's load low; the code path is the
    # one the appliance runs (GStreamer source, detector, onnxruntime batch, tracker, sinks).
    return ["--model", model, "--backend", "ort", "--detector", "haar"]


def count_frames(path):
    """Frames a video file really holds, decoded again by the project's own source."""
    from edge.io.sources import open_source
    source = open_source(path)
    count = 0
    try:
        while source.is_streaming:
            if source.read(timeout=5.0) is not None:
                count += 1
    finally:
        source.close()
    return count


def events_lines(path):
    with open(path) as f:
        lines = f.read().splitlines()
    return [json.loads(line) for line in lines]  # every line complete, the last one too


def recv_until(sock, prefix, limit=20):
    """The first datagram starting with ``prefix`` (STATUS= updates may come before it)."""
    for _ in range(limit):
        message = sock.recv(4096)
        if message.startswith(prefix):
            return message
    pytest.fail("no %r among %d notify messages" % (prefix, limit))


def test_sigterm_flushes_events_and_video_and_notifies_systemd(model, tmp_path):
    video = data_path("videos", "kaggle853_test_scenes.mp4")
    notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(tmp_path / "notify.sock")
    notify_sock.bind(notify_path)
    notify_sock.settimeout(120)
    out, events = str(tmp_path / "out.mp4"), str(tmp_path / "events.jsonl")
    service = Service(tmp_path, [video, out, "--events", events] + base_args(model),
                      env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "2000000"})
    try:
        ready = recv_until(notify_sock, b"READY=1")
        assert ready.startswith(b"READY=1\nMAINPID=%d" % service.proc.pid)
        assert recv_until(notify_sock, b"WATCHDOG=1") == b"WATCHDOG=1"  # from the main loop
        doc = service.wait_for(lambda d: (d.get("frames") or 0) >= 40)
        assert doc["status"] == "ok" and doc["source_state"] == "streaming" and doc["fps"] > 0
        for key in ("last_frame_time", "faces", "errors", "uptime", "pid"):
            assert key in doc
    finally:
        code = service.stop()
    assert code == 0, service.log()
    messages = []
    notify_sock.settimeout(0.5)
    try:
        while True:
            messages.append(notify_sock.recv(4096))
    except socket.timeout:
        pass
    notify_sock.close()
    assert any(m.startswith(b"STOPPING=1") for m in messages)
    assert messages.count(b"WATCHDOG=1") >= 1  # at 1 s intervals while it ran
    frames = events_lines(events)
    assert len(frames) >= 40 and frames[-1]["frame"] >= 39
    # Every processed frame reached the video, and the file plays to its last frame.
    assert count_frames(out) == len(frames)
    assert service.state()["status"] == "stopped"


RTSP_SERVER = """
import sys, gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
server = GstRtspServer.RTSPServer(); server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory(); factory.set_shared(True)
factory.set_launch("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,"
                   "framerate=15/1 ! x264enc tune=zerolatency speed-preset=ultrafast "
                   "key-int-max=15 ! rtph264pay name=pay0 pt=96 )")
server.get_mount_points().add_factory("/cam", factory)
server.attach(None); print("ready", flush=True); GLib.MainLoop().run()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_camera(port):
    """An RTSP camera (gst-rtsp-server) in its own process, so that it can really go away."""
    proc = subprocess.Popen([sys.executable, "-c", RTSP_SERVER, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout.readline().strip() == b"ready", "RTSP server did not start"
    return proc


def test_camera_lost_and_back_keeps_the_service_up(model, tmp_path):
    pytest.importorskip("gi")
    port = free_port()
    camera = start_camera(port)
    events = str(tmp_path / "events.jsonl")
    service = Service(tmp_path, ["rtsp://127.0.0.1:%d/cam" % port, "none", "--events", events,
                                 "--stall-timeout", "2", "--backoff", "0.5", "--backoff-max", "2"]
                      + base_args(model))
    try:
        before = service.wait_for(lambda d: d.get("source_state") == "streaming"
                                  and (d.get("frames") or 0) >= 10)["frames"]
        camera.terminate()  # the camera goes away mid-stream
        camera.wait(timeout=10)
        lost = service.wait_for(lambda d: d.get("source_state") == "reconnecting", timeout=30)
        time.sleep(4)  # down for a while: the service keeps running and keeps retrying
        assert service.proc.poll() is None
        check = subprocess.run([sys.executable, "-m", "edge.health", service.health,
                                "--max-age", "3"], cwd=ROOT, stdout=subprocess.PIPE)
        assert check.returncode == 1 and b"source reconnecting" in check.stdout
        camera = start_camera(port)  # and comes back on the same address
        back = service.wait_for(lambda d: d.get("source_state") == "streaming"
                                and d.get("frames", 0) >= lost["frames"] + 10, timeout=60)
        assert back["frames"] > before and back["status"] == "ok"
    finally:
        code = service.stop()
        camera.terminate()
        camera.wait(timeout=10)
    assert code == 0, service.log()
    log = service.log()
    assert "reconnect" in log.lower(), log[-2000:]
    assert len(events_lines(events)) >= back["frames"]


def mount_tmpfs(path, size):
    """Mount a small tmpfs at path, or skip saying why (needs root / CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (a full disk is simulated by one)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % proc.stdout.decode().strip())


def test_full_disk_stops_the_video_not_the_service(model, tmp_path):
    video = data_path("videos", "kaggle853_test_scenes.mp4")
    small = tempfile.mkdtemp(dir=str(tmp_path))
    mount_tmpfs(small, "512k")
    try:
        out, events = os.path.join(small, "out.mp4"), str(tmp_path / "events.jsonl")
        service = Service(tmp_path, [video, out, "--events", events, "--max-frames", "120",
                                     "--bitrate", "4000"] + base_args(model))
        try:
            code = service.proc.wait(timeout=300)
        finally:
            service.stop()
        log = service.log()
        assert code == 0, log[-3000:]
        assert len(events_lines(events)) == 120  # every frame processed and recorded
        assert os.path.getsize(out) > 400 * 1024  # it did fill the disk...
        assert "output %s failed" % out in log and "disabled" in log, log[-3000:]
        assert service.state()["errors"] == 0  # ...and no frame failed because of it
    finally:
        subprocess.run(["umount", "-l", small])


def test_camera_absent_at_boot_is_waited_for(model, tmp_path):
    """The appliance config's source.retry_open: READY anyway, health says reconnecting,
    and the camera is picked up when it appears."""
    pytest.importorskip("gi")
    notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(tmp_path / "notify.sock")
    notify_sock.bind(notify_path)
    notify_sock.settimeout(60)
    port = free_port()
    service = Service(tmp_path, ["rtsp://127.0.0.1:%d/cam" % port, "none", "--retry-open",
                                 "--backoff", "0.5", "--backoff-max", "1"] + base_args(model),
                      env={"NOTIFY_SOCKET": notify_path})
    camera = None
    try:
        recv_until(notify_sock, b"READY=1")  # up and supervised, without a camera
        doc = service.wait_for(lambda d: d.get("source_state") == "reconnecting", timeout=30)
        assert doc["frames"] == 0 and doc["status"] in ("starting", "stale")
        camera = start_camera(port)
        service.wait_for(lambda d: d.get("source_state") == "streaming"
                         and (d.get("frames") or 0) >= 5, timeout=60)
    finally:
        code = service.stop()
        notify_sock.close()
        if camera is not None:
            camera.terminate()
            camera.wait(timeout=10)
    assert code == 0, service.log()


def test_exposed_health_endpoint_without_token_is_a_bad_setting(model, tmp_path):
    """Exit status 2 (RestartPreventExitStatus=2 in the unit: no restart loop), saying why."""
    proc = subprocess.run([sys.executable, "-m", "edge", "test://", "none", "--headless",
                           "--max-frames", "5", "--health-http", "0.0.0.0:0"] + base_args(model),
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = proc.stdout.decode()
    assert proc.returncode == 2, out
    assert "without a token" in out and "health.token" in out
