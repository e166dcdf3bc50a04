"""The one HTTP server: /health, /metrics (parsed by prometheus_client), /api/state, the page
and its stream, one token rule; the real service assembly on the demo video."""
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from conftest import ROOT, data_path, require_detectors
from edge.app import config as cfg
from edge.app import pipeline as pl
from edge.app.assemble import VideoRun
from edge.errors import ConfigError, ModelError
from edge.ops.web import WebServer, json_route

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client not installed (pip install .[dev])")


def get(url, token=None, timeout=10):
    """(status, headers, body bytes) of a GET."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def read_part(response):
    """One JPEG of a multipart/x-mixed-replace stream, decoded."""
    header = b""
    while not header.endswith(b"\r\n\r\n"):
        header += response.read(1)
    length = int(re.search(rb"Content-Length: (\d+)", header).group(1))
    return cv2.imdecode(np.frombuffer(response.read(length), np.uint8), cv2.IMREAD_COLOR)


def families(text):
    return dict((f.name, f) for f in parser.text_string_to_metric_families(text))


def samples(family, name=None):
    return [(s.labels, s.value) for s in family.samples if name is None or s.name == name]


@pytest.fixture
def service(model_path):
    """A VideoRun of the demo video with the HTTP server on a free port, and a loop thread."""
    video = data_path("videos", "kaggle853_test_scenes.mp4")
    require_detectors()
    runs = []

    def start(frames, **overrides):
        overrides.update({"input": video, "headless": True, "health.http": "127.0.0.1:0",
                          "classifier.model": model_path, "classifier.backend": "ort",
                          "web.chart_step": 0.2})
        try:
            run = VideoRun(cfg.load(overrides=overrides))
        except ModelError as exc:
            pytest.skip("detector or model not provisioned (run `make models`): %s" % exc)
        runs.append(run)
        run.stop = threading.Event()
        run.result = {}
        run.thread = threading.Thread(target=lambda: run.result.update(pl.run(
            run.pipeline, run.source, run.stop.is_set, frames, pending=run.first)))
        run.thread.start()
        run.url = "http://127.0.0.1:%d" % run.web.address[1]
        return run
    yield start
    for run in runs:
        run.stop.set()
        run.thread.join(60)
        run.close()


def test_metrics_parse_with_prometheus_client_and_agree_with_the_loop(service):
    run = service(60)
    run.thread.join(120)
    code, headers, body = get(run.url + "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = families(body.decode("utf-8"))
    pipeline = run.pipeline
    assert samples(found["maskgate_frames"]) == [({}, 60.0)]
    assert found["maskgate_frames"].type == "counter"
    faces = dict((l["label"], v) for l, v in samples(found["maskgate_faces"]))
    assert set(faces) == {"mask", "no_mask", "incorrect", "unknown"}
    assert sum(faces.values()) == pipeline.faces_seen > 0   # faces per frame, summed
    people = dict((l["label"], v) for l, v in samples(found["maskgate_people"]))
    assert set(people) == {"mask", "no_mask", "incorrect"}
    assert found["maskgate_fps"].type == "gauge" and samples(found["maskgate_fps"])[0][1] > 0
    assert samples(found["maskgate_source_up"]) == [({}, 1.0)]  # stopped at 60 frames, still streaming
    hist = found["maskgate_stage_latency_seconds"]
    assert hist.type == "histogram"
    stages = set(l["stage"] for l, _ in samples(hist, "maskgate_stage_latency_seconds_count"))
    assert {"capture", "detect", "classify", "track", "ops"} <= stages
    for stage in stages:
        buckets = [(l["le"], v) for l, v in samples(hist, "maskgate_stage_latency_seconds_bucket")
                   if l["stage"] == stage]
        counts = [v for _, v in buckets]
        assert buckets[-1][0] == "+Inf" and counts == sorted(counts)  # cumulative
        count = [v for l, v in samples(hist, "maskgate_stage_latency_seconds_count") if l["stage"] == stage]
        assert counts[-1] == count[0] > 0
    detect = [v for l, v in samples(hist, "maskgate_stage_latency_seconds_count") if l["stage"] == "detect"]
    assert detect[0] == run.analyzer.timer.counts["detect"]
    # The state behind the page says the same, and counters only grow.
    code, _, body = get(run.url + "/api/state")
    state = json.loads(body.decode("utf-8"))
    assert code == 200 and state["frames"] == 60 and state["faces"]["total"] == dict(
        (k, int(v)) for k, v in faces.items())
    assert state["people"]["run"]["people"] == dict((k, int(v)) for k, v in people.items())
    run.close()  # the people still in view are counted at the end
    assert sum(run.ops.people.totals.values()) >= sum(people.values())


def test_health_page_and_stream_on_one_server(service):
    run = service(0, **{"source.loop": True})     # the clip over and over until stopped
    code, _, body = get(run.url + "/health")
    assert code == 200 and json.loads(body.decode("utf-8"))["status"] in ("ok", "starting")
    code, headers, page = get(run.url + "/")
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    # Nothing from elsewhere: the device is offline (no http(s):// or protocol-relative URL).
    assert not re.search(rb"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert b"stream.mjpg" in page and b"api/state" in page
    with open(os.path.join(ROOT, "pyproject.toml")) as f:  # installed with the package
        assert '"ops/page.html"' in f.read()
    response = urllib.request.urlopen(run.url + "/stream.mjpg", timeout=20)
    try:
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        first = read_part(response)
        assert first.shape == (720, 1280, 3)
        assert read_part(response).shape == first.shape  # and the next one
    finally:
        response.close()
    code, _, body = get(run.url + "/nowhere")
    assert code == 404 and b"/metrics" in body


def test_the_stream_encodes_only_while_watched_at_its_own_rate(service):
    run = service(0, **{"source.loop": True, "web.stream_fps": 5})
    feed = [s for s in run.ops_sinks if s.uri == "page:/stream.mjpg"][0]
    time.sleep(1.0)
    assert run.pipeline.frames > 5
    assert feed.encoded == 0 and feed.frames == 0   # nobody watching: not even drawn for it
    response = urllib.request.urlopen(run.url + "/stream.mjpg", timeout=20)
    try:
        started = time.monotonic()
        for _ in range(6):
            read_part(response)
        elapsed = time.monotonic() - started
        watched = families(get(run.url + "/metrics")[2].decode("utf-8"))
    finally:
        response.close()
    assert samples(watched["maskgate_stream_clients"]) == [({}, 1.0)]
    assert samples(watched["maskgate_stream_frames"])[0][1] >= 6
    # 6 frames at 5 fps, not at the loop's rate; each encoded once.
    assert elapsed >= 0.8 and 6 <= feed.encoded <= 10


def pixelated(image, boxes):
    """Mean change per face box when pixelated again: small if it already was (JPEG noise only)."""
    from edge.app.overlay import blur_faces
    again = blur_faces(image.copy(), boxes)
    changes = []
    for box in boxes:
        x1, y1, x2, y2 = [int(round(float(v))) for v in box]
        changes.append(float(np.abs(image[y1:y2, x1:x2].astype(np.int16) - again[y1:y2, x1:x2]).mean()))
    return changes


@pytest.mark.parametrize("blur", [True, False])
def test_blur_reaches_the_page_stream(model_path, blur):
    """With overlay.blur_faces the page's stream shows every face pixelated (as the video
    outputs and clips, which take the same drawn frame); without it, faces are intact."""
    from edge.app.assemble import build_analyzer, build_ops, build_pipeline
    from edge.io.sources import open_source
    require_detectors()
    config = cfg.load(overrides={"classifier.model": model_path, "classifier.backend": "ort",
                                 "overlay.blur_faces": blur, "overlay.enabled": False,
                                 "health.http": "127.0.0.1:0"})
    web = WebServer("127.0.0.1:0")
    analyzer = build_analyzer(config)
    hub, sinks = build_ops(config, web, analyzer.timer)
    feed = [s for s in sinks if s.uri == "page:/stream.mjpg"][0]
    feed.clients = 1  # a viewer
    pipeline = build_pipeline(config, analyzer, sinks, ops=hub)
    source = open_source(data_path("videos", "kaggle853_test_scenes.mp4"))
    try:
        faces = pipeline.process(source.read(timeout=5).image)
        jpeg, _ = feed.next_jpeg(0)
    finally:
        source.close()
        hub.close()
        pipeline.close()
        web.close()
    shown = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    changes = pixelated(shown, [f.box for f in faces])
    assert len(faces) >= 5
    if blur:
        assert max(changes) < 6.0, changes
    else:
        assert min(changes) > 8.0, changes


def test_one_token_rule_for_every_route():
    with pytest.raises(ConfigError, match="without a token"):
        WebServer("0.0.0.0:0")
    web = WebServer("0.0.0.0:0", token="s3cret")
    web.route("/api/state", json_route(lambda: {"ok": True}))
    web.route("/metrics", json_route(lambda: {"ok": True}))
    try:
        url = "http://127.0.0.1:%d" % web.address[1]
        for path in ("/api/state", "/metrics"):
            code, headers, _ = get(url + path)
            assert code == 401 and headers["WWW-Authenticate"] == "Bearer"
            assert get(url + path, token="wrong")[0] == 401
            assert get(url + path, token="s3cret")[0] == 200
            assert get(url + path + "?token=s3cret")[0] == 200
    finally:
        web.close()
    local = WebServer("0")  # loopback: no token needed
    try:
        assert local.address[0] == "127.0.0.1"
    finally:
        local.close()


@pytest.mark.slow
def test_the_page_in_headless_chromium_shows_the_stream_and_counts_that_change(service, tmp_path):
    """The real page in Debian's Chromium, with a token: it loads, shows the live view, and its
    counts change by themselves. The screenshot is kept in out/test-artefacts/ (git-ignored)."""
    import shutil

    from webdriver import Browser
    run = service(0, **{"source.loop": True, "health.token": "s3cret", "web.stream_fps": 5,
                        "people.window": 3600})
    browser = Browser(str(tmp_path / "profile"))
    try:
        browser.open(run.url + "/?token=s3cret")
        browser.wait("return Number(document.body.dataset.updates) >= 1")
        # The live view: the MJPEG stream (token passed on by the page) decodes into the img.
        size = browser.wait("var i = document.getElementById('live');"
                            "return i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight];")
        assert size == [1280, 720]
        first = int(browser.run("return document.getElementById('people-total').textContent"))
        later = browser.wait("var n = Number(document.getElementById('people-total').textContent);"
                             "return n > %d && n;" % first, timeout=60)
        assert later > first
        browser.wait("return document.getElementById('compliance').textContent.endsWith('%')")
        browser.wait("return document.querySelectorAll('#recent tr td.label').length >= 3")
        browser.wait("return Number(document.body.dataset.updates) >= 4", timeout=30)
        # Everything the page loaded came from the device itself.
        origins = browser.run("return performance.getEntriesByType('resource')"
                              ".map(function (e) { return new URL(e.name).origin; });")
        assert origins and set(origins) == {run.url}
        fps = browser.run("return document.getElementById('fps').textContent")
        assert fps.endswith(" fps") and float(fps.split()[0]) > 0
        shot = browser.screenshot(str(tmp_path / "page.png"))
    finally:
        browser.quit()
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    kept = os.path.join(ROOT, "out", "test-artefacts")
    os.makedirs(kept, exist_ok=True)
    shutil.copy(shot, os.path.join(kept, "page.png"))
