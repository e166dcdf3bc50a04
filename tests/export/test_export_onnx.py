"""export.onnx: a really trained checkpoint -> ONNX, checked against PyTorch on real faces."""
import os

import numpy as np
import pytest

from helpers import SIZE, batch_of, make_checkpoint, require_data

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edge.common import sha256  # noqa: E402
from edge.infer.classify.onnx_meta import MetadataError, read_metadata_props  # noqa: E402
from export import onnx as export_onnx_mod  # noqa: E402  (after the importorskips)
from export.onnx import ExportError, ParityError, check_parity, export_onnx, read_onnx_metadata  # noqa: E402
from train.checkpoint import CheckpointError  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    require_data()
    return make_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "mnv2.pt"))


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
    return export_onnx(checkpoint, out, limit=24)


def test_export_is_verified_against_pytorch(exported):
    parity = exported["parity"]
    print("parity:", parity)
    assert parity["n"] == 24
    assert parity["argmax_agree"] == 1.0
    assert parity["max_diff"] <= 1e-4
    assert os.stat(exported["onnx"]).st_mode & 0o044 == 0o044  # readable by the service user


def test_graph_is_opset13_plain_with_dynamic_batch(exported):
    model = onnx.load(exported["onnx"])
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "probs")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # simplified to plain operators: no shape arithmetic left for TensorRT 8.2 to trip on
    assert not {"Shape", "Gather", "Pad", "ConstantOfShape"} & set(exported["ops"])
    assert model.graph.node[-1].op_type == "Softmax"


def test_batches_1_7_16_agree(exported):
    meta = read_onnx_metadata(exported["onnx"])
    faces = batch_of(meta, 16)
    session = ort.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    full = session.run(["probs"], {"input": faces})[0]
    assert full.shape == (16, 2)
    np.testing.assert_allclose(full.sum(1), 1.0, atol=1e-5)  # softmax is in the graph
    for n in (1, 7):
        part = session.run(["probs"], {"input": faces[:n]})[0]
        assert part.shape == (n, 2)
        np.testing.assert_allclose(part, full[:n], atol=1e-5)


def test_flip_in_the_graph_averages_a_face_with_its_mirror(checkpoint, exported, tmp_path):
    flipped = export_onnx(checkpoint, str(tmp_path / "flip.onnx"), limit=24, flip=True)
    assert flipped["parity"]["max_diff"] <= 1e-4 and flipped["tta_flip"]
    meta = read_onnx_metadata(flipped["onnx"])
    assert meta["tta_flip"] is True and "tta_flip" not in read_onnx_metadata(exported["onnx"])
    model = onnx.load(flipped["onnx"])
    ops = [n.op_type for n in model.graph.node]
    # The mirror is one Gather with constant indices; no shape arithmetic for TensorRT 8.2.
    assert ops.count("Gather") == 1 and not {"Shape", "Pad", "ConstantOfShape", "Slice"} & set(ops)
    assert ops[-2:] == ["Reshape", "ReduceMean"]
    faces = batch_of(meta, 16)
    plain = ort.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    both = ort.InferenceSession(flipped["onnx"], providers=["CPUExecutionProvider"])
    expected = (plain.run(["probs"], {"input": faces})[0]
                + plain.run(["probs"], {"input": np.ascontiguousarray(faces[..., ::-1])})[0]) / 2
    full = both.run(["probs"], {"input": faces})[0]
    np.testing.assert_allclose(full, expected, atol=1e-5)
    np.testing.assert_allclose(both.run(["probs"], {"input": np.ascontiguousarray(faces[..., ::-1])})[0], full, atol=1e-5)
    for n in (1, 7):
        np.testing.assert_allclose(both.run(["probs"], {"input": faces[:n]})[0], full[:n], atol=1e-5)


def test_metadata_round_trip(checkpoint, exported):
    from edge.infer.model_meta import from_string_props
    from train.checkpoint import read
    saved = read(checkpoint)["meta"]
    meta = read_onnx_metadata(exported["onnx"])
    for key in ("arch", "classes", "input_size", "resize", "mean", "std", "crop_margin", "color", "metrics"):
        assert meta[key] == saved[key], key
    assert meta["source_sha256"] == sha256(checkpoint)
    assert meta["export_tools"]["opset"] == 13 and meta["export_tools"]["torch"] == torch.__version__
    # the edge reads the same facts through onnxruntime; the torch-free reader agrees with onnx
    session = ort.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    assert from_string_props(session.get_modelmeta().custom_metadata_map) == meta
    props = {p.key: p.value for p in onnx.load(exported["onnx"]).metadata_props}
    assert read_metadata_props(exported["onnx"]) == props


def _perturbed_copy(model, path):
    """Scale the classifier's weights (the last Gemm): a plausible but wrong model."""
    from onnx import numpy_helper
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    init = next(i for i in model.graph.initializer if i.name == gemm.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.05, init.name))
    onnx.save(model, path)
    return path


