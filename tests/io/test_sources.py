"""edge.io.sources through real GStreamer pipelines, the shared video, stills and folders."""
import logging
import os
import random
import re
import shutil
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import data_path
from edge.errors import ConfigError, SourceError
from edge.io import gst
from edge.io.sinks import open_sink
from edge.io.sources import open_source, redact

VIDEO = ("videos", "kaggle853_test_scenes.mp4")


def read_all(source, limit=1000):
    frames = []
    while source.is_streaming and len(frames) < limit:
        frame = source.read(timeout=5.0)
        if frame is not None:
            frames.append(frame)
    return frames


def test_videotestsrc_delivers_every_buffer_then_ends():
    source = open_source("test://?num-buffers=7&width=64&height=48&fps=10")
    assert source.state == "streaming" and not source.is_live
    frames = read_all(source)
    assert [f.index for f in frames] == list(range(7))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].image.flags.writeable  # the overlay draws on it
    assert [round(f.pts, 3) for f in frames] == [round(i / 10.0, 3) for i in range(7)]
    assert source.state == "eos" and not source.is_streaming
    assert source.read(timeout=0.1) is None
    source.close()
    assert source.state == "closed"


def test_odd_width_rows_are_unpadded():
    # BGR rows of width 75 are padded to 4 bytes in the buffer: the stride must be honoured.
    frames = read_all(open_source("test://?num-buffers=2&width=75&height=31&pattern=ball"))
    assert len(frames) == 2 and frames[0].image.shape == (31, 75, 3)


def test_shared_video_every_frame_in_order_in_bgr():
    path = data_path(*VIDEO)
    source = open_source("file://" + os.path.abspath(path))
    assert not source.is_live
    start = time.monotonic()
    frames = read_all(source)
    seconds = time.monotonic() - start
    print("decoded %d frames of 1280x720 H.264 in %.2f s: %.0f frames/s"
          % (len(frames), seconds, len(frames) / seconds))
    assert len(frames) == 400 and source.state == "eos"
    assert [f.index for f in frames] == list(range(400))
    assert frames[0].image.shape == (720, 1280, 3)
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))  # every frame, in presentation order
    # Same picture as OpenCV's own FFmpeg decoder, in the same (BGR) channel order.
    capture = cv2.VideoCapture(path)
    ok, reference = capture.read()
    capture.release()
    if not ok:
        pytest.skip("this OpenCV build cannot decode the video to cross-check colours")
    first = frames[0].image.astype(np.int16)
    assert np.abs(first - reference).mean() < 3.0
    assert np.abs(first[..., ::-1] - reference).mean() > 3 * np.abs(first - reference).mean()


def test_still_image(shared_data, tmp_path):
    folder = data_path("kaggle853", "images")
    name = sorted(os.listdir(folder))[0]
    source = open_source(os.path.join(folder, name))
    frames = read_all(source)
    assert len(frames) == 1 and frames[0].name == name and source.state == "eos"
    assert np.array_equal(frames[0].image, cv2.imread(os.path.join(folder, name)))
    spaced = tmp_path / "a photo.jpg"
    shutil.copy(os.path.join(folder, name), str(spaced))
    uri = "file://" + str(spaced).replace(" ", "%20")  # a percent-encoded file URI
    assert read_all(open_source(uri))[0].name == "a photo.jpg"


def test_folder_sorted_and_broken_image_skipped(tmp_path, caplog):
    folder = data_path("kaggle853", "images")
    names = sorted(os.listdir(folder))[:3]
    for name in names:
        shutil.copy(os.path.join(folder, name), str(tmp_path / name))
    (tmp_path / "0_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="edge"):
        source = open_source(str(tmp_path))
        frames = read_all(source)
    assert [f.name for f in frames] == names
    assert [f.index for f in frames] == [0, 1, 2]
    assert source.skipped == 1 and source.state == "eos"
    assert "0_broken.jpg" in caplog.text


def test_empty_folder_and_undecodable_image(tmp_path):
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path))
    broken = tmp_path / "x.png"
    broken.write_bytes(b"garbage")
    with pytest.raises(SourceError, match="cannot decode image"):
        open_source(str(broken))


