"""export.mtcnn: facenet-pytorch's MTCNN weights -> three ONNX files that match PyTorch on real
faces, with the networks checked against facenet-pytorch's own definitions."""
import ast
import io
import os
import zipfile

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export.mtcnn needs torch (a workstation tool)")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import DATA  # noqa: E402  (../shared/data, or $MASKGATE_DATA)
from edge.app.provision import find_wheel  # noqa: E402
from edge.infer.detectors.mtcnn import FILES, STAGES, read_metadata  # noqa: E402
from export import mtcnn  # noqa: E402  (after the importorskips)
from export.samples import verification_images  # noqa: E402
from helpers import require_data  # noqa: E402

KAGGLE = os.path.join(DATA, "kaggle853", "images")


@pytest.fixture(scope="module")
def wheel():
    for folder in (os.environ.get("MASKGATE_WHEELS"), mtcnn.WHEEL_DIR):
        found = folder and os.path.isdir(folder) and find_wheel(mtcnn.WHEEL, folder)
        if found:
            return found
    pytest.skip("the %s wheel is not in $MASKGATE_WHEELS or %s: `python -m export.mtcnn` (or `make "
                "mtcnn`) downloads it there" % (mtcnn.WHEEL, mtcnn.WHEEL_DIR))


@pytest.fixture(scope="module")
def faces():
    require_data()
    return [rgb for _, rgb in verification_images(limit=12)]


@pytest.fixture(scope="module")
def exported(wheel, faces, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mtcnn"))
    return mtcnn.export_mtcnn(out, wheel, limit=12), out


def facenet_nets(wheel):
    """facenet-pytorch's own PNet, RNet, ONet classes, taken from the wheel's source (only the
    three class definitions are run; the wheel is not installed or imported)."""
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read("facenet_pytorch/models/mtcnn.py").decode("utf-8")
    tree = ast.parse(source)
    tree.body = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in ("PNet", "RNet", "ONet")]
    namespace = {"torch": torch, "nn": torch.nn, "os": os}
    exec(compile(tree, "facenet_pytorch/models/mtcnn.py", "exec"), namespace)
    return dict((stage, namespace[stage[0].upper() + "Net"]) for stage in STAGES)


def test_networks_are_facenet_pytorchs(wheel, faces):
    """Our definitions with the wheel's weights give facenet-pytorch's outputs on real faces
    (same output order: the softmax probabilities last)."""
    ours = mtcnn.load_nets(wheel)
    theirs = facenet_nets(wheel)
    with zipfile.ZipFile(wheel) as zf:
        for stage in STAGES:
            ref = theirs[stage](pretrained=False)
            ref.load_state_dict(torch.load(io.BytesIO(zf.read(mtcnn.MEMBERS[stage][0])), weights_only=True))
            for batch in mtcnn.parity_inputs(stage, faces)[:4]:
                with torch.no_grad():
                    a = ours[stage](torch.from_numpy(batch))
                    b = ref.eval()(torch.from_numpy(batch))
                assert len(a) == len(b)
                for x, y in zip(a, b):
                    assert x.shape == y.shape and torch.allclose(x, y, atol=1e-6)


def test_export_is_verified_and_self_describing(exported):
    report, out = exported
    for stage in STAGES:
        r = report[stage]
        assert r["onnx"] == os.path.join(out, FILES[stage]) and not r["skipped"]
        assert r["parity"]["max_diff"] <= mtcnn.PARITY_TOL and r["parity"]["inputs"] >= 10
        model = onnx.load(r["onnx"])
        onnx.checker.check_model(model)
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
        meta = read_metadata(model.metadata_props)
        assert (meta["stage"], meta["color"], meta["mean"], meta["scale"]) == (stage, "RGB", 127.5, 0.0078125)
        assert meta["source_wheel"] == "facenet-pytorch==2.6.0" and meta["license"] == "MIT"
        assert meta["source_sha256"] == mtcnn.MEMBERS[stage][1]
        assert [o.name for o in model.graph.output] == meta["outputs"]
        dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        win = meta["window"]
        assert dims == ([1, 3, "height", "width"] if stage == "pnet" else ["batch", 3, win, win])


def test_onnx_matches_pytorch_on_a_real_scene(exported, wheel):
    """P-Net at two pyramid sizes of a whole street scene; R-/O-Net on batches of 1 and 7 of
    its crops (dynamic height, width and batch at sizes the export never saw)."""
    report, out = exported
    path = os.path.join(KAGGLE, "maksssksksss665.jpg")
    if not os.path.isfile(path):
        pytest.skip("kaggle853 scene %s absent (set MASKGATE_DATA)" % path)
    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    nets = mtcnn.load_nets(wheel)
    h, w = rgb.shape[:2]
    levels = [cv2.resize(rgb, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA) for s in (1.5, 0.61)]
    inputs = {"pnet": [mtcnn.normalize([level]) for level in levels]}
    tiles = [rgb[y:y + 60, x:x + 60] for y in range(0, h - 60, 50) for x in range(0, w - 60, 50)]
    for stage in ("rnet", "onet"):
        win = nets[stage].window
        batch = mtcnn.normalize([cv2.resize(t, (win, win), interpolation=cv2.INTER_AREA) for t in tiles[:8]])
        inputs[stage] = [batch[:1], batch[1:8]]
    for stage in STAGES:
        session = ort.InferenceSession(report[stage]["onnx"], providers=["CPUExecutionProvider"])
        for batch in inputs[stage]:
            with torch.no_grad():
                expected = [t.numpy() for t in nets[stage](torch.from_numpy(batch))]
            got = session.run(mtcnn.OUTPUTS[stage], {"input": batch})
            for e, g in zip(expected, got):
                assert e.shape == g.shape
                assert np.abs(e - g).max() <= mtcnn.PARITY_TOL


def test_current_files_are_kept_and_force_exports_again(exported, wheel):
    report, out = exported
    stamps = [os.path.getmtime(report[s]["onnx"]) for s in STAGES]
    again = mtcnn.export_mtcnn(out, wheel, limit=12)
    assert all(again[s]["skipped"] for s in STAGES)
    assert [os.path.getmtime(report[s]["onnx"]) for s in STAGES] == stamps
    assert mtcnn.main(["--out", out, "--wheel", wheel]) == 0


def test_a_changed_wheel_is_refused_and_nothing_written(wheel, tmp_path, capsys):
    fake = str(tmp_path / os.path.basename(wheel))
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(fake, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"\0" if item.filename == mtcnn.MEMBERS["rnet"][0] else data)
    out = tmp_path / "out"
    with pytest.raises(mtcnn.ExportError, match="sha256 mismatch for facenet_pytorch/data/rnet.pt"):
        mtcnn.export_mtcnn(str(out), fake)
    assert not out.exists()
    assert mtcnn.main(["--out", str(out), "--wheel", str(tmp_path / "nowhere.whl")]) == 1
    assert "no facenet-pytorch==2.6.0 wheel" in capsys.readouterr().err