def test_parity_check_catches_a_broken_model(checkpoint, exported, tmp_path):
    from export.onnx import load_for_export, preprocess, torch_probs
    from export.samples import verification_images
    wrapped, meta = load_for_export(checkpoint)
    batch = preprocess(verification_images(limit=12), meta)
    reference = torch_probs(wrapped, batch)
    check_parity(reference, exported["onnx"], batch)  # the real export passes...
    broken = _perturbed_copy(onnx.load(exported["onnx"]), str(tmp_path / "broken.onnx"))
    with pytest.raises(ParityError, match="disagrees"):
        check_parity(reference, broken, batch)  # ...a 5% change in one layer does not


def test_failed_parity_leaves_nothing_behind(checkpoint, tmp_path, monkeypatch):
    original = export_onnx_mod.simplify

    def simplify_then_break(model):
        model = original(model)
        _perturbed_copy(model, str(tmp_path / "scratch.onnx"))
        return model
    monkeypatch.setattr(export_onnx_mod, "simplify", simplify_then_break)
    out_dir = tmp_path / "out"
    with pytest.raises(ParityError):
        export_onnx(checkpoint, str(out_dir / "model.onnx"), limit=8)
    assert os.listdir(str(out_dir)) == []


def test_cli_with_fp16_and_verify_folder(checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxconverter_common")
    import cv2

    from helpers import real_faces
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, (rgb, _) in enumerate(real_faces(per_class=5)):
        cv2.imwrite(str(folder / ("%02d.jpg" % i)), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (folder / "broken.jpg").write_bytes(b"not an image")  # skipped, not fatal
    out = str(tmp_path / "cli.onnx")
    assert export_onnx_mod.main([checkpoint, "-o", out, "--verify", str(folder), "--fp16"]) == 0
    printed = capsys.readouterr().out
    assert "10 images, argmax agreement 100.00%" in printed
    assert "FP16 onnxruntime vs PyTorch" in printed
    assert read_onnx_metadata(out.replace(".onnx", ".fp16.onnx"))["onnx_precision"] == "fp16"


# -- bad input: each a clear error, nothing half-written -----------------------------------

def _assert_cli_error(argv, capsys, *needles):
    assert export_onnx_mod.main(argv) == 1
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err


def test_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("hello")
    out = tmp_path / "x.onnx"
    _assert_cli_error([str(bogus), "-o", str(out)], capsys, "notes.pt is not a PyTorch checkpoint")
    with pytest.raises(CheckpointError):
        export_onnx(str(bogus), str(out))
    assert os.listdir(str(tmp_path)) == ["notes.pt"]


def test_checkpoint_missing_keys_and_foreign_dict(tmp_path, capsys):
    from train.checkpoint import FORMAT
    path = str(tmp_path / "partial.pt")
    torch.save({"format": FORMAT, "meta": {"arch": "mobilenet_v2"}}, path)
    _assert_cli_error([path], capsys, "partial.pt is missing model_state")
    torch.save({"state_dict": {}}, path)
    _assert_cli_error([path], capsys, "not a checkpoint of this project")


def test_unknown_architecture(checkpoint, tmp_path, capsys):
    from train.checkpoint import read
    payload = read(checkpoint)
    payload["meta"] = dict(payload["meta"], arch="resnet9000")
    path = str(tmp_path / "alien.pt")
    torch.save(payload, path)
    _assert_cli_error([path], capsys, "unknown architecture 'resnet9000'")


def test_onnx_without_metadata_and_not_onnx(tmp_path):
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Softmax", ["input"], ["probs"], axis=1)], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 2])])
    plain = str(tmp_path / "foreign.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), plain)
    with pytest.raises(MetadataError, match="foreign.onnx has no maskgate metadata.*python -m export.onnx"):
        read_onnx_metadata(plain)
    text = tmp_path / "model.onnx"
    text.write_text("definitely not protobuf\n" * 10)
    with pytest.raises(MetadataError, match="is not an ONNX model"):
        read_onnx_metadata(str(text))


def test_unwritable_output(checkpoint, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    out = str(blocker / "model.onnx")  # even root cannot create this
    with pytest.raises(ExportError, match="cannot write .*model.onnx"):
        export_onnx(checkpoint, out, limit=4)
    _assert_cli_error([checkpoint, "-o", out], capsys, "cannot write")
    assert sorted(os.listdir(str(tmp_path))) == ["file"]


@pytest.mark.slow
def test_efficientnet_lite_padding_is_folded(tmp_path):
    require_data()
    ckpt = make_checkpoint(str(tmp_path / "lite0.pt"), arch="tf_efficientnet_lite0", steps=1, weights="none")
    report = export_onnx(ckpt, str(tmp_path / "lite0.onnx"), limit=8)
    assert report["parity"]["max_diff"] <= 1e-4
    assert not {"Shape", "Gather", "Pad", "Ceil"} & set(report["ops"]), report["ops"]
