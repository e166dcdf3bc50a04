"""A short real training run on CPU: it learns, reports, checkpoints, resumes, searches, runs under torchrun."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, data_path, require_detectors
from train import checkpoint
from train.__main__ import main as train_main
from train.evaluate import main as evaluate_main

QUICK = ["--subset", "0.08", "--input-size", "48", "--batch-size", "32", "--lr", "1e-3",
         "--patience", "0", "--threads", "2", "--ema", "0", "--no-tta-flip", "--no-export"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    assert train_main(["--data", data_path("fmd"), "--epochs", "3", "--out", out] + QUICK) == 0
    return out


def test_training_learns_and_writes_its_report(trained):
    payload = checkpoint.read(os.path.join(trained, "last.pt"))
    losses = [h["train_loss"] for h in payload["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    assert metrics["test"]["accuracy"] > 0.75  # held-out crops, chance is about 0.5
    assert metrics["test"]["n"] > 40
    for name in ("confusion_test.png", "roc_test.png", "learning_curves.png", "report.md"):
        assert os.path.getsize(os.path.join(trained, name)) > 1000
    with open(os.path.join(trained, "confusion_test.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # The mistakes are drawn for review when there are any.
    assert os.path.isfile(os.path.join(trained, "errors_test.png")) == (metrics["test"]["accuracy"] < 1)


def test_mistakes_picture_shows_only_wrong_crops(tmp_path):
    from train.report import plot_errors
    labels = np.array([0, 1, 0, 1])
    right = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    drawn = []

    def crop_of(i):
        drawn.append(i)
        return np.full((24, 24, 3), 60 * i, np.uint8)
    assert not plot_errors(labels, right, ["mask", "no_mask"], crop_of, str(tmp_path / "none.png"))
    wrong = right.copy()
    wrong[[1, 2]] = wrong[[1, 2], ::-1]
    assert plot_errors(labels, wrong, ["mask", "no_mask"], crop_of, str(tmp_path / "e.png"))
    assert sorted(drawn) == [1, 2] and os.path.getsize(str(tmp_path / "e.png")) > 1000


def test_checkpoint_describes_itself_and_round_trips(trained):
    model, meta = checkpoint.load_model(os.path.join(trained, "best.pt"))
    assert meta["arch"] == "mobilenet_v2" and meta["classes"] == ["mask", "no_mask"]
    assert meta["input_size"] == [48, 48] and meta["resize"] == "letterbox"
    assert meta["train_args"]["lr"] == 1e-3
    assert meta["data_summary"]["hygiene"]["exact_duplicate_removed"]["count"] == 104
    assert meta["metrics"]["test"]["accuracy"] > 0.75
    again, _ = checkpoint.load_model(os.path.join(trained, "best.pt"))
    x = torch.randn(2, 3, 48, 48)
    assert torch.equal(model(x), again(x))


def test_resume_continues_where_it_stopped(trained, tmp_path):
    out = str(tmp_path / "resumed")
    args = ["--data", data_path("fmd"), "--epochs", "4", "--out", out,
            "--resume", os.path.join(trained, "last.pt")] + QUICK
    assert train_main(args) == 0
    history = checkpoint.read(os.path.join(out, "last.pt"))["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_ema_is_what_is_selected_saved_and_resumed(trained, tmp_path):
    out = str(tmp_path / "ema")
    args = ["--data", data_path("fmd"), "--epochs", "2", "--out", out] + QUICK + ["--ema", "0.9"]
    assert train_main(args) == 0
    payload = checkpoint.read(os.path.join(out, "last.pt"))
    averaged = {k[len("module."):]: v for k, v in payload["ema_state"].items() if k.startswith("module.")}
    assert set(averaged) == set(payload["model_state"])
    assert all(torch.equal(averaged[k], v) for k, v in payload["model_state"].items())
    assert any(not torch.equal(payload["train_state"][k], v) for k, v in payload["model_state"].items())
    assert json.load(open(os.path.join(out, "metrics.json")))["test"]["accuracy"] > 0.75
    # --resume continues both the training weights and their average.
    resumed = str(tmp_path / "ema_resumed")
    assert train_main(args[:3] + ["3", "--out", resumed, "--resume", os.path.join(out, "last.pt")]
                      + args[6:] + ["--tta-flip", "--export"]) == 0
    assert [h["epoch"] for h in checkpoint.read(os.path.join(resumed, "last.pt"))["history"]] == [1, 2, 3]
    # --tta-flip reports the mirrored metrics too and puts the flip into the exported model.
    assert "test_flip" in json.load(open(os.path.join(resumed, "metrics.json")))
    from export.onnx import read_onnx_metadata
    assert read_onnx_metadata(os.path.join(resumed, "model.onnx"))["tta_flip"] is True
    with pytest.raises(checkpoint.CheckpointError, match="trained without --ema"):
        train_main(args[:5] + [str(tmp_path / "x"), "--resume", os.path.join(trained, "last.pt")] + args[6:])


def test_a_missing_data_folder_is_one_line_not_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "train", "--data", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: data folder not found: %s" % (tmp_path / "nowhere")


def test_bad_checkpoint_is_named(tmp_path):
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, str(bogus))
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint of this project"):
        checkpoint.load_model(str(bogus))


def test_evaluate_json_on_scene_crops(trained, tmp_path, capsys):
    errors = str(tmp_path / "errors.png")
    assert evaluate_main(["--model", os.path.join(trained, "best.pt"), data_path("kaggle853"),
                          "--split", "test", "--json", "--errors", errors]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "auc", "per_class", "confusion", "n"):
        assert key in result
    assert result["n"] > 500 and result["skipped_other_classes"] > 0  # incorrect faces
    # Broken down by face size: every scored face in one bin, the bins' accuracies add up to the whole.
    bins = {b["bin"]: b for b in result["by_face_size"]}
    assert set(bins) == {"under 16 px", "16-31 px", "32 px and over"}
    assert sum(b["n"] for b in bins.values()) == result["n"] + result["skipped_other_classes"]
    assert sum(b["scored"] for b in bins.values()) == result["n"]
    right = sum(b["accuracy"] * b["scored"] for b in bins.values())
    assert right == pytest.approx(result["accuracy"] * result["n"])
    assert all(0 <= b["compliance_accuracy"] <= 1 for b in bins.values())
    mistakes = cv2.imread(errors)  # the two-class model's mistakes as a picture
    assert mistakes is not None and mistakes.shape[0] > 200


def test_evaluate_crops_folder_images_to_faces_when_asked(trained, tmp_path, capsys):
    require_detectors()
    for cls in ("with_mask", "without_mask"):
        os.makedirs(str(tmp_path / cls))
        folder = data_path("fmd", cls)
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))[:3]:
            shutil.copy(os.path.join(folder, name), str(tmp_path / cls / name))
    model = os.path.join(trained, "best.pt")
    assert evaluate_main(["--model", model, str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["face_crop"] == "none"  # as the model was trained
    assert evaluate_main(["--model", model, str(tmp_path), "--face-crop", "retinaface", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["face_crop"] == "retinaface"
    assert result["n"] + result["hygiene"].get("no_face_found_by_retinaface", {"count": 0})["count"] == 6


def test_grid_search_with_group_kfold(tmp_path, capsys):
    out = str(tmp_path / "search")
    args = ["--data", data_path("fmd"), "--epochs", "1", "--out", out, "--search",
            "--grid-lr", "1e-2,1e-3", "--grid-batch", "32", "--folds", "2", "--search-epochs", "1"] + QUICK
    args[args.index("--subset") + 1] = "0.04"
    assert train_main(args) == 0
    report = open(os.path.join(out, "report.md")).read()
    assert "| 0.01 | 32 |" in report and "| 0.001 | 32 |" in report and "**chosen**" in report
    assert "mean val loss" in report and "mean val AUC" in report


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "train", "--data", data_path("fmd"), "--epochs", "1", "--out", out, "--device", "cpu",
           "--class-weights", "none"] + QUICK
    cmd[cmd.index("--threads") + 1] = "1"
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, done.stdout.decode()[-3000:]
    assert os.path.isfile(os.path.join(out, "best.pt"))
    payload = checkpoint.read(os.path.join(out, "last.pt"))
    assert payload["epoch"] == 1 and payload["meta"]["train_args"]["class_weights"] == "none"


def test_seed_study_summarises_real_runs(trained, tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import seed_study
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    # A second "seed": the real run's metrics with another val loss and one more test error.
    other = json.loads(json.dumps(metrics))
    other["val"]["loss"] = metrics["val"]["loss"] + 0.02
    (tmp_path / "seed1").mkdir()
    json.dump(other, open(str(tmp_path / "seed1" / "metrics.json"), "w"))
    text = seed_study.table([seed_study.parse_recipe("r=%s,%s" % (trained, tmp_path / "seed1"))])
    lines = text.splitlines()
    assert "k853" not in lines[0]  # fmd-only runs: the kaggle853 columns are left out
    assert len(lines) == 2 + 2 + 1
    mean_val_loss = metrics["val"]["loss"] + 0.01
    assert "**%.4f** ± %.4f" % (mean_val_loss, np.std([0, 0.02], ddof=1)) in lines[-1]
    # Runs on different data cannot be compared, and a missing run says so.
    del other["val"]
    json.dump(other, open(str(tmp_path / "seed1" / "metrics.json"), "w"))
    with pytest.raises(SystemExit, match="no 'val' set in .*seed1"):
        seed_study.table([seed_study.parse_recipe("r=%s,%s" % (trained, tmp_path / "seed1"))])
    with pytest.raises(SystemExit, match="no run folder matches"):
        seed_study.parse_recipe("r=%s" % (tmp_path / "nowhere"))
    # --flip reads the *_flip sets, which a run without the test-time flip does not have.
    with pytest.raises(SystemExit, match="no test-time-flip scores"):
        seed_study.table([seed_study.parse_recipe("r=%s" % trained)], flip=True)
    # The compliance columns: counts by true label, n/a for a class the run never saw.
    scored = {"compliance": {"recall": 0.9, "by_label": {"mask": {"n": 50, "called_non_compliant": 3}}}}
    assert seed_study._value(scored, "masks_flagged") == 3
    assert seed_study._value(scored, "non_compliant_recall") == 0.9
    assert np.isnan(seed_study._value(scored, "worn_wrong_caught"))


def test_no_config_is_the_shipped_recipe_and_data_replaces_it(tmp_path):
    from train.__main__ import DEFAULT_CONFIG, parse_args
    with open(DEFAULT_CONFIG) as f:
        recipe = yaml.safe_load(f)
    args = parse_args([])
    assert args.config == DEFAULT_CONFIG and args.data == recipe["data"]
    assert (args.input_size, args.ema, args.arch) == (recipe["input_size"], recipe["ema"], recipe["arch"])
    assert parse_args(["--data", str(tmp_path)]).data == [str(tmp_path)]  # replaced, not added to
    assert parse_args(["--input-size", "64"]).input_size == 64  # flags win over the recipe


@pytest.mark.parametrize("content, message", [
    (None, "error: config file not found: "),
    ("epochs: [1,\n", "is not valid YAML"),
    ("epoch: 3\n", "unknown keys ['epoch']"),
])
def test_a_bad_config_is_one_line(tmp_path, content, message):
    path = tmp_path / "recipe.yaml"
    if content is not None:
        path.write_text(content)
    done = subprocess.run([sys.executable, "-m", "train", "--config", str(path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