def test_missing_file_unknown_scheme_unknown_option(tmp_path):
    with pytest.raises(SourceError, match="no such file: .*nothere.mp4"):
        open_source(str(tmp_path / "nothere.mp4"))
    with pytest.raises(SourceError, match="unknown input scheme.*csi://"):
        open_source("ftp://example.com/video.mp4")
    with pytest.raises(ConfigError, match="unknown source option.*latency_sec"):
        open_source("test://", latency_sec=3)


def test_missing_element_names_it_and_its_package():
    with pytest.raises(SourceError, match="'nosuchelement' is not installed"):
        gst.launch("videotestsrc ! nosuchelement ! fakesink", SourceError)
    assert "gstreamer1.0-plugins-ugly" in gst.missing_message("x264enc")
    assert "gstreamer1.0-libav" in gst.missing_message("avdec_h264")
    if gst.has_element("nvarguscamerasrc"):
        pytest.skip("on a Jetson: nvarguscamerasrc is installed")
    with pytest.raises(SourceError, match="nvarguscamerasrc.*nvidia-l4t-gstreamer"):
        open_source("csi://0")


def test_garbage_and_interrupted_recordings_fail_clearly(tmp_path):
    data = open(data_path(*VIDEO), "rb").read()
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(random.Random(0).randbytes(50000))
    with pytest.raises(SourceError, match="Could not determine type"):
        open_source(str(garbage))
    # These random bytes type-find as LRC subtitles: no video, said at once (no timeout).
    garbage.write_bytes(random.Random(131).randbytes(50000))
    with pytest.raises(SourceError, match="no video stream that can be decoded"):
        open_source(str(garbage), open_timeout=30)
    # The shared file keeps its index (moov) at the end, like a recording cut short.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(SourceError, match="truncated"):
        open_source(str(cut))


def test_truncated_streamable_video_gives_its_frames_then_ends(tmp_path, caplog):
    # Remux (no re-encode) to Matroska, which needs no index, then cut it in half.
    whole = str(tmp_path / "whole.mkv")
    pipeline = gst.launch("filesrc name=src ! qtdemux ! h264parse ! matroskamux ! "
                          "filesink name=out", SourceError)
    pipeline.get_by_name("src").set_property("location", data_path(*VIDEO))
    pipeline.get_by_name("out").set_property("location", whole)
    gst.play(pipeline, SourceError, wait=False)
    assert gst.wait_bus(pipeline.get_bus(), 20.0) == ("eos", None)
    gst.stop(pipeline)
    data = open(whole, "rb").read()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:len(data) // 4])
    with caplog.at_level(logging.INFO, logger="edge"):
        source = open_source(str(cut))
        frames = read_all(source)
    assert 50 < len(frames) < 400 and source.state == "eos"
    assert "after %d frames" % len(frames) in caplog.text


def test_absent_camera_fails_at_start_or_waits_when_asked(caplog):
    with pytest.raises(SourceError, match="/dev/video99 is absent"):
        open_source("/dev/video99")
    with pytest.raises(SourceError, match="/dev/video99 is absent"):
        open_source("v4l2:///dev/video99")
    # retry_open=True: the service starts and waits for the camera (state says so).
    with pytest.raises(SourceError, match="cannot open rtsp://127.0.0.1:1/x"):
        open_source("rtsp://127.0.0.1:1/x")  # nothing listens there: refused at start
    with caplog.at_level(logging.INFO, logger="edge"):
        source = open_source("/dev/video99", retry_open=True, backoff=0.05, backoff_max=0.2)
        assert source.is_live and source.state == "reconnecting" and source.is_streaming
        assert source.read(timeout=0.6) is None
        assert source.state == "reconnecting"
        source.close()
    # Exponential back-off, capped: 0.05 -> 0.1 -> 0.2 -> 0.2 s, each attempt logged.
    waits = re.findall(r"next attempt in ([0-9.]+) s", caplog.text)
    assert waits[:3] == ["0.10", "0.20", "0.20"], caplog.text
    assert "(attempt 3)" in caplog.text


def test_live_source_keeps_only_the_newest_frame():
    source = open_source("test://?is-live=true&fps=30&width=64&height=48")
    assert source.is_live
    first = source.read(timeout=2.0)
    time.sleep(0.6)  # a slow consumer: about 18 frames are produced meanwhile
    later = source.read(timeout=2.0)
    source.close()
    assert first is not None and later is not None
    assert later.index == first.index + 1
    assert later.pts - first.pts > 0.4  # the stale frames were dropped, not queued


