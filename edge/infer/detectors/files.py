"""Where the detectors' model files are: the provisioned folder and OpenCV's Haar cascades.

``python -m edge.provision`` (``make models``) fills the folder; the detectors only read it.
"""
import os

from edge.common import PACKAGE_ROOT
from edge.errors import ModelError

# The folder detectors look in by default: models/detectors next to the edge package.
DEFAULT_DIR = os.path.join(PACKAGE_ROOT, "models", "detectors")
# Environment override of that folder (a device install elsewhere).
ENV_DIR = "MASKGATE_DETECTORS"

HAAR_FILE = "haarcascade_frontalface_default.xml"
# MTCNN's P-, R- and O-Net, exported from PyTorch by `python -m export.mtcnn` (not by edge.provision).
MTCNN_FILES = ("mtcnn_pnet.onnx", "mtcnn_rnet.onnx", "mtcnn_onet.onnx")
# Where OpenCV keeps its cascades: pip wheels expose cv2.data; JetPack's OpenCV 4.1.1
# (and distribution packages) install them under share/.
HAAR_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/local/share/opencv4/haarcascades",
             "/usr/share/opencv/haarcascades", "/usr/local/share/opencv/haarcascades")


def default_models_dir():
    """$MASKGATE_DETECTORS, else models/detectors next to the edge package."""
    return os.environ.get(ENV_DIR) or DEFAULT_DIR


def model_file(models_dir, filename, detector, command=None):
    """Path of a provisioned detector file, or ModelError saying how to provision it.

    ``command``: what makes the file when ``make models`` does not (default: make models).
    """
    path = os.path.join(models_dir, filename)
    if not os.path.isfile(path):
        how = command or "run `make models` (python -m edge.provision --dest %s)" % models_dir
        raise ModelError("%s detector file %s is missing: %s" % (detector, path, how))
    return path


def find_haar(filename=HAAR_FILE):
    """Path of an OpenCV Haar cascade file, or None when this OpenCV has none."""
    dirs = list(HAAR_DIRS)
    try:
        import cv2
        data = getattr(cv2, "data", None)
        if data is not None and getattr(data, "haarcascades", None):
            dirs.insert(0, data.haarcascades)
    except ImportError:
        pass
    for folder in dirs:
        path = os.path.join(folder, filename)
        if os.path.isfile(path):
            return path
    return None
