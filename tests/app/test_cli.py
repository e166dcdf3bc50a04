"""``python -m edge`` as a user runs it: a real subprocess, real video, signals, photos."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import pytest

from conftest import ROOT, data_path

VIDEO = ("videos", "kaggle853_test_scenes.mp4")
DETECTOR = os.path.join(ROOT, "models", "detectors", "retinaface_mnet025.onnx")


def edge_cmd(*args):
    return [sys.executable, "-m", "edge"] + [str(a) for a in args]


def run_edge(*args, **kwargs):
    env = dict(os.environ, **kwargs.pop("env", {}))
    return subprocess.run(edge_cmd(*args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120, **kwargs)


def need_detector():
    if not os.path.isfile(DETECTOR):
        pytest.skip("retinaface not provisioned at %s (run `make models`)" % DETECTOR)


def count_frames(video):
    from edge.io.sources import open_source
    source = open_source(video)
    count = 0
    while source.is_streaming:
        count += source.read(timeout=2.0) is not None
    source.close()
    return count


def read_events(path):
    with open(path) as stream:
        return [json.loads(line) for line in stream]  # raises on a torn last line


def test_short_run_writes_video_and_events(tmp_path, model_path):
    need_detector()
    video, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    done = run_edge(data_path(*VIDEO), video, "--events", events, "--headless", "--max-frames", 12,
                    "--model", model_path, "--backend", "ort", "--detect-every", 3)
    assert done.returncode == 0, done.stderr
    lines = read_events(str(events))
    assert [line["frame"] for line in lines] == list(range(12))
    assert count_frames(str(video)) == 12
    assert "12 frames" in done.stderr and "FPS" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_events_and_closes_the_video(sig, tmp_path, model_path):
    need_detector()
    video, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    proc = subprocess.Popen(edge_cmd(data_path(*VIDEO), video, "--events", events, "--headless",
                                     "--model", model_path, "--backend", "ort",
                                     "--events-flush-every", 1, "--loop"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if events.exists() and len(events.read_text().splitlines()) >= 15:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "%s received" % signal.Signals(sig).name in err
    lines = read_events(str(events))
    assert len(lines) >= 15
    # Every processed frame went to both outputs, and the file plays to its end.
    assert count_frames(str(video)) == len(lines)


def test_systemd_notify_and_health_file(tmp_path, model_path):
    import socket
    import threading
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    messages, running = [], [True]

    def receive():  # read as systemd does: a full datagram queue would block the sender
        while running[0]:
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                pass
    reader = threading.Thread(target=receive)
    reader.start()
    health = tmp_path / "health.json"
    try:
        done = run_edge("test://?num-buffers=40&fps=20", "--headless", "--detector", "haar",
                        "--model", model_path, "--backend", "ort", "--health-file", health,
                        env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "100000"})
        time.sleep(0.3)
    finally:
        running[0] = False
        reader.join()
        sock.close()
    assert done.returncode == 0, done.stderr
    kinds = [m.split("\n")[0].split("=")[0] for m in messages]
    assert kinds[0] == "READY" and kinds[-1] == "STOPPING"
    assert "WATCHDOG" in kinds
    state = json.loads(health.read_text())
    assert state["frames"] == 40 and state["last_frame_time"] and "source_state" in state


def test_still_photo_mode_on_a_folder(tmp_path, model_path):
    need_detector()
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["maksssksksss3.jpg", "maksssksksss9.jpg", "maksssksksss20.jpg"]
    for name in names:
        shutil.copy(data_path("kaggle853", "images", name), str(folder / name))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "annotated"
    done = run_edge(folder, out, "--model", model_path, "--backend", "ort", "--blur-faces")
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "faces.json").read_text())
    assert sorted(result) == sorted(names)               # the broken file is skipped
    assert sum(len(faces) for faces in result.values()) >= 3
    for faces in result.values():
        for face in faces:
            assert face["label"] in ("mask", "no_mask", "incorrect") and len(face["box"]) == 4
            assert face["compliant"] is (face["label"] == "mask")
    for name in names:
        assert (out / name).stat().st_size > 1000
    assert "skipping" in done.stderr and "broken.jpg" in done.stderr
    assert "flip_pass=True" in done.stderr  # both views of a still photo (detector.flip_pass null)


def test_a_small_photo_is_drawn_enlarged_and_its_faces_keep_its_coordinates(tmp_path, model_path):
    """A 100 px webcam photo: the annotated copy is drawn at 640 px, so that the status line
    and the label do not cover the face; faces.json holds the photo's own pixels."""
    need_detector()
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(data_path("bijoy_webcam", "with_mask", "4283.jpg"), str(folder / "webcam.jpg"))
    out = tmp_path / "annotated"
    done = run_edge(folder, out, "--model", model_path, "--backend", "ort")
    assert done.returncode == 0, done.stderr
    drawn = cv2.imread(str(out / "webcam.jpg"))
    assert drawn.shape[:2] == (640, 640)
    faces = json.loads((out / "faces.json").read_text())["webcam.jpg"]
    assert faces and all(0 <= v <= 100 for face in faces for v in face["box"])


def test_single_photo_faces_to_stdout(model_path):
    need_detector()
    done = run_edge(data_path("kaggle853", "images", "maksssksksss3.jpg"), "--model", model_path,
                    "--backend", "ort", "--headless")
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)) == ["maksssksksss3.jpg"]


def test_default_model_found_from_another_directory(tmp_path):
    need_detector()
    if not os.path.isfile(os.path.join(ROOT, "models", "mask_classifier.onnx")):
        pytest.skip("the shipped classifier models/mask_classifier.onnx is not there yet")
    events = tmp_path / "events.jsonl"
    done = subprocess.run(edge_cmd(data_path(*VIDEO), "--headless", "--max-frames", 3, "--events", events),
                          cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    assert os.path.join(ROOT, "models", "mask_classifier.onnx") in done.stderr
    assert len(read_events(str(events))) == 3


def test_bad_setting_exits_2_naming_the_key(tmp_path):
    done = run_edge("test://", "--detector", "yolo")
    assert done.returncode == 2
    assert "detector.name" in done.stderr and "haar, ssd, retinaface" in done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  votes: 3\n")
    done = run_edge("test://", "--config", bad)
    assert done.returncode == 2 and "tracker.votes" in done.stderr and "vote" in done.stderr


def test_missing_input_and_missing_model_exit_1_with_a_clear_line(tmp_path, model_path):
    done = run_edge(tmp_path / "nowhere.mp4", "--headless", "--model", model_path, "--backend", "ort",
                    "--detector", "haar")
    assert done.returncode == 1 and "no such file" in done.stderr and "Traceback" not in done.stderr
    done = run_edge("test://", "--headless", "--model", tmp_path / "none.onnx", "--detector", "haar")
    assert done.returncode == 1 and "none.onnx" in done.stderr and "Traceback" not in done.stderr


def test_print_config_and_journal_logs(model_path):
    done = run_edge("test://?num-buffers=3", "--print-config", "--detect-every", 4)
    assert done.returncode == 0
    assert "every: 4" in done.stdout and "input: test://?num-buffers=3" in done.stdout
    done = run_edge("test://?num-buffers=3", "--headless", "--detector", "haar", "--model", model_path,
                    "--backend", "ort", env={"JOURNAL_STREAM": "8:1234"})
    assert done.returncode == 0, done.stderr
    assert all(line.split(" ")[0] in ("DEBUG", "INFO", "WARNING", "ERROR")
               for line in done.stderr.splitlines() if line), done.stderr
