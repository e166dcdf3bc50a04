"""bench/detector_soup.py: the weights of an export and a checkpoint averaged by hand."""
import os
import sys

import pytest
import torch

from conftest import ROOT
from edge.infer.detectors.retinaface import SHIPPED_MODEL
from train.detector import checkpoint
from train.detector.net import ARCH, load_from_onnx

sys.path.insert(0, os.path.join(ROOT, "bench"))
import detector_soup  # noqa: E402


def test_the_soup_of_the_shipped_and_the_original_weights_is_their_mean(wider_onnx, tmp_path):
    wider = load_from_onnx(wider_onnx)
    wider_pt = str(tmp_path / "wider.pt")
    checkpoint.save(wider_pt, wider, {"arch": ARCH, "origin": "wider"})
    out = str(tmp_path / "soup.pt")
    detector_soup.main([SHIPPED_MODEL, wider_pt, "--out", out])

    net, meta = checkpoint.load_net(out)
    shipped = load_from_onnx(SHIPPED_MODEL).state_dict()
    name = "fx.stage2.0.1.0.weight"  # where the two differ most (0.07)
    assert not torch.equal(shipped[name], wider.state_dict()[name])
    assert torch.allclose(net.state_dict()[name], (shipped[name] + wider.state_dict()[name]) / 2)
    assert meta["origin"] == "wider" and meta["soup"] == [SHIPPED_MODEL, wider_pt]


def test_a_soup_needs_a_checkpoint_and_a_named_entry_that_exists(wider_onnx, tmp_path):
    with pytest.raises(SystemExit, match="at least one trainer checkpoint"):
        detector_soup.main([SHIPPED_MODEL, wider_onnx, "--out", str(tmp_path / "x.pt")])
    wider_pt = str(tmp_path / "wider.pt")
    checkpoint.save(wider_pt, load_from_onnx(wider_onnx), {"arch": ARCH})
    with pytest.raises(SystemExit, match="has no 'ema_state'"):
        detector_soup.main([wider_pt + ":ema_state", "--out", str(tmp_path / "x.pt")])
