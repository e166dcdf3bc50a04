"""The oldest libraries the device code may rely on: JetPack 4.6's (the Jetson Nano's).

vermin checks the Python 3.6 syntax and standard library; this checks what vermin cannot:
the numpy, OpenCV, PyYAML and GStreamer APIs the device code calls. A newer API passes every
test on a workstation and fails only on the Nano (``np.argsort(kind="stable")`` raised there
on every frame with tracks, numpy 1.13). The device code is what the Makefile's NANO_CODE
names (vermin's list). Each rule is also run on a planted example, so the checker can fail.

Rules read the code, not its comments and docstrings, and a guarded use passes: the
rules match attribute access (``cv2.data.haarcascades``), not ``getattr(cv2, "data", None)``.
"""
import ast
import os
import re

import pytest

from conftest import ROOT

# What JetPack 4.6 (L4T R32.7, Ubuntu 18.04) ships: python3-numpy, OpenCV, python3-yaml, GStreamer.
FLOOR = {"numpy": "1.13.3", "OpenCV": "4.1.1", "PyYAML": "3.12", "GStreamer": "1.14.5"}

# (dotted attribute, library, first version with it, what to use instead)
ATTRIBUTES = [
    ("numpy.quantile", "numpy", "1.15", "np.percentile(a, 100 * q)"),
    ("numpy.nanquantile", "numpy", "1.15", "np.nanpercentile(a, 100 * q)"),
    ("numpy.take_along_axis", "numpy", "1.15", "fancy indexing with np.arange"),
    ("numpy.put_along_axis", "numpy", "1.15", "fancy indexing with np.arange"),
    ("numpy.gcd", "numpy", "1.15", "math.gcd"),
    ("numpy.lcm", "numpy", "1.15", "math.gcd arithmetic"),
    ("numpy.histogram_bin_edges", "numpy", "1.15", "np.histogram(...)[1]"),
    ("numpy.random.default_rng", "numpy", "1.17", "np.random.RandomState(seed)"),
    ("numpy.random.Generator", "numpy", "1.17", "np.random.RandomState"),
    ("numpy.broadcast_shapes", "numpy", "1.20", "np.broadcast(*arrays).shape"),
    ("numpy.typing", "numpy", "1.20", "no annotations on the device"),
    ("numpy.lib.stride_tricks.sliding_window_view", "numpy", "1.20", "as_strided"),
    ("cv2.data", "OpenCV", "pip wheels only (JetPack's OpenCV has no cv2.data)",
     "edge.infer.detectors.files.find_haar"),
    ("cv2.FaceDetectorYN", "OpenCV", "4.5.4", "the project's detectors"),
    ("cv2.FaceRecognizerSF", "OpenCV", "4.5.4", "nothing on the device"),
    ("cv2.dnn.DNN_BACKEND_CUDA", "OpenCV", "4.2 (and JetPack's build has no CUDA DNN)", "TensorRT"),
    ("cv2.dnn.DNN_TARGET_CUDA", "OpenCV", "4.2 (and JetPack's build has no CUDA DNN)", "TensorRT"),
    ("cv2.dnn.DNN_TARGET_CUDA_FP16", "OpenCV", "4.2 (and JetPack's build has no CUDA DNN)", "TensorRT"),
    ("cv2.dnn.Model", "OpenCV", "4.2", "cv2.dnn.readNet + blobFromImage"),
    ("cv2.dnn.DetectionModel", "OpenCV", "4.2", "cv2.dnn.readNet + blobFromImage"),
    ("cv2.dnn.ClassificationModel", "OpenCV", "4.2", "cv2.dnn.readNet + blobFromImage"),
    ("cv2.dnn_DetectionModel", "OpenCV", "4.2", "cv2.dnn.readNet + blobFromImage"),
    ("cv2.dnn.NMSBoxesBatched", "OpenCV", "4.7", "cv2.dnn.NMSBoxes per class"),
    ("cv2.dnn.readNetFromTFLite", "OpenCV", "4.8", "ONNX"),
    ("cv2.dnn.blobFromImageWithParams", "OpenCV", "4.8", "cv2.dnn.blobFromImage"),
    ("cv2.INTER_NEAREST_EXACT", "OpenCV", "4.5", "cv2.INTER_NEAREST"),
    ("cv2.stackBlur", "OpenCV", "4.7", "cv2.blur"),
    ("cv2.legacy", "OpenCV", "4.5.1", "nothing on the device"),
    ("cv2.typing", "OpenCV", "4.8", "no annotations on the device"),
    ("yaml.full_load", "PyYAML", "5.1", "yaml.safe_load"),
    ("yaml.full_load_all", "PyYAML", "5.1", "yaml.safe_load_all"),
    ("yaml.FullLoader", "PyYAML", "5.1", "yaml.SafeLoader"),
    ("yaml.unsafe_load", "PyYAML", "5.1", "yaml.safe_load"),
    ("yaml.UnsafeLoader", "PyYAML", "5.1", "yaml.SafeLoader"),
]

