"""``VideoRun.reload``: a new configuration applied to a running video, in-process, on the
shared video with real GStreamer outputs. The service's SIGHUP path (the real service as a
child process) is in test_restarts.py."""
import json
import os
import signal
import socket

import numpy as np
import pytest

from conftest import data_path
from edge.app import config as cfg
from edge.app.assemble import VideoRun
from edge.app.pipeline import run
from edge.app.signals import Stopper
from edge.errors import ConfigError, ModelError, SinkError, SourceError
from edge.io.sinks import open_sink

VIDEO = ("videos", "kaggle853_test_scenes.mp4")


def make_config(model_path, **overrides):
    base = {"input": data_path(*VIDEO), "headless": True, "classifier.model": model_path,
            "classifier.backend": "ort", "detector.name": "haar", "detector.every": 2,
            "detector.input_size": 480}  # small: fast on a loaded 2-core machine, faces still found
    base.update(overrides)
    return cfg.load(overrides=base)


def step(video, frames):
    """Process ``frames`` more frames of the run (the service's loop, as after a reload)."""
    pending, video.first = video.first, []
    run(video.pipeline, video.source, max_frames=video.pipeline.frames + frames, pending=pending)


def events(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def frames_in(path):
    from edge.io.sources import open_source
    source = open_source(path)
    count = 0
    while source.is_streaming:
        count += source.read(timeout=2.0) is not None
    source.close()
    return count


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_reload_keeps_what_did_not_change_and_reopens_what_did(model_path, tmp_path):
    a, b, ev = str(tmp_path / "a.mkv"), str(tmp_path / "b.mkv"), str(tmp_path / "events.jsonl")
    config = make_config(model_path, outputs=[a], **{"events.path": ev})
    with VideoRun(config, run_id="r1") as video:
        step(video, 10)
        source, analyzer, sink_a, tracker = video.source, video.analyzer, video.sinks[0], video.pipeline.tracker
        result = video.reload(make_config(model_path, outputs=[a, b], **{"events.path": ev, "tracker.vote": 3}))
        assert result == {"changed": ["loop", "outputs"], "kept": ["models", "input", "health", "events"]}
        # The camera, the models and the open video file go on; the tracker's settings changed.
        assert video.source is source and video.analyzer is analyzer and video.sinks[0] is sink_a
        assert video.pipeline.tracker is not tracker and video.pipeline.tracker.vote == 3
        assert video.pipeline.frames == 10 and video.reloads == 1
        step(video, 10)
        tracker = video.pipeline.tracker
        video.reload(make_config(model_path, outputs=[a, b], **{"events.path": ev, "tracker.vote": 3}))
        assert video.pipeline.tracker is tracker  # nothing changed: the tracks go on
        step(video, 5)
    lines = events(ev)
    assert [l["frame"] for l in lines] == list(range(25)) and {l["run"] for l in lines} == {"r1"}
    assert frames_in(a) == 25 and frames_in(b) == 15  # b from the reload on, both playable
    ids = [f["track"] for l in lines for f in l["faces"]]
    assert ids and sorted(set(ids)) == sorted(set(ids), key=ids.index)  # new tracks, new ids


@pytest.mark.parametrize("broken, error", [
    ({"classifier.model": "/nowhere/model.onnx"}, ModelError),  # valid settings, cannot be applied
    ({"outputs": ["/nowhere/out.mp4"]}, SinkError),
    ({"input": "/nowhere/clip.mp4"}, SourceError),
])
def test_a_config_that_cannot_be_applied_changes_nothing(model_path, tmp_path, broken, error):
    a, ev = str(tmp_path / "a.mkv"), str(tmp_path / "events.jsonl")
    config = make_config(model_path, outputs=[a], **{"events.path": ev})
    with VideoRun(config) as video:
        step(video, 6)
        before = (video.source, video.analyzer, list(video.sinks), video.events, video.pipeline, video.config)
        changes = dict({"outputs": [a, str(tmp_path / "b.mkv")], "events.path": ev, "detector.every": 3}, **broken)
        with pytest.raises(error):
            video.reload(make_config(model_path, **changes))
        assert (video.source, video.analyzer, list(video.sinks), video.events, video.pipeline,
                video.config) == before and video.reloads == 0
        assert not os.path.exists(str(tmp_path / "b.mkv")) or "outputs" in broken
        step(video, 6)
    assert [l["frame"] for l in events(ev)] == list(range(12))
    assert frames_in(a) == 12


def test_photo_input_and_no_input_are_refused(model_path, tmp_path):
    with VideoRun(make_config(model_path)) as video:
        with pytest.raises(ConfigError, match="still-photo mode"):
            video.reload(make_config(model_path, input=str(tmp_path)))


def test_an_exposed_rtsp_output_on_the_same_port_replaces_the_local_one(model_path, tmp_path):
    """rtsp://@:P/out -> rtsp://0.0.0.0:P/out with a password: the old server holds the port,
    so it is closed first; when the new one still fails, the old one is back on its port."""
    port = free_port()
    local = "rtsp://@:%d/out" % port
    with VideoRun(make_config(model_path, outputs=[local])) as video:
        step(video, 3)
        old = video.sinks[0]
        exposed = "rtsp://0.0.0.0:%d/out" % port
        with pytest.raises(SinkError, match="give it a login"):  # no password: refused ...
            video.reload(make_config(model_path, outputs=[exposed]))
        assert video.sinks[0] is not old and video.sinks[0].port == port  # ... and the old one reopened
        video.reload(make_config(model_path, outputs=[exposed], **{"output.rtsp_password": "pw"}))
        assert video.sinks[0].port == port and video.sinks[0].url.startswith("rtsp://0.0.0.0:")
        step(video, 3)


def test_input_health_and_events_path_changes(model_path, tmp_path):
    ev1, ev2 = str(tmp_path / "e1.jsonl"), str(tmp_path / "e2.jsonl")
    h1, h2 = str(tmp_path / "h1.json"), str(tmp_path / "h2.json")
    config = make_config(model_path, **{"events.path": ev1, "health.file": h1})
    with VideoRun(config, run_id="r") as video:
        step(video, 8)
        source, tracker = video.source, video.pipeline.tracker
        last_id = video.track_ids.next - 1
        clip = str(tmp_path / "clip.mkv")
        sink = open_sink(clip, fps=10)
        for frame in range(12):
            sink.write(np.full((120, 160, 3), frame * 10, np.uint8))
        sink.close()
        result = video.reload(make_config(model_path, input=clip, **{"events.path": ev2, "health.file": h2}))
        assert set(result["changed"]) == {"input", "health", "events"}
        assert video.source is not source and video.pipeline.tracker is not tracker  # a new scene
        assert len(video.first) == 2  # read ahead for its frame rate, processed next
        pending, video.first = video.first, []
        run(video.pipeline, video.source, pending=pending)  # to the new input's end
        assert video.pipeline.frames == 20 and video.source.state == "eos"
    with open(h1) as f:
        assert json.load(f)["status"] == "stopped"  # the old health file is not left looking alive
    with open(h2) as f:
        assert json.load(f)["frames"] == 20
    assert [l["frame"] for l in events(ev1)] == list(range(8))
    assert [l["frame"] for l in events(ev2)] == list(range(12))  # the new input's frame numbers
    assert json.load(open(str(tmp_path / "e2.state.json")))["next_track"] >= last_id + 1


@pytest.mark.parametrize("first_events", [True, False])
def test_track_ids_stay_unique_across_reloads_that_move_or_drop_the_events_file(model_path, tmp_path,
                                                                                first_events):
    """A kept tracker takes its ids from the new file's allocator; a new tracker starts above every
    id handed out before, whichever file (or none) the events went to."""
    ev1, ev2 = str(tmp_path / "e1.jsonl"), str(tmp_path / "e2.jsonl")
    seen = []
    with VideoRun(make_config(model_path, **{"events.path": ev1 if first_events else None})) as video:
        def frames(count, skip_to=0):
            done = 0
            while done < count:
                frame = video.source.read(timeout=5.0)
                if frame is not None and frame.index >= skip_to:  # the clip's scenes with faces
                    faces = video.pipeline.process(frame.image, frame.index)
                    seen.append(set(f.track for f in faces))
                    done += 1
        frames(10)
        video.reload(make_config(model_path, **{"events.path": ev2}))  # the tracker is kept
        assert video.pipeline.tracker.next_id is video.track_ids
        frames(10)
        before = set().union(*seen)
        video.reload(make_config(model_path, **{"events.path": ev2, "tracker.vote": 2}))  # a new tracker
        del seen[:]
        frames(9, skip_to=51)
        after = set().union(*seen)
    assert before and after and not (before & after), (before, after)
    assert min(after) > max(before)


def test_sighup_is_a_flag_taken_between_frames():
    before = signal.getsignal(signal.SIGHUP)  # SIG_DFL, or SIG_IGN under nohup
    stopper = Stopper(reload=True).install()
    try:
        assert not stopper.interrupted()
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)  # two before the loop looks: one reload
        assert stopper.interrupted() and not stopper.is_set()
        assert stopper.take_reload() and not stopper.take_reload()
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopper.is_set() and not stopper.take_reload()  # stopping wins
    finally:
        stopper.restore()
    assert signal.getsignal(signal.SIGHUP) == before  # the handler it found is put back


def test_keepalive_pings_while_a_reload_blocks_the_loop_and_stops_after(tmp_path, monkeypatch):
    from edge.app import notify
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(5.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with notify.keepalive():
        # The main loop is blocked here (an engine build): the pings come from the helper.
        assert [sock.recv(64) for _ in range(2)] == [b"WATCHDOG=1"] * 2
    sock.setblocking(False)
    try:
        while True:
            sock.recv(64)  # what was sent before the block ended
    except BlockingIOError:
        pass
    sock.settimeout(0.3)
    with pytest.raises(socket.timeout):  # the helper is joined: no ping after the block
        sock.recv(64)
    with notify.keepalive(limit=0.0):
        with pytest.raises(socket.timeout):  # a step past the limit gets no pings: the watchdog acts
            sock.recv(64)
    sock.close()