def test_loop_option_restarts_a_file(tmp_path):
    path = str(tmp_path / "five.mkv")
    sink = open_sink(path, fps=10)
    for frame in read_all(open_source("test://?num-buffers=5&width=64&height=48")):
        sink.write(frame.image)
    sink.close()
    source = open_source(path, loop=True)
    frames = [source.read(timeout=5.0) for _ in range(12)]
    source.close()
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == list(range(12))


class Feeder(object):
    """Writes a moving pattern into a sink from a thread, like the service's loop."""

    def __init__(self, sink):
        self.sink, self.running = sink, True
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        i = 0
        while self.running:
            self.sink.write(np.full((96, 128, 3), (i * 7) % 256, np.uint8))
            i += 1
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.thread.join()
        self.sink.close()


def read_until(source, predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frame = source.read(timeout=0.2)
        if predicate(frame):
            return frame
    return None


def test_rtsp_source_that_stops_and_comes_back(caplog):
    """An RTSP server restart: the source goes reconnecting, then streams again."""
    feeder = Feeder(open_sink("rtsp://@:0/cam"))
    uri = "rtsp://127.0.0.1:%d/cam" % feeder.sink.port
    caplog.set_level(logging.INFO, logger="edge")
    source = open_source(uri, latency=0, backoff=0.1, backoff_max=0.5)
    try:
        assert source.is_live
        first = read_until(source, lambda f: f is not None, 10)
        assert first is not None and first.image.shape == (96, 128, 3)
        feeder.stop()  # the server goes away
        read_until(source, lambda f: source.state == "reconnecting", 10)
        assert source.state == "reconnecting" and source.is_streaming
        feeder = Feeder(open_sink("rtsp://@:%d/cam" % feeder.sink.port))
        back = read_until(source, lambda f: f is not None, 15)
        assert back is not None and back.index > first.index
        assert source.state == "streaming"
        assert "reconnecting to" in caplog.text and "recovered after" in caplog.text
    finally:
        source.close()
        feeder.stop()


def test_redact_hides_passwords():
    assert redact("rtsp://admin:secret@10.0.0.2:554/s") == "rtsp://admin:***@10.0.0.2:554/s"
    assert redact("rtsp://10.0.0.2/s") == "rtsp://10.0.0.2/s"


def test_live_source_that_ends_is_reopened(caplog):
    """A live pipeline that ends (EOS) goes reconnecting, then streams again."""
    caplog.set_level(logging.INFO, logger="edge")
    source = open_source("test://?is-live=true&num-buffers=3&fps=30&width=32&height=24",
                         backoff=0.05)
    states = set()
    frames = []
    deadline = time.monotonic() + 10
    while len(frames) < 8 and time.monotonic() < deadline:
        frame = source.read(timeout=0.01)  # shorter than the back-off: None meanwhile
        states.add(source.state)
        if frame is not None:
            frames.append(frame)
    source.close()
    assert len(frames) == 8 and [f.index for f in frames] == list(range(8))
    assert "reconnecting" in states
    assert "end of stream" in caplog.text and "recovered after 1 attempt" in caplog.text


def test_stalled_live_source_is_reopened(caplog):
    """No frame for stall_timeout counts as a drop (a hung camera, a silent stream)."""
    caplog.set_level(logging.WARNING, logger="edge")
    source = open_source("test://?is-live=true&fps=1&width=32&height=24",
                         stall_timeout=0.3, backoff=0.05)
    first = source.read(timeout=2.0)
    second = source.read(timeout=2.0)  # the next frame is 1 s away: stall, reopen, frame
    source.close()
    assert first is not None and second is not None
    assert "no frame for" in caplog.text


def test_reconnect_attempts_leak_no_file_descriptors():
    """Months of retries against a dead camera must not exhaust descriptors (issue 6)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to count open descriptors")
    import socket
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: every attempt is refused
    source = open_source("rtsp://127.0.0.1:%d/x" % port, retry_open=True, backoff=0.01,
                         backoff_max=0.01)
    source.read(timeout=0.3)  # warm-up: GStreamer's own threads and sockets settle
    before = len(os.listdir("/proc/self/fd"))
    attempts = source._attempts
    source.read(timeout=1.5)
    after = len(os.listdir("/proc/self/fd"))
    source.close()
    assert source._attempts - attempts >= 10
    assert after <= before + 1


def test_jetson_pipelines_use_the_hardware_elements(monkeypatch, tmp_path):
    """Off the Jetson only the choice can be checked: with JetPack's elements present,
    the camera, file and MJPEG paths use them (the device run checks the rest)."""
    from edge.io import sources
    real = gst.has_element
    monkeypatch.setattr(gst, "has_element", lambda name: name.startswith("nv") or real(name))
    built = {}
    monkeypatch.setattr(sources, "GstSource", lambda uri, desc, *rest: built.setdefault(
        uri, desc))
    monkeypatch.setattr(os.path, "exists", lambda path: True)  # pretend /dev/video0 is there
    open_source("csi://1", width=1920, height=1080, fps=30, flip_method=2)
    assert built["csi://1"].startswith(
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,"
        "framerate=30/1,format=NV12 ! nvvidconv flip-method=2 ! video/x-raw,format=BGRx")
    open_source("v4l2:///dev/video0", format="mjpeg", width=1280, height=720, fps=30)
    assert "image/jpeg,width=1280,height=720,framerate=30/1 ! nvv4l2decoder mjpeg=1 ! " \
           "nvvidconv" in built["v4l2:///dev/video0"]
    open_source("/dev/video0", width=640, height=480)  # auto: raw or MJPEG, decodebin
    assert 'capsfilter caps="video/x-raw,width=640,height=480;image/jpeg,width=640,' \
           'height=480" ! decodebin ! nvvidconv' in built["/dev/video0"]
    clip = str(tmp_path / "clip.mkv")  # only the pipeline is built: any file name will do
    open(clip, "wb").close()
    open_source(clip)
    assert "expose-all-streams=false ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert" in \
           built[clip]
    # Cameras keep the newest frame only; the file delivers every frame.
    assert built["csi://1"].endswith("max-buffers=1 drop=true")
    assert built["v4l2:///dev/video0"].endswith("max-buffers=1 drop=true")
    assert built[clip].endswith("max-buffers=4 drop=false")


def test_loop_of_a_file_that_vanished_ends_cleanly(tmp_path, caplog):
    path = str(tmp_path / "two.mkv")
    sink = open_sink(path, fps=10)
    for frame in read_all(open_source("test://?num-buffers=2&width=32&height=24")):
        sink.write(frame.image)
    sink.close()
    source = open_source(path, loop=True)
    assert source.read(timeout=5.0) is not None
    os.remove(path)  # deleted under the running service
    with caplog.at_level(logging.ERROR, logger="edge"):
        frames = read_all(source)  # never raises into the loop
    assert len(frames) == 1 and source.state == "eos"
    assert "cannot be replayed" in caplog.text


def test_live_source_that_fails_before_its_first_frame_fails_at_open():
    with pytest.raises(SourceError, match="ended before its first frame"):
        open_source("test://?is-live=true&num-buffers=0")
    # With retry_open it is "opening" (not yet proven), then streaming at the first frame.
    source = open_source("test://?is-live=true&width=32&height=24", retry_open=True)
    assert source.state == "opening"
    assert source.read(timeout=2.0) is not None and source.state == "streaming"
    source.close()


def test_rtsp_camera_with_audio_gives_its_video():
    """Many IP cameras send audio too: only the video stream is decoded."""
    pytest.importorskip("gi")
    import gi
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, GstRtspServer
    gst.init()
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")
    context = GLib.MainContext.new()
    server.attach(context)
    loop = GLib.MainLoop.new(context, False)
    thread = threading.Thread(target=loop.run)
    thread.start()
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(  # the audio stream comes first, as on many cameras
        "( audiotestsrc is-live=true ! alawenc ! rtppcmapay name=pay0 pt=8 "
        "videotestsrc is-live=true ! video/x-raw,width=64,height=48 ! videoconvert ! "
        "video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast ! "
        "rtph264pay name=pay1 pt=96 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/av", factory)
    source = None
    try:
        source = open_source("rtsp://127.0.0.1:%d/av" % server.get_bound_port(), latency=0)
        frames = [source.read(timeout=5.0) for _ in range(5)]
        assert all(f is not None and f.image.shape == (48, 64, 3) for f in frames)
    finally:
        if source is not None:
            source.close()
        server.client_filter(lambda *args: GstRtspServer.RTSPFilterResult.REMOVE)
        idle = GLib.Idle()
        idle.set_callback(lambda *args: loop.quit() or False)
        idle.attach(context)
        thread.join(5)