# (method name on any object, library, first version, instead): GStreamer through PyGObject.
METHODS = [
    ("request_pad_simple", "GStreamer", "1.20", "get_request_pad"),
    ("try_pull_object", "GStreamer", "1.20", "try_pull_sample"),
    ("new_memdup", "GStreamer", "1.20", "Gst.Buffer.new_wrapped"),
    ("make_with_properties", "GStreamer", "1.20", "Gst.ElementFactory.make + set_property"),
    ("iterate_all_by_element_factory_name", "GStreamer", "1.18", "iterate_elements"),
    ("new_from_caps", "GStreamer", "1.20 (GstVideo.VideoInfo)", "GstVideo.VideoInfo.from_caps"),
]

# (callee, keyword, value or None for any, library, first version, instead); callee None:
# any call, "yaml.*": any function of the module.
KEYWORDS = [
    (None, "kind", "stable", "numpy", "1.15 (sort kinds)", 'kind="mergesort" (stable too)'),
    ("yaml.*", "sort_keys", None, "PyYAML", "5.1", "a Dumper that keeps order (edge.app.config.dump)"),
    ("numpy.linspace", "axis", None, "numpy", "1.16", "np.stack of 1-D linspaces"),
    ("numpy.percentile", "method", None, "numpy", "1.22", "interpolation= (or the default)"),
    ("numpy.quantile", "method", None, "numpy", "1.22", "np.percentile"),
    ("numpy.argmax", "keepdims", None, "numpy", "1.22", "np.expand_dims"),
    ("numpy.argmin", "keepdims", None, "numpy", "1.22", "np.expand_dims"),
    ("numpy.sum", "where", None, "numpy", "1.17", "a masked array or np.where"),
    ("numpy.mean", "where", None, "numpy", "1.20", "np.where then mean"),
    ("numpy.max", "initial", None, "numpy", "1.15", "np.concatenate with the initial value"),
    ("numpy.min", "initial", None, "numpy", "1.15", "np.concatenate with the initial value"),
    ("numpy.amax", "initial", None, "numpy", "1.15", "np.concatenate with the initial value"),
    ("numpy.amin", "initial", None, "numpy", "1.15", "np.concatenate with the initial value"),
    ("numpy.unique", "equal_nan", None, "numpy", "1.24", "the default"),
    ("numpy.concatenate", "dtype", None, "numpy", "1.20", ".astype after"),
    ("numpy.concatenate", "casting", None, "numpy", "1.20", ".astype after"),
]

# (regex on string literals: GStreamer pipeline descriptions, element and property names)
TEXTS = [
    (r"\bh264timestamper\b", "GStreamer", "1.22", "h264parse"),
    (r"\bvideoconvertscale\b", "GStreamer", "1.22", "videoconvert ! videoscale"),
    (r"\bva(h264|h265|vp9|jpeg)(dec|enc)\b|\bvapostproc\b", "GStreamer", "1.20 (va plugin)",
     "nvv4l2decoder / nvv4l2h264enc on the Jetson"),
    (r"\bqsv\w+(enc|dec)\b", "GStreamer", "1.22 (qsv plugin)", "x264enc / the Jetson's encoder"),
    (r"\bfragment-mode\s*=", "GStreamer", "1.20 (mp4mux fragment-mode)", "fragment-duration"),
    (r"\bappsrc\b[^!]*\b(leaky-type|max-buffers|max-time)\s*=", "GStreamer", "1.20 (appsrc limits)",
     "appsrc max-bytes"),
    (r"\baggregate-mode\s*=", "GStreamer", "1.18 (rtph264pay)", "config-interval"),
]


def nano_code(root=ROOT):
    """The device code: the Makefile's NANO_CODE (files and folders), as .py files."""
    with open(os.path.join(root, "Makefile")) as f:
        listed = re.search(r"^NANO_CODE\s*:=\s*(.+)$", f.read(), re.M).group(1).split()
    files = []
    for item in listed:
        path = os.path.join(root, item)
        if os.path.isdir(path):
            for base, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                files += [os.path.join(base, n) for n in names if n.endswith(".py")]
        else:
            files.append(path)
    return sorted(files)


def _aliases(tree):
    """{local name: module} from the file's imports (np -> numpy, Gst -> gi.repository.Gst)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                    alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = node.module + "." + alias.name
    return names


def _dotted(node, aliases):
    """'numpy.random.default_rng' for np.random.default_rng, with the import alias resolved."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id)] + parts[::-1])


