"""``backend auto`` falls back to onnxruntime when TensorRT imports but cannot be used.

TensorRT cannot be installed here: these tests run our control flow against the stand-in in
tests/helpers.py (``install_fakes``: TensorRT's and pycuda's Python surface, the "engine"
executed by onnxruntime) with one failure forced at a time. What a real TensorRT does on a
Jetson is for ``make nano-check`` to find out.
"""
import os
import sys

import numpy as np
import pytest

from edge.errors import ModelError
from edge.infer.classify import engine as engines
from edge.infer.classify.loader import load_classifier
from edge.infer.classify.trt import TrtClassifier
from edge.infer.preprocess import images_to_batch
from edge.infer.samples import shipped_faces

pytest.importorskip("onnxruntime")


@pytest.fixture
def faces(model_path):
    found = shipped_faces(model_path, limit=12)
    if not found:
        from edge.infer.samples import folder_images
        from helpers import FMD, require_data
        require_data()
        found = folder_images(os.path.join(FMD, "with_mask"), 12)
    return found


def _fail_build(trt):
    trt.Builder.build_serialized_network = lambda self, network, config: None


def _fail_load(trt):
    trt.Runtime.deserialize_cuda_engine = lambda self, data: None


def _fail_check(trt, monkeypatch):
    real = TrtClassifier._run
    monkeypatch.setattr(TrtClassifier, "_run", lambda self, chunk: real(self, chunk)[:, ::-1].copy())


def _no_pycuda(trt, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)  # `import pycuda.driver` raises ImportError
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)


@pytest.mark.parametrize("fault, words", [
    ("pycuda", "pycuda is not installed"),
    ("build", "TensorRT failed to build"),
    ("check", "disagrees with onnxruntime"),
    ("load", "TensorRT could not load"),
])
def test_auto_falls_back_to_onnxruntime_and_says_why(fault, words, model_path, faces, tmp_path, monkeypatch):
    from helpers import install_fakes
    trt = install_fakes(monkeypatch, 8)
    {"pycuda": lambda: _no_pycuda(trt, monkeypatch), "build": lambda: _fail_build(trt),
     "check": lambda: _fail_check(trt, monkeypatch), "load": lambda: _fail_load(trt)}[fault]()
    cache = str(tmp_path / "engines")
    clf = load_classifier(model_path, backend="auto", max_batch=8, engine_cache=cache, verify_images=faces)
    try:
        assert clf.backend == "ort"
        assert clf.fallback.startswith("TensorRT could not be used") and words in clf.fallback, clf.fallback
        reference = load_classifier(model_path, backend="ort", max_batch=8)
        batch = images_to_batch(faces, clf.meta)
        np.testing.assert_allclose(clf.predict(batch), reference.predict(batch), atol=1e-6)
        assert reference.fallback is None  # asked for onnxruntime: not a fallback
    finally:
        clf.close()
    if fault in ("build", "check"):  # no engine is kept, and the failure is remembered
        assert not [n for n in os.listdir(cache) if n.endswith((".engine", ".json"))]
        again = load_classifier(model_path, backend="auto", max_batch=8, engine_cache=cache,
                                verify_images=faces)
        assert again.backend == "ort" and "failed before" in again.fallback
        assert not [c for c in trt.calls if c[0] == "build"][1:]  # built once, not twice


def test_forced_trt_stays_strict_and_no_runtime_at_all_says_both(model_path, faces, tmp_path, monkeypatch):
    from helpers import install_fakes
    trt = install_fakes(monkeypatch, 8)
    _no_pycuda(trt, monkeypatch)
    with pytest.raises(ModelError, match="pycuda is not installed"):  # asked for TensorRT: no fallback
        load_classifier(model_path, backend="trt", engine_cache=str(tmp_path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelError, match="pycuda is not installed.*onnxruntime cannot be used either"):
        load_classifier(model_path, backend="auto", engine_cache=str(tmp_path))


def test_a_working_stand_in_engine_is_no_fallback(model_path, faces, tmp_path, monkeypatch):
    from helpers import install_fakes
    install_fakes(monkeypatch, 10)
    clf = load_classifier(model_path, backend="auto", max_batch=8, engine_cache=str(tmp_path),
                          verify_images=faces)
    try:
        assert (clf.backend, clf.fallback) == ("trt", None)
    finally:
        clf.close()
    assert [n for n in os.listdir(str(tmp_path)) if n.endswith(".engine")]
    assert engines.failure_path("x.engine") == "x.engine.failed"
