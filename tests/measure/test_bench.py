"""edge-bench on a short real clip: every field of its JSON, the baseline, the sweep, FLOPs."""
import json
import os

import numpy as np
import pytest

from conftest import data_path, require_detectors
from edge.measure import bench, flops

STAGES = ("capture", "detect", "preprocess", "classify", "track", "draw", "write")


@pytest.fixture(scope="module")
def second_model(tmp_path_factory):
    """Another real ONNX at a different input size, for the models sweep."""
    from helpers import tiny_classifier_onnx
    return tiny_classifier_onnx(str(tmp_path_factory.mktemp("model") / "tiny48.onnx"), size=48)


def test_bench_json_has_every_field(capsys, tmp_path, model_path, second_model):
    video = data_path("videos", "kaggle853_test_scenes.mp4")
    require_detectors()
    out = str(tmp_path / "bench.mp4")
    code = bench.main([video, out, "--max-frames", "20", "--warmup", "3", "--vs-baseline",
                       "--model", model_path, "--batch", "1,4", "--models",
                       "%s,%s" % (model_path, second_model), "--sweep-faces", "8",
                       "--sweep-repeat", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for run in (report["run"], report["baseline"]):
        assert run["frames"] == 20 and run["errors"] == 0
        assert run["fps"] > 0 and run["seconds"] > 0
        assert run["faces_per_frame"] > 0  # the clip's scenes hold 9 to 41 faces
        assert run["classified"] > 0 and run["classifications_per_s"] > 0
        assert set(run["stages"]) == set(STAGES)  # draw and write: the .mp4 output
        for stage in run["stages"].values():
            assert 0 <= stage["p50_ms"] <= stage["p95_ms"] <= stage["p99_ms"]
        assert run["cpu"]["cpu_percent"] > 0 and run["cpu"]["cores"] >= 1
        assert run["peak_rss_mb"] > 50
        assert run["jetson"]["available"] is False and run["jetson"]["reason"]
        assert run["frame_size"] == [1280, 720]
    # The baseline classifies every face on every frame, one at a time.
    base = report["baseline"]
    assert base["detections_per_frame"] == 1.0
    assert base["predict_calls"] == base["classified"]
    assert report["run"]["classified"] < base["classified"]
    assert report["speedup"] == pytest.approx(report["run"]["fps"] / base["fps"], rel=0.01)
    # Both runs really encoded their video.
    assert os.path.getsize(out) > 0 and os.path.getsize(str(tmp_path / "bench_baseline.mp4")) > 0
    sweep = report["sweep"]
    assert [entry["input_size"] for entry in sweep][1] == [48, 48]
    for entry in sweep:
        assert [p["batch"] for p in entry["points"]] == [1, 4]
        assert all(p["faces_per_s"] > 0 and p["ms_per_face"] > 0 for p in entry["points"])
        assert entry["flops_per_face"] > 0 and entry["nano_estimate_ms_per_face"]["25%"] > 0
    f = report["flops"]
    assert f["classifier_flops"] > 0 and f["detector"]["flops"] > 1e8
    h, w = f["detector"]["input"]  # the frame scaled to the detector's input, 16:9 kept
    assert w > h > 100 and abs(w / float(h) - 16 / 9.0) < 0.01
    assert "ESTIMATE" in f["note"]
    est = f["nano_estimate"]
    assert set(est) == {"25%", "40%"} and est["25%"]["ms_per_frame"] > est["40%"]["ms_per_frame"] > 0
    # the baseline detects and classifies more per frame: a longer estimate
    assert f["nano_estimate_baseline"]["25%"]["ms_per_frame"] > est["25%"]["ms_per_frame"]


def test_bench_table_for_people(capsys, model_path):
    video = data_path("videos", "kaggle853_test_scenes.mp4")
    require_detectors()
    assert bench.main([video, "none", "--max-frames", "6", "--warmup", "2", "--model", model_path,
                       "--detect-every", "1", "--classify-every", "1"]) == 0
    text = capsys.readouterr().out
    assert "FPS" in text and "p95" in text and "Jetson Nano ESTIMATE" in text
    for stage in ("capture", "detect", "classify", "draw"):
        assert "\n" + stage in text


def test_bench_errors_are_clear(caplog, tmp_path, model_path):
    assert bench.main([str(tmp_path / "absent.mp4"), "--model", model_path, "--detector", "haar"]) == 1
    assert "absent.mp4" in caplog.text
    assert bench.main(["test://", "--batch", "1,x", "--model", model_path]) == 2
    assert "--batch" in caplog.text


def test_flops_counter_by_hand(tmp_path):
    from helpers import tiny_classifier_onnx
    path = tiny_classifier_onnx(str(tmp_path / "tiny.onnx"), size=32)
    count = flops.onnx_flops(path, (1, 3, 32, 32))
    # Conv 8x3x3x3, stride 2, no padding: 15x15 outputs x 8 channels x 27 MACs; Gemm 8 -> 2.
    conv, gemm = 8 * 15 * 15 * 27, 8 * 2
    assert count["macs"] == conv + gemm
    assert count["by_op"] == {"Conv": 2 * conv, "Gemm": 2 * gemm}
    assert flops.onnx_flops(path, (4, 3, 32, 32))["macs"] == 4 * (conv + gemm)
    assert flops.nano_ms(472e9, 1.0) == pytest.approx(1000.0)
    assert flops.nano_ms(None, 0.3) is None


def test_baseline_outputs_are_kept_apart():
    assert bench.baseline_outputs(["out.mp4", "none", "rtsp://@:8554/out", "file:///tmp/a.mkv"]) == \
        ["out_baseline.mp4", "none", "rtsp://@:8554/out", "/tmp/a_baseline.mkv"]
    assert np.isfinite(flops.NANO_PEAK_FLOPS)


def test_bench_over_a_folder_of_photos(capsys, tmp_path, model_path):
    import shutil
    images = data_path("kaggle853", "images")
    require_detectors()
    for name in ("maksssksksss3.jpg", "maksssksksss5.jpg", "maksssksksss8.jpg", "maksssksksss9.jpg"):
        shutil.copy(os.path.join(images, name), str(tmp_path))
    assert bench.main([str(tmp_path), "--warmup", "1", "--model", model_path, "--json", "--no-flops"]) == 0
    report = json.loads(capsys.readouterr().out)
    run = report["run"]
    assert report["mode"] == "photos" and "flops" not in report
    # still-photo mode: every image detected and every face classified
    assert run["frames"] == 3 and run["detections_per_frame"] == 1.0
    assert run["faces_per_frame"] > 0
    assert run["classified_per_frame"] == pytest.approx(run["faces_per_frame"], abs=0.01)
