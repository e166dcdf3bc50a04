"""TensorRT engines (edge.infer.classify: the backend, sidecar, build/cache/check) and ``export.trt``:
what runs without TensorRT here, and the real thing where it exists.

TensorRT cannot be installed on the machines that build and test this project (its PyPI
packages fetch the libraries from NVIDIA's own index at install time), so the tests that
need an engine skip with that reason; the cache key, the sidecar, the error messages, the
argument checks, the 8.2/10 dispatch and Python 3.6 compatibility are tested everywhere.
"""
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from edge.common import sha256
from edge.errors import ModelError
from edge.infer.classify import engine as engines
from edge.infer.classify import trt_compat
from edge.infer.classify.engine import cache_key, cached_engine_path
from edge.infer.classify.sidecar import check_sidecar, read_sidecar, sidecar_path, write_sidecar
from edge.infer.classify.trt import TrtClassifier
from edge.infer.model_meta import MetadataError
from edge.infer.preprocess import images_to_batch
from export import trt as export_trt

META = {"format": "maskgate-model/1", "arch": "mobilenet_v2", "classes": ["mask", "no_mask"],
        "input_size": [64, 64], "resize": "letterbox", "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "crop_margin": 0.15, "color": "RGB"}
SHA = "ab" * 32
NO_TRT = "TensorRT cannot be installed here (NVIDIA's package index is out of reach); needs a GPU machine"


def _has(module):
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def _sidecar(**changes):
    info = {"meta": META, "onnx": "model.onnx", "onnx_sha256": SHA, "tensorrt": "8.2.1.8",
            "gpu": "NVIDIA Tegra X1", "precision": "fp16", "max_batch": 16}
    info.update(changes)
    return info


def test_cache_key_names_every_fact():
    key = cache_key(SHA, "8.2.1.8", "NVIDIA Tegra X1", "fp16", 16)
    assert key == "abababababababab.trt8.2.1.8.nvidia-tegra-x1.fp16.b16"
    variants = [cache_key("cd" * 32, "8.2.1.8", "NVIDIA Tegra X1", "fp16", 16),
                cache_key(SHA, "10.3.0", "NVIDIA Tegra X1", "fp16", 16),
                cache_key(SHA, "8.2.1.8", "Orin (nvgpu)", "fp16", 16),
                cache_key(SHA, "8.2.1.8", "NVIDIA Tegra X1", "fp32", 16),
                cache_key(SHA, "8.2.1.8", "NVIDIA Tegra X1", "fp16", 8)]
    assert len(set(variants + [key])) == 6
    path = cached_engine_path("/models/maskgate.onnx", "/var/cache/maskgate", SHA, "10.3.0", "Orin (nvgpu)",
                              "int8", 4)
    assert path == "/var/cache/maskgate/maskgate.abababababababab.trt10.3.0.orin-nvgpu.int8.b4.engine"


def test_sidecar_round_trip_and_bad_sidecars(tmp_path):
    engine = str(tmp_path / "model.engine")
    with pytest.raises(ModelError, match="has no sidecar .*python -m export.trt"):
        read_sidecar(engine)
    assert write_sidecar(engine, _sidecar()) == engine + ".json"
    info = read_sidecar(engine)
    assert info["meta"] == META and info["format"] == "maskgate-engine/1" and info["max_batch"] == 16
    with pytest.raises(ValueError, match="missing gpu"):
        write_sidecar(engine, {k: v for k, v in _sidecar().items() if k != "gpu"})
    with open(sidecar_path(engine), "w") as f:
        f.write("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_sidecar(engine)
    with open(sidecar_path(engine), "w") as f:
        json.dump(dict(_sidecar(meta=dict(META, classes=["cat", "dog"])), format="maskgate-engine/1"), f)
    with pytest.raises(ModelError, match="classes"):
        read_sidecar(engine)
    assert sorted(os.listdir(str(tmp_path))) == ["model.engine.json"]  # no temporary files left


def test_mismatched_engine_says_how_to_rebuild():
    info = _sidecar()
    assert check_sidecar(info, "8.2.1.8", "NVIDIA Tegra X1", "m.engine") is info
    with pytest.raises(ModelError) as err:
        check_sidecar(info, "10.3.0", "NVIDIA Tegra X1", "m.engine")
    assert "m.engine was built for TensorRT 8.2.1.8 (this machine has 10.3.0)" in str(err.value)
    assert "python -m export.trt model.onnx -o m.engine --max-batch 16 --fp16" in str(err.value)
    with pytest.raises(ModelError, match=r"TensorRT 8.2.1.8 .* and GPU 'NVIDIA Tegra X1' \(this machine has 'Orin'\)"):
        check_sidecar(info, "10.3.0", "Orin", "m.engine")


def test_parity_numbers_and_near_ties():
    from edge.infer.classify.parity import compare, describe
    reference = [[0.51, 0.49], [0.9, 0.1], [0.2, 0.8]]
    candidate = [[0.49, 0.51], [0.9, 0.1], [0.6, 0.4]]
    strict = compare(reference, candidate)
    assert strict["mismatches"] == strict["decisive_mismatches"] == [0, 2]
    assert strict["max_diff"] == pytest.approx(0.4) and strict["argmax_agree"] == pytest.approx(1 / 3.0)
    lenient = compare(reference, candidate, tie=0.04)
    assert lenient["decisive_mismatches"] == [2]  # 0.51 vs 0.49 is a near-tie; 0.8 vs 0.2 is not
    assert "3 images, argmax agreement 33.33% (2 differ, 1 of them near-ties)" in describe(lenient, "x")
    with pytest.raises(ValueError, match="differ in shape"):
        compare(reference, candidate[:2])


def test_classifier_errors_before_touching_the_gpu(tmp_path):
    engine = str(tmp_path / "m.engine")
    with pytest.raises(ModelError, match="TensorRT engine not found"):
        TrtClassifier(engine)
    with open(engine, "wb") as f:
        f.write(b"\0" * 64)
    with pytest.raises(ModelError, match="has no sidecar"):
        TrtClassifier(engine)
    write_sidecar(engine, _sidecar(max_batch=8))
    with pytest.raises(ModelError, match="built for batches of 1..8"):
        TrtClassifier(engine, max_batch=16)


@pytest.mark.skipif(_has("tensorrt"), reason="TensorRT is installed here")
def test_missing_tensorrt_is_a_clear_error(tmp_path, capsys):
    engine = str(tmp_path / "m.engine")
    with open(engine, "wb") as f:
        f.write(b"\0" * 64)
    write_sidecar(engine, _sidecar())
    with pytest.raises(ModelError, match="TensorRT's Python bindings are not installed.*python3-libnvinfer"):
        TrtClassifier(engine)
    with pytest.raises(ModelError, match="not installed.*backend: ort"):
        engines.ensure_engine(engine, str(tmp_path / "cache"))


def _foreign_onnx(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Softmax", ["input"], ["probs"], axis=1)], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_build_refuses_onnx_without_metadata_before_building(tmp_path):
    foreign = _foreign_onnx(str(tmp_path / "foreign.onnx"))
    with pytest.raises(MetadataError, match="no maskgate metadata"):
        engines.build_engine(foreign, str(tmp_path / "x.engine"))
    assert export_trt.main([foreign]) == 1
    assert sorted(os.listdir(str(tmp_path))) == ["foreign.onnx"]


@pytest.mark.parametrize("argv, message", [
    (["missing.onnx"], "model not found: missing.onnx"),
    (["{tmp}/model.txt"], "give an .onnx model or a .pt checkpoint"),
    (["{tmp}/model.onnx", "--max-batch", "0"], "--max-batch and --workspace must be positive"),
    (["{tmp}/model.onnx", "--int8"], "--int8 needs --calib FOLDER"),
    (["{tmp}/model.onnx", "--int8", "--calib", "{tmp}/nowhere"], "calibration folder not found"),
    (["{tmp}/model.onnx", "--fp16", "--fp32"], "not allowed with argument"),
])
def test_argument_errors(tmp_path, capsys, argv, message):
    for name in ("model.txt", "model.onnx"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(SystemExit) as exit_info:
        export_trt.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_checkpoint_without_torch_says_to_export_on_the_workstation(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "export.onnx", None)  # as on the Nano: no torch, no onnx
    assert export_trt.main([str(checkpoint)]) == 1
    assert "exporting a checkpoint needs PyTorch" in capsys.readouterr().err


def _fake_engine(api):
    """Minimal stand-ins with exactly the attributes of one TensorRT API generation."""
    calls = []

    class Trt(object):
        class TensorIOMode(object):
            INPUT, OUTPUT = "in", "out"

        class MemoryPoolType(object):
            WORKSPACE = "ws"

        class NetworkDefinitionCreationFlag(object):
            EXPLICIT_BATCH = 0

        @staticmethod
        def nptype(dtype):
            return np.float32

    names, modes, shapes = ["input", "probs"], ["in", "out"], [(-1, 3, 64, 64), (-1, 2)]
    if api == 10:
        class Engine(object):
            num_io_tensors = 2
            get_tensor_name = staticmethod(lambda i: names[i])
            get_tensor_mode = staticmethod(lambda n: modes[names.index(n)])
            get_tensor_shape = staticmethod(lambda n: shapes[names.index(n)])
            get_tensor_dtype = staticmethod(lambda n: "float")

        class Context(object):
            def set_input_shape(self, name, shape):
                calls.append(("set_input_shape", name, shape))
                return True

            def set_tensor_address(self, name, address):
                calls.append(("address", name, address))

            def execute_async_v3(self, stream):
                calls.append(("v3", stream))
                return True

        class Config(object):
            def set_memory_pool_limit(self, pool, size):
                calls.append(("pool", pool, size))
    else:
        class Engine(object):
            num_bindings = 2
            get_binding_name = staticmethod(lambda i: names[i])
            binding_is_input = staticmethod(lambda i: i == 0)
            get_binding_shape = staticmethod(lambda i: shapes[i])
            get_binding_dtype = staticmethod(lambda i: "float")

        class Context(object):
            def set_binding_shape(self, index, shape):
                calls.append(("set_binding_shape", index, shape))
                return True

            def execute_async_v2(self, bindings, stream_handle):
                calls.append(("v2", bindings, stream_handle))
                return True

        class Config(object):
            max_workspace_size = 0
    return Trt, Engine(), Context(), Config(), calls


@pytest.mark.parametrize("api", [8, 10])
def test_compat_layer_picks_the_api_by_feature(api):
    trt, engine, context, config, calls = _fake_engine(api)
    tensors = trt_compat.io_tensors(trt, engine)
    assert tensors == [("input", True, (-1, 3, 64, 64), np.float32), ("probs", False, (-1, 2), np.float32)]
    trt_compat.set_input_shape(context, 0, "input", (7, 3, 64, 64))
    trt_compat.execute(context, tensors, [1000, 2000], 42)
    trt_compat.set_workspace(trt, config, 256 << 20)
    assert trt_compat.network_flags(trt) == 1
    if api == 10:
        assert calls == [("set_input_shape", "input", (7, 3, 64, 64)), ("address", "input", 1000),
                         ("address", "probs", 2000), ("v3", 42), ("pool", "ws", 256 << 20)]
    else:
        assert calls == [("set_binding_shape", 0, (7, 3, 64, 64)), ("v2", [1000, 2000], 42)]
        assert config.max_workspace_size == 256 << 20


def test_device_preprocessing_matches_train(shared_data):
    torch = pytest.importorskip("torch")
    from export.samples import verification_images
    from train.transforms import eval_transform
    images = verification_images(limit=9)
    expected = torch.stack([eval_transform(rgb, META) for _, rgb in images]).numpy()
    np.testing.assert_allclose(images_to_batch(images, META), expected, atol=1e-6)


def test_trt_path_is_python36_and_torch_free():
    code = ("import sys, export.trt, edge.infer.classify.engine; "
            "print(sorted({'torch', 'onnx', 'train'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, check=True)
    assert out.stdout.decode().strip() == "[]"
    vermin = shutil.which("vermin") or os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin is not installed (pip install vermin)")
    files = ["export/%s.py" % m for m in ("__init__", "trt", "samples")] + ["edge"]
    result = subprocess.run([vermin, "-q", "--no-tips", "-t=3.6-", "--violations"] + files, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout.decode()


# -- our control flow around TensorRT, with a stand-in (see export_helpers.fake_tensorrt) ----------

@pytest.fixture
def tiny(tmp_path):
    pytest.importorskip("onnxruntime")
    from helpers import require_data, tiny_onnx
    require_data()
    return tiny_onnx(str(tmp_path / "tiny.onnx"), META)


@pytest.mark.parametrize("api", [8, 10])
def test_build_cache_run_verify_with_fake_tensorrt(api, tiny, tmp_path, monkeypatch, caplog):
    import onnxruntime as ort

    from export.samples import verification_images
    from helpers import FakeCuda, install_fakes
    caplog.set_level(logging.INFO, logger="edge.infer.classify.engine")  # the service's log
    trt = install_fakes(monkeypatch, api)
    cache = str(tmp_path / "cache")
    images = verification_images(limit=20)
    engine = engines.ensure_engine(tiny, cache, max_batch=8, precision="fp16", verify_images=images)
    assert engine.endswith(".trt%s.fake-gpu.fp16.b8.engine" % trt.__version__)
    assert trt.calls[0] == ("build", ["fp16"], ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64)))
    assert [c[1] for c in trt.calls if c[0] == "execute"] == [8, 8, 4]  # the check: 20 faces, chunked
    del trt.calls[:]
    info = read_sidecar(engine)
    assert (info["gpu"], info["tensorrt"], info["max_batch"]) == ("Fake GPU", trt.__version__, 8)
    assert info["onnx_sha256"] == sha256(tiny) and info["meta"]["classes"] == META["classes"]
    assert "TensorRT FP16 vs onnxruntime: 20 images, argmax agreement 100.00%" in caplog.text  # checked
    assert engines.ensure_engine(tiny, cache, max_batch=8, precision="fp16") == engine
    assert trt.calls == []  # reused from the cache
    write_sidecar(engine, dict(info, gpu="NVIDIA Tegra X1"))  # as if the card were swapped
    assert engines.ensure_engine(tiny, cache, max_batch=8, precision="fp16") == engine
    out = caplog.text
    assert len(trt.calls) == 1 and "rebuilding" in out and "build took" in out
    assert ("Building engine (1 steps)" in out) == (api == 10)  # IProgressMonitor only in the new API

    batch = images_to_batch(images, META)
    with TrtClassifier(engine) as clf:
        assert (clf.backend, clf.max_batch, clf.classes, clf.meta["input_size"]) == ("trt", 8, META["classes"], [64, 64])
        probs = clf.predict(batch)
        assert FakeCuda.depth == 0  # every push popped
        with pytest.raises(ValueError, match="this model takes"):
            clf.predict(batch[:, :, :32])
    assert [c[1] for c in trt.calls if c[0] == "execute"][-3:] == [8, 8, 4]  # chunked to the max batch
    session = ort.InferenceSession(tiny, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(probs, session.run(["probs"], {"input": batch})[0], atol=1e-6)
    assert FakeCuda.detached and FakeCuda.memory == {}  # buffers freed, context released
    stats = engines.verify_engine(engine, tiny, images)
    assert stats["argmax_agree"] == 1.0 and stats["max_diff"] < 1e-6


def test_cli_int8_calibrates_and_nano_refuses(tiny, tmp_path, monkeypatch, capsys):
    from helpers import FMD, install_fakes
    calib = os.path.join(FMD, "with_mask")
    engine = str(tmp_path / "tiny.int8.engine")
    trt = install_fakes(monkeypatch, 10)
    assert export_trt.main([tiny, "-o", engine, "--int8", "--calib", calib, "--images", "16"]) == 0
    assert ("calibrated", 64, 8) in trt.calls  # 512 images in batches of 8
    assert read_sidecar(engine)["precision"] == "int8" and any(n.endswith(".calib") for n in os.listdir(str(tmp_path)))
    install_fakes(monkeypatch, 8, fast_int8=False)  # the Nano
    nano = str(tmp_path / "nano.engine")
    assert export_trt.main([tiny, "-o", nano, "--int8", "--calib", calib]) == 1
    assert "INT8 refused: Fake GPU has no fast INT8 (the Jetson Nano" in capsys.readouterr().err
    assert not os.path.exists(nano)


# -- with TensorRT and a GPU (a Jetson, or an x86 machine with pip install tensorrt pycuda) ---------

@pytest.fixture(scope="module")
def real_onnx(tmp_path_factory):
    """A real classifier ONNX: exported here where torch is (a workstation with a GPU), else the
    shipped model (a Jetson has no torch; this is what ``make nano-check`` runs there)."""
    pytest.importorskip("tensorrt", reason=NO_TRT)
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
    from conftest import SHIPPED
    try:
        import torch  # noqa: F401
    except ImportError:
        if not os.path.isfile(SHIPPED):
            pytest.skip("neither torch (to export a test model) nor models/mask_classifier.onnx")
        return SHIPPED
    from export.onnx import export_onnx
    from helpers import make_checkpoint, require_data
    require_data()
    folder = tmp_path_factory.mktemp("trt")
    ckpt = make_checkpoint(str(folder / "m.pt"))
    return export_onnx(ckpt, str(folder / "m.onnx"), limit=16)["onnx"]


def test_engine_builds_verifies_and_is_cached(real_onnx, tmp_path):
    from export.samples import verification_images
    faces = verification_images(limit=24, model=real_onnx)  # the shipped crops, or the data's
    cache = str(tmp_path / "cache")
    engine = engines.ensure_engine(real_onnx, cache, max_batch=8, precision="fp16", verify_images=faces)
    stamp = os.path.getmtime(engine)
    assert engines.ensure_engine(real_onnx, cache, max_batch=8, precision="fp16") == engine
    assert os.path.getmtime(engine) == stamp  # reused, not rebuilt
    stats = engines.verify_engine(engine, real_onnx, faces)
    assert stats is None or stats["argmax_agree"] >= engines.MIN_AGREE
    with TrtClassifier(engine) as clf:
        assert (clf.backend, clf.max_batch, clf.classes) == ("trt", 8, ["mask", "no_mask"])
        batch = images_to_batch(faces[:20], clf.meta)
        full = clf.predict(batch)  # 20 > max batch 8: three chunks
        assert full.shape == (20, 2)
        for n in (1, 7):
            np.testing.assert_allclose(clf.predict(batch[:n]), full[:n], atol=1e-3)


def test_detector_engine_builds_and_detects_as_onnxruntime(tmp_path):
    """The shipped face detector as an FP16 engine with its dynamic frame-size profile: it must
    pass its own check and find the faces onnxruntime finds on a real scene."""
    pytest.importorskip("tensorrt", reason=NO_TRT)
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
    import cv2

    from conftest import data_path
    from edge.infer.detect import create_detector
    from edge.infer.detectors.retinaface import SHIPPED_MODEL
    from edge.infer.samples import shipped_faces
    detector = create_detector("retinaface", confidence=0.3, min_size=8, backend="trt",
                               engine_cache=str(tmp_path), verify_faces=shipped_faces(SHIPPED_MODEL))
    assert detector.backend == "trt"
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the comparison needs it)")
    image = cv2.imread(data_path("kaggle853", "images", "maksssksksss665.jpg"))
    reference = create_detector("retinaface", confidence=0.3, min_size=8, backend="ort")
    from edge.infer.track import iou_matrix
    expected, boxes = reference.detect(image)[0], detector.detect(image)[0]
    assert len(expected) >= 3
    assert (iou_matrix(expected, boxes).max(axis=1) >= 0.8).mean() >= 0.95


def test_engine_failing_its_check_is_removed(tiny, tmp_path, monkeypatch):
    """An engine whose answers disagree with onnxruntime is deleted and the build is an error."""
    from export.samples import verification_images
    from helpers import install_fakes
    install_fakes(monkeypatch, 8)
    real_run = TrtClassifier._run
    monkeypatch.setattr(TrtClassifier, "_run", lambda self, chunk: real_run(self, chunk)[:, ::-1].copy())
    cache = str(tmp_path / "cache")
    with pytest.raises(engines.BuildError, match="disagrees with onnxruntime .* removed"):
        engines.ensure_engine(tiny, cache, max_batch=8, verify_images=verification_images(limit=20))
    # Neither the engine nor its sidecar is kept; the failure is remembered (and the build lock).
    names = sorted(os.listdir(cache))
    assert [n.rsplit(".", 1)[-1] for n in names] == ["failed", "lock"], names
    with open(os.path.join(cache, names[0])) as f:
        assert "disagrees with onnxruntime" in json.load(f)["error"]
    # The next start does not spend minutes on the same failure; deleting the record retries.
    monkeypatch.setattr(engines, "build_verified", lambda *a, **k: pytest.fail("built again"))
    with pytest.raises(engines.BuildError, match="failed before .* delete .*failed to retry"):
        engines.ensure_engine(tiny, cache, max_batch=8, verify_images=verification_images(limit=20))
    os.remove(os.path.join(cache, names[0]))
    with pytest.raises(BaseException, match="built again"):
        engines.ensure_engine(tiny, cache, max_batch=8, verify_images=verification_images(limit=20))
