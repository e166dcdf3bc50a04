"""Shared fixtures: the real data in ../shared/data (tests skip with a reason without it)."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("MASKGATE_DATA", os.path.join(ROOT, "..", "shared", "data"))
SHIPPED = os.path.join(ROOT, "models", "mask_classifier.onnx")


def data_path(*parts):
    """Path under the shared data folder, or skip the test saying what is missing."""
    path = os.path.join(DATA, *parts)
    if not os.path.exists(path):
        pytest.skip("shared data not found at %s (set MASKGATE_DATA to its folder)" % path)
    return path


def require_detectors():
    """Skip the calling test when the detector files are not provisioned."""
    from edge.infer.detectors.files import default_models_dir
    if not os.path.isfile(os.path.join(default_models_dir(), "retinaface_mnet025.onnx")):
        pytest.skip("detector files not provisioned: run `make models`")


@pytest.fixture(scope="session")
def wider_onnx():
    """The provisioned WIDER FACE RetinaFace file (``make models``), which starts detector training."""
    from edge.infer.detectors.files import default_models_dir
    from edge.infer.detectors.retinaface import ONNX_FILE
    require_detectors()
    return os.path.join(default_models_dir(), ONNX_FILE)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    """The shipped classifier when it is there, else a tiny real ONNX made here."""
    if os.path.isfile(SHIPPED):
        return SHIPPED
    from helpers import tiny_classifier_onnx
    return tiny_classifier_onnx(str(tmp_path_factory.mktemp("model") / "tiny.onnx"))


@pytest.fixture(scope="session")
def shared_data():
    """The shared data folder (fmd/, kaggle853/, videos/)."""
    return data_path()