def _docstrings(tree):
    """ids of the string nodes that are docstrings or bare string statements (no code)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and \
                isinstance(node.value.value, str):
            found.add(id(node.value))
    return found


def violations(path):
    """[(line, message)] for every use of an API newer than the device's libraries in ``path``."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    aliases, docs, found = _aliases(tree), _docstrings(tree), []

    def report(node, what, library, since, instead):
        found.append((node.lineno, "%s needs %s %s; the Nano has %s: use %s"
                      % (what, library, since, FLOOR[library], instead)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node, aliases)
            for name, library, since, instead in ATTRIBUTES:
                if dotted == name:
                    report(node, name, library, since, instead)
            for name, library, since, instead in METHODS:
                if node.attr == name:
                    report(node, "." + name, library, since, instead)
        elif isinstance(node, ast.Call):
            callee = _dotted(node.func, aliases) or ""
            for target, keyword, value, library, since, instead in KEYWORDS:
                if target is not None and callee != target and not (
                        target.endswith(".*") and callee.startswith(target[:-1])):
                    continue
                for kw in node.keywords:
                    if kw.arg == keyword and (value is None or (
                            isinstance(kw.value, ast.Constant) and kw.value.value == value)):
                        report(node, "%s(%s=%s)" % (callee or "a call", keyword, value or "..."),
                               library, since, instead)
            if callee == "numpy.pad" and len(node.args) < 3 and not any(k.arg == "mode" for k in node.keywords):
                report(node, "numpy.pad without mode", "numpy", "1.17", 'mode="constant"')
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            for pattern, library, since, instead in TEXTS:
                match = re.search(pattern, node.value)
                if match:
                    report(node, "GStreamer '%s'" % match.group(0).strip(" ="), library, since, instead)
    return sorted(found)


def test_the_device_code_uses_no_api_newer_than_jetpack_4_6():
    files = nano_code()
    assert any(f.endswith(os.path.join("edge", "infer", "track.py")) for f in files)
    problems = ["%s:%d: %s" % (os.path.relpath(path, ROOT), line, message)
                for path in files for line, message in violations(path)]
    assert problems == [], "\n".join(problems)


PLANTED = '''"""np.quantile and kind="stable" in a docstring are not code."""
import numpy as np
import yaml
import cv2
from gi.repository import Gst

# np.random.default_rng in a comment is not code either
order = np.argsort(x, kind="stable")
q = np.quantile(x, 0.5)
rng = np.random.default_rng(0)
text = yaml.safe_dump(data, sort_keys=False)
loaded = yaml.load(stream, Loader=yaml.FullLoader)
cascade = cv2.data.haarcascades
guarded = getattr(cv2, "data", None)
pad = pipeline.get_by_name("mux").request_pad_simple("video_%u")
padded = np.pad(image, 2)
padded_ok = np.pad(image, 2, mode="constant")
desc = "appsrc name=src max-buffers=2 ! videoconvert ! h264timestamper ! mp4mux fragment-mode=1"
sink = "appsink name=sink max-buffers=1 drop=true"
'''


def test_the_checker_finds_each_kind_of_planted_newer_api(tmp_path):
    path = tmp_path / "planted.py"
    path.write_text(PLANTED)
    found = violations(str(path))
    text = "\n".join("%d: %s" % f for f in found)
    expected = [(8, "numpy.argsort(kind=stable)"), (9, "numpy.quantile"), (10, "numpy.random.default_rng"),
                (11, "yaml.safe_dump(sort_keys=...)"), (12, "yaml.FullLoader"), (13, "cv2.data"),
                (15, ".request_pad_simple"), (16, "numpy.pad without mode"),
                (18, "GStreamer 'h264timestamper'"), (18, "GStreamer 'fragment-mode'"),
                (18, "GStreamer 'appsrc name=src max-buffers'")]
    for line, what in expected:
        assert any(l == line and m.startswith(what) for l, m in found), (line, what, text)
    assert len(found) == len(expected), text  # comments, docstrings, guarded and old uses pass
    assert "needs numpy 1.15 (sort kinds); the Nano has 1.13.3" in text


@pytest.mark.parametrize("rule", ATTRIBUTES + METHODS, ids=lambda r: r[0])
def test_every_attribute_rule_fires(rule, tmp_path):
    name = rule[0]
    module, _, rest = name.partition(".")
    code = "import %s\nx = %s.%s\n" % (module, module, rest) if "." in name else "x = obj.%s()\n" % name
    path = tmp_path / "one.py"
    path.write_text(code)
    assert len(violations(str(path))) == 1, code
